"""PLEN calibration tools: potentiometer feedback polynomials, servo horn offsets, BNO055 calibration status.

Run on the robot's Raspberry Pi as ``calibrate_plen`` (``scripts/calibrate_plen``; ``--bus sim`` for a dry run on a
simulated robot anywhere):

- ``calibrate_plen feedback``: every chosen joint in turn is moved (ramped) through known angles evenly spread over
  what both its servo and the robot's joint limits allow, while the others hold the stance; at each angle the ADC is
  read several times and averaged; a polynomial volts -> rad (``numpy.polyval`` order, the ``poly`` of
  ``config/hardware/plen.yaml``) is fitted per joint and its fit error reported.  ``--write FILE`` saves it.
- ``calibrate_plen horn``: holds the robot at a reference pose (zero: limbs straight, or the stance) and lets the
  user turn one joint at a time with + and - until the limb really is at the reference angle; the result is the
  joint's ``horn_offset_rad``.  Do this BEFORE the feedback sweep: the sweep takes the commanded angles as the truth,
  so a wrong horn offset would be folded into the feedback polynomial.
- ``calibrate_plen imu``: reads the BNO055 calibration levels (sys, gyro, accel, mag; 0..3) and says what each
  still needs, until the ones the fusion mode uses reach 3 or a timeout.  ``--write FILE`` then reads the chip's
  calibration profile (offsets and radii) and saves it as ``imu.calibration_profile``, which ``PlenIO.start()``
  writes back to the chip on every start (the driver's reset and a power-off clear it).

The library functions (``fit_feedback``, ``calibrate_feedback``, ``horn_offset_step``, ``horn_offset_session``,
``imu_calibration_status``, ``watch_imu_calibration``, ``save_calibration``) take a started ``PlenIO`` and plain
callables for time and keys, so they are tested against ``simbus.SimulatedPlen`` without a terminal.

``save_calibration`` edits only the ``poly: [...]`` and ``horn_offset_rad:`` values of the calibrated joints and the
``imu: calibration_profile:`` value in the YAML text (one entry per line, as the shipped file is written), keeping
every other line and comment, and keeps a ``calibrate_plen record`` comment block (date and fit error per joint,
date and levels of the IMU profile); the result is checked to load with the strict loader before it replaces
anything (atomically).

No rospy, no torch: this runs on the Pi.
"""
import argparse
import copy
import dataclasses
import datetime
import math
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from op3_walk.config import ConfigError, from_dict, resolve
from op3_walk.hardware.plen_config import (DEFAULT_PATH, ImuProfileConfig, PlenHardwareConfig, ServoConfig,
                                           load_hardware_config)
from op3_walk.hardware.plen_io import HardwareError

# ------------------------------------------------------------------------------------------------ defaults
DEFAULT_POINTS = 20             # sweep angles per joint
DEFAULT_DEGREE = 3              # feedback polynomial degree
DEFAULT_SETTLE_S = 0.3          # wait after the servo reached an angle before reading, s
DEFAULT_SAMPLES = 4             # ADC reads averaged per angle
DEFAULT_MARGIN_RAD = 0.05       # the sweep stays this far inside the servo range and the joint limits, rad
DEFAULT_SPEED_RAD_S = 1.5       # commanded angles ramp at this speed (the servos could jump at ~8 rad/s), rad/s
DEFAULT_MAX_RMS_RAD = 0.01      # feedback fit error above this fails the CLI (exit 1), rad (0.57 deg)
MIN_SPAN_V = 0.05               # a sweep whose voltage changes less than this reads a disconnected/dead input, V
FLAT_SLOPE_RATIO = 0.1          # a section whose slope is below this share of the median slope is "flat"
RAIL_V = 0.01                   # readings this close to 0 V or VDD sit at a rail (ADC clipping, broken wire), V
HORN_STEP_RAD = math.radians(0.5)   # one + or - in the horn tool
HORN_BIG_STEPS = 5              # > and < move this many steps
HORN_LIMIT_RAD = 0.5            # |horn_offset_rad| the config accepts (re-seat the horn one spline tooth beyond)
IMU_COMPONENTS = ("sys", "gyro", "accel", "mag")
RECORD_BEGIN = "# ---- calibrate_plen record (rewritten by calibrate_plen: last calibration per joint) ----"
RECORD_END = "# ---- end of calibrate_plen record ----"
RECORD_KINDS = ("feedback", "horn", "imu")     # parts of a record line, in this order
IMU_RECORD_NAME = "imu"                         # record line of the IMU profile (after the joints')

EXIT_OK, EXIT_FIT, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class CalibrationError(ValueError):
    """A joint could not be calibrated (its reading does not change, is not monotonic, ...).

    ``failures``: {joint: message}; ``fits``: the joints that did calibrate, {joint: FeedbackFit}.
    """

    def __init__(self, message: str, failures: Optional[Mapping[str, str]] = None,
                 fits: Optional[Mapping[str, "FeedbackFit"]] = None):
        super().__init__(message)
        self.failures = dict(failures or {})
        self.fits = dict(fits or {})


# ================================================================================================ feedback fit
@dataclasses.dataclass
class FeedbackFit:
    """A fitted feedback polynomial and how well it fits its points.

    ``poly``: volts -> rad, highest power first (``numpy.polyval``); ``angles``/``volts``: the points it was fitted
    to; ``residuals_rad``: ``polyval(poly, volts) - angles``; ``rms_rad``/``max_rad``: their RMS and largest
    magnitude; ``hysteresis_rad``: with an up-and-down sweep, the largest difference (as angle) between the two
    directions at the same commanded angle (gear backlash / servo dead band), else None.
    """

    joint: str
    poly: List[float]
    degree: int
    angles: np.ndarray
    volts: np.ndarray
    residuals_rad: np.ndarray
    rms_rad: float
    max_rad: float
    hysteresis_rad: Optional[float] = None

    @property
    def points(self) -> int:
        return int(self.angles.size)

    @property
    def volts_range(self) -> Tuple[float, float]:
        return float(np.min(self.volts)), float(np.max(self.volts))

    def angle_for(self, volts):
        """Joint angle(s), rad, for voltage(s)."""
        return np.polyval(np.asarray(self.poly, dtype=np.float64), volts)


def _unique_mean(angles: np.ndarray, volts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted distinct angles and the mean voltage measured at each."""
    order = np.argsort(angles, kind="stable")
    a, v = angles[order], volts[order]
    uniq, start = np.unique(a, return_index=True)
    sums = np.add.reduceat(v, start)
    counts = np.diff(np.append(start, a.size))
    return uniq, sums / counts


def fit_feedback(angles_rad: Sequence[float], volts: Sequence[float], degree: int = DEFAULT_DEGREE,
                 joint: str = "", supply_v: Optional[float] = None) -> FeedbackFit:
    """Least-squares polynomial volts -> rad through the measured points (``numpy.polyval`` order).

    ValueError with the reason when the points cannot give a trustworthy calibration: fewer than ``degree + 2``
    points or fewer than 3 distinct angles, a non-finite value, a voltage that hardly changes over the sweep
    (< ``MIN_SPAN_V``: nothing connected, or the servo does not move), a voltage that is not monotonic in the angle
    (goes back or stalls: loose horn, pot at its end stop, ADC clipping; ``supply_v`` makes the message say when
    readings sit at a rail), or a fitted polynomial that is not monotonic over the measured voltages (lower the
    degree).
    """
    name = joint or "feedback"
    a = np.asarray(angles_rad, dtype=np.float64).ravel()
    v = np.asarray(volts, dtype=np.float64).ravel()
    degree = int(degree)
    if not 1 <= degree <= 6:
        raise ValueError("%s: polynomial degree must be 1..6, got %d" % (name, degree))
    if a.size != v.size:
        raise ValueError("%s: %d angles but %d voltages" % (name, a.size, v.size))
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(v))):
        raise ValueError("%s: non-finite angle or voltage among the points (angles %s, volts %s)"
                         % (name, np.array2string(a, precision=3), np.array2string(v, precision=3)))
    ua, uv = _unique_mean(a, v)
    if a.size < degree + 2 or ua.size < 3:
        raise ValueError("%s: %d points at %d distinct angles are too few for a degree-%d fit with an error "
                         "estimate (need >= %d points, >= 3 angles)" % (name, a.size, ua.size, degree, degree + 2))
    span = float(np.max(v) - np.min(v))
    rails = ""
    if supply_v is not None:
        low, high = int(np.sum(v <= RAIL_V)), int(np.sum(v >= supply_v - RAIL_V))
        if low or high:
            rails = "; %d reading(s) at 0 V and %d at VDD %.2f V (input clipped at a rail)" % (low, high, supply_v)
    if span < MIN_SPAN_V:
        raise ValueError("%s: the voltage does not change: %.4f..%.4f V (span %.1f mV < %.0f mV) while the angle "
                         "went %.3f..%.3f rad%s; the potentiometer is not connected (or wired to another input), "
                         "or the servo did not move" % (name, np.min(v), np.max(v), span * 1e3, MIN_SPAN_V * 1e3,
                                                         ua[0], ua[-1], rails))
    slopes = np.diff(uv) / np.diff(ua)
    median = float(np.median(slopes))
    bad = np.nonzero(slopes * math.copysign(1.0, median) < FLAT_SLOPE_RATIO * abs(median))[0]
    if bad.size:
        k = int(bad[0])
        raise ValueError("%s: the voltage is not monotonic in the angle: %.4f V at %.3f rad, %.4f V at %.3f rad "
                         "(median slope %.3f V/rad; %d flat or reversed section(s))%s; a loose horn or "
                         "potentiometer, a pot at its end stop, or an ADC clipping" %
                         (name, uv[k], ua[k], uv[k + 1], ua[k + 1], median, bad.size, rails))
    coeffs = np.polyfit(v, a, degree)
    grid = np.linspace(float(np.min(v)), float(np.max(v)), 512)
    deriv = np.polyval(np.polyder(coeffs), grid)
    if not (np.all(deriv > 0.0) or np.all(deriv < 0.0)):
        raise ValueError("%s: the fitted degree-%d polynomial is not monotonic over %.3f..%.3f V (it would map two "
                         "voltages to one angle); use a lower degree" % (name, degree, grid[0], grid[-1]))
    residuals = np.polyval(coeffs, v) - a
    return FeedbackFit(joint=joint, poly=[float(c) for c in coeffs], degree=degree, angles=a, volts=v,
                       residuals_rad=residuals, rms_rad=float(np.sqrt(np.mean(residuals ** 2))),
                       max_rad=float(np.max(np.abs(residuals))))


# ================================================================================================ feedback sweep
def sweep_range(servo: ServoConfig, joint: Any, margin_rad: float = DEFAULT_MARGIN_RAD) -> Tuple[float, float]:
    """Angles (low, high) a sweep may command: the servo's pulse range and the joint's limits, ``margin_rad``
    inside both.  ValueError when nothing is left."""
    s_lo, s_hi = servo.angle_range()
    lo = max(s_lo, float(joint.lower)) + margin_rad
    hi = min(s_hi, float(joint.upper)) - margin_rad
    if not hi > lo:
        raise ValueError("joint %s: no room to sweep: servo range [%.3f, %.3f], joint limits [%.3f, %.3f], margin "
                         "%.3f rad" % (servo.joint, s_lo, s_hi, joint.lower, joint.upper, margin_rad))
    return lo, hi


def default_sweep(servo: ServoConfig, joint: Any, points: int = DEFAULT_POINTS,
                  margin_rad: float = DEFAULT_MARGIN_RAD) -> np.ndarray:
    """``points`` angles evenly over ``sweep_range``, ascending."""
    lo, hi = sweep_range(servo, joint, margin_rad)
    return np.linspace(lo, hi, int(points))


def _ramp(io: Any, current: np.ndarray, goal: np.ndarray, speed: float, period: float,
          sleep: Callable[[float], None]) -> Tuple[np.ndarray, np.ndarray]:
    """Write targets moving from ``current`` to ``goal`` at ``speed`` rad/s (every joint arrives together).
    Returns the goal and the pulse widths last written (us, robot order, as ``PlenIO.write_targets``)."""
    goal = np.asarray(goal, dtype=np.float64)
    delta = goal - current
    steps = max(1, int(math.ceil(float(np.max(np.abs(delta))) / (speed * period) - 1e-9)))
    pulses = None
    for k in range(1, steps + 1):
        pulses = io.write_targets(current + delta * (k / steps))
        sleep(period)
    return goal.copy(), np.asarray(pulses, dtype=np.float64)


def _hold_start(io: Any, speed: float, period: float, sleep: Callable[[float], None]) -> np.ndarray:
    """Bring every servo to the stance, ramping from where the (uncalibrated) feedback says the joints are.  The
    estimate may be off by the very error being calibrated; it still beats a full-speed jump from anywhere."""
    robot = io.robot
    stance = np.asarray(robot.stance, dtype=np.float64)
    start = stance.copy()
    measured = np.asarray(io.read_all_joints().positions, dtype=np.float64)
    ok = np.isfinite(measured)
    start[ok] = np.clip(measured[ok], robot.lower[ok], robot.upper[ok])
    for servo in io.config.servos:   # keep the ramp's start expressible by the servo
        i = robot.joint_index(servo.joint)
        lo, hi = servo.angle_range()
        start[i] = min(max(start[i], lo), hi)
    return _ramp(io, start, stance, speed, period, sleep)[0]


def _angles_for(joint: str, angles: Any, servo: ServoConfig, joint_cfg: Any, points: int,
                margin_rad: float) -> np.ndarray:
    if angles is None:
        return default_sweep(servo, joint_cfg, points, margin_rad)
    chosen = angles.get(joint) if isinstance(angles, Mapping) else angles
    if chosen is None:
        return default_sweep(servo, joint_cfg, points, margin_rad)
    out = np.asarray(chosen, dtype=np.float64).ravel()
    s_lo, s_hi = servo.angle_range()
    lo, hi = max(s_lo, float(joint_cfg.lower)), min(s_hi, float(joint_cfg.upper))
    bad = out[~np.isfinite(out) | (out < lo - 1e-9) | (out > hi + 1e-9)]
    if bad.size:
        raise ValueError("joint %s: sweep angle(s) %s outside [%.3f, %.3f] rad (joint limits and servo range)"
                         % (joint, np.array2string(bad, precision=3), lo, hi))
    return out


def calibrate_feedback(io: Any, joints: Optional[Sequence[str]] = None, angles: Any = None,
                       settle_s: float = DEFAULT_SETTLE_S, samples_per_angle: int = DEFAULT_SAMPLES,
                       degree: int = DEFAULT_DEGREE, sleep: Callable[[float], None] = time.sleep,
                       progress: Optional[Callable[[str, int, int, float, float], None]] = None,
                       points: int = DEFAULT_POINTS, margin_rad: float = DEFAULT_MARGIN_RAD,
                       speed_rad_s: float = DEFAULT_SPEED_RAD_S, round_trip: bool = False) -> Dict[str, FeedbackFit]:
    """Sweep each joint through known angles, read its potentiometer, fit its feedback polynomial.

    ``io``: a started ``PlenIO``.  ``joints``: joints with a servo and feedback (default: every feedback joint, in
    config order).  ``angles``: None (``points`` angles evenly over ``sweep_range``), one sequence for every joint,
    or {joint: sequence}; each must lie within the joint limits and the servo's range.  All servos first ramp to the
    stance; then per joint: ramp to each angle (``speed_rad_s``, one target write per PWM frame), wait
    ``settle_s``, average ``samples_per_angle`` ADC reads (the angle fitted is the one the written pulse, rounded
    to the PCA9685's counts, really commands); with ``round_trip`` sweep up and back down (the fit uses
    both; ``hysteresis_rad`` reports their difference); ramp back to the stance; fit (``fit_feedback``).
    ``progress(joint, index, total, angle, volts)`` is called after every point (``angle``: as fitted).

    Returns {joint: FeedbackFit}.  A joint that cannot be fitted (its reading does not change: wiring) does not stop
    the others; at the end ``CalibrationError`` names every such joint, with the good fits in ``.fits``.
    ``HardwareError`` (a chip stopped answering; PlenIO has switched the servos off) and ``ValueError`` (bad
    arguments, checked before anything moves) propagate.
    """
    cfg = io.config
    robot = io.robot
    fb_joints = [f.joint for f in cfg.feedback]
    servo_joints = {s.joint for s in cfg.servos}
    joints = list(fb_joints if joints is None else joints)
    if not joints:
        raise ValueError("no joints to calibrate")
    for joint in joints:
        if joint not in fb_joints or joint not in servo_joints:
            raise ValueError("joint %r cannot be calibrated: it needs a servo and a feedback entry (feedback joints: "
                             "%s)" % (joint, ", ".join(fb_joints)))
    if samples_per_angle < 1 or settle_s < 0.0 or not speed_rad_s > 0.0 or points < 3:
        raise ValueError("need samples_per_angle >= 1, settle_s >= 0, speed_rad_s > 0, points >= 3")
    plans = {}
    for joint in joints:
        servo = cfg.servo(joint)
        sweep = _angles_for(joint, angles, servo, robot.joint(joint), points, margin_rad)
        if round_trip:
            sweep = np.concatenate([sweep, sweep[::-1][1:]])
        plans[joint] = sweep
    period = 1.0 / cfg.pwm.frequency_hz
    targets = _hold_start(io, speed_rad_s, period, sleep)
    fits = {}       # type: Dict[str, FeedbackFit]
    failures = {}   # type: Dict[str, str]
    for joint in joints:
        i = robot.joint_index(joint)
        sweep = plans[joint]
        servo = cfg.servo(joint)
        volts = np.empty(sweep.size)
        reached = np.empty(sweep.size)
        for k, angle in enumerate(sweep):
            goal = targets.copy()
            goal[i] = angle
            targets, pulses = _ramp(io, targets, goal, speed_rad_s, period, sleep)
            # the angle the servo was really given: the pulse is rounded to the PCA9685's counts (~4.9 us, ~0.5 deg)
            reached[k] = servo.angle_for(float(pulses[i]))
            if settle_s > 0.0:
                sleep(settle_s)
            volts[k] = float(np.mean([io.read_voltage(joint) for _ in range(samples_per_angle)]))
            if progress is not None:
                progress(joint, k, int(sweep.size), float(reached[k]), float(volts[k]))
        goal = targets.copy()
        goal[i] = robot.stance[i]
        targets = _ramp(io, targets, goal, speed_rad_s, period, sleep)[0]
        fb = cfg.feedback_for(joint)
        try:
            fit = fit_feedback(reached, volts, degree, joint=joint, supply_v=cfg.adc.supply_v)
        except ValueError as exc:
            failures[joint] = ("%s [check: servo power and PCA9685 channel %d (did the joint move?), the "
                               "potentiometer wiring to ADS1115 0x%02x AIN%d]"
                               % (exc, cfg.servo(joint).channel, fb.address, fb.channel))
            continue
        if round_trip:
            n_up = (sweep.size + 1) // 2
            up, down = volts[:n_up], volts[n_up - 1:][::-1]
            fit.hysteresis_rad = float(np.max(np.abs(fit.angle_for(up) - fit.angle_for(down))))
        fits[joint] = fit
    if failures:
        raise CalibrationError("could not calibrate %d joint(s):\n  %s" % (
            len(failures), "\n  ".join(failures[j] for j in joints if j in failures)), failures=failures, fits=fits)
    return fits


# ================================================================================================ horn offsets
HORN_KEYS = {"+": 1, "=": 1, "-": -1, "_": -1, ">": HORN_BIG_STEPS, ".": HORN_BIG_STEPS, "<": -HORN_BIG_STEPS,
             ",": -HORN_BIG_STEPS}
HORN_HELP = ("+ / -: turn the limb %.1f deg toward +/- joint angle;  > / <: %d steps;  0: offset 0;  r: back to "
             "the start;  Enter: accept;  s: skip this joint;  q: quit")


def horn_offset_step(offset_rad: float, key: str, step_rad: float = HORN_STEP_RAD,
                     limit_rad: float = HORN_LIMIT_RAD, start_rad: float = 0.0) -> float:
    """The horn offset after one key.

    Keys move the LIMB: ``+`` turns it one step toward positive joint angle (sign conventions of
    ``config/robots/plen.yaml``), ``-`` toward negative, ``>``/``<`` ``HORN_BIG_STEPS`` steps.  With the commanded
    joint angle fixed, the limb turns by minus the change of ``horn_offset_rad`` (pulse = mid + direction * (q -
    horn_offset) * us_per_rad), so ``+`` LOWERS the offset by ``step_rad``.  ``0`` sets 0, ``r`` goes back to
    ``start_rad``.  The result is clamped to +-``limit_rad`` (what the config accepts).  ValueError on any other key.
    """
    if key in HORN_KEYS:
        new = offset_rad - HORN_KEYS[key] * step_rad
    elif key == "0":
        new = 0.0
    elif key == "r":
        new = start_rad
    else:
        raise ValueError("unknown key %r (%s)" % (key, HORN_HELP % (math.degrees(step_rad), HORN_BIG_STEPS)))
    return float(min(max(new, -limit_rad), limit_rad))


def horn_limits_problem(servo: ServoConfig, joint: Any, offset_rad: float) -> Optional[str]:
    """None if the joint's limits stay expressible by the pulse range with ``offset_rad``; else why not."""
    lo, hi = dataclasses.replace(servo, horn_offset_rad=offset_rad).angle_range()
    if joint.lower < lo - 1e-9 or joint.upper > hi + 1e-9:
        return ("with horn_offset_rad %+.4f the pulse range expresses [%.3f, %.3f] rad, not the joint limits "
                "[%.3f, %.3f]: re-seat the horn one spline tooth instead" % (offset_rad, lo, hi, joint.lower,
                                                                            joint.upper))
    return None


def horn_offset_session(io: Any, joint: str, reference_rad: float, read_key: Callable[[], str],
                        out: Callable[[str], None] = print, step_rad: float = HORN_STEP_RAD) -> Optional[float]:
    """Interactive horn offset of one joint; returns the accepted offset, or None (skipped: keep the old one).

    The joint is commanded to ``reference_rad`` through a raw pulse computed with the candidate offset (the other
    servos keep what they were given); each ``read_key()`` answer (one key, or a line whose characters are taken in
    turn; an empty line is Enter) changes the candidate (``horn_offset_step``) and the pulse is written again.
    ``q`` raises ``KeyboardInterrupt`` (the caller decides what to keep).
    """
    servo = io.config.servo(joint)
    joint_cfg = io.robot.joint(joint)
    has_feedback = any(f.joint == joint for f in io.config.feedback)
    start = offset = float(servo.horn_offset_rad)
    out("%s: put the limb at %.3f rad (%.1f deg); %s" % (joint, reference_rad, math.degrees(reference_rad),
                                                         HORN_HELP % (math.degrees(step_rad), HORN_BIG_STEPS)))
    while True:
        pulse = dataclasses.replace(servo, horn_offset_rad=offset).pulse_for(reference_rad)
        io.write_pulse_us(joint, pulse)
        line = "  %s: horn_offset_rad %+.4f (%+.2f deg)  pulse %.1f us" % (joint, offset, math.degrees(offset), pulse)
        if has_feedback:
            line += "  pot %.3f V" % io.read_voltage(joint)
        problem = horn_limits_problem(servo, joint_cfg, offset)
        if problem:
            line += "  WARNING: " + problem
        out(line)
        keys = read_key()
        if keys in ("", "\r", "\n"):
            if problem:
                out("  not accepted: " + problem)
                continue
            return offset
        for key in keys:
            if key in "\r\n":
                continue
            if key in ("q", "\x03", "\x1b"):
                raise KeyboardInterrupt
            if key == "s":
                out("  %s skipped (horn_offset_rad stays %+.4f)" % (joint, start))
                return None
            try:
                offset = horn_offset_step(offset, key, step_rad, start_rad=start)
            except ValueError as exc:
                out("  %s" % exc)


def _terminal_key_reader() -> Callable[[], str]:
    """One key per call from a terminal (raw mode), or one line per call when stdin is not a terminal."""
    stream = sys.stdin
    if stream.isatty():
        try:
            import termios
            import tty
        except ImportError:     # not a POSIX terminal: line mode
            pass
        else:
            def read_key() -> str:
                fd = stream.fileno()
                old = termios.tcgetattr(fd)
                try:
                    tty.setraw(fd)
                    return stream.read(1)
                finally:
                    termios.tcsetattr(fd, termios.TCSADRAIN, old)
            return read_key

    def read_line() -> str:
        line = stream.readline()
        if not line:
            return "q"      # end of input: quit
        return line.strip()
    return read_line


# ================================================================================================ IMU
IMU_ADVICE = {
    "sys": "the fusion's overall confidence: rises once the sensors it uses are calibrated (NDOF: needs mag too)",
    "gyro": "keep the robot completely still for a few seconds",
    "accel": "hold the robot still in about six different orientations (each side up in turn, a few tilts in "
             "between), a few seconds each, moving slowly between them",
    "mag": "move the robot slowly through a figure eight in the air, away from metal and the servo magnets",
}


def required_imu_components(fusion_mode: str) -> Tuple[str, ...]:
    """Calibration levels that must reach 3 in ``fusion_mode``: IMUPLUS fuses gyro and accelerometer only (its
    sys level is shown but not required); NDOF and NDOF_FMC_OFF also use the magnetometer and report sys."""
    if fusion_mode == "IMUPLUS":
        return ("gyro", "accel")
    return IMU_COMPONENTS


@dataclasses.dataclass
class ImuCalibrationStatus:
    """BNO055 calibration levels (0..3) by name, those the fusion mode needs, and whether they are all 3."""

    levels: Dict[str, int]
    required: Tuple[str, ...]
    fusion_mode: str

    @property
    def done(self) -> bool:
        return all(self.levels[c] >= 3 for c in self.required)

    @property
    def missing(self) -> List[str]:
        return [c for c in self.required if self.levels[c] < 3]

    def summary(self) -> str:
        parts = []
        for c in IMU_COMPONENTS:
            parts.append("%s %d/3%s" % (c, self.levels[c], "" if c in self.required else " (not required)"))
        return "  ".join(parts)

    def advice(self) -> List[str]:
        """One line per required component below 3: what it needs."""
        return ["%s (%d/3): %s" % (c, self.levels[c], IMU_ADVICE[c]) for c in self.missing]


def imu_calibration_status(calibration: Sequence[int], fusion_mode: str = "IMUPLUS") -> ImuCalibrationStatus:
    """Status of the BNO055 levels ``calibration`` = (sys, gyro, accel, mag) as ``ImuReading.calibration``."""
    values = [int(v) for v in calibration]
    if len(values) != 4 or not all(0 <= v <= 3 for v in values):
        raise ValueError("calibration must be 4 levels 0..3 (sys, gyro, accel, mag), got %r" % (calibration,))
    return ImuCalibrationStatus(levels=dict(zip(IMU_COMPONENTS, values)),
                                required=required_imu_components(fusion_mode), fusion_mode=fusion_mode)


def watch_imu_calibration(io: Any, timeout_s: float = 120.0, poll_s: float = 0.5,
                          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                          out: Callable[[str], None] = print) -> ImuCalibrationStatus:
    """Poll ``io.read_imu()`` until the required levels are all 3 or ``timeout_s`` passed; print every change with
    what is still needed.  Returns the last status (``.done`` says which way it ended)."""
    mode = io.config.imu.fusion_mode
    deadline = clock() + timeout_s
    last = None
    while True:
        status = imu_calibration_status(io.read_imu().calibration, mode)
        key = tuple(status.levels.values())
        if key != last:
            out("IMU calibration (%s): %s" % (mode, status.summary()))
            for line in status.advice():
                out("  needs " + line)
            last = key
        if status.done or clock() >= deadline:
            return status
        sleep(poll_s)


# ================================================================================================ saving
def _yaml_float(x: float) -> str:
    """A float as YAML 1.1 (PyYAML) reads back as a float: always with a dot, exponent signed."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError("non-finite value %r cannot be saved" % x)
    text = "%.9g" % x
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + ("e" + exponent if exponent else "")


def _poly_of(fit: Union[FeedbackFit, Sequence[float]]) -> List[float]:
    return list(fit.poly) if isinstance(fit, FeedbackFit) else [float(c) for c in fit]


def _entry_line(lines: List[str], joint: str, key_pattern: str) -> Optional[int]:
    """Index of the only line holding both ``joint: <joint>`` and ``key_pattern``, else None."""
    joint_re = re.compile(r"\bjoint:\s*['\"]?%s['\"]?\s*[,}]" % re.escape(joint))
    key_re = re.compile(key_pattern)
    hits = [k for k, line in enumerate(lines)
            if joint_re.search(line.split("#", 1)[0]) and key_re.search(line.split("#", 1)[0])]
    return hits[0] if len(hits) == 1 else None


def _record_lines(lines: List[str]) -> Tuple[Optional[int], Optional[int], Dict[str, Dict[str, str]]]:
    begin = end = None
    for k, line in enumerate(lines):
        if line.strip() == RECORD_BEGIN and begin is None:
            begin = k
        elif line.strip() == RECORD_END and begin is not None:
            end = k
            break
    record = {}     # type: Dict[str, Dict[str, str]]
    if begin is not None and end is not None:
        for line in lines[begin + 1:end]:
            m = re.match(r"#\s*([A-Za-z0-9_]+):\s*(.*)$", line.strip())
            if not m:
                continue
            parts = {}
            for part in m.group(2).split(" | "):
                kind = part.split(" ", 1)[0]
                if kind in RECORD_KINDS:
                    parts[kind] = part.strip()
            record[m.group(1)] = parts
    else:
        begin = end = None
    return begin, end, record


def _record_block(record: Mapping[str, Mapping[str, str]], order: Sequence[str]) -> List[str]:
    names = [j for j in order if j in record] + sorted(j for j in record if j not in order)
    lines = [RECORD_BEGIN]
    for joint in names:
        parts = [record[joint][k] for k in RECORD_KINDS if k in record[joint]]
        lines.append("# %s: %s" % (joint, " | ".join(parts)))
    lines.append(RECORD_END)
    return lines


def _atomic_write(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".calibrate_plen.", suffix=".yaml", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _profile_flow(profile: ImuProfileConfig) -> str:
    """The profile as a one-line YAML flow mapping."""
    return ("{accel_offset: [%s], mag_offset: [%s], gyro_offset: [%s], accel_radius: %d, mag_radius: %d}"
            % (", ".join(str(int(v)) for v in profile.accel_offset), ", ".join(str(int(v)) for v in profile.mag_offset),
               ", ".join(str(int(v)) for v in profile.gyro_offset), int(profile.accel_radius),
               int(profile.mag_radius)))


def _edit_imu_profile(lines: List[str], flow: str) -> bool:
    """Put ``calibration_profile: <flow>`` into the top-level ``imu:`` block of ``lines`` (in place): replace the
    value of its one ``calibration_profile:`` line (keeping its comment), or add that line at the block's end.
    False if the layout does not allow it (no ``imu:`` block, the key twice)."""
    starts = [k for k, line in enumerate(lines) if re.match(r"imu:\s*(#.*)?$", line)]
    if len(starts) != 1:
        return False
    begin = starts[0]
    end = begin + 1     # one past the block's last line: up to the next top-level key
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t" or lines[end].startswith("#")):
        end += 1
    while end > begin + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1        # blank lines and top-level comments before the next key belong to it
    keys = [k for k in range(begin + 1, end) if re.match(r"\s+calibration_profile:", lines[k])]
    if len(keys) > 1:
        return False
    if keys:
        m = re.match(r"(\s+calibration_profile:)\s*([^#]*?)\s*(#.*)?$", lines[keys[0]])
        if m is None:
            return False
        lines[keys[0]] = "%s %s%s" % (m.group(1), flow, "  " + m.group(3) if m.group(3) else "")
        return True
    indents = [re.match(r"\s*", lines[k]).group(0) for k in range(begin + 1, end)
               if lines[k].strip() and not lines[k].lstrip().startswith("#")]
    if not indents:
        return False
    lines[end:end] = ["%s# calibration_profile: the BNO055's calibration profile PlenIO.start() writes to the chip; "
                      "written by calibrate_plen imu --write" % indents[0],
                      "%scalibration_profile: %s" % (indents[0], flow)]
    return True


def save_calibration(config_path_in: str, config_path_out: str,
                     fits: Optional[Mapping[str, Union[FeedbackFit, Sequence[float]]]] = None,
                     horn_offsets: Optional[Mapping[str, float]] = None,
                     when: Optional[datetime.datetime] = None,
                     imu_profile: Optional[Union[ImuProfileConfig, Sequence[int]]] = None,
                     imu_note: str = "") -> str:
    """Write ``config_path_in`` with new feedback polynomials (``fits``: {joint: FeedbackFit or coefficient list}),
    horn offsets ({joint: rad}) and a BNO055 calibration profile (``imu_profile``: an ``ImuProfileConfig`` or its 11
    register values; ``imu_note``: what the record says about it, e.g. the levels) to ``config_path_out`` (may be
    the same file); returns the path written.

    Only the ``poly: [...]`` / ``horn_offset_rad: x`` values on the joints' entry lines and the
    ``calibration_profile:`` value of the ``imu:`` block (added at the block's end if missing) change, and a
    ``calibrate_plen record`` comment block (date, fit error per joint, the IMU profile's date; kept across runs) is
    added or updated after the file's leading comments.  If the file's layout does not allow that (entries spread
    over several lines), it is written with ``yaml.safe_dump`` under a header saying it was generated (comments
    lost).  Either way the result must load with the strict loader (``ConfigError`` otherwise, nothing written) and
    is written atomically.
    """
    fits = dict(fits or {})
    horn_offsets = {j: float(o) for j, o in (horn_offsets or {}).items()}
    if imu_profile is not None and not isinstance(imu_profile, ImuProfileConfig):
        imu_profile = ImuProfileConfig.from_values(imu_profile)
    elif imu_profile is not None:
        imu_profile.validate()
    if not fits and not horn_offsets and imu_profile is None:
        raise ValueError("nothing to save: no feedback fits, no horn offsets, no IMU profile")
    when = when or datetime.datetime.now()
    stamp = when.strftime("%Y-%m-%d %H:%M")
    path_in = resolve(config_path_in)
    with open(path_in, "r") as fh:
        text = fh.read()
    original = yaml.safe_load(text)
    if not isinstance(original, dict):
        raise ConfigError("%s: top level must be a mapping" % path_in)
    expected = copy.deepcopy(original)
    poly_text = {}
    for joint, fit in fits.items():
        coeffs = [_yaml_float(c) for c in _poly_of(fit)]
        poly_text[joint] = "[%s]" % ", ".join(coeffs)
        entries = [f for f in expected.get("feedback") or [] if isinstance(f, dict) and f.get("joint") == joint]
        if len(entries) != 1:
            raise ValueError("joint %s has %d feedback entries in %s (need exactly 1)" % (joint, len(entries),
                                                                                        path_in))
        entries[0]["poly"] = [float(c) for c in coeffs]
    horn_text = {}
    for joint, offset in horn_offsets.items():
        horn_text[joint] = _yaml_float(round(offset, 6))
        entries = [s for s in expected.get("servos") or [] if isinstance(s, dict) and s.get("joint") == joint]
        if len(entries) != 1:
            raise ValueError("joint %s has %d servo entries in %s (need exactly 1)" % (joint, len(entries), path_in))
        entries[0]["horn_offset_rad"] = float(horn_text[joint])
    if imu_profile is not None:
        if not isinstance(expected.get("imu"), dict):
            expected["imu"] = {}
        expected["imu"]["calibration_profile"] = imu_profile.to_yaml_dict()

    # the record comment: one line per joint, the latest of each kind
    order = [s.get("joint") for s in expected.get("servos") or [] if isinstance(s, dict)]
    lines = text.splitlines()
    begin, end, record = _record_lines(lines)
    for joint, fit in fits.items():
        if isinstance(fit, FeedbackFit):
            note = ("feedback %s degree %d, %d points, rms %.2f deg, max %.2f deg"
                    % (stamp, fit.degree, fit.points, math.degrees(fit.rms_rad), math.degrees(fit.max_rad)))
            if fit.hysteresis_rad is not None:
                note += ", hysteresis %.2f deg" % math.degrees(fit.hysteresis_rad)
        else:
            note = "feedback %s (polynomial given)" % stamp
        record.setdefault(joint, {})["feedback"] = note
    for joint, offset in horn_offsets.items():
        record.setdefault(joint, {})["horn"] = "horn %s %+.2f deg" % (stamp, math.degrees(offset))
    if imu_profile is not None:
        record.setdefault(IMU_RECORD_NAME, {})["imu"] = "imu %s calibration profile%s" % (
            stamp, " (%s)" % imu_note if imu_note else "")
    block = _record_block(record, order)

    # 1) edit the lines in place
    edited = list(lines)
    ok = True
    for joint, poly in poly_text.items():
        k = _entry_line(edited, joint, r"\bpoly:\s*\[[^\]]*\]")
        if k is None:
            ok = False
            break
        edited[k] = re.sub(r"(\bpoly:\s*)\[[^\]]*\]", lambda m: m.group(1) + poly, edited[k], count=1)
    number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    for joint, value in horn_text.items():
        if not ok:
            break
        k = _entry_line(edited, joint, r"\bhorn_offset_rad:\s*" + number)
        if k is None:
            ok = False
            break
        edited[k] = re.sub(r"(\bhorn_offset_rad:\s*)" + number, lambda m: m.group(1) + value, edited[k], count=1)
    if ok and imu_profile is not None:
        ok = _edit_imu_profile(edited, _profile_flow(imu_profile))
    new_text = None
    if ok:
        if begin is not None:
            edited[begin:end + 1] = block
        else:
            at = 0
            while at < len(edited) and (not edited[at].strip() or edited[at].lstrip().startswith("#")):
                at += 1
            # after the leading comment block, before the blank line(s) that end it
            insert = at
            while insert > 0 and not edited[insert - 1].strip():
                insert -= 1
            edited[insert:insert] = ([""] + block) if insert > 0 else (block + [""])
        candidate = "\n".join(edited) + "\n"
        try:
            if yaml.safe_load(candidate) == expected:
                new_text = candidate
        except yaml.YAMLError:
            new_text = None
    # 2) fallback: regenerate the whole file
    if new_text is None:
        header = ["# Generated by calibrate_plen on %s from %s." % (stamp, path_in),
                  "# The original's comments could not be kept (its layout does not allow editing single lines); see "
                  "op3_walk.hardware.plen_config for what every key means.", ""]
        new_text = "\n".join(header + block + [""]) + "\n" + yaml.safe_dump(expected, sort_keys=False,
                                                                           default_flow_style=None, width=120)
        if yaml.safe_load(new_text) != expected:
            raise RuntimeError("save_calibration: regenerated YAML does not read back as intended")
    from_dict(PlenHardwareConfig, yaml.safe_load(new_text), where=config_path_out)   # ConfigError if invalid
    _atomic_write(config_path_out, new_text)
    return os.path.abspath(config_path_out)


# ================================================================================================ CLI
def _config_path(name: str) -> str:
    path = resolve(name if name.endswith((".yaml", ".yml")) or "/" in name else "hardware/%s.yaml" % name)
    if not os.path.isfile(path):
        raise ConfigError("config file not found: %s" % path)
    return path


def _parse_joints(values: Optional[Sequence[str]]) -> Optional[List[str]]:
    if not values:
        return None
    out = []
    for value in values:
        out.extend(j for j in value.replace(",", " ").split() if j)
    return out or None


def _sim_curves(config: PlenHardwareConfig, seed: int) -> Dict[str, Callable[[float], float]]:
    """Simulated potentiometers that differ from the config's polynomials (offset, gain, a little curvature), so a
    dry run has something to find."""
    rng = np.random.default_rng(seed)
    curves = {}
    supply = config.adc.supply_v
    for fb in config.feedback:
        q = np.linspace(-math.pi, math.pi, 2001)
        grid = np.linspace(0.0, supply, 4001)
        nominal_q = fb.angle_for(grid)
        if nominal_q[-1] < nominal_q[0]:
            grid, nominal_q = grid[::-1], nominal_q[::-1]
        v_nominal = np.interp(q, nominal_q, grid)
        offset, gain, bend = rng.uniform(-0.1, 0.1), rng.uniform(0.9, 1.1), rng.uniform(-0.03, 0.03)
        mid = 0.5 * supply
        v = mid + offset + gain * (v_nominal - mid) + bend * (v_nominal - mid) ** 3

        def curve(angle, q=q, v=v):
            return float(np.interp(angle, q, v))
        curves[fb.joint] = curve
    return curves


def _open(args: argparse.Namespace, out: Callable[[str], None]):
    """Config, robot, PlenIO (started) and the simulated plant (None on the board)."""
    from op3_walk.hardware.plen_io import open_plen_io
    from op3_walk.robots.description import load_robot
    path = _config_path(args.config)
    cfg = load_hardware_config(path)
    robot = load_robot(cfg.robot)
    options: Dict[str, Any] = {}
    if args.bus == "sim":
        out("calibrate_plen: SIMULATED robot (--bus sim): a dry run, no hardware is touched; the simulated "
            "potentiometers deviate from %s (seed %d)" % (path, args.sim_seed))
        options = dict(true_curves=_sim_curves(cfg, args.sim_seed), adc_noise_v=0.0005, seed=args.sim_seed,
                       byte_time_s=args.sim_byte_time_s)
    elif cfg.bus.device != "/dev/i2c-1":
        out("calibrate_plen: warning: board.I2C() opens the header bus /dev/i2c-1, the config says %s"
            % cfg.bus.device)
    io, plant = open_plen_io(cfg, robot, args.bus, "--bus sim for a dry run", **options)
    return path, cfg, robot, io, plant


def _feedback_table(fits: Mapping[str, FeedbackFit], cfg: PlenHardwareConfig, max_rms: float) -> List[str]:
    rows = ["%-17s %6s %13s %9s %9s %9s %10s  %s" % ("joint", "points", "volts", "rms[deg]", "max[deg]",
                                                   "hyst[deg]", "old[deg]", "poly (V -> rad, highest power first)")]
    for joint, fit in fits.items():
        old = cfg.feedback_for(joint).angle_for(fit.volts) - fit.angles
        lo, hi = fit.volts_range
        rows.append("%-17s %6d %6.3f..%5.3f %9.3f %9.3f %9s %10.2f  [%s]%s" % (
            joint, fit.points, lo, hi, math.degrees(fit.rms_rad), math.degrees(fit.max_rad),
            "-" if fit.hysteresis_rad is None else "%.3f" % math.degrees(fit.hysteresis_rad),
            math.degrees(float(np.sqrt(np.mean(old ** 2)))), ", ".join(_yaml_float(c) for c in fit.poly),
            "  FAIL (rms > %.3f deg)" % math.degrees(max_rms) if fit.rms_rad > max_rms else ""))
    return rows


def _cmd_feedback(args, path, cfg, robot, io, plant, out) -> int:
    joints = _parse_joints(args.joints)

    def progress(joint, index, total, angle, volts):
        if args.verbose:
            out("  %s %2d/%d  %+.3f rad  %.4f V" % (joint, index + 1, total, angle, volts))
        elif index + 1 == total:
            out("  %s: %d points" % (joint, total))

    out("feedback sweep: the robot must hang free (its limbs will move through their whole range); Ctrl-C stops "
        "and relaxes the servos")
    status = EXIT_OK
    try:
        fits = calibrate_feedback(io, joints, settle_s=args.settle, samples_per_angle=args.samples,
                                  degree=args.degree, sleep=time.sleep, progress=progress, points=args.points,
                                  margin_rad=args.margin, speed_rad_s=args.speed, round_trip=args.round_trip)
    except CalibrationError as exc:
        fits = exc.fits
        out("calibrate_plen: error: %s" % exc)
        status = EXIT_ERROR
    if fits:
        for row in _feedback_table(fits, cfg, args.max_rms_rad):
            out(row)
    too_big = [j for j, f in fits.items() if f.rms_rad > args.max_rms_rad]
    if too_big and status == EXIT_OK:
        out("calibrate_plen: fit error above --max-rms-rad %.4f rad for %s (noise, backlash, a slipping horn, or "
            "try another --degree)" % (args.max_rms_rad, ", ".join(too_big)))
        status = EXIT_FIT
    good = {j: f for j, f in fits.items() if f.rms_rad <= args.max_rms_rad}
    if args.write and good:
        written = save_calibration(path, args.write, fits=good)
        out("calibrate_plen: wrote %d polynomial(s) to %s%s%s" % (
            len(good), written, " (SIMULATED values)" if plant is not None else "",
            "; NOT written (fit error too big): %s" % ", ".join(too_big) if too_big else ""))
    elif args.write:
        out("calibrate_plen: nothing written: no joint calibrated within --max-rms-rad")
    elif fits:
        out("calibrate_plen: not written (use --write FILE, e.g. --write %s)" % path)
    return status


def _cmd_horn(args, path, cfg, robot, io, plant, out) -> int:
    joints = _parse_joints(args.joints) or [s.joint for s in cfg.servos]
    servo_joints = [s.joint for s in cfg.servos]
    unknown = [j for j in joints if j not in servo_joints]
    if unknown:
        raise ValueError("no servo for joint(s) %s (servo joints: %s)" % (", ".join(unknown), ", ".join(servo_joints)))
    pose = np.zeros(robot.n_joints) if args.pose == "zero" else np.asarray(robot.stance, dtype=np.float64).copy()
    for i, name in enumerate(robot.joint_names):
        if name not in servo_joints:
            pose[i] = robot.stance[i]
    period = 1.0 / cfg.pwm.frequency_hz
    out("horn offsets: the robot must hang free; every servo goes to the %s pose, then one joint at a time: line "
        "the limb up with the %s angle (a square, a straightedge, the printed parts' edges)" % (args.pose, args.pose))
    targets = _hold_start(io, args.speed, period, time.sleep)
    _ramp(io, targets, pose, args.speed, period, time.sleep)
    read_key = _terminal_key_reader()
    offsets = {}
    try:
        for joint in joints:
            new = horn_offset_session(io, joint, float(pose[robot.joint_index(joint)]), read_key, out,
                                      math.radians(args.step_deg))
            if new is not None:
                offsets[joint] = new
    except KeyboardInterrupt:
        out("calibrate_plen: stopped; keeping the %d offset(s) accepted so far" % len(offsets))
    if offsets:
        for joint, offset in offsets.items():
            out("  %-17s horn_offset_rad %+.4f (%+.2f deg)" % (joint, offset, math.degrees(offset)))
        if args.write:
            written = save_calibration(path, args.write, horn_offsets=offsets)
            out("calibrate_plen: wrote %d horn offset(s) to %s; redo the feedback sweep for these joints"
                % (len(offsets), written))
        else:
            out("calibrate_plen: not written (use --write FILE)")
    return EXIT_OK


def _cmd_imu(args, path, cfg, robot, io, plant, out) -> int:
    sleep = time.sleep      # type: Callable[[float], None]
    if plant is not None:   # a dry run: the simulated chip calibrates step by step as the user would make it
        plant.imu.set_calibration(0, 0, 0, 0)
        levels = [0, 0, 0, 0]

        def sim_sleep(dt: float) -> None:
            time.sleep(dt)
            for k in (1, 2, 3, 0):
                if levels[k] < 3:
                    levels[k] += 1
                    break
            plant.imu.set_calibration(*levels)
        sleep = sim_sleep
    out("IMU calibration (BNO055, %s; needs %s at 3). The chip forgets its calibration at power-off and the "
        "driver's reset in PlenIO.start() clears it; %s"
        % (cfg.imu.fusion_mode, ", ".join(required_imu_components(cfg.imu.fusion_mode)),
           "this start restored the profile stored in %s (the levels below are what the chip reports now)" % path
           if cfg.imu.calibration_profile is not None else
           "no profile is stored in %s: --write FILE saves one for PlenIO.start() to restore" % path))
    status = watch_imu_calibration(io, timeout_s=args.timeout, poll_s=args.poll, sleep=sleep, out=out)
    if not status.done:
        out("calibrate_plen: IMU not calibrated after %.0f s: still needs %s%s"
            % (args.timeout, ", ".join(status.missing), "; nothing written" if args.write else ""))
        return EXIT_FIT
    out("calibrate_plen: IMU calibrated (%s)" % status.summary())
    if not args.write:
        out("calibrate_plen: calibration profile not saved (use --write FILE, e.g. --write %s)" % path)
        return EXIT_OK
    profile = io.read_imu_profile()
    note = "%s, levels sys/gyro/accel/mag %s" % (cfg.imu.fusion_mode,
                                                 "/".join(str(status.levels[c]) for c in IMU_COMPONENTS))
    written = save_calibration(path, args.write, imu_profile=profile, imu_note=note)
    out("calibrate_plen: wrote the BNO055 calibration profile %s to %s%s; PlenIO.start() restores it on every start"
        % (_profile_flow(profile), written, " (SIMULATED values)" if plant is not None else ""))
    if "mag" not in required_imu_components(cfg.imu.fusion_mode):
        out("calibrate_plen: note: %s does not calibrate the magnetometer: the profile's magnetometer part is what the "
            "chip held (zero after a reset, unless restored); calibrate again with --write after switching to NDOF"
            % cfg.imu.fusion_mode)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=DEFAULT_PATH,
                        help="hardware config: a YAML path or a name in config/hardware/ (default: %(default)s)")
    common.add_argument("--joints", nargs="+", default=None,
                        help="joints to calibrate, space or comma separated (feedback, horn; default: all)")
    common.add_argument("--bus", choices=("board", "sim"), default="board",
                        help="board: the Raspberry Pi's I2C through Adafruit Blinka; sim: a simulated robot (dry "
                             "run) (default: %(default)s)")
    common.add_argument("--sim-seed", type=int, default=1, help="--bus sim: seed of the simulated pot errors")
    common.add_argument("--sim-byte-time-s", type=float, default=None, help=argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="calibrate_plen",
        description="Calibrate the PLEN: servo horn offsets (first), potentiometer feedback polynomials, BNO055 "
                    "status. Exit codes: 0 ok, 1 fit error above --max-rms-rad (imu: not calibrated in time), "
                    "2 hardware or config error.")
    sub = parser.add_subparsers(dest="command")
    fb = sub.add_parser("feedback", parents=[common], help="sweep joints, fit volts -> rad polynomials, report")
    fb.add_argument("--points", type=int, default=DEFAULT_POINTS, help="angles per joint (default: %(default)s)")
    fb.add_argument("--settle", type=float, default=DEFAULT_SETTLE_S,
                    help="wait at each angle before reading, s (default: %(default)s)")
    fb.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                    help="ADC reads averaged per angle (default: %(default)s)")
    fb.add_argument("--degree", type=int, default=DEFAULT_DEGREE, help="polynomial degree (default: %(default)s)")
    fb.add_argument("--margin", type=float, default=DEFAULT_MARGIN_RAD,
                    help="stay this far inside the joint limits and servo range, rad (default: %(default)s)")
    fb.add_argument("--speed", type=float, default=DEFAULT_SPEED_RAD_S,
                    help="ramp speed of the commanded angles, rad/s (default: %(default)s)")
    fb.add_argument("--round-trip", action="store_true", help="sweep up and back down; reports the hysteresis")
    fb.add_argument("--max-rms-rad", type=float, default=DEFAULT_MAX_RMS_RAD,
                    help="fit RMS error that fails the run (exit 1), rad (default: %(default)s)")
    fb.add_argument("--write", default="", metavar="FILE",
                    help="write the config with the new polynomials to FILE (may be the --config file itself)")
    fb.add_argument("--verbose", "-v", action="store_true", help="print every point")
    horn = sub.add_parser("horn", parents=[common], help="set horn_offset_rad interactively (keys + and -)")
    horn.add_argument("--pose", choices=("zero", "stance"), default="zero",
                      help="reference pose: zero (limbs straight, easiest to judge) or stance (default: %(default)s)")
    horn.add_argument("--step-deg", type=float, default=math.degrees(HORN_STEP_RAD),
                      help="one + or - step, deg (default: %(default)s)")
    horn.add_argument("--speed", type=float, default=DEFAULT_SPEED_RAD_S, help=argparse.SUPPRESS)
    horn.add_argument("--write", default="", metavar="FILE",
                      help="write the config with the new offsets to FILE (may be the --config file itself)")
    imu = sub.add_parser("imu", parents=[common], help="BNO055 calibration status until calibrated or timeout")
    imu.add_argument("--timeout", type=float, default=120.0, help="give up after this long, s (default: %(default)s)")
    imu.add_argument("--poll", type=float, default=0.5, help="read the status every this many s (default: "
                                                              "%(default)s)")
    imu.add_argument("--write", default="", metavar="FILE",
                     help="once calibrated, read the chip's calibration profile and write the config with it as "
                          "imu.calibration_profile to FILE (may be the --config file itself); PlenIO.start() then "
                          "restores it on every start")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_ERROR

    def out(text: str) -> None:
        print(text, flush=True)
    commands = {"feedback": _cmd_feedback, "horn": _cmd_horn, "imu": _cmd_imu}
    io = None
    try:
        path, cfg, robot, io, plant = _open(args, out)
        return commands[args.command](args, path, cfg, robot, io, plant, out)
    except (ConfigError, HardwareError, CalibrationError, ValueError, OSError) as exc:
        print("calibrate_plen: error: %s" % exc, file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("calibrate_plen: interrupted; servos relaxed", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        if io is not None:
            io.close()


if __name__ == "__main__":
    sys.exit(main())
