"""What every robot backend (simulator, ROS bridge, real hardware) offers the environments.

A backend holds position targets for the joints and advances the robot one control period at a time, returning a
``RobotState`` in SI units and REP 103 frames (world frame "odom": x forward, y left, z up; body frame: torso link).
"""
import abc
import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from op3_walk.robots.description import RobotConfig

STANDARD_GRAVITY = 9.81  # m/s^2


def _unit_quaternion(q: Sequence[float]) -> Tuple[float, float, float, float]:
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    if not n > 0.0:
        raise ValueError("quaternion %s has no direction" % (tuple(q),))
    return x / n, y / n, z / n, w / n


def quat_to_matrix(q: Sequence[float]) -> np.ndarray:
    """Rotation matrix (3, 3) of quaternion ``q`` = (x, y, z, w); maps body vectors to world vectors."""
    x, y, z, w = _unit_quaternion(q)
    s = 2.0
    xx, yy, zz = x * x * s, y * y * s, z * z * s
    xy, xz, yz = x * y * s, x * z * s, y * z * s
    wx, wy, wz = w * x * s, w * y * s, w * z * s
    return np.array([
        [1.0 - yy - zz, xy - wz, xz + wy],
        [xy + wz, 1.0 - xx - zz, yz - wx],
        [xz - wy, yz + wx, 1.0 - xx - yy],
    ])


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w), w >= 0, of rotation matrix ``m`` (Shepperd's method: stable for every rotation)."""
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.array(q)
    return q if q[3] >= 0.0 else -q


def clamp_targets(joint_targets: Sequence[float], lower: np.ndarray, upper: np.ndarray,
                  joint_names: Sequence[str]) -> np.ndarray:
    """``joint_targets`` as float64 clamped to [lower, upper]; ValueError on a wrong size or a non-finite value."""
    targets = np.asarray(joint_targets, dtype=np.float64)
    if targets.shape != lower.shape:
        raise ValueError("joint targets must have shape %s, got %s" % (lower.shape, targets.shape))
    finite = np.isfinite(targets)
    if not finite.all():
        bad = [joint_names[i] for i in np.flatnonzero(~finite)]
        raise ValueError("non-finite joint targets for: %s" % ", ".join(bad))
    return np.minimum(np.maximum(targets, lower), upper)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind == "f")


@dataclasses.dataclass(eq=False)
class RobotState:
    """One reading of the robot, SI units, REP 103. World frame 'odom' (z up); body frame = torso link."""

    time: float                          # s since reset (sim time)
    joint_positions: np.ndarray          # rad, robot joint order
    joint_velocities: np.ndarray         # rad/s
    joint_efforts: np.ndarray            # N·m (applied motor torque)
    base_position: np.ndarray            # (3,) m, world
    base_orientation: np.ndarray         # (4,) quaternion x, y, z, w, body->world
    base_linear_velocity: np.ndarray     # (3,) m/s, world
    base_angular_velocity: np.ndarray    # (3,) rad/s, BODY frame (what a gyro reads)
    linear_acceleration: np.ndarray      # (3,) m/s^2, BODY frame, specific force incl. gravity (+9.81 z at rest)
    foot_contacts: np.ndarray            # (n_feet,) bool, order of robot.foot_links
    # Privileged quantities: exact in simulation, estimated or absent (None) on real robots. Rewards may use them;
    # observations do not unless a task config asks for it.
    com_position: Optional[np.ndarray] = None       # (3,) m, world: whole-body centre of mass
    com_velocity: Optional[np.ndarray] = None       # (3,) m/s, world
    foot_positions: Optional[np.ndarray] = None     # (n_feet, 3) m, world: origin of each foot link frame
    foot_orientations: Optional[np.ndarray] = None  # (n_feet, 4) quaternions x, y, z, w, foot link -> world
    foot_forces: Optional[np.ndarray] = None        # (n_feet,) N: total normal ground force on each foot
    center_of_pressure: Optional[np.ndarray] = None  # (3,) m, world: of all ground contacts (NaN when airborne)

    def __eq__(self, other: object) -> bool:
        """Exact equality of every field (arrays compared element-wise)."""
        if not isinstance(other, RobotState):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self))

    __hash__ = None  # mutable

    def rotation(self) -> np.ndarray:
        """Body->world rotation matrix (3, 3)."""
        return quat_to_matrix(self.base_orientation)

    def gravity_body(self) -> np.ndarray:
        """Unit gravity direction in the body frame ((0, 0, -1) when upright)."""
        x, y, z, w = _unit_quaternion(self.base_orientation)
        # minus the bottom row of the rotation matrix (world z expressed in the body frame)
        return np.array([2.0 * (w * y - x * z), -2.0 * (y * z + w * x), 2.0 * (x * x + y * y) - 1.0])

    def tilt(self) -> float:
        """Angle (rad, 0..pi) between body z and world z; sign-free, so a fall to any side increases it."""
        x, y, z, w = _unit_quaternion(self.base_orientation)
        # body z in world = last column of the rotation matrix
        horizontal = math.hypot(2.0 * (x * z + w * y), 2.0 * (y * z - w * x))
        return math.atan2(horizontal, 1.0 - 2.0 * (x * x + y * y))


class Backend(abc.ABC):
    """A robot that takes joint position targets and is advanced one control period per ``step``."""

    robot: RobotConfig

    @property
    def control_period_s(self) -> float:
        """Time advanced by one ``step``, s."""
        return self.robot.control_period_s

    @abc.abstractmethod
    def reset(self, joint_positions: np.ndarray, base_position: Sequence[float],
              base_orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> RobotState:
        """Put the robot in this pose, at rest, hold ``joint_positions`` as targets; time restarts at 0."""

    @abc.abstractmethod
    def apply(self, joint_targets: np.ndarray) -> None:
        """Set joint position targets (rad, robot order); clamps to the joint limits.

        Raises ValueError on a wrong size or a non-finite value (and then changes nothing).
        """

    @abc.abstractmethod
    def step(self) -> RobotState:
        """Advance exactly one control period and return the new reading."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release resources; calling it again does nothing."""

    def relax(self) -> None:
        """Make every joint limp (torque off); the next ``apply`` powers them again."""
        raise NotImplementedError("%s cannot relax its joints" % type(self).__name__)

    def set_dynamics(self, ground_friction: Optional[float] = None, mass_scales: Optional[Sequence[float]] = None,
                     kp_scales: Optional[Sequence[float]] = None) -> None:
        """Change the simulated physics (domain randomisation); ``None`` restores the model's value.

        ``ground_friction``: Coulomb friction coefficient of the ground contacts; ``mass_scales``: one factor per
        entry of ``link_names`` (masses and inertias are scaled); ``kp_scales``: one factor per joint on the
        position gain.  The settings hold from now on, across resets.  Real robots cannot do this.
        """
        raise NotImplementedError("%s cannot change its physics" % type(self).__name__)

    @property
    def link_names(self) -> Tuple[str, ...]:
        """Names of the rigid bodies (torso first) that ``set_dynamics(mass_scales=...)`` refers to."""
        raise NotImplementedError("%s has no link list" % type(self).__name__)

    def push(self, force: Sequence[float], duration_s: float) -> None:
        """Apply ``force`` (N, world frame) at the torso's centre of mass for the next ``duration_s`` seconds."""
        raise NotImplementedError("%s cannot push the robot" % type(self).__name__)

    def render_rgb(self, width: int = 320, height: int = 240) -> np.ndarray:
        """An RGB image (height, width, 3) uint8 of the robot, where the backend can draw one."""
        raise NotImplementedError("%s cannot render images" % type(self).__name__)

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
