"""``evaluate``: measure a walking policy over seeded episodes, nominally and under robustness gates, optionally
against the robot's open-loop reference gait.

Policy sources
    * an exported policy ``.npz`` (``op3_walk.policy.runtime.NumpyPolicy``): numpy only, torch is never imported;
    * a training checkpoint ``.pt``: the agent is rebuilt (``op3_walk.policy.export.load_agent``, torch) and acts
      with ``agent.act(obs, explore=False)``;
    * ``--reference``: the robot's open-loop reference gait, i.e. the ``residual_walk`` task (any task whose
      ``action.mode`` is ``residual``) driven with zero actions.  Its joint targets are then
      ``reference_gait(t + dt) + scale * 0``, exactly what ``play_gait`` sends; this is checked on the env before the
      first episode (``check_reference``) and said in the output.

Episodes
    Episode ``i`` of every gate uses env seed ``seed + i`` (the task's seeded reset noise), so every gate (and the
    reference, with ``--compare-reference``) sees the same seeds.  An episode lasts ``seconds`` of control steps
    (``round(seconds * control_rate_hz)``; the task's ``max_episode_steps`` is set to that) and ends early when the
    task says the robot fell.  The policy is deterministic and the simulation too (PyBullet rebuilds its world at
    every reset), so the same command gives the same numbers.

Gates
    The task's domain randomisation is switched off (``randomization.enabled = False``: no observation noise, no
    random pushes, no random latency, nominal physics from the env's point of view).  Each gate is then applied
    deterministically *from outside the env*, on the same seeds:

    ==============  ===========================================================================================
    nominal         the model as it is (``backend.set_dynamics()`` restores every default)
    friction_low    ground friction coefficient x0.8 of the nominal (PyBullet: 0.8 -> 0.64), ``set_dynamics``
    friction_high   x1.2 (0.8 -> 0.96)
    mass_low        every link's mass and inertia x0.8, ``set_dynamics(mass_scales=...)``
    mass_high       x1.2
    latency         1 control period of action latency: the env's own latency queue (what
                    ``randomization.latency_steps: [1, 1]`` gives), set on the env after each reset; the first
                    period holds the reset pose
    push            a ``push_force`` (15 N) horizontal push toward +y (the robot's left), at the torso's centre of
                    mass, starting at ``push_time_s`` (3 s) for ``push_duration_s`` (0.1 s): ``backend.push``
    push_forward    the same push toward +x (not in the default set)
    push_backward   the same push toward -x (not in the default set)
    ==============  ===========================================================================================

    Dynamics are set before each reset (they hold across resets in PyBullet) and restored to nominal at the end.
    Applying the gates through the backend rather than through randomisation ranges keeps the env's random number
    stream identical in every gate, so a gate's episodes differ from the nominal ones by the gate alone.

Metrics per episode (world frame, torso link origin), then mean, std (population), min and max over episodes
    speed (m/s): torso x displacement / elapsed time; distance (m): torso x displacement at the end (the fall or
    the horizon); falls: count and fraction (and the time of each fall); lateral drift (m): |y_end - y_start|;
    heading change (rad): |yaw_end - yaw_start| (wrapped); energy (J): sum over control periods of
    dt * sum_j |tau_j * qdot_j| from ``RobotState.joint_efforts`` and ``joint_velocities`` (sampled once per control
    period, at its last physics step); cost of transport: energy / (m g distance) with m the URDF's total mass times
    the gate's mass factor (only when distance > 0); max tilt (rad); return (the task's reward sum).

Exit status: 0 after the evaluation, 2 for a usage, configuration or policy/robot mismatch error.
"""
import argparse
import dataclasses
import json
import math
import os
import sys
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

STANDARD_GRAVITY = 9.81  # m/s^2 (as op3_walk.backends.base)
REFERENCE_TASK = "residual_walk"
DEFAULT_EPISODES = 20
DEFAULT_SECONDS = 10.0
PUSH_FORCE = 15.0       # N
PUSH_TIME_S = 3.0       # s after reset
PUSH_DURATION_S = 0.1   # s
FRICTION_LOW, FRICTION_HIGH = 0.8, 1.2  # factors on the nominal ground friction
MASS_LOW, MASS_HIGH = 0.8, 1.2          # factors on every link's mass and inertia

# metric -> (unit, what); the order of the summaries and of the JSON
METRICS = (
    ("speed", "m/s", "torso x displacement / elapsed time"),
    ("distance", "m", "torso x displacement at the end of the episode"),
    ("lateral_drift", "m", "|torso y displacement| at the end"),
    ("heading_change", "rad", "|torso yaw change| at the end"),
    ("energy", "J", "sum of |joint torque x joint velocity| dt"),
    ("cost_of_transport", "", "energy / (mass g distance), episodes with distance > 0"),
    ("max_tilt", "rad", "largest torso tilt from vertical"),
    ("return", "", "sum of the task's rewards"),
    ("seconds", "s", "simulated time of the episode"),
)


class EvaluateError(ValueError):
    """A policy cannot be evaluated as asked (unreadable file, wrong robot or task, bad gate)."""


# -- gates ---------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Gate:
    """One deterministic evaluation condition (see the module docstring)."""

    name: str
    description: str
    friction_scale: float = 1.0
    mass_scale: float = 1.0
    latency_steps: int = 0
    push_direction: Optional[Tuple[float, float, float]] = None  # unit vector, world frame; None = no push

    @property
    def changes_dynamics(self) -> bool:
        return self.friction_scale != 1.0 or self.mass_scale != 1.0


GATES: Dict[str, Gate] = {g.name: g for g in (
    Gate("nominal", "the nominal model"),
    Gate("friction_low", "ground friction x%g" % FRICTION_LOW, friction_scale=FRICTION_LOW),
    Gate("friction_high", "ground friction x%g" % FRICTION_HIGH, friction_scale=FRICTION_HIGH),
    Gate("mass_low", "all link masses x%g" % MASS_LOW, mass_scale=MASS_LOW),
    Gate("mass_high", "all link masses x%g" % MASS_HIGH, mass_scale=MASS_HIGH),
    Gate("latency", "1 control period of action latency", latency_steps=1),
    Gate("push", "lateral push toward +y (left)", push_direction=(0.0, 1.0, 0.0)),
    Gate("push_forward", "forward push toward +x", push_direction=(1.0, 0.0, 0.0)),
    Gate("push_backward", "backward push toward -x", push_direction=(-1.0, 0.0, 0.0)),
)}
DEFAULT_GATES = ("nominal", "friction_low", "friction_high", "mass_low", "mass_high", "latency", "push")


@dataclasses.dataclass(frozen=True)
class PushSpec:
    """The push of the push gates."""

    force: float = PUSH_FORCE            # N
    time_s: float = PUSH_TIME_S          # s after reset: the push starts with the first control period at/after it
    duration_s: float = PUSH_DURATION_S  # s


def parse_gates(text: str) -> List[str]:
    """Gate names from ``"nominal,push"`` (``"all"``: the default set, e.g. ``"all,push_backward"``);
    EvaluateError on an unknown or repeated one."""
    names = []  # type: List[str]
    for name in [n.strip() for n in text.split(",") if n.strip()] or ["all"]:
        names += [g for g in DEFAULT_GATES if g not in names] if name == "all" else [name]
    unknown = [n for n in names if n not in GATES]
    if unknown:
        raise EvaluateError("unknown gate(s) %s; known: %s" % (", ".join(unknown), ", ".join(GATES)))
    if len(set(names)) != len(names):
        raise EvaluateError("gate listed twice: %s" % text)
    return names


# -- policy sources ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PolicySource:
    """Something that acts: ``act(obs) -> action``, for ``robot`` on ``task`` (names or YAML paths)."""

    kind: str      # "npz", "checkpoint" or "reference"
    label: str     # one line for the report
    robot: str
    task: str
    act: Callable[[np.ndarray], Any]
    path: str = ""


def _robot_name(robot: str) -> str:
    from op3_walk.robots.description import load_robot
    try:
        return load_robot(robot).name
    except (ValueError, OSError) as exc:
        raise EvaluateError("cannot load robot %r: %s" % (robot, exc)) from None


def _check_robot(what: str, trained_for: str, robot: Optional[str]) -> str:
    if not trained_for:
        raise EvaluateError("%s was not trained on a walking robot (a gymnasium env); it cannot walk here" % what)
    if robot is not None and _robot_name(robot) != trained_for:
        raise EvaluateError("%s was trained for robot %s, not %s: evaluate it on --robot %s"
                            % (what, trained_for, _robot_name(robot), trained_for))
    return robot if robot is not None else trained_for


def reference_source(robot: str, task: Optional[str] = None) -> PolicySource:
    """The open-loop reference gait of ``robot``: ``task`` (default ``residual_walk``) with zero actions."""
    from op3_walk.envs.task import load_task
    task = task or REFERENCE_TASK
    try:
        mode = load_task(task).action.mode
    except (ValueError, OSError) as exc:
        raise EvaluateError("cannot load task %r: %s" % (task, exc)) from None
    if mode != "residual":
        raise EvaluateError("the reference gait is a residual task with zero actions; task %r has action mode %r"
                            % (task, mode))
    from op3_walk.robots.description import load_robot
    try:
        robot_cfg = load_robot(robot)
    except (ValueError, OSError) as exc:
        raise EvaluateError("cannot load robot %r: %s" % (robot, exc)) from None
    zero = np.zeros(robot_cfg.n_joints, dtype=np.float32)

    def act(obs: np.ndarray) -> np.ndarray:
        return zero

    return PolicySource("reference", "open-loop reference gait of %s (task %s, zero actions)" % (robot_cfg.name, task),
                        robot, task, act)


def load_source(path: str, robot: Optional[str] = None, task: Optional[str] = None) -> PolicySource:
    """A policy file: ``.npz`` (exported, torch-free) or a checkpoint (``.pt``, torch); checked against
    ``robot``/``task`` (default: what the policy was trained on).  EvaluateError when it does not fit."""
    if path.endswith(".npz"):
        from op3_walk.policy.runtime import NumpyPolicy, PolicyFileError, PolicyMismatchError
        try:
            policy = NumpyPolicy(path)
        except PolicyFileError as exc:
            raise EvaluateError(str(exc)) from None
        what = "policy %s" % path
        robot = _check_robot(what, policy.robot, robot)
        task = task or policy.task
        try:
            policy.check_compatible(robot, task)
        except PolicyMismatchError as exc:
            raise EvaluateError(str(exc)) from None
        except (ValueError, OSError) as exc:
            raise EvaluateError("cannot load robot %r / task %r: %s" % (robot, task, exc)) from None
        return PolicySource("npz", policy.describe(), robot, task, policy.act, path)
    from op3_walk.policy.export import ExportError, checkpoint_interface, load_agent  # torch from here on
    from op3_walk.training.checkpoint import CheckpointError
    try:
        agent, meta = load_agent(path)
    except (CheckpointError, ExportError) as exc:
        raise EvaluateError(str(exc)) from None
    what = "checkpoint %s" % path
    robot = _check_robot(what, str(meta.get("robot") or ""), robot)
    try:
        iface = checkpoint_interface(meta, robot, task)
    except ExportError as exc:
        raise EvaluateError("%s: %s" % (what, exc)) from None
    task = task or iface.task

    def act(obs: np.ndarray) -> Any:
        return agent.act(obs, explore=False)

    label = "%s checkpoint %s for robot %s, task %s, %d env steps" % (meta["algo"], path, meta["robot"], task,
                                                                     int(meta.get("env_steps", 0)))
    return PolicySource("checkpoint", label, robot, task, act, path)


# -- one episode ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EpisodeResult:
    """What one episode measured (see ``METRICS``)."""

    seed: int
    steps: int
    seconds: float
    fell: bool
    fell_at: Optional[float]     # s, None: did not fall
    distance: float
    speed: float
    lateral_drift: float
    lateral_displacement: float  # signed y displacement, m
    heading_change: float
    heading_change_signed: float  # rad
    energy: float
    cost_of_transport: Optional[float]
    max_tilt: float
    return_: float

    def value(self, metric: str) -> Optional[float]:
        return self.return_ if metric == "return" else getattr(self, metric)

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["return"] = d.pop("return_")
        return d


def yaw_of(q: Sequence[float]) -> float:
    """Yaw (rad) of quaternion x, y, z, w."""
    x, y, z, w = (float(v) for v in q)
    return math.atan2(2.0 * (x * y + w * z), 1.0 - 2.0 * (y * y + z * z))


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def urdf_mass(urdf_path: str) -> Optional[float]:
    """Total mass (kg) of the links of a URDF, None if it cannot be read."""
    try:
        root = ElementTree.parse(urdf_path).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    total = 0.0
    for mass in root.iter("mass"):
        try:
            total += float(mass.get("value", "0"))
        except ValueError:
            return None
    return total if total > 0.0 else None


def _set_gate_dynamics(backend: Any, gate: Gate, nominal_friction: float) -> None:
    try:
        if gate.changes_dynamics:
            backend.set_dynamics(ground_friction=nominal_friction * gate.friction_scale,
                                 mass_scales=[gate.mass_scale] * len(backend.link_names), kp_scales=None)
        else:
            backend.set_dynamics()
    except NotImplementedError as exc:
        if gate.changes_dynamics:
            raise EvaluateError("gate %s needs a backend that can change its physics: %s" % (gate.name, exc)) from None


def run_episode(env: Any, act: Callable[[np.ndarray], Any], gate: Gate, seed: int, steps: int,
                push: PushSpec = PushSpec(), nominal_friction: Optional[float] = None,
                mass: Optional[float] = None) -> EpisodeResult:
    """One deterministic episode of ``act`` on ``env`` (a ``WalkEnv`` with randomisation off) under ``gate``.

    ``mass``: the robot's nominal total mass (kg) for the cost of transport (None: not computed).
    """
    if nominal_friction is None:
        nominal_friction = default_friction()
    backend = env.backend
    _set_gate_dynamics(backend, gate, nominal_friction)
    obs, info = env.reset(seed=seed)
    env.latency_steps = gate.latency_steps  # the env's own latency queue (reset cleared it)
    dt = env.robot.control_period_s
    state = info["state"]
    start = np.array(state.base_position, dtype=float)
    yaw0 = yaw_of(state.base_orientation)
    push_step = int(math.ceil(push.time_s / dt - 1e-9)) if gate.push_direction is not None else -1
    energy, total, max_tilt, fell, done = 0.0, 0.0, state.tilt(), False, 0
    for k in range(steps):
        if k == push_step and push.force > 0.0 and push.duration_s > 0.0:
            backend.push(tuple(push.force * c for c in gate.push_direction), push.duration_s)
        obs, reward, terminated, truncated, info = env.step(act(obs))
        state = info["state"]
        done = k + 1
        total += reward
        energy += dt * float(np.sum(np.abs(np.asarray(state.joint_efforts) * np.asarray(state.joint_velocities))))
        max_tilt = max(max_tilt, state.tilt())
        if terminated:
            fell = bool(info.get("fell", True))
            break
        if truncated:
            break
    seconds = done * dt
    end = np.asarray(state.base_position, dtype=float)
    distance = float(end[0] - start[0])
    dy = float(end[1] - start[1])
    heading = _wrap(yaw_of(state.base_orientation) - yaw0)
    cot = None
    if mass is not None and distance > 0.0:
        cot = energy / (mass * gate.mass_scale * STANDARD_GRAVITY * distance)
    return EpisodeResult(seed=seed, steps=done, seconds=seconds, fell=fell, fell_at=seconds if fell else None,
                         distance=distance, speed=distance / seconds if seconds > 0.0 else 0.0,
                         lateral_drift=abs(dy), lateral_displacement=dy, heading_change=abs(heading),
                         heading_change_signed=heading, energy=energy, cost_of_transport=cot, max_tilt=max_tilt,
                         return_=total)


def default_friction() -> float:
    """The simulator's nominal ground friction coefficient."""
    from op3_walk.backends.pybullet_backend import GROUND_FRICTION
    return GROUND_FRICTION


# -- a whole evaluation --------------------------------------------------------------------------------------------
def summarize(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """mean, std (population), min, max and n of the values that are not None."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
            "n": int(v.size)}


@dataclasses.dataclass
class Evaluation:
    """Episodes per gate, for one policy source."""

    label: str
    kind: str
    robot: str
    task: str
    seeds: List[int]
    seconds: float
    steps: int
    control_rate_hz: float
    push: PushSpec
    gates: Dict[str, List[EpisodeResult]] = dataclasses.field(default_factory=dict)
    notes: List[str] = dataclasses.field(default_factory=list)

    def summary(self, gate: str) -> Dict[str, Any]:
        episodes = self.gates[gate]
        out = {m: summarize([e.value(m) for e in episodes]) for m, _, _ in METRICS}
        falls = sum(e.fell for e in episodes)
        out["falls"] = {"count": falls, "fraction": falls / len(episodes) if episodes else 0.0,
                        "times": [e.fell_at for e in episodes if e.fell]}
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"label": self.label, "kind": self.kind, "robot": self.robot, "task": self.task, "seeds": self.seeds,
                "seconds": self.seconds, "steps": self.steps, "control_rate_hz": self.control_rate_hz,
                "push": dataclasses.asdict(self.push), "notes": self.notes,
                "gates": {name: {"description": GATES[name].description, "summary": self.summary(name),
                                 "episodes": [e.to_dict() for e in eps]} for name, eps in self.gates.items()}}


def make_env(robot: str, task: str, steps: int, backend: Any = None) -> Any:
    """A ``WalkEnv`` for evaluation: ``task`` with randomisation off and ``max_episode_steps = steps``."""
    from op3_walk.envs.task import load_task
    from op3_walk.envs.walk_env import WalkEnv
    from op3_walk.robots.description import load_robot
    try:
        robot_cfg = load_robot(robot)
        task_cfg = load_task(task)
    except (ValueError, OSError) as exc:
        raise EvaluateError("cannot load robot %r / task %r: %s" % (robot, task, exc)) from None
    task_cfg = dataclasses.replace(task_cfg, max_episode_steps=steps,
                                   randomization=dataclasses.replace(task_cfg.randomization, enabled=False))
    return WalkEnv(robot=robot_cfg, task=task_cfg, backend=backend)


def check_reference(env: Any, task_name: str = "", samples: int = 25) -> None:
    """EvaluateError unless a zero action on ``env`` gives the reference gait's own joint targets."""
    gait = env.gait
    if env.task.action.mode != "residual" or gait is None:
        raise EvaluateError("the reference gait needs a residual task, not action mode %r" % env.task.action.mode)
    zero = np.zeros(env.robot.n_joints)
    for k in range(samples):
        t = 0.1 * k
        if not np.array_equal(env.action_map.targets(zero, t), gait.joint_targets(t)):
            raise EvaluateError("a zero action on task %s is not the reference gait at t = %g s" % (task_name, t))


def steps_for(robot: str, seconds: float) -> int:
    from op3_walk.robots.description import load_robot
    if not seconds > 0.0:
        raise EvaluateError("--seconds must be positive")
    return max(1, int(round(seconds * load_robot(robot).control_rate_hz)))


def evaluate(source: PolicySource, gates: Sequence[str] = DEFAULT_GATES, episodes: int = DEFAULT_EPISODES,
             seed: int = 0, seconds: float = DEFAULT_SECONDS, push: PushSpec = PushSpec(), backend: Any = None,
             nominal_friction: Optional[float] = None,
             log: Optional[Callable[[str], None]] = None) -> Evaluation:
    """Run ``episodes`` seeded episodes (seeds ``seed .. seed + episodes - 1``) of ``source`` under each gate.

    ``backend``: the robot backend to drive (default: a new PyBullet one, closed at the end); its dynamics are
    restored to nominal at the end.  ``nominal_friction``: the ground friction the friction gates scale (default:
    PyBullet's).
    """
    if episodes < 1:
        raise EvaluateError("--episodes must be at least 1")
    for name in gates:
        if name not in GATES:
            raise EvaluateError("unknown gate %r; known: %s" % (name, ", ".join(GATES)))
    steps = steps_for(source.robot, seconds)
    env = make_env(source.robot, source.task, steps, backend)
    try:
        result = Evaluation(label=source.label, kind=source.kind, robot=env.robot.name, task=source.task,
                            seeds=[seed + i for i in range(episodes)], seconds=steps * env.robot.control_period_s,
                            steps=steps, control_rate_hz=env.robot.control_rate_hz, push=push)
        if source.kind == "reference":
            check_reference(env, source.task)
            result.notes.append("reference gait = task %s with zero actions: joint targets = reference_gait(t) "
                                "exactly (checked), the open-loop gait play_gait plays; with the task's "
                                "seeded reset noise of %g rad" % (source.task, env.task.reset_noise))
        if nominal_friction is None:
            nominal_friction = default_friction()
        mass = urdf_mass(env.robot.urdf_path)
        for name in gates:
            gate = GATES[name]
            result.gates[name] = [run_episode(env, source.act, gate, s, steps, push, nominal_friction, mass)
                                  for s in result.seeds]
            if log is not None:
                s = result.summary(name)
                log("%s %s: speed %.3f m/s, falls %d/%d" % (source.kind, name, s["speed"]["mean"],
                                                           s["falls"]["count"], episodes))
        return result
    finally:
        try:
            env.backend.set_dynamics()
        except NotImplementedError:
            pass
        if backend is None:
            env.backend.close()
        env.close()


def speed_ratios(policy: Evaluation, reference: Evaluation) -> Dict[str, Optional[float]]:
    """Per gate: mean policy speed / mean reference speed (None when the reference does not move forward)."""
    out = {}
    for name in policy.gates:
        if name not in reference.gates:
            continue
        p = policy.summary(name)["speed"]["mean"]
        r = reference.summary(name)["speed"]["mean"]
        out[name] = p / r if (p is not None and r is not None and r > 0.0) else None
    return out


# -- report --------------------------------------------------------------------------------------------------------
def _fmt(s: Dict[str, Optional[float]], digits: int = 3, with_min: bool = False) -> str:
    if s["mean"] is None:
        return "-"
    text = "%.*f ± %.*f" % (digits, s["mean"], digits, s["std"])
    if with_min:
        text += " (min %.*f)" % (digits, s["min"])
    return text


def markdown_table(ev: Evaluation) -> str:
    lines = ["| gate | speed m/s | distance m | falls | lateral drift m | heading change rad | energy J | "
             "cost of transport |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ev.gates:
        s = ev.summary(name)
        n = len(ev.gates[name])
        lines.append("| %s | %s | %s | %d/%d | %s | %s | %s | %s |" % (
            name, _fmt(s["speed"], 3, True), _fmt(s["distance"], 3, True), s["falls"]["count"], n,
            _fmt(s["lateral_drift"]), _fmt(s["heading_change"]), _fmt(s["energy"], 1),
            _fmt(s["cost_of_transport"], 2)))
    return "\n".join(lines)


def _header(ev: Evaluation) -> str:
    seeds = ev.seeds
    lines = ["**%s**" % ev.label, "",
             "robot %s, task %s; %d episodes (seeds %d-%d), %.1f s each (%d control steps at %g Hz) unless it "
             "falls; deterministic policy; randomisation off." % (ev.robot, ev.task, len(seeds), seeds[0],
                                                                   seeds[-1], ev.seconds, ev.steps,
                                                                   ev.control_rate_hz)]
    if any(GATES[g].push_direction is not None for g in ev.gates):
        lines.append("Push gates: %g N at t = %g s for %g s at the torso's centre of mass (push: +y, left)."
                     % (ev.push.force, ev.push.time_s, ev.push.duration_s))
    lines += ["Note: %s." % note for note in ev.notes]
    return "\n".join(lines)


def format_report(policy: Evaluation, reference: Optional[Evaluation] = None) -> str:
    parts = ["## evaluate", "", _header(policy), "", markdown_table(policy)]
    if reference is not None:
        parts += ["", "### reference", "", _header(reference), "", markdown_table(reference), "",
                  "### policy / reference", "",
                  "| gate | policy m/s | reference m/s | speed ratio | policy falls | reference falls |",
                  "|---|---|---|---|---|---|"]
        ratios = speed_ratios(policy, reference)
        for name, ratio in ratios.items():
            p, r = policy.summary(name), reference.summary(name)
            parts.append("| %s | %s | %s | %s | %d/%d | %d/%d |" % (
                name, _fmt(p["speed"]), _fmt(r["speed"]), "-" if ratio is None else "%.2f" % ratio,
                p["falls"]["count"], len(policy.gates[name]), r["falls"]["count"], len(reference.gates[name])))
    return "\n".join(parts) + "\n"


def report_dict(policy: Evaluation, reference: Optional[Evaluation] = None) -> Dict[str, Any]:
    out = {"policy": policy.to_dict(), "metrics": {m: {"unit": u, "meaning": w} for m, u, w in METRICS}}
    if reference is not None:
        out["reference"] = reference.to_dict()
        out["speed_ratio"] = speed_ratios(policy, reference)
    return out


# -- command line --------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="evaluate",
        description="Evaluate a walking policy (exported .npz, checkpoint .pt, or the open-loop reference gait) over "
                    "seeded deterministic episodes, nominally and under robustness gates; Markdown on stdout.")
    parser.add_argument("policy", nargs="?", default="", help="exported policy (.npz, torch-free) or checkpoint (.pt)")
    parser.add_argument("--reference", action="store_true",
                        help="evaluate the robot's open-loop reference gait (task residual_walk, zero actions)")
    parser.add_argument("--robot", default=None, help="robot config name or YAML path (default: the policy's)")
    parser.add_argument("--task", default=None, help="task config name or YAML path (default: the policy's; "
                                                     "--reference: residual_walk)")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES, help="episodes per gate (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="episode i uses env seed SEED + i (default 0)")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                        help="simulated seconds per episode, ended early by a fall (default 10)")
    parser.add_argument("--gates", default=",".join(DEFAULT_GATES),
                        help="comma-separated gates, or 'all' (default: %s; also: push_forward, push_backward)"
                             % ",".join(DEFAULT_GATES))
    parser.add_argument("--push-force", type=float, default=PUSH_FORCE, help="push gates: force, N (default 15)")
    parser.add_argument("--push-time", type=float, default=PUSH_TIME_S, help="push gates: start, s (default 3)")
    parser.add_argument("--push-duration", type=float, default=PUSH_DURATION_S,
                        help="push gates: duration, s (default 0.1)")
    parser.add_argument("--compare-reference", action="store_true",
                        help="also evaluate the reference gait on the same robot, seeds and gates; print the ratio")
    parser.add_argument("--json", default="", metavar="FILE", help="write every number (and each episode) here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if bool(args.policy) == args.reference:
        parser.error("give a policy file or --reference (one of them)")
    if args.reference and args.compare_reference:
        parser.error("--compare-reference compares a policy with the reference gait; --reference is that gait")
    if args.reference and args.robot is None:
        parser.error("--reference needs --robot")
    if args.push_force < 0.0 or args.push_time < 0.0 or args.push_duration < 0.0:
        parser.error("push force, time and duration must not be negative")

    def log(message: str) -> None:
        if not args.quiet:
            print("evaluate: %s" % message, file=sys.stderr, flush=True)

    try:
        gates = parse_gates(args.gates)
        if args.reference:
            source = reference_source(args.robot, args.task)
        else:
            source = load_source(args.policy, args.robot, args.task)
        push = PushSpec(args.push_force, args.push_time, args.push_duration)
        common = dict(gates=gates, episodes=args.episodes, seed=args.seed, seconds=args.seconds, push=push, log=log)
        result = evaluate(source, **common)
        reference = evaluate(reference_source(source.robot), **common) if args.compare_reference else None
    except EvaluateError as exc:
        print("evaluate: error: %s" % exc, file=sys.stderr)
        return 2
    sys.stdout.write(format_report(result, reference))
    sys.stdout.flush()
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(report_dict(result, reference), fh, indent=1, sort_keys=False)
            fh.write("\n")
        log("wrote %s" % args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
