"""``PlenHardwareBackend``: the real PLEN (PCA9685 servos, ADS1115 joint feedback, BNO055 IMU) as a ``Backend``.

Runs on the robot's Raspberry Pi: no torch, no rospy.  All chip traffic goes through ``op3_walk.hardware.plen_io``
(the real Adafruit drivers on one I/O thread).  Put it behind ``op3_walk.hardware.safety.SafeBackend``: this class
passes targets on as given (clamped to the joint limits, nothing more).

What a real robot can and cannot do, and how the ``Backend`` contract maps onto it:

* ``step()`` paces itself: called early, it waits until one control period after the previous step (a caller with
  its own fixed-rate loop, like controller_node, calls it on time and never waits here: the backend takes the
  caller's phase); then it writes the held targets to the servos (one burst), then reads this tick's share of the joint feedback (``adc.reads_per_tick`` ADC channels,
  round robin; the others keep their latest sample) and the IMU.  A tick that starts more than a period late is
  counted (``stats``).
* ``reset()`` cannot place the robot: it moves nothing, re-reads every feedback channel and the IMU, and restarts
  the clock.  The requested joint positions are only checked; the safety layer's safe start ramps the servos from
  the measured pose.  The requested base pose is ignored (the robot stands where it stands).
* Before the first ``apply()`` (and after ``relax()``) the PWM outputs are off: the servos are limp.
* The state: joint positions from the feedback polynomials (passive elbows: their stance); velocities by finite
  differences between successive samples of each joint; efforts 0 (hobby servos report no torque); orientation,
  angular velocity and specific force from the BNO055 in the torso frame; base x, y and linear velocity 0
  (unknown); base z and foot contacts from the leg kinematics and the IMU tilt on flat ground
  (``op3_walk.robots.kinematics.GroundEstimator``); privileged fields (centre of mass, foot forces, pressure) None.
* A chip that stops answering raises ``HardwareError`` from the call that met it; ``PlenIO`` has already switched
  the servo outputs off, and every later call fails the same way until ``close()``.
"""
import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from op3_walk.backends.base import Backend, RobotState, clamp_targets, quat_to_matrix
from op3_walk.hardware.plen_config import load_hardware_config
from op3_walk.hardware.plen_io import HardwareError, ImuReading, JointReading, PlenIO, open_plen_io
from op3_walk.robots.description import RobotConfig
from op3_walk.robots.kinematics import GroundEstimator

CONTACT_HEIGHT = 0.004     # m: a sole corner this close to the lowest one touches the ground (PLEN: small feet)
STATS_WINDOW = 1000        # ticks kept for the I/O time percentiles


class PlenHardwareStats:
    """Per-tick figures for /diagnostics (``values()``)."""

    def __init__(self) -> None:
        self.ticks = 0
        self.late_ticks = 0
        self.io_times: List[float] = []
        self.max_feedback_age_s = 0.0
        self.calibration = (0, 0, 0, 0)
        self.error = ""

    def record(self, io_time: float, feedback_age: float) -> None:
        self.ticks += 1
        self.io_times.append(io_time)
        if len(self.io_times) > STATS_WINDOW:
            del self.io_times[:len(self.io_times) - STATS_WINDOW]
        self.max_feedback_age_s = max(self.max_feedback_age_s, feedback_age)

    def values(self) -> Dict[str, Any]:
        times = np.array(self.io_times) * 1e3
        out: Dict[str, Any] = {"hardware ticks": self.ticks, "hardware late ticks": self.late_ticks,
                               "feedback age max [ms]": self.max_feedback_age_s * 1e3,
                               "IMU calibration sys/gyro/accel/mag": "%d/%d/%d/%d" % tuple(self.calibration)}
        if times.size:
            out["I2C time per tick median [ms]"] = float(np.median(times))
            out["I2C time per tick p99 [ms]"] = float(np.percentile(times, 99))
        if self.error:
            out["hardware error"] = self.error
        return out


class PlenHardwareBackend(Backend):
    """The real PLEN through ``PlenIO`` (see the module docstring for what ``reset`` and ``step`` mean here)."""

    def __init__(self, robot: RobotConfig, io: PlenIO, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, contact_height: float = CONTACT_HEIGHT,
                 plant: Any = None):
        self.robot = robot
        self.io = io
        self.plant = plant            # the SimulatedPlen behind a simulated bus (None on the robot)
        self._clock = clock
        self._sleep = sleep
        self._names = list(robot.joint_names)
        self._lower, self._upper = robot.lower, robot.upper
        self._period = robot.control_period_s
        self._ground = GroundEstimator(robot, contact_height)
        self._targets: Optional[np.ndarray] = None    # None: outputs off (limp)
        self._written: Optional[np.ndarray] = None    # what the servos were last given
        self._deadline: Optional[float] = None
        self._epoch = clock()
        self._last_q: Optional[np.ndarray] = None
        self._last_t: Optional[np.ndarray] = None
        self._velocity = np.zeros(robot.n_joints)
        self._closed = False
        self.stats = PlenHardwareStats()
        self.state: Optional[RobotState] = None

    # -- Backend ---------------------------------------------------------------------------------------------------
    def reset(self, joint_positions: np.ndarray, base_position: Sequence[float],
              base_orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> RobotState:
        self._check_open()
        clamp_targets(joint_positions, self._lower, self._upper, self._names)   # checked, not applied
        joints = self._guard(self.io.read_all_joints)
        imu = self._guard(self.io.read_imu)
        self._epoch = self._clock()
        self._deadline = None     # the first step runs at once
        self._last_q, self._last_t = None, None
        self._velocity = np.zeros(self.robot.n_joints)
        self.state = self._state(joints, imu)
        return self.state

    def apply(self, joint_targets: np.ndarray) -> None:
        self._check_open()
        self._targets = clamp_targets(joint_targets, self._lower, self._upper, self._names)

    def step(self) -> RobotState:
        self._check_open()
        now = self._clock()
        if self._deadline is not None and now < self._deadline:
            self._sleep(self._deadline - now)        # called early: keep the control period
        else:
            if self._deadline is not None and now - self._deadline > self._period:
                self.stats.late_ticks += 1
            self._deadline = now                     # on time or late: take the caller's phase (no sleep)
        start = self._clock()
        if self._targets is not None and (self._written is None or not np.array_equal(self._targets, self._written)):
            self._guard(lambda: self.io.write_targets(self._targets))
            self._written = self._targets
        joints = self._guard(self.io.read_joints)
        imu = self._guard(self.io.read_imu)
        end = self._clock()
        ages = end - joints.sample_time
        self.stats.record(end - start, float(np.nanmax(ages)) if ages.size else 0.0)
        self._deadline += self._period
        self.state = self._state(joints, imu)
        return self.state

    def relax(self) -> None:
        """Every PWM output off: the servos go limp; the next ``apply`` + ``step`` powers them again."""
        self._check_open()
        self._guard(self.io.relax)
        self._targets, self._written = None, None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.io.close()       # relaxes the servos, then stops the I/O thread

    # -- internals -------------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("PlenHardwareBackend is closed")

    def _guard(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except HardwareError as exc:
            self.stats.error = str(exc)
            raise

    def _state(self, joints: JointReading, imu: ImuReading) -> RobotState:
        q = np.asarray(joints.positions, dtype=np.float64).copy()
        t = np.asarray(joints.sample_time, dtype=np.float64)
        if self._last_q is not None and self._last_t is not None:
            fresh = t > self._last_t
            dt = np.where(fresh, t - self._last_t, 1.0)
            self._velocity = np.where(fresh, (q - self._last_q) / dt, self._velocity)
        self._last_q, self._last_t = q, t.copy()
        orientation = np.asarray(imu.orientation, dtype=np.float64)
        norm = float(np.linalg.norm(orientation))
        if not (math.isfinite(norm) and norm > 0.0):
            raise HardwareError("BNO055 gave an invalid orientation %s" % orientation.tolist(), chip="BNO055")
        orientation = orientation / norm
        self.stats.calibration = tuple(int(v) for v in imu.calibration)
        ground = self._ground.estimate(q, quat_to_matrix(orientation))
        n = self.robot.n_joints
        return RobotState(
            time=self._clock() - self._epoch,
            joint_positions=q,
            joint_velocities=self._velocity.copy(),
            joint_efforts=np.zeros(n),
            base_position=np.array([0.0, 0.0, ground.height]),
            base_orientation=orientation,
            base_linear_velocity=np.zeros(3),
            base_angular_velocity=np.asarray(imu.angular_velocity, dtype=np.float64),
            linear_acceleration=np.asarray(imu.linear_acceleration, dtype=np.float64),
            foot_contacts=ground.contacts,
            foot_positions=ground.foot_positions,
            foot_orientations=ground.foot_orientations)


def open_plen_backend(robot: RobotConfig, config: str = "plen", bus: str = "board",
                      overrides: Optional[Dict[str, Any]] = None, **plant_options: Any) -> PlenHardwareBackend:
    """Load the chip config (a name in config/hardware/ or a YAML path), open the bus (``board``: the Raspberry
    Pi's I2C through Adafruit Blinka; ``sim``: a ``SimulatedPlen`` on a simulated bus, real-time timing), start
    the chips and return the backend.  ConfigError for a bad config or a missing bus, HardwareError for a chip
    that does not answer."""
    path = config if (config.endswith(".yaml") or "/" in config) else "hardware/%s.yaml" % config
    cfg = load_hardware_config(path, overrides)
    io, plant = open_plen_io(cfg, robot, bus, "hardware/i2c: sim for a simulated robot", **plant_options)
    return PlenHardwareBackend(robot, io, plant=plant)
