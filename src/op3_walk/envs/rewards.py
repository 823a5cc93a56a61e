"""Reward library: named reward terms, their weights and parameters, and a per-step ``RewardComputer``.

Every term is a small pure function ``term(ctx: StepContext) -> float`` returning its RAW (unweighted) value, signed
so that a positive weight means "as written": bonuses return positive values, penalties negative ones.  A task YAML
gives each term it uses a weight (``RewardWeights``, all 0 by default = off) and may tune the terms' parameters
(``RewardParams``); the step's reward is the sum of ``weight * term(ctx)`` over the terms with a non-zero weight.

Terms, by the prior work they come from (FACTS.md "Rewards from the prior work"):

* generic: ``forward_velocity``, ``alive``, ``tilt``, ``action_rate``, ``fall``;
* OP3 DQN: ``forward_progress`` (weight 1 reproduces the original);
* PLEN shaping: ``plen_velocity``, ``height``, ``lateral``, ``posture`` (+ ``fall`` with weight 100), and the
  bio-inspired gait terms over a gait cycle of ``cycle_steps`` control steps: ``gait_symmetry``, ``joint_motion``,
  ``gait_phase_contact``, ``double_support``, ``flat_foot``;
* ZMP tracking (a DQN biped): ``zmp_tracking``, ``support_tracking``, ``fall_after_steps``, ``success``;
* velocity tracking (legged_gym practice): ``lin_vel_tracking``, ``yaw_rate_tracking``, ``lin_vel_z``,
  ``ang_vel_xy``, ``orientation``, ``torques``, ``feet_air_time`` (+ ``action_rate``; legged_gym's "termination"
  is ``fall`` with weight 1: there is one fall term, not two).

Conventions: SI units, REP 103 (world x forward, y left, z up; body frame = torso link).  Feet are in the robot's
leg order, left first (``RobotConfig.legs``): foot 0 is the left foot, foot 1 the right one.  The "heading frame" is
the world frame turned by the torso's yaw only (x = the direction the torso faces, projected on the ground).

Pure Python + numpy: no torch, no ROS.  ``RewardComputer`` is deterministic and costs a few tens of µs per step.
"""
import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from op3_walk.backends.base import RobotState
from op3_walk.config import doc
from op3_walk.robots.description import RobotConfig

LEFT, RIGHT = 0, 1  # foot / leg indices (legs are listed left first)
GAIT_JOINT_ROLES = ("hip_pitch", "knee", "ankle_pitch")  # the per-leg triplet recorded by GaitHistory

# forward_progress (OP3 DQN): reward per metre of torso x progress over one step
PROGRESS_FORWARD_GAIN = 1000.0   # upright and moving forward
PROGRESS_BACKWARD_GAIN = 10.0    # moving back (or not at all), or fallen
PROGRESS_FALLEN_OFFSET = -2.0    # added once the torso is below the fall height
# PLEN shaping
PLEN_VELOCITY_GAIN = 3.0  # s/m, inside (3 vx)^2 and exp(3 vx)
PLEN_HEIGHT_GAIN = 40.0   # 1/m, inside (40 |z0 - z|)^2
# fall_after_steps (ZMP DQN)
FALL_AFTER_STEPS_OFFSET = -250.0


# -- configuration -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RewardWeights:
    """Weight of each reward term (``REWARD_TERMS``); 0 (the default) disables a term.

    The reward of a step is the sum of weight * term over the non-zero weights; the documented formula is the raw
    term, so a positive weight applies it as written (penalties are already negative).
    """

    # generic
    forward_velocity: float = doc("times (x_t - x_(t-1)) / dt: torso forward (world x) speed over the step, m/s", 0.0)
    alive: float = doc("times 1 per step that does not end in a fall", 0.0)
    tilt: float = doc("times -tilt^2, tilt = torso angle from vertical, rad (any direction)", 0.0)
    action_rate: float = doc("times -|a_t - a_(t-1)|^2 (actions as the policy gives them, e.g. in [-1, 1])", 0.0)
    fall: float = doc("times -1 on the step the robot falls (legged_gym 'termination'; PLEN shaping uses 100)", 0.0)
    # OP3 DQN
    forward_progress: float = doc("times 1000 dx when upright and dx > 0, 10 dx when dx <= 0, -2 + 10 dx when "
                                  "fallen/below the fall height; dx = torso x change over the step, m "
                                  "(weight 1 = the OP3 DQN reward)", 0.0)
    # PLEN shaping
    plen_velocity: float = doc("times (3 vx)^2 when vx >= 0, -exp(3 vx) when vx < 0; vx = torso world x velocity, "
                               "m/s (exactly the PLEN formula: note it jumps from 0 to -1 at vx = 0-)", 0.0)
    height: float = doc("times -(40 |z0 - z|)^2: z = torso origin height, z0 = nominal height, m", 0.0)
    lateral: float = doc("times -y^2: y = torso world y, m^2", 0.0)
    posture: float = doc("times -(roll^2 + 0.5 pitch^2 + yaw^2): torso ZYX Euler angles, rad^2", 0.0)
    # PLEN bio-inspired gait terms (0 until one gait cycle of cycle_steps steps is recorded)
    gait_symmetry: float = doc("times the cosine similarity of the left and the right (hip pitch, knee, ankle "
                               "pitch) histories over one gait cycle, the right shifted by half a cycle "
                               "(in [-1, 1])", 0.0)
    joint_motion: float = doc("times -(fraction of the 6 leg pitch joints whose range over the gait cycle is "
                              "below still_joint_range)", 0.0)
    gait_phase_contact: float = doc("times 1 when the right foot touches the ground in the first half of the gait "
                                    "cycle, or the left foot in the second half (cycle from the step index)", 0.0)
    double_support: float = doc("times -max(0, f - max_double_support): f = fraction of the gait cycle's steps "
                                "with every foot on the ground", 0.0)
    flat_foot: float = doc("times the sum over feet on the ground of cos(sole tilt) (sole = foot link z axis)", 0.0)
    # ZMP tracking
    zmp_tracking: float = doc("times -|zmp_ref - zmp|: zmp = centre of pressure x, y (CoM ground projection when "
                              "airborne), m", 0.0)
    support_tracking: float = doc("times the fraction of feet whose contact matches the reference support", 0.0)
    fall_after_steps: float = doc("times (-250 + step) on the falling step, else 0 (step = steps since reset)", 0.0)
    success: float = doc("times 1 on the last step of an episode that did not fall (ZMP DQN: 200)", 0.0)
    # velocity tracking (legged_gym)
    lin_vel_tracking: float = doc("times exp(-|v_cmd - v|^2 / tracking_sigma): x, y torso velocity in the heading "
                                  "frame, m/s", 0.0)
    yaw_rate_tracking: float = doc("times exp(-(w_cmd - w_z)^2 / tracking_sigma): w_z = torso yaw rate about "
                                   "world z, rad/s", 0.0)
    lin_vel_z: float = doc("times -v_z^2: torso linear velocity along body z, (m/s)^2", 0.0)
    ang_vel_xy: float = doc("times -(w_x^2 + w_y^2): torso angular velocity in the body frame, (rad/s)^2", 0.0)
    orientation: float = doc("times -(g_x^2 + g_y^2): unit gravity direction in the body frame", 0.0)
    torques: float = doc("times -|tau|^2: applied joint torques, (N m)^2", 0.0)
    feet_air_time: float = doc("times sum over feet touching down this step of (air time - feet_air_time_target), "
                               "s; 0 while the commanded planar speed is at most feet_air_time_min_command", 0.0)

    def active(self) -> List[Tuple[str, float]]:
        """(name, weight) of the terms with a non-zero weight, in ``REWARD_TERMS`` order."""
        return [(name, float(getattr(self, name))) for name in REWARD_TERMS if getattr(self, name) != 0.0]


@dataclasses.dataclass
class RewardParams:
    """Parameters of the reward terms (the defaults follow the prior work)."""

    tracking_sigma: float = doc("sigma^2 of lin_vel_tracking and yaw_rate_tracking, (m/s)^2 resp. (rad/s)^2", 0.25)
    cycle_steps: int = doc("gait cycle length of the bio-inspired terms, control steps (PLEN: 80)", 80)
    still_joint_range: float = doc("joint_motion: a leg joint whose range (max - min) over the gait cycle is below "
                                   "this counts as not moving, rad", 0.05)
    max_double_support: float = doc("double_support: allowed fraction of the gait cycle with every foot down", 0.33)
    symmetry_centered: bool = doc("gait_symmetry: subtract each joint's mean over the cycle before the cosine, so "
                                  "the standing pose itself does not count as symmetry (false = raw angles)", True)
    right_leg_sign: Optional[float] = doc("gait_symmetry: 1 or -1, sign of the right leg's pitch angles before "
                                          "comparing them with the left's: 1 when both sides share sign conventions "
                                          "(PLEN), -1 when they are opposite (OP3); null = from the robot's stance "
                                          "(-1 when the two knees stand at angles of opposite sign)", None)
    feet_air_time_target: float = doc("feet_air_time: air time that breaks even, s", 0.5)
    feet_air_time_min_command: float = doc("feet_air_time: the term is 0 while |commanded vx, vy| is at most this, "
                                           "m/s (it always counts when the task has no command)", 0.1)
    nominal_height: Optional[float] = doc("height: torso origin height z0 to hold, m; null = the robot's standing "
                                          "height (given by the environment)", None)
    fall_height: Optional[float] = doc("forward_progress: torso origin height below which the robot counts as "
                                       "fallen, m; null = the environment's (or the step's fall flag)", None)

    def validate(self) -> None:
        if not self.tracking_sigma > 0.0:
            raise ValueError("tracking_sigma must be positive")
        if self.right_leg_sign not in (None, 1.0, -1.0):
            raise ValueError("right_leg_sign must be 1, -1 or null")
        if self.cycle_steps < 2:
            raise ValueError("cycle_steps must be at least 2")
        if self.still_joint_range < 0.0:
            raise ValueError("still_joint_range must not be negative")
        if not 0.0 <= self.max_double_support <= 1.0:
            raise ValueError("max_double_support must lie in [0, 1]")
        if self.feet_air_time_target < 0.0 or self.feet_air_time_min_command < 0.0:
            raise ValueError("feet_air_time_target and feet_air_time_min_command must not be negative")
        for name in ("nominal_height", "fall_height"):
            value = getattr(self, name)
            if value is not None and not value > 0.0:
                raise ValueError("%s must be positive (or null)" % name)


@dataclasses.dataclass(frozen=True, eq=False)
class Reference:
    """What a reference gait asks for at this step."""

    zmp: Optional[np.ndarray]  # (2,) m, world x, y of the reference zero-moment point (None = unknown)
    support: np.ndarray        # (n_feet,) bool, feet that should be on the ground (left first)
    phase: float               # gait phase in [0, 1)


# -- gait history --------------------------------------------------------------------------------------------------
class GaitHistory:
    """The last ``cycle_steps`` steps of leg pitch joint angles and foot contacts, plus per-foot air time.

    ``push`` records one row per control step (after the step): the left leg's hip pitch, knee and ankle pitch and
    the same for the right leg (rad), and the foot contacts.  ``left()``, ``right()``, ``leg_joints()`` and
    ``contacts()`` return the recorded rows oldest first.  (Internally the right leg is stored already shifted by half
    a cycle, so that ``gait_symmetry`` needs one matrix product per step.)

    Air time follows legged_gym: a foot counts as down when it touches now or touched on the previous step (a
    one-step contact loss is not a flight); ``air_time[i]`` grows by dt each step and restarts at 0 while foot i is
    down; ``touchdown[i]`` is True when foot i's flight ended this step, and ``touchdown_air_time[i]`` is then that
    flight's duration including this step's dt (0 for the other feet).  These three are tuples, one entry per foot.

    A ``StepContext`` holds the computer's history by reference: it is valid until the next ``push``.
    """

    def __init__(self, cycle_steps: int, n_feet: int = 2):
        if cycle_steps < 2 or n_feet < 1:
            raise ValueError("GaitHistory needs cycle_steps >= 2 and n_feet >= 1")
        self.cycle_steps = int(cycle_steps)
        self.n_feet = int(n_feet)
        self.half = self.cycle_steps // 2
        # rows 0-2: left triplet at column t; rows 3-5: right triplet at column t + half (mod T); row 6: ones
        self._a = np.zeros((7, self.cycle_steps))
        self._contacts = np.zeros((self.n_feet, self.cycle_steps), dtype=bool)
        self.clear()

    def clear(self, contacts: Optional[Sequence[bool]] = None) -> None:
        """Forget everything; ``contacts`` = the feet touching at reset (the previous contacts of the first step)."""
        self._a[:6] = 0.0
        self._a[6] = 1.0
        self._contacts[:] = False
        self._double = [False] * self.cycle_steps
        self._next = 0          # column written by the next push
        self.count = 0          # steps recorded, at most cycle_steps
        self._n_double = 0      # recorded steps in double support
        zeros = (0.0,) * self.n_feet
        self.air_time = zeros
        self.touchdown = (False,) * self.n_feet
        self.touchdown_air_time = zeros
        self._last = ((False,) * self.n_feet if contacts is None
                      else tuple(bool(c) for c in np.asarray(contacts, dtype=bool).reshape(self.n_feet)))

    def push(self, leg_joints: np.ndarray, contacts: Sequence[bool], dt: float) -> None:
        """Record one step: ``leg_joints`` (6,) rad (left triplet, right triplet), ``contacts`` (n_feet,) bool."""
        col = self._next
        now = tuple(contacts.tolist()) if isinstance(contacts, np.ndarray) else tuple(bool(c) for c in contacts)
        if len(now) != self.n_feet:
            raise ValueError("expected %d foot contacts, got %d" % (self.n_feet, len(now)))
        double = self.n_feet > 1 and all(now)
        if self.count == self.cycle_steps:
            self._n_double -= self._double[col]
        else:
            self.count += 1
        self._a[:3, col] = leg_joints[:3]
        self._a[3:6, (col + self.half) % self.cycle_steps] = leg_joints[3:6]
        self._contacts[:, col] = now
        self._double[col] = double
        self._n_double += double
        self._next = col + 1 if col + 1 < self.cycle_steps else 0
        # air time (legged_gym)
        down = [c or p for c, p in zip(now, self._last)]
        air = [t + dt for t in self.air_time]
        self.touchdown = tuple(d and t > 0.0 for d, t in zip(down, self.air_time))
        self.touchdown_air_time = tuple(a if td else 0.0 for a, td in zip(air, self.touchdown))
        self.air_time = tuple(0.0 if d else a for d, a in zip(down, air))
        self._last = now

    @property
    def full(self) -> bool:
        """True once a whole gait cycle is recorded."""
        return self.count == self.cycle_steps

    def _columns(self) -> np.ndarray:
        start = (self._next - self.count) % self.cycle_steps
        return (np.arange(self.count) + start) % self.cycle_steps

    def left(self) -> np.ndarray:
        """(count, 3) left hip pitch, knee, ankle pitch, oldest first, rad."""
        return self._a[:3, self._columns()].T

    def right(self) -> np.ndarray:
        """(count, 3) right hip pitch, knee, ankle pitch, oldest first, rad."""
        return self._a[3:6, (self._columns() + self.half) % self.cycle_steps].T

    def leg_joints(self) -> np.ndarray:
        """(count, 6) recorded leg pitch joint angles (left triplet, right triplet), oldest first, rad."""
        return np.hstack((self.left(), self.right()))

    def contacts(self) -> np.ndarray:
        """(count, n_feet) recorded foot contacts, oldest first."""
        return self._contacts[:, self._columns()].T

    def double_support_fraction(self) -> float:
        """Fraction of the recorded steps with every foot on the ground (0 with no steps or a single foot)."""
        return self._n_double / self.count if self.count else 0.0

    def joint_ranges(self) -> np.ndarray:
        """(6,) max - min of each leg pitch joint over the recorded steps, rad (zeros when nothing is recorded)."""
        if self.count == 0:
            return np.zeros(6)
        if self.count < self.cycle_steps:
            joints = np.vstack((self.left().T, self.right().T))
        else:
            joints = self._a[:6]  # the column order does not change a range
        return np.maximum.reduce(joints, axis=1) - np.minimum.reduce(joints, axis=1)

    def symmetry(self, right_sign: float = 1.0, centered: bool = True) -> float:
        """Cosine similarity of the left triplet's history with the right triplet's shifted circularly by half a
        cycle (times ``right_sign``), over a whole cycle; 0 before a whole cycle or when a side does not move."""
        if self.count < self.cycle_steps:
            return 0.0
        g = self._a.dot(self._a.T).tolist()  # Gram matrix; row/column 6 holds the sums and T
        ll = g[0][0] + g[1][1] + g[2][2]
        rr = g[3][3] + g[4][4] + g[5][5]
        lr = g[0][3] + g[1][4] + g[2][5]
        scale = max(ll, rr)
        if centered:
            n = float(self.cycle_steps)
            sl, sr = g[6][0:3], g[6][3:6]
            ll -= (sl[0] * sl[0] + sl[1] * sl[1] + sl[2] * sl[2]) / n
            rr -= (sr[0] * sr[0] + sr[1] * sr[1] + sr[2] * sr[2]) / n
            lr -= (sl[0] * sr[0] + sl[1] * sr[1] + sl[2] * sr[2]) / n
        tol = 1e-10 * scale + 1e-300  # motion this small (relative to the angles) counts as none
        if ll <= tol or rr <= tol:
            return 0.0
        cos = lr / math.sqrt(ll * rr)
        return max(-1.0, min(1.0, cos)) * (1.0 if right_sign >= 0.0 else -1.0)


# -- step context --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class StepContext:
    """What a reward term may look at: the step's start and end states, actions, flags, command and history."""

    state: RobotState             # after the step
    previous_state: RobotState    # before the step
    action: np.ndarray            # this step's action
    previous_action: np.ndarray   # the previous step's (zeros after reset)
    fell: bool                    # the robot fell on this step (the episode terminates)
    step: int = 0                 # steps since reset, this one included (1 on the first step)
    dt: float = 0.0               # control period, s; 0 = from the states' times
    episode_end: bool = False     # last step of an episode that did not fall (time limit reached)
    command: Optional[np.ndarray] = None     # (3,) vx m/s, vy m/s, yaw rate rad/s in the heading frame
    reference: Optional[Reference] = None    # reference gait at this step, if the task has one
    history: Optional[GaitHistory] = None    # gait history including this step (None = nothing recorded)
    params: RewardParams = dataclasses.field(default_factory=RewardParams)
    nominal_height: Optional[float] = None   # torso origin height to hold, m (None = params.nominal_height)
    fall_height: Optional[float] = None      # m, below = fallen for forward_progress (None = params, then ``fell``)


def _dt(ctx: StepContext) -> float:
    if ctx.dt > 0.0:
        return ctx.dt
    return float(ctx.state.time - ctx.previous_state.time)


def _floats(v) -> list:
    """A small array or sequence as a list of Python floats (``tolist`` is the cheap way for numpy arrays)."""
    return v.tolist() if isinstance(v, np.ndarray) else [float(x) for x in v]


def _need(value, what: str, term: str):
    if value is None:
        raise ValueError("reward term %s needs %s, which this step does not provide" % (term, what))
    return value


def euler_zyx(q: Sequence[float]) -> Tuple[float, float, float]:
    """(roll, pitch, yaw) rad of quaternion ``q`` = (x, y, z, w), ZYX convention: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    x, y, z, w = _floats(q)
    n = x * x + y * y + z * z + w * w
    if not n > 0.0:
        raise ValueError("quaternion %s has no direction" % (tuple(q),))
    s = 2.0 / n
    roll = math.atan2(s * (w * x + y * z), 1.0 - s * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, s * (w * y - z * x))))
    yaw = math.atan2(s * (w * z + x * y), 1.0 - s * (y * y + z * z))
    return roll, pitch, yaw


def _yaw(q: Sequence[float]) -> float:
    x, y, z, w = _floats(q)
    return math.atan2(2.0 * (w * z + x * y), w * w + x * x - y * y - z * z)


def heading_velocity(state: RobotState) -> Tuple[float, float]:
    """Torso (vx, vy) m/s in the heading frame: the world velocity turned by minus the torso yaw."""
    yaw = _yaw(state.base_orientation)
    c, s = math.cos(yaw), math.sin(yaw)
    vx, vy = float(state.base_linear_velocity[0]), float(state.base_linear_velocity[1])
    return c * vx + s * vy, -s * vx + c * vy


def yaw_rate(state: RobotState) -> float:
    """Torso angular velocity about world z, rad/s (the body-frame gyro turned into the world)."""
    x, y, z, w = _floats(state.base_orientation)
    n = x * x + y * y + z * z + w * w
    s = 2.0 / n
    wx, wy, wz = _floats(state.base_angular_velocity)
    # bottom row of the rotation matrix (body -> world) dotted with the body rates
    return s * (x * z - w * y) * wx + s * (y * z + w * x) * wy + (1.0 - s * (x * x + y * y)) * wz


def measured_zmp(state: RobotState) -> np.ndarray:
    """(2,) m: the centre of pressure x, y of the ground contacts; the CoM ground projection when airborne (no
    contact: the CoP is NaN) or when the backend gives no CoP."""
    cop = state.center_of_pressure
    if cop is not None and math.isfinite(cop[0]) and math.isfinite(cop[1]):
        return np.asarray(cop[:2], dtype=np.float64)
    com = _need(state.com_position, "state.com_position (airborne ZMP)", "zmp_tracking")
    return np.asarray(com[:2], dtype=np.float64)


# -- terms: generic ------------------------------------------------------------------------------------------------
def forward_velocity(ctx: StepContext) -> float:
    """(x_t - x_(t-1)) / dt: mean forward (world x) torso speed over the step, m/s."""
    dt = _dt(ctx)
    return float(ctx.state.base_position[0] - ctx.previous_state.base_position[0]) / dt if dt > 0.0 else 0.0


def alive(ctx: StepContext) -> float:
    """1 while upright, 0 on the falling step."""
    return 0.0 if ctx.fell else 1.0


def tilt(ctx: StepContext) -> float:
    """-tilt^2, tilt = torso angle from vertical (sign-free), rad^2."""
    return -ctx.state.tilt() ** 2


def action_rate(ctx: StepContext) -> float:
    """-|a_t - a_(t-1)|^2 (a previous action of None counts as zeros)."""
    if ctx.previous_action is None:  # first step: the previous action counts as zeros
        delta = np.asarray(ctx.action, dtype=np.float64)
    else:
        delta = np.asarray(ctx.action, dtype=np.float64) - ctx.previous_action
    return -float(np.dot(delta, delta))


def fall(ctx: StepContext) -> float:
    """-1 on the step the robot falls, else 0 (also legged_gym's 'termination')."""
    return -1.0 if ctx.fell else 0.0


# -- terms: OP3 DQN ------------------------------------------------------------------------------------------------
def forward_progress(ctx: StepContext) -> float:
    """OP3 DQN progress, dx = torso x change over the step (m).

    Fallen (torso origin below ``fall_height``; without a fall height: the step's ``fell`` flag): -2 + 10 dx.
    Otherwise 1000 dx when dx > 0, 10 dx when dx <= 0.
    """
    dx = float(ctx.state.base_position[0] - ctx.previous_state.base_position[0])
    fall_height = ctx.params.fall_height if ctx.params.fall_height is not None else ctx.fall_height
    down = ctx.fell if fall_height is None else float(ctx.state.base_position[2]) < fall_height
    if down:
        return PROGRESS_FALLEN_OFFSET + PROGRESS_BACKWARD_GAIN * dx
    return (PROGRESS_FORWARD_GAIN if dx > 0.0 else PROGRESS_BACKWARD_GAIN) * dx


# -- terms: PLEN shaping -------------------------------------------------------------------------------------------
def plen_velocity(ctx: StepContext) -> float:
    """PLEN forward-velocity shaping, vx = torso world x velocity (m/s): (3 vx)^2 if vx >= 0, else -exp(3 vx).

    Implemented exactly as published.  Beware: it is discontinuous at 0 (0 for vx = 0, about -1 just below) and
    the backward penalty SHRINKS as the robot walks backward faster (-exp(3 vx) -> 0 as vx -> -inf).
    """
    vx = float(ctx.state.base_linear_velocity[0])
    if vx >= 0.0:
        return (PLEN_VELOCITY_GAIN * vx) ** 2
    return -math.exp(PLEN_VELOCITY_GAIN * vx)


def height(ctx: StepContext) -> float:
    """-(40 |z0 - z|)^2, z = torso origin height, z0 = the nominal height, m (dimensionless result)."""
    z0 = ctx.nominal_height if ctx.nominal_height is not None else ctx.params.nominal_height
    z0 = _need(z0, "a nominal height", "height")
    return -(PLEN_HEIGHT_GAIN * abs(z0 - float(ctx.state.base_position[2]))) ** 2


def lateral(ctx: StepContext) -> float:
    """-y^2, y = torso world y (sideways drift from the start line y = 0), m^2."""
    return -float(ctx.state.base_position[1]) ** 2


def posture(ctx: StepContext) -> float:
    """-(roll^2 + 0.5 pitch^2 + yaw^2), torso ZYX Euler angles, rad^2."""
    roll, pitch, yaw = euler_zyx(ctx.state.base_orientation)
    return -(roll * roll + 0.5 * pitch * pitch + yaw * yaw)


# -- terms: PLEN bio-inspired gait ---------------------------------------------------------------------------------
def gait_symmetry(ctx: StepContext) -> float:
    """Cosine similarity, in [-1, 1], of the left leg's (hip pitch, knee, ankle pitch) history over one gait cycle
    with the right leg's history shifted circularly by half a cycle; 0 until a whole cycle is recorded or while a
    side does not move.

    With ``symmetry_centered`` each joint's mean over the cycle is removed first (so the standing pose alone does not
    score); the right leg's angles are multiplied by ``right_leg_sign`` (null = 1 here; ``RewardComputer`` resolves it
    from the robot's stance).  1 = the right leg does exactly what the left
    did half a cycle earlier (a perfectly anti-phased gait), -1 = both legs swing together.
    """
    history = ctx.history
    if history is None:
        return 0.0
    sign = ctx.params.right_leg_sign
    return history.symmetry(1.0 if sign is None else sign, ctx.params.symmetry_centered)


def joint_motion(ctx: StepContext) -> float:
    """-(fraction of the 6 leg pitch joints whose range max - min over the gait cycle is below
    ``still_joint_range``), in [-1, 0]; 0 until a whole cycle is recorded."""
    history = ctx.history
    if history is None or not history.full:
        return 0.0
    ranges = history.joint_ranges().tolist()
    limit = ctx.params.still_joint_range
    return -sum(1 for r in ranges if r < limit) / len(ranges)


def gait_phase_contact(ctx: StepContext) -> float:
    """1 when the right foot is on the ground in the first half of the gait cycle or the left foot in the second
    half, else 0.  Cycle index = (step - 1) mod cycle_steps; first half = index < cycle_steps / 2."""
    index = (ctx.step - 1) % ctx.params.cycle_steps
    contacts = ctx.state.foot_contacts
    foot = RIGHT if 2 * index < ctx.params.cycle_steps else LEFT
    return 1.0 if bool(contacts[foot]) else 0.0


def double_support(ctx: StepContext) -> float:
    """-max(0, f - max_double_support), f = fraction of the gait cycle's steps with every foot on the ground;
    0 until a whole cycle is recorded."""
    history = ctx.history
    if history is None or not history.full:
        return 0.0
    return -max(0.0, history.double_support_fraction() - ctx.params.max_double_support)


def flat_foot(ctx: StepContext) -> float:
    """Sum over the feet on the ground of cos(sole tilt) = z_z of the foot link frame (1 = flat, < 1 tilted).

    Assumes the foot link's z axis is the sole normal (true of the generated URDFs: flat-footed stance)."""
    contacts = ctx.state.foot_contacts.tolist()
    if not any(contacts):
        return 0.0
    quaternions = _need(ctx.state.foot_orientations, "state.foot_orientations", "flat_foot").tolist()
    total = 0.0
    for touching, (x, y, z, w) in zip(contacts, quaternions):
        if touching:
            total += 1.0 - 2.0 * (x * x + y * y) / (x * x + y * y + z * z + w * w)
    return total


# -- terms: ZMP tracking -------------------------------------------------------------------------------------------
def zmp_tracking(ctx: StepContext) -> float:
    """-|zmp_ref - zmp|, m: zmp = measured centre of pressure (x, y), or the CoM ground projection when airborne."""
    reference = _need(ctx.reference, "a reference gait (Reference)", "zmp_tracking")
    _need(reference.zmp, "a reference ZMP (reference.zmp)", "zmp_tracking")
    zmp = measured_zmp(ctx.state)
    dx = float(reference.zmp[0]) - zmp[0]
    dy = float(reference.zmp[1]) - zmp[1]
    return -math.sqrt(dx * dx + dy * dy)


def support_tracking(ctx: StepContext) -> float:
    """Fraction of feet, in [0, 1], whose contact matches the reference support (which feet should be down)."""
    reference = _need(ctx.reference, "a reference gait (Reference)", "support_tracking")
    support = np.asarray(reference.support, dtype=bool)
    return float(np.count_nonzero(support == ctx.state.foot_contacts)) / support.size


def fall_after_steps(ctx: StepContext) -> float:
    """-250 + step on the falling step (a later fall costs less), else 0."""
    return FALL_AFTER_STEPS_OFFSET + ctx.step if ctx.fell else 0.0


def success(ctx: StepContext) -> float:
    """1 on the last step of an episode that did not fall, else 0."""
    return 1.0 if ctx.episode_end and not ctx.fell else 0.0


# -- terms: velocity tracking (legged_gym) -------------------------------------------------------------------------
def lin_vel_tracking(ctx: StepContext) -> float:
    """exp(-|v_cmd - v|^2 / tracking_sigma), v = torso (vx, vy) in the heading frame, m/s; in (0, 1]."""
    command = _need(ctx.command, "a velocity command", "lin_vel_tracking")
    vx, vy = heading_velocity(ctx.state)
    ex, ey = float(command[0]) - vx, float(command[1]) - vy
    return math.exp(-(ex * ex + ey * ey) / ctx.params.tracking_sigma)


def yaw_rate_tracking(ctx: StepContext) -> float:
    """exp(-(w_cmd - w_z)^2 / tracking_sigma), w_z = torso rotation rate about world z, rad/s; in (0, 1]."""
    command = _need(ctx.command, "a velocity command", "yaw_rate_tracking")
    error = float(command[2]) - yaw_rate(ctx.state)
    return math.exp(-error * error / ctx.params.tracking_sigma)


def lin_vel_z(ctx: StepContext) -> float:
    """-v_z^2, v_z = torso linear velocity along the body z axis (as legged_gym), (m/s)^2."""
    x, y, z, w = _floats(ctx.state.base_orientation)
    s = 2.0 / (x * x + y * y + z * z + w * w)
    v = ctx.state.base_linear_velocity
    # body z in world = last column of the rotation matrix; v_z(body) = that column . v(world)
    vz = (s * (x * z + w * y) * float(v[0]) + s * (y * z - w * x) * float(v[1])
          + (1.0 - s * (x * x + y * y)) * float(v[2]))
    return -vz * vz


def ang_vel_xy(ctx: StepContext) -> float:
    """-(w_x^2 + w_y^2), torso angular velocity in the body frame (gyro), (rad/s)^2."""
    w = ctx.state.base_angular_velocity
    return -(float(w[0]) ** 2 + float(w[1]) ** 2)


def orientation(ctx: StepContext) -> float:
    """-(g_x^2 + g_y^2), g = unit gravity direction in the body frame (0 upright, 1 lying on a side)."""
    g = ctx.state.gravity_body()
    return -(float(g[0]) ** 2 + float(g[1]) ** 2)


def torques(ctx: StepContext) -> float:
    """-|tau|^2, tau = applied joint torques, (N m)^2."""
    tau = ctx.state.joint_efforts
    return -float(np.dot(tau, tau))


def feet_air_time(ctx: StepContext) -> float:
    """legged_gym air-time reward, s: sum over the feet touching down this step of (air time - target); 0 when no
    foot touched down or while |commanded (vx, vy)| <= feet_air_time_min_command (always counted without a
    command).  Rewards steps longer than the target, penalises shorter ones."""
    history = ctx.history
    if history is None or not any(history.touchdown):
        return 0.0
    command = ctx.command
    if command is not None and math.hypot(command[0], command[1]) <= ctx.params.feet_air_time_min_command:
        return 0.0
    target = ctx.params.feet_air_time_target
    return sum(air - target for air, down in zip(history.touchdown_air_time, history.touchdown) if down)


# name -> term; each name is also a RewardWeights field (same order).  Add a term by adding both.
REWARD_TERMS: Dict[str, Callable[[StepContext], float]] = {
    "forward_velocity": forward_velocity,
    "alive": alive,
    "tilt": tilt,
    "action_rate": action_rate,
    "fall": fall,
    "forward_progress": forward_progress,
    "plen_velocity": plen_velocity,
    "height": height,
    "lateral": lateral,
    "posture": posture,
    "gait_symmetry": gait_symmetry,
    "joint_motion": joint_motion,
    "gait_phase_contact": gait_phase_contact,
    "double_support": double_support,
    "flat_foot": flat_foot,
    "zmp_tracking": zmp_tracking,
    "support_tracking": support_tracking,
    "fall_after_steps": fall_after_steps,
    "success": success,
    "lin_vel_tracking": lin_vel_tracking,
    "yaw_rate_tracking": yaw_rate_tracking,
    "lin_vel_z": lin_vel_z,
    "ang_vel_xy": ang_vel_xy,
    "orientation": orientation,
    "torques": torques,
    "feet_air_time": feet_air_time,
}

HISTORY_TERMS = ("gait_symmetry", "joint_motion", "double_support", "feet_air_time")  # read ctx.history
REFERENCE_TERMS = ("zmp_tracking", "support_tracking")  # need ctx.reference (zmp_tracking: reference.zmp too)
COMMAND_TERMS = ("lin_vel_tracking", "yaw_rate_tracking")  # need ctx.command (feet_air_time uses it if given)
PRIVILEGED_TERMS = ("flat_foot", "zmp_tracking")  # read simulator-only RobotState fields (foot orientations, CoP/CoM)


def weighted_terms(weights: RewardWeights, ctx: StepContext) -> Dict[str, float]:
    """Weighted value of every term with a non-zero weight (name -> weight * term(ctx)); the reward is their sum."""
    return {name: weight * REWARD_TERMS[name](ctx) for name, weight in weights.active()}


def right_leg_sign(robot: RobotConfig) -> float:
    """-1 when the robot's right leg pitch joints count the opposite way to the left's (the knees stand at angles of
    opposite sign, as on the OP3), else 1 (PLEN; also when a knee stands straight at 0 or there are fewer legs)."""
    if len(robot.legs) < 2:
        return 1.0
    left, right = (robot.joint(leg.role("knee")).stance for leg in robot.legs[:2])
    return -1.0 if left * right < 0.0 else 1.0


# -- per-episode computer ------------------------------------------------------------------------------------------
class RewardComputer:
    """Computes a step's weighted reward terms and keeps the gait history and air-time bookkeeping between steps.

    ``reward_terms = computer(state, previous_state, action, previous_action, fell, step, dt, episode_end)`` returns
    ``{name: weight * term}`` for every term with a non-zero weight; the reward is ``sum(reward_terms.values())``.
    Call ``reset(state)`` at every episode start.  ``context`` is the last step's ``StepContext`` (for inspection).
    The gait history is kept only when a term that reads it (``HISTORY_TERMS``) has a non-zero weight; otherwise
    ``context.history`` is None.

    ``params.right_leg_sign`` null is resolved from the robot (``right_leg_sign``); ``params`` keeps the resolved
    copy.  ``nominal_height`` (m): the torso height the ``height`` term holds when ``params.nominal_height`` is null
    (default: the robot's ``spawn_height``).  ``fall_height`` (m): the height below which ``forward_progress`` counts
    the robot as fallen when ``params.fall_height`` is null (default: none, the step's ``fell`` flag decides).
    """

    def __init__(self, weights: RewardWeights, params: Optional[RewardParams] = None,
                 robot: Optional[RobotConfig] = None, nominal_height: Optional[float] = None,
                 fall_height: Optional[float] = None):
        self.weights = weights
        self.params = params if params is not None else RewardParams()
        self.params.validate()
        self.robot = robot
        self._active = [(name, weight, REWARD_TERMS[name]) for name, weight in weights.active()]
        if self.params.nominal_height is not None:
            nominal_height = self.params.nominal_height
        elif nominal_height is None and robot is not None:
            nominal_height = robot.spawn_height
        self.nominal_height = None if nominal_height is None else float(nominal_height)
        self.fall_height = self.params.fall_height if self.params.fall_height is not None else fall_height
        if robot is not None and self.params.right_leg_sign is None:
            self.params = dataclasses.replace(self.params, right_leg_sign=right_leg_sign(robot))
        if robot is not None:
            if len(robot.legs) < 2:
                raise ValueError("robot %s has %d leg(s); the gait terms need a left and a right leg"
                                 % (robot.name, len(robot.legs)))
            self._gait_index = np.array([robot.joint_index(leg.role(role)) for leg in robot.legs[:2]
                                         for role in GAIT_JOINT_ROLES])
            n_feet = len(robot.legs)
        else:
            self._gait_index = None
            n_feet = 2
        self.history = GaitHistory(self.params.cycle_steps, n_feet)
        self._track = any(name in HISTORY_TERMS for name, _, _ in self._active)
        if self._track and robot is None:
            raise ValueError("reward terms %s need the robot (its legs)"
                             % ", ".join(n for n, _, _ in self._active if n in HISTORY_TERMS))
        self.context = None  # type: Optional[StepContext]

    def reset(self, state: RobotState) -> None:
        """Start an episode from ``state``: clears the gait history and the air times."""
        self.history.clear(state.foot_contacts if state.foot_contacts.shape == (self.history.n_feet,) else None)
        self.context = None

    def __call__(self, state: RobotState, previous_state: RobotState, action: np.ndarray,
                 previous_action: np.ndarray, fell: bool, step: int, dt: float, episode_end: bool,
                 command: Optional[np.ndarray] = None, reference: Optional[Reference] = None) -> Dict[str, float]:
        """Weighted value of each term with a non-zero weight for the step that went from ``previous_state`` to
        ``state``; ``step`` counts steps since reset including this one, ``dt`` is the control period (s)."""
        history = None
        if self._track:
            history = self.history
            history.push(state.joint_positions[self._gait_index], state.foot_contacts, dt)
        ctx = StepContext(state, previous_state, action, previous_action, bool(fell), int(step), float(dt),
                          bool(episode_end), command, reference, history, self.params, self.nominal_height,
                          self.fall_height)
        self.context = ctx
        return {name: weight * term(ctx) for name, weight, term in self._active}
