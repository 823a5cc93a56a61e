"""``export_policy``: a training checkpoint -> a torch-free policy file (``.npz``, see ``op3_walk.policy.runtime``).

The exporter rebuilds the agent from the checkpoint (so legacy checkpoint layouts load exactly as a resume would),
walks its deterministic policy network along the export contract of ``op3_walk.agents.networks`` (TD3/DDPG:
``actor.net``; SAC: ``actor.net``, i.e. ``tanh(mean(trunk(obs)))``; DQN: ``q_net``), and then checks its own work:
the numpy policy must reproduce ``agent.act(obs, explore=False)`` on random observations before anything is
written.  The file is written atomically (temporary file, fsync, rename), so a deployed policy is never half a file.

Observation normalisation: an agent that overrides ``normalize_obs`` must also provide
``observation_normalization() -> None | (mean, std, clip)`` with ``normalize_obs(x) = clip((x - mean) / std, -clip,
clip)``; the statistics go into the file.  An agent that normalises without saying how is refused rather than
exported wrong.

This module imports torch; the runtime never imports it.
"""
import argparse
import datetime
import hashlib
import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from op3_walk.agents import DISCRETE_ALGOS, agent_classes
from op3_walk.agents.base import OffPolicyAgent
from op3_walk.config import ConfigError, from_dict, to_dict
from op3_walk.policy.runtime import (CONTINUOUS, DISCRETE, FORMAT, VERSION, NumpyPolicy, PolicyFileError,
                                     PolicyInterface, expected_interface)
from op3_walk.provenance import git_version
from op3_walk.training.checkpoint import CheckpointError, load_checkpoint

CHECK_SAMPLES = 256       # random observations the exported policy is compared on
CONTINUOUS_TOLERANCE = 1e-5   # max |numpy - torch| per action component (float32 rounding is ~1e-7)
NEAR_TIE = 1e-5           # discrete: Q-values closer than this may pick either action (rounding), not a failure


class ExportError(ValueError):
    """A checkpoint cannot be exported (unknown network layout, unfaithful export, unknown robot or task)."""


# -- the network -------------------------------------------------------------------------------------------------
def policy_network(agent: Any) -> nn.Sequential:
    """The deterministic policy as an ``nn.Sequential`` of ``Linear`` and activations (export contract)."""
    if agent.algo in DISCRETE_ALGOS:
        return agent.q_net
    return agent.actor.net


def network_arrays(net: nn.Sequential) -> Tuple[List[np.ndarray], List[np.ndarray], List[str]]:
    """``(weights (in, out), biases, activations)`` of ``net``; ExportError on a module the runtime cannot run."""
    weights: List[np.ndarray] = []
    biases: List[np.ndarray] = []
    activations: List[str] = []
    for i, module in enumerate(net):
        if isinstance(module, nn.Linear):
            weights.append(module.weight.detach().cpu().to(torch.float32).numpy().T.copy())
            bias = module.bias
            biases.append(np.zeros(module.out_features, np.float32) if bias is None
                          else bias.detach().cpu().to(torch.float32).numpy().copy())
            activations.append("identity")
        elif isinstance(module, (nn.ReLU, nn.Tanh)):
            if not activations or activations[-1] != "identity":
                raise ExportError("module %d (%s) is an activation without a Linear layer before it"
                                  % (i, type(module).__name__))
            activations[-1] = "relu" if isinstance(module, nn.ReLU) else "tanh"
        else:
            raise ExportError("module %d of the policy network is a %s; the runtime runs Linear, ReLU and Tanh only"
                              % (i, type(module).__name__))
    if not weights:
        raise ExportError("the policy network has no Linear layer")
    return weights, biases, activations


def normalization_arrays(agent: Any) -> Dict[str, np.ndarray]:
    """``obs_mean``/``obs_std``/``obs_clip`` entries of the agent's observation normalisation (none: identity)."""
    stats_fn = getattr(agent, "observation_normalization", None)
    if stats_fn is None:
        if type(agent).normalize_obs is not OffPolicyAgent.normalize_obs:
            raise ExportError("%s normalises observations (normalize_obs) but has no observation_normalization() "
                              "to say how; the export would act differently" % type(agent).__name__)
        return {}
    stats = stats_fn()
    if stats is None:
        return {}
    mean, std, clip = stats
    as_np = lambda v: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))  # noqa: E731
    return {"obs_mean": as_np(mean).astype(np.float32).reshape(-1),
            "obs_std": as_np(std).astype(np.float32).reshape(-1),
            "obs_clip": np.array(float(clip), dtype=np.float64)}


# -- checkpoint -> agent -----------------------------------------------------------------------------------------
def load_agent(checkpoint: str) -> Tuple[Any, Dict[str, Any]]:
    """``(agent, meta)`` rebuilt from ``checkpoint`` on the CPU, without its replay memory.

    The memory is sized to one batch rather than the configured capacity: an exporter has no use for a
    gigabyte of preallocated transitions.
    """
    payload, meta = load_checkpoint(checkpoint)
    algo = meta["algo"]
    try:
        agent_cls, config_cls = agent_classes(algo)
    except ValueError as exc:
        raise ExportError("checkpoint %s: %s" % (checkpoint, exc)) from None
    state = dict(payload.get("agent") or {})
    if "config" not in state:
        raise ExportError("checkpoint %s holds no agent state (payload.agent.config missing)" % checkpoint)
    config_dict = dict(state["config"])
    config_dict["buffer_size"] = int(config_dict.get("batch_size", 1))
    config_dict["save_buffer"] = False
    try:
        config = from_dict(config_cls, config_dict, where="checkpoint %s agent config" % checkpoint)
    except ConfigError as exc:
        raise ExportError(str(exc)) from None
    state.pop("memory", None)
    with torch.random.fork_rng(devices=[]):   # leave the caller's global torch RNG alone
        agent = agent_cls(int(meta["obs_dim"]), int(meta["act_dim"]), config, seed=0, device="cpu")
    try:
        agent.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ExportError("checkpoint %s: the agent state does not load: %s" % (checkpoint, exc)) from exc
    return agent, meta


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_interface(meta: Dict[str, Any], robot: Optional[str] = None,
                         task: Optional[str] = None) -> PolicyInterface:
    """The interface a checkpoint's policy was trained with, from its metadata (``robot``/``task`` override where
    to find the configs, for a checkpoint trained on a robot YAML outside ``config/robots``)."""
    discrete = meta["algo"] in DISCRETE_ALGOS
    if meta.get("env") and not meta.get("robot"):
        if robot or task:
            raise ExportError("the checkpoint was trained on gymnasium env %r; --robot/--task do not apply"
                              % meta["env"])
        return PolicyInterface("", "", ["observation"], [int(meta["obs_dim"])], DISCRETE if discrete else CONTINUOUS,
                               int(meta["act_dim"]), 0.0, None)
    robot_name = meta.get("robot")
    task_name = meta.get("task")
    if not robot_name:
        raise ExportError("checkpoint metadata names no robot and no gymnasium env")
    if not task_name and not task:
        raise ExportError("checkpoint metadata names no task; pass --task")
    try:
        iface = expected_interface(robot or robot_name, task or task_name, task_name=task_name or task)
    except (ConfigError, ValueError, OSError) as exc:
        raise ExportError("cannot load the robot/task configs the checkpoint names (robot %r, task %r): %s; pass "
                          "--robot/--task with the YAML files it was trained with" % (robot_name, task_name, exc))
    if iface.robot != robot_name:
        raise ExportError("--robot %s is robot %r, the checkpoint was trained on %r" % (robot, iface.robot, robot_name))
    if (iface.obs_dim, iface.action_size) != (int(meta["obs_dim"]), int(meta["act_dim"])):
        raise ExportError("robot %s, task %s give observation %d / action %d, but the checkpoint has %d / %d (the "
                          "configs changed since training?)" % (iface.robot, task or task_name, iface.obs_dim,
                                                                iface.action_size, meta["obs_dim"], meta["act_dim"]))
    if (iface.action_kind == DISCRETE) != discrete:
        raise ExportError("%s acts %s, the task's action space is %s" % (
            meta["algo"], "discretely" if discrete else "continuously", iface.action_kind))
    return iface


def policy_arrays(agent: Any, iface: PolicyInterface, provenance: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Every entry of the policy file for ``agent`` acting through ``iface``."""
    weights, biases, activations = network_arrays(policy_network(agent))
    meta = {"algo": agent.algo, "robot": iface.robot, "task": iface.task, "env": provenance.get("env", ""),
            "observation_names": iface.observation_names, "observation_sizes": iface.observation_sizes,
            "action_kind": iface.action_kind, "action_size": iface.action_size,
            "control_rate_hz": iface.control_rate_hz, "task_interface": iface.task_interface,
            "source_checkpoint": provenance.get("source_checkpoint", ""),
            "env_steps": int(provenance.get("env_steps", agent.env_steps))}
    meta.update({k: v for k, v in provenance.items() if k not in meta})
    arrays: Dict[str, np.ndarray] = {"format": np.array(FORMAT), "version": np.array(VERSION, dtype=np.int64),
                                     "meta": np.array(json.dumps(meta, sort_keys=True)),
                                     "activations": np.array(activations)}
    for i, (w, b) in enumerate(zip(weights, biases)):
        arrays["w%d" % i] = w
        arrays["b%d" % i] = b
    arrays.update(normalization_arrays(agent))
    return arrays


def verify(agent: Any, policy: NumpyPolicy, samples: int = CHECK_SAMPLES, seed: int = 0) -> float:
    """Compare ``policy`` with ``agent.act(obs, explore=False)`` on ``samples`` random observations.

    Returns the largest absolute action difference (continuous) or the number of differing picks that are not
    near-ties (discrete, always 0 on success); raises ExportError when the export is not faithful.
    """
    if samples <= 0:
        return 0.0
    rng = np.random.default_rng(seed)
    obs_batch = rng.normal(0.0, 1.0, (samples, policy.obs_dim)).astype(np.float32)
    outputs = policy.forward(obs_batch)
    worst = 0.0
    for obs, out in zip(obs_batch, outputs):
        expected = agent.act(obs, explore=False)
        if policy.discrete:
            mine = int(np.argmax(out))
            if mine != int(expected) and out[mine] - out[int(expected)] > NEAR_TIE:
                raise ExportError("exported policy picks action %d where the agent picks %d (Q %g vs %g)"
                                  % (mine, int(expected), out[mine], out[int(expected)]))
        else:
            diff = float(np.max(np.abs(out - np.asarray(expected, dtype=np.float32))))
            worst = max(worst, diff)
            if not diff <= CONTINUOUS_TOLERANCE:
                raise ExportError("exported policy differs from the agent by %g (> %g) on a random observation"
                                  % (diff, CONTINUOUS_TOLERANCE))
    return worst


def write_atomic(path: str, arrays: Dict[str, np.ndarray]) -> str:
    """``np.savez`` to a temporary file next to ``path``, fsync, rename over ``path``; returns ``path``."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)   # mkstemp's 0600 would hide the policy from the node's user
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _task_config(task: Optional[str]) -> Optional[Dict[str, Any]]:
    """The whole task config (rewards included) as plain data, for the record; None for a gymnasium env."""
    if not task:
        return None
    from op3_walk.envs.task import load_task
    return to_dict(load_task(task))


def export_policy(checkpoint: str, out: str, robot: Optional[str] = None, task: Optional[str] = None,
                  check_samples: int = CHECK_SAMPLES) -> Tuple[NumpyPolicy, float]:
    """Export ``checkpoint`` to ``out``; returns the policy read back from ``out`` and the largest action difference
    the check found.  ``CheckpointError``/``ExportError`` (both name the file) when it cannot."""
    checkpoint = os.path.abspath(os.path.expanduser(checkpoint))
    agent, meta = load_agent(checkpoint)
    iface = checkpoint_interface(meta, robot, task)
    provenance = {"env": meta.get("env", "") or "", "source_checkpoint": checkpoint,
                  "env_steps": int(meta.get("env_steps", agent.env_steps)), "updates": int(agent.updates),
                  "episodes": int(meta.get("episodes", 0)), "source_sha256": _sha256(checkpoint),
                  "checkpoint_created": float(meta.get("created", 0.0)),
                  "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  # the code that trained it (unknown for checkpoints older than this field) and that exported it
                  "training_git": meta.get("git") or {"commit": "", "dirty": False}, "export_git": git_version(),
                  "agent_config": to_dict(agent.config), "task_config": _task_config(task or meta.get("task"))}
    arrays = policy_arrays(agent, iface, provenance)
    try:
        staged = NumpyPolicy.from_arrays(arrays, source="export of %s" % checkpoint)
    except PolicyFileError as exc:   # a bug in the exporter, but say what it is
        raise ExportError("the exported arrays do not form a valid policy: %s" % exc) from exc
    worst = verify(agent, staged, check_samples)
    written = write_atomic(os.path.expanduser(out), arrays)
    return NumpyPolicy(written), worst


def default_out(checkpoint: str) -> str:
    root, _ = os.path.splitext(checkpoint)
    return root + ".npz"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="export_policy",
        description="Export a training checkpoint (td3, ddpg, sac, dqn) to a torch-free policy file (.npz) that "
                    "policy_node and op3_walk.policy.NumpyPolicy run with numpy alone.")
    parser.add_argument("checkpoint", help="checkpoint written by train / learner_node (checkpoint.pt)")
    parser.add_argument("--out", "-o", default="", help="policy file to write (default: the checkpoint's name with "
                                                        ".npz); replaced atomically")
    parser.add_argument("--robot", default=None, help="robot config name or YAML path, when the checkpoint's robot "
                                                      "is not in config/robots (must be the same robot)")
    parser.add_argument("--task", default=None, help="task config name or YAML path, when the checkpoint's task "
                                                     "file is not where it was at training")
    parser.add_argument("--check-samples", type=int, default=CHECK_SAMPLES,
                        help="random observations the export is checked on against the agent (0: no check)")
    args = parser.parse_args(argv)
    out = args.out or default_out(args.checkpoint)
    try:
        policy, worst = export_policy(args.checkpoint, out, robot=args.robot, task=args.task,
                                      check_samples=args.check_samples)
    except (CheckpointError, ExportError, OSError) as exc:
        print("export_policy: error: %s" % exc, file=sys.stderr)
        return 1
    check = ("not checked" if args.check_samples <= 0 else
             "same greedy action on %d random observations" % args.check_samples if policy.discrete else
             "max |numpy - torch| %.1e on %d random observations" % (worst, args.check_samples))
    print("export_policy: %s\n  -> %s (%.1f kB); %s" % (policy.describe(), policy.path,
                                                        os.path.getsize(policy.path) / 1024.0, check), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
