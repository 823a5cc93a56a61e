"""Velocity commands: what a command-following policy is asked to do, ROS-free.

A command is (forward m/s, lateral m/s, yaw rate rad/s) in the robot's base frame (REP 103: x forward, y left,
z up; yaw rate counter-clockwise seen from above), the three values of a ``geometry_msgs/Twist``'s linear.x,
linear.y and angular.z.  Two sources:

- the task draws one per episode and every ``resample_s`` (``draw_command``, used by ``WalkEnv`` in training and
  evaluation), from the ranges the task gives the robot, standing still with probability ``zero_probability``;
- an external source (``cmd_vel`` on the controller: a teleop, a joystick, navigation) through ``ExternalCommand``:
  clamped to the task's ranges (what the policy was trained on), and back to zero when none arrived for
  ``timeout_s``.  Once an external command has arrived it replaces the task's drawn command for good: a robot that
  was steered and is no longer steered stands still rather than resuming a random command.
"""
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from op3_walk.envs.task import CommandConfig

COMMAND_NAMES = ("forward", "lateral", "yaw_rate")   # m/s, m/s, rad/s
COMMAND_UNITS = ("m/s", "m/s", "rad/s")


def command_bounds(config: CommandConfig) -> Tuple[np.ndarray, np.ndarray]:
    """(low, high) of the command, from the task's ranges (resolve per-robot ranges first: ``for_robot``)."""
    low = np.array([getattr(config, name)[0] for name in COMMAND_NAMES], dtype=float)
    high = np.array([getattr(config, name)[1] for name in COMMAND_NAMES], dtype=float)
    return low, high


def draw_command(config: CommandConfig, rng: np.random.Generator) -> np.ndarray:
    """A command drawn uniformly from the ranges; zero with probability ``zero_probability`` (zero when the
    command is inactive).  Draws nothing for a zero probability, so the RNG stream of older tasks is unchanged."""
    if not config.active:
        return np.zeros(3)
    if config.zero_probability > 0.0 and rng.uniform() < config.zero_probability:
        return np.zeros(3)
    low, high = command_bounds(config)
    return np.array([rng.uniform(lo, hi) for lo, hi in zip(low, high)])


def describe_ranges(config: CommandConfig) -> str:
    """"forward [0, 0.4] m/s, lateral [-0.1, 0.1] m/s, yaw_rate [-0.5, 0.5] rad/s"."""
    low, high = command_bounds(config)
    return ", ".join("%s [%g, %g] %s" % (name, lo, hi, unit)
                     for name, lo, hi, unit in zip(COMMAND_NAMES, low, high, COMMAND_UNITS))


class ExternalCommand:
    """An externally given command (cmd_vel): clamped to the task's ranges, zero once ``timeout_s`` passes without
    a new one.  Times are seconds of any monotonic clock the caller uses consistently."""

    def __init__(self, config: CommandConfig, timeout_s: float):
        if not timeout_s > 0.0:
            raise ValueError("timeout_s must be > 0, got %r" % (timeout_s,))
        self.low, self.high = command_bounds(config)
        self.timeout_s = float(timeout_s)
        self._command: Optional[np.ndarray] = None
        self._received = -math.inf
        self.received = 0        # commands accepted
        self.clamped = 0         # ... of which outside the ranges (clamped)
        self.rejected = 0        # not finite (not applied)

    def receive(self, command: Sequence[float], now: float) -> Optional[np.ndarray]:
        """Take a new command (forward, lateral, yaw rate) at time ``now``: the clamped command, or None for a
        non-finite one (ignored: the previous command keeps timing out)."""
        value = np.asarray(command, dtype=float).reshape(-1)
        if value.shape != (3,):
            raise ValueError("a command has 3 values (forward, lateral, yaw rate), got %d" % value.size)
        if not np.all(np.isfinite(value)):
            self.rejected += 1
            return None
        clamped = np.clip(value, self.low, self.high)
        if np.any(clamped != value):
            self.clamped += 1
        self.received += 1
        self._command, self._received = clamped, float(now)
        return clamped.copy()

    @property
    def active(self) -> bool:
        """Has any command arrived (from then on it replaces the task's drawn command)?"""
        return self._command is not None

    def fresh(self, now: float) -> bool:
        """Did the last command arrive within ``timeout_s`` of ``now``?"""
        return self._command is not None and now - self._received <= self.timeout_s

    def value(self, now: float) -> Optional[np.ndarray]:
        """The command at ``now``: None before any arrived (the task's own command stands), the last one while
        fresh, zero (stand still) after the timeout."""
        if self._command is None:
            return None
        return self._command.copy() if self.fresh(now) else np.zeros(3)
