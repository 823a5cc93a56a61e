"""Open-loop sine-wave reference gait for a biped, from ``config/gaits/<robot>.yaml``, and a player for it.

The gait is a pure function of time.  Foot trajectories are written in the **walking frame**: origin at the torso
link origin, x forward along the heading, y left, z up, level (the torso frame turned back by the gait's forward lean
``torso_pitch``; without lean the two coincide).  The leg inverse kinematics (``op3_walk.robots.kinematics``) turns
them into joint targets; the feet stay flat (parallel to the ground) throughout.

Timing.  One cycle (``period_s``) is two steps.  Each step starts with double support (a fraction
``double_support_ratio`` of the step, so the same fraction of the cycle), then one foot swings: the **left** foot in
the first half of the cycle (phase 0..0.5, the right foot carries the robot), the right foot in the second half.
A foot in stance moves backward at constant speed in the walking frame (that is what carries the torso forward); a
swinging foot moves forward on a cosine profile and rises on a half sine to ``foot_lift``.  Both feet shift sideways
together on a sine of the cycle (``sway``) so that the torso moves over the stance foot; optional shoulder pitch
joints swing opposite to the legs (``arm_swing``).  Every amplitude (step, lift, sway, arm swing) grows from 0 over
``ramp_s`` (smoothstep), so at t = 0 the robot stands in the gait's neutral pose (``ReferenceGait.neutral``), which
is also where the player resets it.

``step_length`` is the distance the torso advances per step (half cycle) if the feet do not slip, which is also the
fore-aft distance between the feet in the middle of double support; nominal speed = 2 * step_length / period_s.

Zero-moment-point reference (``zmp_reference``): x, y in the walking frame (the ground-plane projection, z
ignored).  In single support it is the centre of the stance foot's sole (the centre of the bounding box of the foot
link's collision shapes, ``sole_centres``); during the double support of a step it moves linearly from the previous
stance sole to the next one; during the ramp-in it is blended with the midpoint between the soles (at t = 0 it is
the midpoint).  ``to_walking_frame`` maps a measured world point (e.g. ``RobotState.center_of_pressure``) into the
same frame for comparison.

Player (``scripts/play_gait`` is the same): runs the gait open loop in PyBullet and prints distance, speed, drift,
tilt and whether it fell; exit status 0 = walked without falling, 2 = fell, 1 = bad configuration::

    python -m op3_walk.robots.gait --robot plen --seconds 10 [--gui] [--frames strip.png]

No ROS, no torch here (matplotlib only for ``--frames``, imported on demand).
"""
import argparse
import dataclasses
import math
import os
import sys
import time
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from op3_walk import CONFIG_DIR
from op3_walk.config import doc, from_dict, load, to_dict
from op3_walk.robots.description import LEG_JOINT_ROLES, RobotConfig, find_config, load_robot
from op3_walk.robots.kinematics import BipedKinematics, rot_y

GAITS_DIR = os.path.join(CONFIG_DIR, "gaits")
SCALED_ROLES = ("hip_pitch", "knee", "ankle_pitch")  # the joint groups ``scales`` multiply, in this order
FALL_TILT = 0.8            # rad: the player counts a fall when the torso tilts more than this
FALL_HEIGHT_RATIO = 0.6    # the player counts a fall when the torso is below this fraction of its standing height
SPAWN_CLEARANCE = 0.001    # m between the soles and the ground at reset
LIMIT_SAMPLES = 240        # samples per cycle used to check the gait against the joint limits


@dataclasses.dataclass
class GaitConfig:
    """A sine-wave walking pattern (SI units; walking frame: torso origin, x forward, y left, z up, level)."""

    period_s: float = doc("duration of one gait cycle (two steps), s")
    double_support_ratio: float = doc("fraction of each step (and of the cycle) with both feet on the ground, 0..1")
    step_length: float = doc("torso advance per step (half cycle) without slip, m; speed = 2*step_length/period_s "
                             "(negative walks backward)")
    foot_lift: float = doc("peak height of the swinging foot above the ground, m")
    sway: float = doc("amplitude of the feet's common sideways shift (torso sway over the stance foot), m")
    foot_z: float = doc("height of each foot frame origin (ankle point) in the walking frame when on the ground, "
                        "m (negative: below the torso origin)")
    foot_y: float = doc("lateral distance of each foot frame origin from the walking frame's x axis, m")
    foot_x: float = doc("fore-aft offset of the feet's mean position in the walking frame, m", 0.0)
    sway_phase: float = doc("sway lead, in cycles (0.05 = the sway peaks 5% of a cycle earlier)", 0.0)
    torso_pitch: float = doc("forward lean of the torso (rotation about its y axis, nose down positive), rad", 0.0)
    arm_joints: List[str] = doc("shoulder pitch joints swung opposite to the legs, left first (empty: no swing)",
                                default_factory=list)
    arm_swing: float = doc("arm swing amplitude, rad (forward/backward about the shoulder pitch axis)", 0.0)
    ramp_s: float = doc("every amplitude grows smoothly from 0 over this time after t = 0, s", 1.0)

    def validate(self) -> None:
        if not self.period_s > 0.0:
            raise ValueError("period_s must be positive")
        if not 0.0 <= self.double_support_ratio < 1.0:
            raise ValueError("double_support_ratio must lie in [0, 1)")
        for name in ("foot_lift", "sway", "foot_y", "arm_swing", "ramp_s"):
            if getattr(self, name) < 0.0:
                raise ValueError("%s must not be negative" % name)
        if not self.foot_z < 0.0:
            raise ValueError("foot_z must be negative (feet below the torso)")
        if self.arm_joints and len(self.arm_joints) != 2:
            raise ValueError("arm_joints needs two joints (left, right) or none")

    @property
    def speed(self) -> float:
        """Nominal forward speed without slip, m/s."""
        return 2.0 * self.step_length / self.period_s


def load_gait(name_or_path: Any, overrides: Optional[Mapping[str, Any]] = None) -> GaitConfig:
    """Load a gait by name ("plen" -> ``config/gaits/plen.yaml``) or YAML path; a ``GaitConfig`` passes through."""
    if isinstance(name_or_path, GaitConfig):
        if not overrides:
            return name_or_path
        return from_dict(GaitConfig, dict(to_dict(name_or_path), **overrides))
    return load(GaitConfig, find_config(str(name_or_path), GAITS_DIR), overrides)


def smoothstep(u: float) -> float:
    """0 for u <= 0, 1 for u >= 1, 3u² - 2u³ between (zero slope at both ends)."""
    u = min(1.0, max(0.0, u))
    return u * u * (3.0 - 2.0 * u)


def to_walking_frame(point_world: Sequence[float], base_position: Sequence[float],
                     base_orientation: Sequence[float]) -> np.ndarray:
    """x, y of a world point in the walking frame of a torso at ``base_position`` / ``base_orientation`` (x, y, z, w
    quaternion): relative to the torso origin, turned by minus the torso heading (yaw of its x axis)."""
    x, y, z, w = (float(v) for v in base_orientation)
    heading = math.atan2(2.0 * (x * y + w * z), 1.0 - 2.0 * (y * y + z * z))
    d = np.asarray(point_world, dtype=np.float64)[:2] - np.asarray(base_position, dtype=np.float64)[:2]
    c, s = math.cos(heading), math.sin(heading)
    return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])


class ReferenceGait:
    """The gait ``config`` for ``robot`` (two legs, left first): foot targets, joint targets, support, ZMP."""

    def __init__(self, robot: RobotConfig, config: GaitConfig, kinematics: Optional[BipedKinematics] = None):
        if len(robot.legs) != 2:
            raise ValueError("a biped gait needs 2 legs, robot %s has %d" % (robot.name, len(robot.legs)))
        self.robot, self.config = robot, config
        self.kinematics = kinematics if kinematics is not None else BipedKinematics(robot)
        self._lean = rot_y(-config.torso_pitch)  # walking frame -> torso frame (foot positions and orientations)
        self._lean_rotations = [self._lean, self._lean]
        self._groups = [np.array([leg.indices[LEG_JOINT_ROLES.index(role)] for leg in self.kinematics.legs])
                        for role in SCALED_ROLES]
        self._arms = []  # (robot index, sign giving a forward swing for a positive value)
        for name in config.arm_joints:
            axis = self.kinematics.joint_axis(name)
            if abs(axis[1]) < 0.9:
                raise ValueError("arm joint %s: axis %s is not a pitch axis (along y)" % (name, axis.round(6).tolist()))
            # forward swing = rotation about -y (REP 103)
            self._arms.append((robot.joint_index(name), -1.0 if axis[1] > 0.0 else 1.0))
        self.lower, self.upper = robot.lower, robot.upper
        # (2, 2) sole centre of each foot relative to its foot frame origin, walking frame (feet are kept flat), m
        self.sole_centres = np.array([leg.sole_centre() for leg in self.kinematics.legs])
        self.neutral = self._joints(self._feet(0.0, 0.0), 0.0)  # standing pose, every amplitude at 0
        self._check_limits()

    # -- timing --------------------------------------------------------------------------------------------------
    def phase(self, t: float) -> float:
        """Position in the gait cycle, [0, 1): 0..0.5 left foot steps (right supports), 0.5..1 right foot steps."""
        return (float(t) / self.config.period_s) % 1.0

    def amplitude(self, t: float) -> float:
        """Ramp-in factor of every amplitude at time t, 0..1."""
        ramp = self.config.ramp_s
        return 1.0 if ramp <= 0.0 else smoothstep(float(t) / ramp)

    def _swing(self, leg: int, phase: float) -> Optional[float]:
        """Swing progress 0..1 of ``leg`` at ``phase``, None while it is in stance."""
        d = self.config.double_support_ratio
        start = d / 2.0 + 0.5 * leg  # left swings after the first double support, right half a cycle later
        local = (phase - start) % 1.0
        duration = (1.0 - d) / 2.0
        return local / duration if local < duration else None

    def support(self, t: float) -> np.ndarray:
        """(2,) bool, left then right: which feet the pattern has on the ground at t."""
        phase = self.phase(t)
        return np.array([self._swing(leg, phase) is None for leg in range(2)])

    # -- feet ----------------------------------------------------------------------------------------------------
    def _feet(self, phase: float, amplitude: float) -> np.ndarray:
        cfg = self.config
        d = cfg.double_support_ratio
        reach = amplitude * cfg.step_length * (1.0 + d) / 2.0  # a foot's x range is [-reach, +reach]
        shift = amplitude * cfg.sway * math.cos(2.0 * math.pi * (phase - (1.0 + d) / 4.0 + cfg.sway_phase))
        feet = np.zeros((2, 3))
        for leg, side in ((0, 1.0), (1, -1.0)):
            swing = self._swing(leg, phase)
            if swing is not None:
                x = -reach + 2.0 * reach * (1.0 - math.cos(math.pi * swing)) / 2.0
                z = amplitude * cfg.foot_lift * math.sin(math.pi * swing)
            else:
                start = (d / 2.0 + 0.5 * leg + (1.0 - d) / 2.0) % 1.0
                progress = ((phase - start) % 1.0) / ((1.0 + d) / 2.0)
                x, z = reach - 2.0 * reach * progress, 0.0
            feet[leg] = (cfg.foot_x + x, side * cfg.foot_y + shift, cfg.foot_z + z)
        return feet

    def foot_targets(self, t: float) -> np.ndarray:
        """(2, 3) foot frame origins (ankle points), left then right, in the walking frame at time t, m."""
        return self._feet(self.phase(t), self.amplitude(t))

    def zmp_reference(self, t: float) -> np.ndarray:
        """(2,) desired zero-moment point x, y in the walking frame at time t, m (see the module docstring)."""
        phase, amplitude = self.phase(t), self.amplitude(t)
        feet = self._feet(phase, amplitude)[:, :2] + self.sole_centres
        d = self.config.double_support_ratio
        step = 0 if phase < 0.5 else 1             # the leg that swings in this step
        progress = (phase % 0.5) * 2.0             # 0..1 through the step
        stance, previous = 1 - step, step          # this step's stance foot; the previous step's
        if d > 0.0 and progress < d:
            lam = progress / d
            zmp = (1.0 - lam) * feet[previous] + lam * feet[stance]
        else:
            zmp = feet[stance].copy()
        middle = feet.mean(axis=0)
        return middle + amplitude * (zmp - middle)

    # -- joints --------------------------------------------------------------------------------------------------
    def _joints(self, feet: np.ndarray, arm: float, check_limits: bool = False) -> np.ndarray:
        q = self.kinematics.joint_vector([self._lean.dot(p) for p in feet], rotations=self._lean_rotations,
                                         check_limits=check_limits)
        for (index, forward), sign in zip(self._arms, (1.0, -1.0)):
            q[index] += forward * sign * arm
        return q

    def _arm(self, phase: float, amplitude: float) -> float:
        """Left arm forward swing, rad: forward while the right foot swings forward (second half)."""
        d = self.config.double_support_ratio
        return -amplitude * self.config.arm_swing * math.cos(2.0 * math.pi * (phase - (1.0 + d) / 4.0))

    def joint_targets(self, t: float, scales: Optional[Sequence[float]] = None) -> np.ndarray:
        """Robot-order joint targets at time t, rad (non-leg joints at their stance, arms swinging if configured).

        ``scales``: three factors for the hip pitch, knee and ankle pitch joints of both legs; each multiplies that
        joint's offset from ``neutral`` (the gait's standing pose), e.g. 1.1 = 10% more motion.  The result is
        clipped to the joint limits.
        """
        phase, amplitude = self.phase(t), self.amplitude(t)
        q = self._joints(self._feet(phase, amplitude), self._arm(phase, amplitude))
        if scales is not None:
            if len(scales) != len(SCALED_ROLES):
                raise ValueError("scales needs %d factors (%s), got %d"
                                 % (len(SCALED_ROLES), ", ".join(SCALED_ROLES), len(scales)))
            for group, scale in zip(self._groups, scales):
                if scale != 1.0:
                    q[group] = self.neutral[group] + float(scale) * (q[group] - self.neutral[group])
        return np.minimum(np.maximum(q, self.lower), self.upper)

    def _check_limits(self) -> None:
        """ValueError if the full-amplitude gait needs a joint beyond its limit (or a foot out of reach)."""
        for k in range(LIMIT_SAMPLES):
            phase = k / float(LIMIT_SAMPLES)
            try:
                self._joints(self._feet(phase, 1.0), self._arm(phase, 1.0), check_limits=True)
            except ValueError as exc:
                raise ValueError("gait for %s at phase %.3f: %s" % (self.robot.name, phase, exc)) from None
        for index, _ in self._arms:
            swing = self.config.arm_swing
            if self.neutral[index] - swing < self.lower[index] or self.neutral[index] + swing > self.upper[index]:
                raise ValueError("gait for %s: arm swing takes %s beyond its limits"
                                 % (self.robot.name, self.robot.joint_names[index]))

    # -- player support ------------------------------------------------------------------------------------------
    @property
    def standing_height(self) -> float:
        """Torso origin height above the ground in the neutral pose (soles flat on the ground), m."""
        depth = self.kinematics.legs[0].sole_depth()
        if depth is None:
            return self.robot.spawn_height
        return depth - self.config.foot_z

    def base_orientation(self) -> Tuple[float, float, float, float]:
        """Torso quaternion (x, y, z, w) of the gait's lean (rotation about world y by ``torso_pitch``)."""
        half = self.config.torso_pitch / 2.0
        return (0.0, math.sin(half), 0.0, math.cos(half))


# -- open-loop player ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class WalkResult:
    """What the open-loop player measured (world frame, m, rad, s)."""

    seconds: float           # simulated time
    distance: float          # torso x travelled
    speed: float             # distance / seconds
    lateral_drift: float     # torso y travelled
    heading_change: float    # torso yaw change, rad
    max_tilt: float          # largest torso angle from vertical, rad
    fell_at: Optional[float]  # time of the fall, s (None: did not fall)
    frames: List[np.ndarray] = dataclasses.field(default_factory=list, repr=False)
    frame_times: List[float] = dataclasses.field(default_factory=list, repr=False)

    def summary(self, robot: str) -> str:
        fell = "no" if self.fell_at is None else "yes, at t = %.2f s" % self.fell_at
        return ("%s: %.1f s simulated\n  distance walked (torso x): %.3f m\n  mean forward speed: %.3f m/s\n"
                "  lateral drift (torso y): %+.3f m\n  heading change: %+.3f rad\n  max tilt: %.3f rad\n  fell: %s"
                % (robot, self.seconds, self.distance, self.speed, self.lateral_drift, self.heading_change,
                   self.max_tilt, fell))


def _yaw(q: Sequence[float]) -> float:
    x, y, z, w = q
    return math.atan2(2.0 * (x * y + w * z), 1.0 - 2.0 * (y * y + z * z))


def play(robot: RobotConfig, gait: ReferenceGait, seconds: float, gui: bool = False,
         frame_times: Sequence[float] = (), stop_on_fall: bool = True, frame_size: Tuple[int, int] = (240, 180),
         scales: Optional[Sequence[float]] = None) -> WalkResult:
    """Run ``gait`` open loop in PyBullet for ``seconds`` of simulated time and measure the walk.

    An image (``frame_size`` = width, height; zoomed on the robot) is kept at the control step nearest each of
    ``frame_times`` (s); ``scales`` are passed to every ``joint_targets`` call.
    """
    from op3_walk.backends.pybullet_backend import PyBulletBackend  # PyBullet only when playing

    dt = robot.control_period_s
    steps = int(round(seconds / dt))
    frame_steps = set(min(steps - 1, max(0, int(round(t / dt)) - 1)) for t in frame_times)
    result = WalkResult(seconds=0.0, distance=0.0, speed=0.0, lateral_drift=0.0, heading_change=0.0, max_tilt=0.0,
                        fell_at=None)
    height = gait.standing_height
    with PyBulletBackend(robot, gui=gui) as backend:
        state = backend.reset(gait.joint_targets(0.0), (0.0, 0.0, height + SPAWN_CLEARANCE), gait.base_orientation())
        start, yaw0 = state.base_position.copy(), _yaw(state.base_orientation)
        wall = time.time()
        for k in range(steps):
            backend.apply(gait.joint_targets((k + 1) * dt, scales))
            state = backend.step()
            result.max_tilt = max(result.max_tilt, state.tilt())
            if k in frame_steps:
                result.frames.append(_zoomed_frame(backend, gait, frame_size))
                result.frame_times.append(state.time)
            fallen = state.tilt() > FALL_TILT or state.base_position[2] < FALL_HEIGHT_RATIO * height
            if result.fell_at is None and fallen:
                result.fell_at = state.time
                if stop_on_fall:
                    break
            if gui:
                time.sleep(max(0.0, wall + state.time - time.time()))
        result.seconds = state.time
        result.distance = float(state.base_position[0] - start[0])
        result.lateral_drift = float(state.base_position[1] - start[1])
        result.heading_change = float((_yaw(state.base_orientation) - yaw0 + math.pi) % (2 * math.pi) - math.pi)
        result.speed = result.distance / result.seconds if result.seconds > 0 else 0.0
    return result


def _zoomed_frame(backend, gait: ReferenceGait, size: Tuple[int, int]) -> np.ndarray:
    """``backend.render_rgb`` cropped around the robot (the camera looks at the torso from a fixed distance)."""
    from op3_walk.backends.pybullet_backend import CAMERA_DISTANCE, CAMERA_FOV_DEG

    visible = 2.0 * CAMERA_DISTANCE * math.tan(math.radians(CAMERA_FOV_DEG) / 2.0)  # m, image height at the torso
    fraction = min(1.0, 2.5 * gait.standing_height / visible)  # keep about 2.5 torso heights in view
    width, height = size
    full_w, full_h = int(round(width / fraction)), int(round(height / fraction))
    image = backend.render_rgb(full_w, full_h)
    top, left = (full_h - height) // 2, (full_w - width) // 2
    return image[top:top + height, left:left + width]


def save_strip(frames: Sequence[np.ndarray], times: Sequence[float], path: str, title: str = "") -> None:
    """Write the frames side by side as one PNG (matplotlib, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(frames)
    height, width = frames[0].shape[:2]
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n * width / height, 1.9), dpi=100)
    for ax, frame, t in zip(np.atleast_1d(axes), frames, times):
        ax.imshow(frame)
        ax.set_title("t = %.2f s" % t, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Play the open-loop reference gait in PyBullet and measure it.")
    parser.add_argument("--robot", default="plen", help="robot name or YAML path (default: plen)")
    parser.add_argument("--gait", help="gait name or YAML path (default: config/gaits/<robot name>.yaml)")
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated time, s (default: 10)")
    parser.add_argument("--gui", action="store_true", help="show the PyBullet GUI (real time)")
    parser.add_argument("--frames", metavar="PNG", help="write a strip of frames to this PNG file")
    parser.add_argument("--n-frames", type=int, default=6,
                        help="frames in the strip, spread over the last gait cycle of the run (default: 6)")
    args = parser.parse_args(argv)
    try:
        robot = load_robot(args.robot)
        config = load_gait(args.gait or robot.name)
        gait = ReferenceGait(robot, config)
    except ValueError as exc:
        print("play_gait: %s" % exc, file=sys.stderr)
        return 1
    print("gait %s: period %.3g s, step %.4g m, lift %.4g m, nominal speed %.3g m/s"
          % (args.gait or robot.name, config.period_s, config.step_length, config.foot_lift, config.speed))
    frame_times = []
    if args.frames and args.n_frames > 0:
        start = max(0.0, args.seconds - config.period_s)
        frame_times = [start + (args.seconds - start) * (i + 1) / args.n_frames for i in range(args.n_frames)]
    result = play(robot, gait, args.seconds, gui=args.gui, frame_times=frame_times, stop_on_fall=True)
    print(result.summary(robot.name))
    if args.frames and result.frames:
        save_strip(result.frames, result.frame_times, args.frames,
                   "%s open-loop reference gait, last cycle: %.2f m in %.1f s" % (robot.name, result.distance,
                                                                                  result.seconds))
        print("frames: %s" % args.frames)
    return 0 if result.fell_at is None else 2


if __name__ == "__main__":
    sys.exit(main())
