"""The safety layer between every policy and every real robot backend: ``SafeBackend`` wraps a ``Backend``.

Whatever drives a real robot (controller_node, policy_node, a deploy script) talks to ``SafeBackend(inner, robot,
config)`` instead of the inner backend.  It passes commands on only after these checks, each counted in
``stats()`` and reported to every callable in ``on_intervention`` as ``(kind, detail)``:

1. joint-limit clamp: targets are clamped to [lower + margin, upper - margin]; a command of the wrong size or with
   a NaN/inf is rejected (the inner backend keeps holding the last safe targets) and does not count as a fresh
   command for the watchdog;
2. slew limit: each target moves at most ``max_velocity`` x dt from the last target sent, dt = the real time since
   that send, capped at ``slew_dt_max_periods`` control periods (a long pause allows no jump);
3. watchdog, checked on every ``step()`` (and ``poll()``): no accepted command for ``watchdog_hold_s`` -> hold the
   last targets; ``watchdog_relax_s`` later -> relax (limp where the inner backend can, else go to stance);
4. latched e-stop: ``estop(reason)`` relaxes or holds (``estop_action``) at once and ignores commands until
   ``reset_estop()`` succeeds (refused while the IMU says the robot is not upright);
5. fall detection from the IMU (tilt, optionally angular rate), checked on every reading: acts per
   ``fall_action`` and latches like an e-stop (reason "fall: ...");
6. safe start: the first command after start, reset, relax or an e-stop reset ramps the robot from its present
   measured pose to the stance (or to the commanded targets) over ``start_ramp_s``; safe shutdown: ``close()``
   ramps to the rest pose over ``shutdown_ramp_s``, relaxes, then closes the inner backend;
7. shadow mode: the policy runs on the real sensors but its targets never reach the inner backend (which holds the
   stance or stays relaxed); what would have been sent (after clamp and slew) is logged in memory and optionally
   to a CSV file (``read_shadow_csv``).

Time comes from the injected ``clock`` (and ``sleep``, used only by the shutdown ramp), so tests run on a fake
clock.  ``apply``/``step`` (the control loop) and ``estop`` (a service thread) may race: one lock serialises every
call into the inner backend; callbacks run after the lock is released.  Never imports rospy or torch.
"""
import collections
import dataclasses
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from op3_walk.backends.base import Backend, RobotState
from op3_walk.config import ConfigError, doc, from_dict, load_yaml, resolve
from op3_walk.robots.description import RobotConfig

LOG = logging.getLogger(__name__)

SAFETY_CONFIG = "hardware/safety.yaml"   # relative to config/
STATES = ("idle", "ramping", "running", "holding", "relaxed", "estopped", "fallen", "closing", "closed")
ESTOP_ACTIONS = ("relax", "hold")
FALL_ACTIONS = ("relax", "torque_off", "hold")
RAMP_TARGETS = ("stance", "command")
SHADOW_INNER = ("stance", "relax")
COUNTERS = ("commands", "clamped_commands", "slew_limited_commands", "rejected_commands", "ignored_commands",
            "watchdog_holds", "watchdog_relaxes", "estops", "estop_resets", "estop_reset_refusals", "falls",
            "shadow_commands", "start_ramps", "callback_errors")
_RAMP_SLACK = 1.01   # ramps last 1 % longer than the velocity caps need, so the slew limit never binds on them
_EPS = 1e-9          # rad: a target moved less than this by a limit is not counted as limited


@dataclasses.dataclass
class SafetyConfig:
    """SafeBackend settings (``config/hardware/safety.yaml``); SI units, angles in rad."""

    limit_margin_rad: float = doc("targets are clamped to [lower + margin, upper - margin] of each joint, rad", 0.02)
    max_velocity_fraction: float = doc("slew limit of every joint as a fraction of its velocity limit in the robot "
                                       "config (0 < f <= 1)", 0.5)
    max_velocity: Dict[str, float] = doc("per-joint slew limits that replace the fraction, joint name -> rad/s",
                                         default_factory=dict)
    slew_dt_max_periods: float = doc("the slew limit's dt (real time since the last target sent) is capped at this "
                                     "many control periods, so a pause allows no jump", 2.0)
    watchdog_hold_s: float = doc("s without an accepted command before the last targets are held (watchdog)", 0.1)
    watchdog_relax_s: float = doc("s of holding after that before the robot is relaxed (limp where the backend "
                                  "can, else it goes to its stance)", 2.0)
    estop_action: str = doc("what estop() does at once: relax (limp; hold where the backend cannot relax) or hold "
                            "(keep the last targets)", "relax")
    fall_tilt_rad: float = doc("fallen when the torso tilts more than this from vertical, any direction, rad",
                               1.0)
    fall_rate_rad_s: float = doc("also fallen when the IMU's angular rate exceeds this, rad/s; 0 = not checked",
                                 0.0)
    fall_action: str = doc("on a fall: relax (limp; hold where the backend cannot relax), torque_off (limp; a "
                           "backend that cannot relax is refused at start) or hold (keep the last targets)",
                           "relax")
    reset_max_tilt_rad: float = doc("reset_estop() is refused while the torso tilts more than this, rad", 0.35)
    start_ramp_s: float = doc("safe start: s to ramp from the measured pose to the target (longer when the slew "
                              "limit needs it); 0 = no ramp (only the slew limit)", 2.0)
    start_ramp_to: str = doc("safe start ramps to: stance (then the policy's targets pass, slew limited) or "
                             "command (the policy's latest targets)", "stance")
    shutdown_ramp_s: float = doc("close(): s to ramp from the last targets to the rest pose before relaxing "
                                 "(longer when the slew limit needs it)", 2.0)
    rest_pose: Dict[str, float] = doc("close() rest pose: joint name -> rad; joints not named rest at their stance",
                                      default_factory=dict)
    shadow: bool = doc("shadow mode: the policy's targets never reach the robot; they are logged instead", False)
    shadow_inner: str = doc("shadow mode: the robot holds its stance (after a safe-start ramp) or stays relaxed "
                            "(relax)", "stance")
    shadow_log_size: int = doc("shadow mode: commands kept in memory (the oldest are dropped)", 10000)
    shadow_csv: str = doc("shadow mode: also write every would-be command to this CSV file (time_s, step, one "
                          "column per joint); empty = no file", "")

    def validate(self) -> None:
        if not self.limit_margin_rad >= 0.0:
            raise ValueError("limit_margin_rad must be >= 0")
        if not 0.0 < self.max_velocity_fraction <= 1.0:
            raise ValueError("max_velocity_fraction must lie in (0, 1]")
        bad = sorted(name for name, v in self.max_velocity.items() if not v > 0.0)
        if bad:
            raise ValueError("max_velocity must be > 0 rad/s for: %s" % ", ".join(bad))
        if not self.slew_dt_max_periods >= 1.0:
            raise ValueError("slew_dt_max_periods must be >= 1")
        if not self.watchdog_hold_s > 0.0 or not self.watchdog_relax_s >= 0.0:
            raise ValueError("watchdog_hold_s must be > 0 and watchdog_relax_s >= 0")
        for key, value, allowed in (("estop_action", self.estop_action, ESTOP_ACTIONS),
                                    ("fall_action", self.fall_action, FALL_ACTIONS),
                                    ("start_ramp_to", self.start_ramp_to, RAMP_TARGETS),
                                    ("shadow_inner", self.shadow_inner, SHADOW_INNER)):
            if value not in allowed:
                raise ValueError("%s must be one of %s, got %r" % (key, ", ".join(allowed), value))
        if not 0.0 < self.fall_tilt_rad < math.pi:
            raise ValueError("fall_tilt_rad must lie in (0, pi)")
        if not self.fall_rate_rad_s >= 0.0:
            raise ValueError("fall_rate_rad_s must be >= 0")
        if not 0.0 < self.reset_max_tilt_rad <= self.fall_tilt_rad:
            raise ValueError("reset_max_tilt_rad must lie in (0, fall_tilt_rad]")
        if not self.start_ramp_s >= 0.0 or not self.shutdown_ramp_s >= 0.0:
            raise ValueError("start_ramp_s and shutdown_ramp_s must be >= 0")
        if self.shadow_log_size < 1:
            raise ValueError("shadow_log_size must be >= 1")


def load_safety_config(robot: Union[str, RobotConfig], path: str = SAFETY_CONFIG,
                       overrides: Optional[Mapping[str, Any]] = None) -> SafetyConfig:
    """``SafetyConfig`` for ``robot`` (a name or a RobotConfig) from ``path``: its ``defaults`` mapping updated by
    ``robots.<name>`` (when present), then by ``overrides``.  Unknown keys raise ``ConfigError``."""
    name = robot.name if isinstance(robot, RobotConfig) else str(robot)
    where = resolve(path)
    data = load_yaml(path)
    unknown = sorted(set(data) - {"defaults", "robots"})
    if unknown:
        raise ConfigError("%s: unknown top-level key(s) %s; allowed: defaults, robots" % (where, ", ".join(unknown)))
    defaults = data.get("defaults") or {}
    robots = data.get("robots") or {}
    section = robots.get(name) or {} if isinstance(robots, Mapping) else None
    if not isinstance(defaults, Mapping) or not isinstance(robots, Mapping) or not isinstance(section, Mapping):
        raise ConfigError("%s: defaults, robots and robots.%s must be mappings" % (where, name))
    merged = dict(defaults)
    merged.update(section)
    merged.update(overrides or {})
    return from_dict(SafetyConfig, merged, where="%s (robot %s)" % (where, name))


class ShadowRecord(NamedTuple):
    """One command that shadow mode kept from the robot."""

    time: float          # s since the SafeBackend was built (its clock)
    step: int            # step() calls since the SafeBackend was built
    targets: np.ndarray  # rad, robot joint order, after clamp and slew limit


class ShadowLog(NamedTuple):
    """A shadow CSV file read back."""

    joint_names: Tuple[str, ...]
    time: np.ndarray      # (n,) s
    step: np.ndarray      # (n,) int
    targets: np.ndarray   # (n, n_joints) rad


def read_shadow_csv(path: str) -> ShadowLog:
    """Read a file written by shadow mode (``shadow_csv``)."""
    with open(path, "r") as fh:
        header = fh.readline().strip().split(",")
        if header[:2] != ["time_s", "step"]:
            raise ValueError("%s is not a shadow log (header %r)" % (path, header[:2]))
        rows = [line.strip().split(",") for line in fh if line.strip()]
    names = tuple(header[2:])
    data = np.array(rows, dtype=np.float64).reshape(len(rows), len(header))
    return ShadowLog(names, data[:, 0], data[:, 1].astype(np.int64), data[:, 2:])


class _Ramp:
    """Straight line from ``start`` to ``end`` over ``duration`` s from ``t0``; ``end`` None = the latest command."""

    def __init__(self, start: np.ndarray, end: Optional[np.ndarray], t0: float, duration: float):
        self.start, self.end, self.t0, self.duration = start, end, t0, duration

    def point(self, now: float, command: Optional[np.ndarray]) -> Tuple[np.ndarray, bool]:
        alpha = 1.0 if self.duration <= 0.0 else min(max((now - self.t0) / self.duration, 0.0), 1.0)
        end = self.end if self.end is not None else (command if command is not None else self.start)
        return self.start + alpha * (end - self.start), alpha >= 1.0


class SafeBackend(Backend):
    """``inner`` behind joint-limit, slew, watchdog, e-stop, fall, safe start/shutdown and shadow protection."""

    def __init__(self, inner: Backend, robot: Optional[RobotConfig] = None, config: Optional[SafetyConfig] = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.inner = inner
        self.robot = robot if robot is not None else inner.robot
        self.config = config if config is not None else SafetyConfig()
        self.config.validate()
        cfg, robot = self.config, self.robot
        inner_robot = getattr(inner, "robot", None)
        if inner_robot is not None and tuple(inner_robot.joint_names) != tuple(robot.joint_names):
            raise ValueError("the inner backend drives joints %s, not the robot's %s"
                             % (inner_robot.joint_names, robot.joint_names))
        self._clock, self._sleep = clock, sleep
        names = robot.joint_names
        self._lower = robot.lower + cfg.limit_margin_rad
        self._upper = robot.upper - cfg.limit_margin_rad
        narrow = [n for n, lo, hi in zip(names, self._lower, self._upper) if not lo < hi]
        if narrow:
            raise ValueError("limit_margin_rad %g leaves no range for: %s" % (cfg.limit_margin_rad, ", ".join(narrow)))
        for key in ("max_velocity", "rest_pose"):
            unknown = sorted(set(getattr(cfg, key)) - set(names))
            if unknown:
                raise ValueError("%s names unknown joint(s) of %s: %s" % (key, robot.name, ", ".join(unknown)))
        self.max_velocity = np.array([cfg.max_velocity.get(n, cfg.max_velocity_fraction * v)
                                      for n, v in zip(names, robot.velocity)])
        self.stance = self._clip(robot.stance)
        rest = np.array([cfg.rest_pose.get(n, s) for n, s in zip(names, robot.stance)])
        outside = [n for n, r, lo, hi in zip(names, rest, self._lower, self._upper) if not lo <= r <= hi]
        if outside:
            raise ValueError("rest_pose outside the joint limits (less the margin) for: %s" % ", ".join(outside))
        self.rest_pose = rest
        self._period = robot.control_period_s
        self._dt_max = cfg.slew_dt_max_periods * self._period
        self._can_relax = getattr(type(inner), "relax", None) is not Backend.relax
        if cfg.fall_action == "torque_off" and not self._can_relax:
            raise ValueError("fall_action torque_off: %s cannot relax its joints" % type(inner).__name__)
        if cfg.shadow and cfg.shadow_inner == "relax" and not self._can_relax:
            raise ValueError("shadow_inner relax: %s cannot relax its joints" % type(inner).__name__)

        self.on_intervention: List[Callable[[str, str], None]] = []
        self._lock = threading.RLock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._state = "idle"
        self._closing = False                      # close() is running its shutdown ramp
        self._latch: Optional[str] = None          # "estop" or "fall" while latched
        self._latch_reason = ""
        self._last_kind, self._last_detail = "", ""
        self._last_error = ""
        self._latest: Optional[RobotState] = None  # the inner backend's latest reading
        self._last_sent: Optional[np.ndarray] = None
        self._last_send_time = 0.0
        self._sent_since_step = False
        self._limp = False                         # inner.relax() called and no apply since
        self._armed = False                        # the watchdog counts from the first reset or command
        self._last_cmd_time = 0.0
        self._last_cmd: Optional[np.ndarray] = None  # the latest accepted command, clamped
        self._resume_from_targets = False          # a start ramp cut by the watchdog restarts from the held targets
        self._ramp: Optional[_Ramp] = None
        self._steps = 0
        self._t0 = clock()
        self._shadow_last: Optional[np.ndarray] = None
        self._shadow_time = 0.0
        self._shadow_log: Deque[ShadowRecord] = collections.deque(maxlen=cfg.shadow_log_size)
        self._csv = None
        if cfg.shadow and cfg.shadow_csv:
            folder = os.path.dirname(os.path.abspath(cfg.shadow_csv))
            os.makedirs(folder, exist_ok=True)
            self._csv = open(cfg.shadow_csv, "w", buffering=1)
            self._csv.write(",".join(("time_s", "step") + tuple(names)) + "\n")

    # -- Backend ---------------------------------------------------------------------------------------------------
    def reset(self, joint_positions: np.ndarray, base_position: Sequence[float],
              base_orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> RobotState:
        """Reset the inner backend (refused while an e-stop or fall is latched); the next command starts a ramp."""
        with self._lock:
            self._check_open()
            if self._closing:
                raise RuntimeError("SafeBackend is closing")
            if self._latch is not None:
                raise RuntimeError("%s latched (%s): call reset_estop() first" % (self._latch, self._latch_reason))
            state = self.inner.reset(joint_positions, base_position, base_orientation)
            now = self._clock()
            self._latest = state
            self._last_sent = np.clip(np.asarray(joint_positions, dtype=np.float64), self.robot.lower,
                                      self.robot.upper)
            self._last_send_time = now
            self._limp = False
            self._ramp = None
            self._state = "idle"
            self._resume_from_targets = False
            self._armed, self._last_cmd_time, self._last_cmd = True, now, None
            return state

    def apply(self, joint_targets: np.ndarray) -> None:
        """Check ``joint_targets`` (rad) and pass on what is safe (see the module docstring); never raises on a bad
        command: it is rejected and counted instead (the robot holds its last safe targets)."""
        events: List[Tuple[str, str]] = []
        try:
            with self._lock:
                self._check_open()
                command = self._validate(joint_targets, events)
                if command is None:
                    return
                if self._latch is not None or self._closing:
                    self._counts["ignored_commands"] += 1
                    return
                self._accept(command, self._clock(), events)
        finally:
            self._fire(events)

    def step(self) -> RobotState:
        """Run the watchdog, advance a ramp that got no command this period, step the inner backend, check for a
        fall; returns the inner backend's reading."""
        events: List[Tuple[str, str]] = []
        try:
            with self._lock:
                self._check_open()
                if self._closing:                 # close() is stepping the robot itself
                    if self._latest is None:
                        raise RuntimeError("SafeBackend is closing")
                    return self._latest
                now = self._clock()
                self._watchdog(now, events)
                if self._ramp is not None and not self._sent_since_step and self._latch is None:
                    self._advance_ramp(now)
                state = self.inner.step()
                self._sent_since_step = False
                self._steps += 1
                self._latest = state
                self._check_fall(state, events)
                return state
        finally:
            self._fire(events)

    def close(self) -> None:
        """Ramp to the rest pose over ``shutdown_ramp_s`` (unless limp or latched), relax, close the inner backend.
        Blocks for the ramp (paced by the injected ``sleep``); an e-stop or a fall during it cuts it short.

        A failure of the ramp or of ``relax()`` (e.g. after a chip fault, when the inner backend has switched its
        outputs off as far as it could and refuses every later call) does not stop the shutdown and is not raised:
        it is logged (``logging``) and the inner backend is closed all the same, which switches its outputs off as
        far as they still answer.  Only an exception from the inner backend's own ``close()`` propagates."""
        events: List[Tuple[str, str]] = []
        with self._lock:
            if self._closing or self._state == "closed":
                return
            plan = None
            if self._latch is None and not self._limp and self._last_sent is not None:
                start = self._last_sent.copy()
                duration = self._ramp_duration(start, self.rest_pose, self.config.shutdown_ramp_s)
                n = max(1, int(math.ceil(duration / self._period - 1e-9)))
                plan = (start, n)
                self._event(events, "shutdown", "ramping to the rest pose over %.2f s, then relaxing" % duration)
            self._state, self._closing = "closing", True
            self._ramp = None
        try:
            self._fire(events)
            if plan is not None:
                start, n = plan
                t0 = self._clock()
                for k in range(1, n + 1):
                    with self._lock:
                        if self._latch is not None:
                            break
                        self._send(start + (k / float(n)) * (self.rest_pose - start), self._clock())
                        state = self.inner.step()
                        self._steps += 1
                        self._latest = state
                        self._check_fall(state, events)
                    self._fire(events)
                    delay = t0 + k * self._period - self._clock()
                    if delay > 0.0:
                        self._sleep(delay)
        except Exception as exc:   # noqa: B902 - the shutdown goes on: relax and close below
            LOG.error("SafeBackend.close(): the shutdown ramp stopped (%s: %s); relaxing and closing the inner "
                      "backend", type(exc).__name__, exc)
        finally:
            with self._lock:
                try:
                    if not self._limp and self._can_relax:
                        self._go_limp("hold")
                except Exception as exc:   # noqa: B902 - inner.close() below still switches the outputs off
                    LOG.error("SafeBackend.close(): relax() failed (%s: %s); closing the inner backend, which "
                              "switches its outputs off", type(exc).__name__, exc)
                finally:
                    self._state, self._closing = "closed", False
                    if self._csv is not None:
                        self._csv.close()
                        self._csv = None
                    self.inner.close()

    def relax(self) -> None:
        """Make every joint limp now (NotImplementedError where the inner backend cannot); the next command ramps
        from the present pose again."""
        with self._lock:
            self._check_open()
            if not self._can_relax:
                raise NotImplementedError("%s cannot relax its joints" % type(self.inner).__name__)
            self._go_limp("hold")
            if self._latch is None:
                self._state = "relaxed"

    @property
    def link_names(self) -> Tuple[str, ...]:
        return self.inner.link_names

    def set_dynamics(self, ground_friction: Optional[float] = None, mass_scales: Optional[Sequence[float]] = None,
                     kp_scales: Optional[Sequence[float]] = None) -> None:
        self.inner.set_dynamics(ground_friction, mass_scales, kp_scales)

    def push(self, force: Sequence[float], duration_s: float) -> None:
        self.inner.push(force, duration_s)

    def render_rgb(self, width: int = 320, height: int = 240) -> np.ndarray:
        return self.inner.render_rgb(width, height)

    # -- safety API ------------------------------------------------------------------------------------------------
    def estop(self, reason: str = "e-stop requested") -> None:
        """Latch an e-stop: relax (or hold, ``estop_action``) now and ignore commands until ``reset_estop()``."""
        events: List[Tuple[str, str]] = []
        with self._lock:
            if self._state == "closed":
                return
            self._counts["estops"] += 1
            self._latch, self._latch_reason = "estop", str(reason)
            self._state = "estopped"
            self._ramp = None
            action = "holding"
            if self.config.estop_action == "relax":
                action = "relaxed" if self._go_limp("hold") else "holding (cannot relax)"
            self._event(events, "estop", "%s: %s" % (reason, action))
        self._fire(events)

    def reset_estop(self) -> Tuple[bool, str]:
        """Clear a latched e-stop or fall: ``(True, message)``, or ``(False, why)`` while the latest IMU reading is
        tilted beyond ``reset_max_tilt_rad`` (or spinning beyond ``fall_rate_rad_s``) or there is none yet.  The
        next command then starts from the present pose through the safe-start ramp."""
        events: List[Tuple[str, str]] = []
        with self._lock:
            if self._latch is None:
                return True, "nothing latched"
            if self._state == "closed":
                return False, "closed"
            why = self._not_upright()
            if why:
                self._counts["estop_reset_refusals"] += 1
                self._event(events, "estop_reset_refused", why)
                result = (False, "reset refused: %s" % why)
            else:
                self._counts["estop_resets"] += 1
                cleared = self._latch_reason
                self._latch, self._latch_reason = None, ""
                self._state = "relaxed" if self._limp else "idle"
                self._resume_from_targets = False
                self._armed, self._last_cmd_time, self._last_cmd = True, self._clock(), None
                self._event(events, "estop_reset", "cleared: %s" % cleared)
                result = (True, "cleared: %s" % cleared)
        self._fire(events)
        return result

    def poll(self) -> None:
        """Run the watchdog now without stepping (for a supervisor thread when the loop may stop calling step)."""
        events: List[Tuple[str, str]] = []
        with self._lock:
            if not self._closing and self._state != "closed":
                self._watchdog(self._clock(), events)
        self._fire(events)

    @property
    def state(self) -> str:
        """One of ``STATES``."""
        return self._state

    @property
    def latched(self) -> bool:
        """An e-stop or a fall is latched."""
        return self._latch is not None

    @property
    def joint_targets(self) -> Optional[np.ndarray]:
        """The targets last given to the inner backend (None while limp or before any)."""
        with self._lock:
            return None if self._last_sent is None else self._last_sent.copy()

    def shadow_log(self) -> List[ShadowRecord]:
        """Shadow mode: the commands that would have been sent, oldest first (at most ``shadow_log_size``)."""
        with self._lock:
            return list(self._shadow_log)

    def stats(self) -> Dict[str, Any]:
        """Counters (``COUNTERS``) and state for /diagnostics."""
        with self._lock:
            values: Dict[str, Any] = dict(self._counts)
            values.update(
                state=self._state, shadow=self.config.shadow, limp=self._limp, latched=self._latch is not None,
                latch_reason=self._latch_reason, last_intervention=self._last_kind,
                last_intervention_detail=self._last_detail, last_callback_error=self._last_error,
                steps=self._steps,
                seconds_since_command=(self._clock() - self._last_cmd_time) if self._armed else None)
            return values

    # -- internals -------------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._state == "closed":
            raise RuntimeError("SafeBackend is closed")

    def _clip(self, targets: np.ndarray) -> np.ndarray:
        return np.minimum(np.maximum(targets, self._lower), self._upper)

    def _event(self, events: List[Tuple[str, str]], kind: str, detail: str) -> None:
        self._last_kind, self._last_detail = kind, detail
        events.append((kind, detail))

    def _fire(self, events: List[Tuple[str, str]]) -> None:
        """Run the callbacks (outside the lock, so they may call stats() or estop())."""
        while events:
            kind, detail = events.pop(0)
            for callback in list(self.on_intervention):
                try:
                    callback(kind, detail)
                except Exception as exc:  # a broken logger must not break the safety layer
                    with self._lock:
                        self._counts["callback_errors"] += 1
                        self._last_error = "%s: %s" % (type(exc).__name__, exc)

    def _validate(self, joint_targets: Any, events: List[Tuple[str, str]]) -> Optional[np.ndarray]:
        """The command as float64, or None (counted, reported) when it has the wrong size or a non-finite value."""
        why = ""
        try:
            command = np.array(joint_targets, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            command, why = None, "not numbers (%s)" % exc
        if command is not None and command.shape != (self.robot.n_joints,):
            why = "shape %s, expected (%d,)" % (command.shape, self.robot.n_joints)
        elif command is not None and not np.isfinite(command).all():
            bad = [self.robot.joint_names[i] for i in np.flatnonzero(~np.isfinite(command))]
            why = "non-finite target for %s" % ", ".join(bad)
        if why:
            self._counts["rejected_commands"] += 1
            self._event(events, "reject", "command rejected, holding the last safe targets: %s" % why)
            return None
        return command

    def _accept(self, command: np.ndarray, now: float, events: List[Tuple[str, str]]) -> None:
        self._counts["commands"] += 1
        self._armed, self._last_cmd_time = True, now
        clamped = self._clip(command)
        over = np.abs(clamped - command) > _EPS
        if over.any():
            self._counts["clamped_commands"] += 1
            self._event(events, "clamp", "clamped to the joint limits: %s"
                        % ", ".join(self.robot.joint_names[i] for i in np.flatnonzero(over)))
        self._last_cmd = clamped
        if self._state in ("idle", "relaxed") or (self._state == "holding" and self._resume_from_targets):
            self._start(now, events)
        elif self._state == "holding":
            self._state = "running"
        if self.config.shadow:
            base = self._shadow_last if self._shadow_last is not None else clamped
            would, limited = self._slew(clamped, base, now - self._shadow_time)
            self._shadow_last, self._shadow_time = would, now
            if limited:
                self._counts["slew_limited_commands"] += 1
                self._event(events, "slew", "slew limited (shadow)")
            self._record(would, now)
            if self._ramp is not None:
                self._advance_ramp(now)
            elif self._state == "ramping":
                self._state = "running"
            return
        target = clamped
        if self._state == "ramping" and self._ramp is not None:
            target, done = self._ramp.point(now, clamped)
            if done:
                self._ramp, self._state, target = None, "running", clamped
        target, limited = self._slew(target, self._last_sent, now - self._last_send_time)
        if limited:
            self._counts["slew_limited_commands"] += 1
            moved = np.abs(target - clamped) > _EPS
            self._event(events, "slew", "slew limited: %s"
                        % ", ".join(self.robot.joint_names[i] for i in np.flatnonzero(moved)))
        self._send(target, now)

    def _start(self, now: float, events: List[Tuple[str, str]]) -> None:
        """Begin the safe-start ramp (state ramping)."""
        if self._resume_from_targets and self._last_sent is not None:
            start, origin = self._last_sent.copy(), "the held targets"
        else:
            if self._latest is None:
                raise RuntimeError("SafeBackend: no reading of the robot yet; call reset() before apply()")
            start, origin = self._clip(np.asarray(self._latest.joint_positions, dtype=np.float64)), "the present pose"
        self._resume_from_targets = False
        self._counts["start_ramps"] += 1
        self._state = "ramping"
        if self.config.shadow:
            self._shadow_last, self._shadow_time = start.copy(), now - self._period
            if self.config.shadow_inner == "relax":
                self._go_limp("hold")
                self._ramp, self._state = None, "running"
                self._event(events, "start_ramp", "shadow mode: robot relaxed, policy targets logged only")
                return
            end = self.stance
        else:
            end = self.stance if self.config.start_ramp_to == "stance" else None
        duration = self._ramp_duration(start, end, self.config.start_ramp_s)
        self._ramp = _Ramp(start, end, now, duration)
        # the ramp's origin, as if sent one period ago (the first point may move one period's worth)
        self._last_sent, self._last_send_time = start, now - self._period
        self._event(events, "start_ramp", "safe start from %s to the %s over %.2f s"
                    % (origin, "stance" if end is not None else "commanded targets", duration))

    def _ramp_duration(self, start: np.ndarray, end: Optional[np.ndarray], minimum: float) -> float:
        if end is None:
            return minimum
        return max(minimum, _RAMP_SLACK * float(np.max(np.abs(end - start) / self.max_velocity)))

    def _advance_ramp(self, now: float) -> None:
        """Send the ramp's point for ``now`` (slew limited); a finished ramp ends (ramping -> running)."""
        target, done = self._ramp.point(now, self._last_cmd)
        base = self._last_sent if self._last_sent is not None else target
        target, _ = self._slew(target, base, now - self._last_send_time)
        self._send(target, now)
        if done:
            self._ramp = None
            if self._state == "ramping":
                self._state = "running"

    def _slew(self, target: np.ndarray, base: np.ndarray, dt: float) -> Tuple[np.ndarray, bool]:
        reach = self.max_velocity * min(max(dt, 0.0), self._dt_max)
        limited = np.minimum(np.maximum(target, base - reach), base + reach)
        return limited, bool(np.any(np.abs(limited - target) > _EPS))

    def _send(self, targets: np.ndarray, now: float) -> None:
        targets = self._clip(targets)
        self.inner.apply(targets)
        self._last_sent, self._last_send_time = targets.copy(), now
        self._sent_since_step = True
        self._limp = False

    def _record(self, targets: np.ndarray, now: float) -> None:
        self._counts["shadow_commands"] += 1
        record = ShadowRecord(now - self._t0, self._steps, targets.copy())
        self._shadow_log.append(record)
        if self._csv is not None:
            self._csv.write("%r,%d,%s\n" % (record.time, record.step, ",".join(repr(float(v)) for v in targets)))

    def _go_limp(self, fallback: str) -> bool:
        """inner.relax() where it can (True); else ``fallback``: "hold" keeps the last targets, "stance" ramps to
        the stance (False)."""
        self._ramp = None
        if self._can_relax:
            try:
                self.inner.relax()
            except NotImplementedError:
                self._can_relax = False
            else:
                self._limp, self._last_sent = True, None
                return True
        if fallback == "stance":
            start = self._last_sent
            if start is None and self._latest is not None:
                start = self._clip(np.asarray(self._latest.joint_positions, dtype=np.float64))
            if start is not None:
                now = self._clock()
                if self._last_sent is None:
                    self._last_sent, self._last_send_time = start, now
                self._ramp = _Ramp(start, self.stance, now, self._ramp_duration(start, self.stance, 0.0))
        return False

    def _watchdog(self, now: float, events: List[Tuple[str, str]]) -> None:
        if not self._armed or self._latch is not None:
            return
        silence = now - self._last_cmd_time
        cfg = self.config
        if self._state in ("idle", "ramping", "running") and silence > cfg.watchdog_hold_s:
            self._counts["watchdog_holds"] += 1
            self._resume_from_targets = self._state == "ramping"
            self._ramp = None
            self._state = "holding"
            self._event(events, "watchdog_hold", "no command for %.3f s: holding the last targets" % silence)
        if self._state == "holding" and silence > cfg.watchdog_hold_s + cfg.watchdog_relax_s:
            self._counts["watchdog_relaxes"] += 1
            limp = self._go_limp("stance")
            self._state = "relaxed"
            self._resume_from_targets = False
            self._event(events, "watchdog_relax", "no command for %.3f s: %s" % (
                silence, "relaxed" if limp else "cannot relax: going to the stance"))

    def _not_upright(self) -> str:
        """Why the robot does not count as upright now ('' when it does)."""
        if self._latest is None:
            return "no IMU reading yet"
        tilt, rate = self._tilt_rate(self._latest)
        if not math.isfinite(tilt) or tilt > self.config.reset_max_tilt_rad:
            return "tilt %.2f rad > %.2f rad" % (tilt, self.config.reset_max_tilt_rad)
        if self.config.fall_rate_rad_s > 0.0 and not rate <= self.config.fall_rate_rad_s:
            return "angular rate %.2f rad/s > %.2f rad/s" % (rate, self.config.fall_rate_rad_s)
        return ""

    @staticmethod
    def _tilt_rate(state: RobotState) -> Tuple[float, float]:
        try:
            tilt = float(state.tilt())
        except (ValueError, TypeError):
            tilt = float("nan")
        rate = float(np.linalg.norm(np.asarray(state.base_angular_velocity, dtype=np.float64)))
        return tilt, rate

    def _check_fall(self, state: RobotState, events: List[Tuple[str, str]]) -> None:
        if self._latch == "fall":
            return
        cfg = self.config
        tilt, rate = self._tilt_rate(state)
        why = ""
        if not math.isfinite(tilt):
            why = "IMU orientation unusable"
        elif tilt > cfg.fall_tilt_rad:
            why = "tilt %.2f rad > %.2f rad" % (tilt, cfg.fall_tilt_rad)
        elif cfg.fall_rate_rad_s > 0.0 and not rate <= cfg.fall_rate_rad_s:
            why = "angular rate %.2f rad/s > %.2f rad/s" % (rate, cfg.fall_rate_rad_s)
        if not why:
            return
        self._counts["falls"] += 1
        self._latch, self._latch_reason = "fall", "fall: %s" % why
        self._state = "fallen"
        self._ramp = None
        action = "holding"
        if cfg.fall_action in ("relax", "torque_off"):
            action = "relaxed" if self._go_limp("hold") else "holding (cannot relax)"
        self._event(events, "fall", "%s: %s" % (why, action))
