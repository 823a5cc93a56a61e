"""A training session: agent + env + output folder (CSV, TensorBoard, checkpoints, learning curve), shared by every
entry point.

``scripts/train`` (in-process, the walking env or any gymnasium id) and ``learner_node`` (through ROS) both build a
``TrainingSession`` and call ``run()``; they differ only in the env they pass.
"""
import csv
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from op3_walk.agents import AGENTS, DISCRETE_ALGOS, agent_classes
from op3_walk.config import ConfigError, load
from op3_walk.provenance import git_version
from op3_walk.training.checkpoint import load_checkpoint, save_checkpoint
from op3_walk.training.logger import EpisodeCsv, TensorBoardLog, loss_columns
from op3_walk.training.loop import EpisodeRecord, Trainer, TrainConfig, TrainSummary
from op3_walk.training.plots import plot_learning_curves

ALGOS = tuple(sorted(AGENTS))
CHECKPOINT_NAME = "checkpoint.pt"
CSV_NAME = "episodes.csv"
CURVE_NAME = "learning_curve.png"
TB_DIR = "tb"


def wants_discrete(algo: str) -> bool:
    """Whether ``algo``'s agent picks one of ``action_space.n`` actions (``act`` returns an int), else it acts on a
    ``Box`` action space; ValueError for an unknown algorithm."""
    agent_classes(algo)
    return algo in DISCRETE_ALGOS


def space_dims(env: Any) -> Tuple[int, int, bool]:
    """``(obs_dim, act_dim, discrete)`` of ``env``: a flat ``Box`` observation and a ``Box`` action vector
    (``act_dim`` = its length) or a ``Discrete`` action (``act_dim`` = the number of actions)."""
    from gymnasium import spaces
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
        raise ConfigError("the agents need a flat Box observation space, this env has %s" % (obs_space,))
    if isinstance(act_space, spaces.Discrete):
        return int(obs_space.shape[0]), int(act_space.n), True
    if isinstance(act_space, spaces.Box) and len(act_space.shape) == 1:
        return int(obs_space.shape[0]), int(act_space.shape[0]), False
    raise ConfigError("the agents need a Discrete or a flat Box action space, this env has %s" % (act_space,))


def make_gym_env(env_id: str, gui: bool = False) -> Any:
    """``gymnasium.make(env_id)`` ready for the agents: a bounded ``Box`` action space is rescaled to [-1, 1] (the
    agents' action units), so e.g. Pendulum's torque range [-2, 2] N·m maps to [-1, 1]."""
    import gymnasium
    import numpy as np
    if env_id.startswith("op3_walk/"):
        import op3_walk.envs  # noqa: F401  (registers the op3_walk/... ids)
    try:
        env = gymnasium.make(env_id, render_mode="human" if gui else None)
    except gymnasium.error.Error as exc:
        raise ConfigError("cannot make gymnasium env %r: %s" % (env_id, exc)) from None
    space = env.action_space
    if isinstance(space, gymnasium.spaces.Box):
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            env.close()
            raise ConfigError("env %r has an unbounded action space %s; the agents act in [-1, 1]" % (env_id, space))
        if not (np.all(space.low == -1.0) and np.all(space.high == 1.0)):
            ones = np.ones(space.shape, dtype=np.float32)
            env = gymnasium.wrappers.RescaleAction(env, -ones, ones)
    return env


def build_agent(algo: str, obs_dim: int, act_dim: int, agent_config: str = "", seed: int = 0) -> Any:
    """The agent for ``algo`` configured from ``agent_config`` (default ``config/agents/<algo>.yaml``).

    ``act_dim`` is the action vector's length, or the number of actions for a discrete agent (DQN).
    """
    try:
        agent_cls, config_cls = agent_classes(algo)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return agent_cls(obs_dim, act_dim, load(config_cls, agent_config or "agents/%s.yaml" % algo), seed=seed)


def build_agent_for_env(algo: str, env: Any, agent_config: str = "", seed: int = 0) -> Any:
    """:func:`build_agent` sized from ``env``'s spaces; a discrete agent on a continuous env (or the reverse) is a
    ``ConfigError`` naming both."""
    try:
        discrete_agent = wants_discrete(algo)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    obs_dim, act_dim, discrete_env = space_dims(env)
    if discrete_agent != discrete_env:
        raise ConfigError("%s needs a %s action space; this env has %s"
                          % (algo, "Discrete" if discrete_agent else "Box (continuous)", env.action_space))
    return build_agent(algo, obs_dim, act_dim, agent_config, seed)


class TimedEnv:
    """The env, with the seconds spent inside ``step()`` counted per episode (zeroed by ``reset``).

    The rest of an episode's wall time is the learner's: acting, storing and gradient updates.
    """

    def __init__(self, env: Any):
        self.env = env
        self.step_time = 0.0
        self.steps = 0

    def reset(self, **kwargs: Any) -> Any:
        self.step_time, self.steps = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            self.step_time += time.perf_counter() - start
            self.steps += 1

    def __getattr__(self, name: str) -> Any:
        if name in ("step_async", "step_wait") and hasattr(self.env, name):
            return getattr(self, "_timed_" + name)
        return getattr(self.env, name)

    def _timed_step_async(self, action: Any) -> None:
        self._sent = time.perf_counter()
        self.env.step_async(action)

    def _timed_step_wait(self) -> Any:
        try:
            return self.env.step_wait()
        finally:
            self.step_time += time.perf_counter() - self._sent
            self.steps += 1


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state dict: about what they take in a checkpoint file."""
    import torch
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _mb(n: int) -> str:
    return "%.1f MB" % (n / 1e6) if n >= 1e5 else "%.0f kB" % (n / 1e3)


class RunExistsError(ConfigError):
    """A fresh (not resumed) session was pointed at a folder that already holds a run."""


def existing_run(out_dir: str) -> List[str]:
    """The files of an earlier run in ``out_dir`` that a fresh session would overwrite or append to: a checkpoint,
    or an episode CSV with at least one episode row."""
    found = []
    checkpoint = os.path.join(out_dir, CHECKPOINT_NAME)
    if os.path.exists(checkpoint):
        found.append(checkpoint)
    csv_path = os.path.join(out_dir, CSV_NAME)
    if os.path.exists(csv_path):
        with open(csv_path, "r", newline="") as fh:
            if sum(1 for _ in zip(range(2), csv.reader(fh))) > 1:   # a header and at least one episode
                found.append(csv_path)
    return found


def refuse_existing_run(out_dir: str, discard_unsaved: bool = False, also: Sequence[str] = ()) -> None:
    """Raise :class:`RunExistsError` when a fresh session in ``out_dir`` would overwrite or append to an earlier run
    (:func:`existing_run`, plus those of the files ``also`` that exist, e.g. a recorded bag), naming the two ways on.
    ``discard_unsaved``: a run that logged episodes but saved no checkpoint does not count (see TrainingSession).
    Entry points that wait for something first (learner_node) call this before waiting."""
    out_dir = os.path.abspath(out_dir)
    found = existing_run(out_dir)
    if discard_unsaved and found == [os.path.join(out_dir, CSV_NAME)]:
        found = []
    found += [path for path in also if os.path.exists(path)]
    if found:
        raise RunExistsError(
            "%s already holds a training run (%s); a fresh start would overwrite it. Resume it (resume:=auto "
            "on the launch files, --resume %s on the command line), or give another output folder "
            "(out_dir:=... / --out-dir ...)" % (out_dir, ", ".join(os.path.basename(f) for f in found),
                                                os.path.join(out_dir, CHECKPOINT_NAME)))


def truncate_csv(path: str, episodes: int) -> int:
    """Keep the header and the rows of episodes ``1..episodes`` of an episode CSV (atomically); returns how many
    rows were dropped.  A run killed after its last checkpoint logged episodes the checkpoint does not know: a
    resumed run repeats them, so their rows go."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return 0
    with open(path, "r", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or "episode" not in rows[0]:
        return 0
    col = rows[0].index("episode")
    keep = [rows[0]] + [r for r in rows[1:] if len(r) > col and r[col].isdigit() and int(r[col]) <= episodes]
    dropped = len(rows) - len(keep)
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(keep)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return dropped


class TrainingSession:
    """Train ``agent`` on ``env`` (or a list of envs: several actors) and keep everything in ``out_dir``.

    ``out_dir`` receives ``episodes.csv`` (one row per episode, flushed), ``tb/`` (TensorBoard scalars, when
    ``tensorboard``), ``checkpoint.pt`` (atomic, periodic and final) and ``learning_curve.png`` (at the end).
    ``meta`` (robot and task, or a gymnasium ``env`` id, ...) is stored in the checkpoint and checked on ``resume``:
    a checkpoint of another robot, env, algorithm or observation/action size is refused.  Resuming into the folder
    the checkpoint came from drops CSV rows (and TensorBoard points) logged after that checkpoint, so a run killed
    between checkpoints continues without repeated episode numbers.

    A fresh session (no ``resume``) never writes into a folder that holds an earlier run (a checkpoint or logged
    episodes): it raises :class:`RunExistsError` before writing anything, naming the two ways on (resume, or another
    folder).  ``discard_unsaved`` lets a fresh start take over a folder whose run never saved a checkpoint (a
    learner restarted with ``resume: auto`` before its first checkpoint): its CSV rows are dropped, logged.

    ``log`` receives one line per checkpoint (size, replay memory size) and notes; default: stdout.
    """

    def __init__(self, agent: Any, env: Any, config: TrainConfig, out_dir: str, meta: Dict[str, Any],
                 resume: str = "", on_episode: Optional[List[Callable[[EpisodeRecord], None]]] = None,
                 should_stop: Optional[Callable[[], bool]] = None, progress: bool = False,
                 tensorboard: bool = True, log: Optional[Callable[[str], None]] = None,
                 discard_unsaved: bool = False):
        config.validate()
        self.agent = agent
        self.env = env
        self.config = config
        self.out_dir = os.path.abspath(out_dir)
        if not resume:
            refuse_existing_run(self.out_dir, discard_unsaved)
        os.makedirs(self.out_dir, exist_ok=True)
        self.meta = dict(meta, algo=agent.algo, obs_dim=agent.obs_dim, act_dim=agent.act_dim)
        self.meta.setdefault("git", git_version())   # the code this session runs (a resumed run: the new code)
        self.checkpoint_path = os.path.join(self.out_dir, CHECKPOINT_NAME)
        self.csv_path = os.path.join(self.out_dir, CSV_NAME)
        self.curve_path = os.path.join(self.out_dir, CURVE_NAME)
        self.tb_dir = os.path.join(self.out_dir, TB_DIR)
        self._log_fn = log
        self._saved: Optional[Tuple[int, int, int]] = None   # progress of the last checkpoint at checkpoint_path
        self._bar = None
        episodes_done = 0
        if resume:
            payload, _ = load_checkpoint(resume, expect={k: self.meta[k] for k in
                                                         ("robot", "task", "env", "algo", "obs_dim", "act_dim")
                                                         if k in self.meta})
            agent.load_state_dict(payload["agent"])
            episodes_done = int(payload.get("trainer", {}).get("episodes", 0))
            dropped = truncate_csv(self.csv_path, episodes_done)
            self.log("resumed from %s at env step %d, episode %d%s"
                     % (resume, agent.env_steps, episodes_done,
                        "; dropped %d CSV rows logged after that checkpoint" % dropped if dropped else ""))
        elif discard_unsaved:
            dropped = truncate_csv(self.csv_path, 0)
            if dropped:
                self.log("no checkpoint in %s: starting afresh, dropped the %d CSV rows of the run that saved none"
                         % (self.out_dir, dropped))
        self.csv = EpisodeCsv(self.csv_path, loss_keys=loss_columns(agent))
        self.tb: Optional[TensorBoardLog] = None
        if tensorboard:
            try:
                # points up to the checkpoint's env step stay; later ones (a killed run's) are hidden
                self.tb = TensorBoardLog(self.tb_dir, purge_step=agent.env_steps + 1 if resume else None)
            except ImportError as exc:
                self.log("no TensorBoard logs: %s (pip install tensorboard)" % exc)
        if progress:
            from tqdm import tqdm
            self._bar = tqdm(total=config.total_steps, initial=agent.env_steps, unit="step", dynamic_ncols=True,
                             file=sys.stdout, mininterval=0.5, smoothing=0.05)
        envs = list(env) if isinstance(env, (list, tuple)) else [env]
        self.timed_envs = [TimedEnv(e) for e in envs]
        self.timed_env = self.timed_envs[0]
        self._last_updates = agent.updates
        self.last_timing: Dict[str, float] = {}
        self.trainer = Trainer(agent, self.timed_envs if len(envs) > 1 else self.timed_env, config,
                               on_episode=[self._on_episode] + list(on_episode or []),
                               checkpoint=lambda trainer: self.save(), should_stop=should_stop,
                               on_step=self._tick if self._bar is not None else None,
                               episodes_done=episodes_done, log=self.log)

    def log(self, message: str) -> None:
        if self._log_fn is not None:
            self._log_fn(message)
        elif self._bar is not None:
            self._bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def _tick(self, trainer: Trainer) -> None:
        self._bar.update(trainer.agent.env_steps - self._bar.n)

    def timing(self, record: EpisodeRecord) -> Dict[str, float]:
        """Speeds of the episode just ended, measured apart: env-only steps/s (time inside ``env.step``) and
        learner updates/s (gradient updates over the rest of the episode's wall time: acting, storing, updating)."""
        env_time = self.timed_envs[record.actor].step_time
        updates = record.total_updates - self._last_updates
        self._last_updates = record.total_updates
        learner_time = record.wall_time - env_time
        return {
            "env_time_s": env_time,
            "env_only_steps_per_s": record.length / env_time if env_time > 0 else math.nan,
            "updates": float(updates),
            "updates_per_s": updates / learner_time if learner_time > 0 else math.nan,
        }

    def _on_episode(self, record: EpisodeRecord) -> None:
        timing = self.last_timing = self.timing(record)
        self.csv(record, timing)
        if self.tb is not None:
            self.tb(record, timing)
        if self._bar is not None:
            shown = {"ep": record.episode, "ret": "%.1f" % record.episode_return}
            if math.isfinite(record.distance):
                shown["dist"] = "%.2fm" % record.distance
            shown["sps"] = "%.0f" % record.env_steps_per_s
            if timing["updates"] > 0:
                shown["ups"] = "%.0f" % timing["updates_per_s"]
            self._bar.set_postfix(shown, refresh=False)

    def save(self, path: str = "") -> str:
        """Write a checkpoint (atomically) now and log its size; safe to call from another thread."""
        with self.trainer.lock:
            meta = dict(self.meta, env_steps=self.agent.env_steps, updates=self.agent.updates,
                        episodes=self.trainer.episodes)
            progress = (meta["env_steps"], meta["updates"], meta["episodes"])
            target = path or self.checkpoint_path
            if target == self.checkpoint_path and progress == self._saved and os.path.exists(target):
                return target   # e.g. the final checkpoint right after a periodic one: nothing new to write
            agent_state = self.agent.state_dict()
            payload = {"agent": agent_state, "trainer": {"episodes": self.trainer.episodes}}
            written = save_checkpoint(target, payload, meta)
            if target == self.checkpoint_path:
                self._saved = progress
        size = os.path.getsize(written)
        memory = agent_state.get("memory") if isinstance(agent_state, dict) else None
        if memory is None:
            buffer_note = "replay memory not saved"
        else:
            buffer_note = "replay memory %d transitions, %s" % (int(memory.get("size", 0)), _mb(_tensor_bytes(memory)))
        self.log("checkpoint %s at env step %d: %s (%s)" % (written, meta["env_steps"], _mb(size), buffer_note))
        return written

    def run(self) -> TrainSummary:
        """Train to ``config.total_steps`` (or until ``should_stop``), save, plot; returns the summary."""
        try:
            summary = self.trainer.run()
        finally:
            self.csv.close()
            if self.tb is not None:
                self.tb.close()
            if self._bar is not None:
                self._bar.close()
        if self.trainer.episodes > 0:
            what = self.meta.get("env") or self.meta.get("robot", "")
            plot_learning_curves([self.csv_path], self.curve_path,
                                 title="%s %s (%s)" % (self.meta.get("algo", ""), what,
                                                       time.strftime("%Y-%m-%d %H:%M")))
        return summary

    def describe(self, summary: TrainSummary) -> str:
        sps = summary.new_env_steps / summary.wall_time if summary.wall_time > 0 else 0.0
        return ("%d episodes, %d env steps, %d updates in %.1f s (%.0f env steps/s overall)%s; outputs in %s"
                % (summary.episodes, summary.env_steps, summary.updates, summary.wall_time, sps,
                   " [stopped early]" if summary.stopped_early else "", self.out_dir))
