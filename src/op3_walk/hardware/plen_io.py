"""PlenIO: the PLEN's chip layer, radians in and out, on the real (unmodified) Adafruit CircuitPython drivers.

Chips: a PCA9685 (servo pulses, ``adafruit_pca9685`` channel duty cycles), ADS1115s (potentiometer voltages,
``adafruit_ads1x15`` ``AnalogIn(...).voltage``), a BNO055 (``adafruit_bno055.BNO055_I2C``: ``quaternion``, ``gyro``,
``acceleration``, ``calibration_status``; the calibration profile through ``offsets_*`` and ``radius_*``), all on
the ``i2c`` object given (``busio.I2C`` on the robot, a ``simbus.SimulatedI2CBus`` elsewhere).

BNO055 calibration: the driver resets the chip when it is built, which clears the calibration profile (sensor
offsets and radii; the chip also forgets it at power-off).  With ``imu.calibration_profile`` configured, ``start``
writes it back right after the reset (CONFIG mode, then the fusion mode) and reads it back: a mismatch is a
``HardwareError``.  ``read_imu_profile`` reads the chip's current profile (``calibrate_plen imu --write`` saves it).

Threading: ALL I2C traffic runs on one I/O thread owned by PlenIO (the drivers share a module-level buffer, so two
threads must never talk at once).  Every public call hands its work to that thread, limited to the configured
timeout (``bus.io_timeout_s``; ``bus.start_timeout_s`` for ``start`` and ``read_all_joints``), and waits for its answer
at most ``answer_wait_s(timeout)`` (1.5 x the timeout + 50 ms: a thread stuck in one transaction never answers;
switching the servos off after such a failure waits as long again).  The bus is wrapped so that past a job's
deadline the next transaction raises: a driver busy-waiting on a chip that never answers (the
ADS1115 single-shot read polls with no timeout) is stopped and the thread freed.  An ``OSError`` (NACK), a driver
error or a timeout becomes a ``HardwareError`` naming the chip, its address, the joint/channel and what was being
done; PlenIO then switches every servo output off as far as the PCA9685 still answers, and every later call raises
``HardwareError`` until ``close()`` (no half-working state).

Joint maps (see ``plen_config``): ``pulse = mid + direction * (q - horn_offset) * us_per_rad`` rounded to the
PCA9685's 12-bit counts; ``q = polyval(poly, volts)``.  Arguments are checked before any I2C traffic: a wrong size, a
non-finite target or one the servo's pulse range cannot express raises ``ValueError`` (nothing is clipped here; joint
limits are the safety layer's job).
"""
import dataclasses
import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from op3_walk.config import ConfigError
from op3_walk.hardware.plen_config import (ImuProfileConfig, PlenHardwareConfig, quat_conjugate, quat_matrix,
                                           quat_multiply)

LOG = logging.getLogger(__name__)

_ALL_LED_OFF_H = 0xFD       # PCA9685: writes every channel's LEDn_OFF_H; 0x10 = full off
_PCA9685_CHANNELS = 16
#: the BNO055 calibration profile as the Adafruit driver's properties, register order: (name, property, values)
_BNO055_PROFILE_PROPERTIES = (("accelerometer offsets", "offsets_accelerometer", 3),
                              ("magnetometer offsets", "offsets_magnetometer", 3),
                              ("gyroscope offsets", "offsets_gyroscope", 3),
                              ("accelerometer radius", "radius_accelerometer", 1),
                              ("magnetometer radius", "radius_magnetometer", 1))
_FUSED_WITHIN_S = 1.0       # a BNO055 entering a fusion mode must give a quaternion within this, s


class HardwareError(RuntimeError):
    """A chip did not answer, answered nonsense, or took too long.

    Attributes: ``chip`` ("PCA9685", "ADS1115", "BNO055" or None), ``address`` (int or None), ``joint`` and
    ``channel`` (where they apply), ``relaxed`` (after a failure: True if every servo output was switched off
    afterwards, False if that failed too, None if not tried).
    """

    def __init__(self, message: str, chip: Optional[str] = None, address: Optional[int] = None,
                 joint: Optional[str] = None, channel: Optional[int] = None):
        super().__init__(message)
        self.chip = chip
        self.address = address
        self.joint = joint
        self.channel = channel
        self.relaxed = None     # type: Optional[bool]


@dataclasses.dataclass
class JointReading:
    """Joint feedback in robot joint order.

    ``positions``: rad; joints with feedback: ``polyval(poly, volts)`` of their latest sample; servo joints without
    feedback: the last commanded angle (stance before any command); passive joints (elbows): their stance.
    ``volts``: latest ADC voltage, NaN where there is no feedback.  ``sample_time``: clock time (s) of each joint's
    latest sample (joints without feedback: the time of this reading), so ``now - sample_time`` is its age.
    """

    positions: np.ndarray
    volts: np.ndarray
    sample_time: np.ndarray


@dataclasses.dataclass
class ImuReading:
    """BNO055 reading in the torso frame (REP 103), after the mounting rotation.

    ``orientation``: quaternion x, y, z, w, torso -> world; ``angular_velocity``: rad/s, torso frame;
    ``linear_acceleration``: m/s^2, torso frame, specific force INCLUDING gravity (+9.81 on z at rest);
    ``calibration``: (sys, gyro, accel, mag), each 0..3; ``time``: clock time of the reading, s.
    """

    orientation: np.ndarray
    angular_velocity: np.ndarray
    linear_acceleration: np.ndarray
    calibration: Tuple[int, int, int, int]
    time: float


@dataclasses.dataclass
class _Step:
    """What the I/O thread is doing now (for error messages)."""

    chip: Optional[str]
    address: Optional[int]
    what: str
    joint: Optional[str] = None
    channel: Optional[int] = None

    def where(self) -> str:
        if self.chip is None:
            return "I2C bus"
        text = "%s at 0x%02x" % (self.chip, self.address)
        extra = []
        if self.joint is not None:
            extra.append("joint %s" % self.joint)
        if self.channel is not None:
            extra.append(("input AIN%d" if self.chip == "ADS1115" else "channel %d") % self.channel)
        return text + (" (%s)" % ", ".join(extra) if extra else "")

    def error(self, message: str) -> HardwareError:
        return HardwareError("%s: %s" % (self.where(), message), chip=self.chip, address=self.address,
                             joint=self.joint, channel=self.channel)


def answer_wait_s(timeout: float) -> float:
    """How long a caller waits for the I/O thread's answer to a job limited to ``timeout`` s: the job's own limit
    (past it the guarded bus stops the job) plus slack for the thread to hand the failure back, s.  A thread stuck
    in a single transaction (a chip holding the clock line) never answers: the caller then gives up after this."""
    return timeout * 1.5 + 0.05


class _IOTimeout(Exception):
    """Raised inside a driver call when its job's deadline has passed (not an OSError: drivers must not catch it)."""


class _GuardedBus:
    """The caller's ``i2c`` as the drivers see it: usable only from the I/O thread, and only until the deadline."""

    def __init__(self, i2c: Any):
        self._i2c = i2c
        self.thread_ident = None    # type: Optional[int]
        self.deadline = math.inf

    def _check(self) -> None:
        if threading.get_ident() != self.thread_ident:
            raise RuntimeError("I2C access from thread %r: only the PlenIO I/O thread may use the bus"
                               % threading.current_thread().name)
        if time.monotonic() > self.deadline:
            raise _IOTimeout()

    def try_lock(self) -> bool:
        self._check()
        return self._i2c.try_lock()

    def unlock(self) -> None:
        self._i2c.unlock()

    def writeto(self, address, buffer, **kwargs) -> None:
        self._check()
        self._i2c.writeto(address, buffer, **kwargs)

    def readfrom_into(self, address, buffer, **kwargs) -> None:
        self._check()
        self._i2c.readfrom_into(address, buffer, **kwargs)

    def writeto_then_readfrom(self, address, buffer_out, buffer_in, **kwargs) -> None:
        self._check()
        self._i2c.writeto_then_readfrom(address, buffer_out, buffer_in, **kwargs)

    def scan(self) -> List[int]:
        self._check()
        return self._i2c.scan()


class PlenIO:
    """The PLEN's servos, joint feedback and IMU through the real drivers on one I/O thread (see module doc)."""

    def __init__(self, config: PlenHardwareConfig, robot: Any, i2c: Any, clock: Callable[[], float] = time.monotonic):
        try:
            config.check_robot(robot)
        except ValueError as exc:
            raise ConfigError("hardware config vs robot %s: %s" % (robot.name, exc)) from exc
        self.config = config
        self.robot = robot
        self._clock = clock
        names = list(robot.joint_names)
        self._n = len(names)
        self._servos = list(config.servos)
        self._servo_idx = [names.index(s.joint) for s in self._servos]
        self._joint_of_channel = {s.channel: s.joint for s in self._servos}
        self._feedback = list(config.feedback)
        self._fb_idx = [names.index(f.joint) for f in self._feedback]
        self._polys = [np.asarray(f.poly, dtype=np.float64) for f in self._feedback]
        self._stance = robot.stance.copy()
        self._mounting = config.imu.mounting
        self._mounting_matrix = quat_matrix(self._mounting)
        self._bus = _GuardedBus(i2c)
        self._queue = queue.Queue()     # type: queue.Queue
        self._thread = None             # type: Optional[threading.Thread]
        self._state_lock = threading.Lock()
        self._state = "new"             # new -> starting -> running -> (failed) -> closed
        self._failure = None            # type: Optional[HardwareError]
        self._step = None               # type: Optional[_Step]
        self._volts = np.full(self._n, np.nan)
        self._sample_time = np.full(self._n, np.nan)
        self._commanded = self._stance.copy()
        self._rr = 0
        self._count_us = None           # type: Optional[float]
        self._pca = None
        self._ains = []                 # type: List[Any]
        self._imu = None

    # ============================================================================================ public API
    def start(self) -> None:
        """Build the drivers on the I/O thread, set the PWM frequency with every output OFF (servos limp until the
        first command), configure the ADCs and the IMU (restoring ``imu.calibration_profile`` if one is configured,
        verified by reading it back), and read every feedback channel once."""
        with self._state_lock:
            if self._state != "new":
                raise HardwareError("PlenIO.start(): already %s" % self._state)
            self._state = "starting"
            self._thread = threading.Thread(target=self._run, name="plen-io", daemon=True)
            self._thread.start()
        self._call(self._start_job, self.config.bus.start_timeout_s, "starting the hardware", ("starting",))
        with self._state_lock:
            if self._state == "starting":
                self._state = "running"

    def write_targets(self, targets_rad: Sequence[float]) -> np.ndarray:
        """Command every servo joint (robot order; passive joints' entries are ignored).  Returns the pulse widths
        written, us, robot order (NaN for passive joints).  ValueError (before any I2C traffic) on a wrong size, a
        non-finite servo target, or a target outside what the servo's pulse range expresses."""
        self._check_state()
        try:
            targets = np.asarray(targets_rad, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError("joint targets must be numbers: %s" % exc) from None
        if targets.shape != (self._n,):
            raise ValueError("joint targets must have shape (%d,) (robot joint order), got %s"
                             % (self._n, targets.shape))
        pulses = np.full(self._n, np.nan)
        writes = []
        for i, servo in zip(self._servo_idx, self._servos):
            q = float(targets[i])
            if not math.isfinite(q):
                raise ValueError("non-finite target %r for joint %s" % (q, servo.joint))
            pulse = servo.pulse_for(q)
            if not servo.pulse_min_us - 1e-6 <= pulse <= servo.pulse_max_us + 1e-6:
                lo, hi = servo.angle_range()
                raise ValueError("target %.4f rad for joint %s needs a %.1f us pulse, outside its %g..%g us range "
                                 "(expressible: %.4f..%.4f rad)" % (q, servo.joint, pulse, servo.pulse_min_us,
                                                                     servo.pulse_max_us, lo, hi))
            counts = self._counts(servo, pulse)
            pulses[i] = counts * self._count_us
            writes.append((servo, counts))
        self._call(lambda: self._write_job(writes), self.config.bus.io_timeout_s, "writing the servo targets")
        for i in self._servo_idx:
            self._commanded[i] = targets[i]
        return pulses

    def relax(self) -> None:
        """Switch every PWM output off (all 16 channels full off): the servos go limp."""
        self._call(self._relax_job, self.config.bus.io_timeout_s, "switching the servos off")

    def read_joints(self) -> JointReading:
        """Read this tick's round-robin subset (``adc.reads_per_tick`` channels) and return the latest value of
        every joint with its sample time."""
        m = len(self._feedback)
        k = min(self.config.adc.reads_per_tick, m)
        indices = [(self._rr + j) % m for j in range(k)] if m else []
        self._call(lambda: self._read_feedback_job(indices), self.config.bus.io_timeout_s, "reading joint feedback")
        if m:
            self._rr = (self._rr + k) % m
        return self._joint_reading()

    def read_all_joints(self) -> JointReading:
        """Read every feedback channel now (start-up, calibration); slow: ~2 ms per channel."""
        indices = list(range(len(self._feedback)))
        self._call(lambda: self._read_feedback_job(indices), self.config.bus.start_timeout_s,
                   "reading all joint feedback")
        return self._joint_reading()

    def read_imu(self) -> ImuReading:
        """Orientation, angular velocity, specific force (incl. gravity) and calibration, torso frame (REP 103)."""
        return self._call(self._imu_job, self.config.bus.io_timeout_s, "reading the IMU")

    def read_imu_profile(self) -> ImuProfileConfig:
        """The BNO055's calibration profile now: the offsets and radii its calibration routine has reached (what
        ``imu.calibration_profile`` stores; ``calibrate_plen imu --write``).  Slow (~0.3 s, limit
        ``bus.start_timeout_s``): the chip must be in CONFIG mode to read it, so it stops fusing meanwhile and this
        waits for the first fused orientation after it returns to the fusion mode."""
        return self._call(self._read_profile_job, self.config.bus.start_timeout_s,
                          "reading the IMU calibration profile")

    def read_voltage(self, joint: str) -> float:
        """One feedback channel's voltage now, V (calibration tool)."""
        k = self._feedback_index(joint)
        self._call(lambda: self._read_feedback_job([k]), self.config.bus.io_timeout_s,
                   "reading the voltage of %s" % joint)
        return float(self._volts[self._fb_idx[k]])

    def write_pulse_us(self, joint: str, pulse_us: float) -> None:
        """Put a raw pulse width on one servo (calibration tool); ValueError outside its configured pulse range."""
        self._check_state()
        servo = None
        for s in self._servos:
            if s.joint == joint:
                servo = s
        if servo is None:
            raise ValueError("joint %r has no servo (servo joints: %s)" % (joint, ", ".join(s.joint for s in
                                                                                          self._servos)))
        pulse = float(pulse_us)
        if not (math.isfinite(pulse) and servo.pulse_min_us <= pulse <= servo.pulse_max_us):
            raise ValueError("pulse %r us for joint %s outside its %g..%g us range"
                             % (pulse_us, joint, servo.pulse_min_us, servo.pulse_max_us))
        counts = self._counts(servo, pulse)
        self._call(lambda: self._write_job([(servo, counts)]), self.config.bus.io_timeout_s,
                   "writing a raw pulse to %s" % joint)
        self._commanded[self.robot.joint_index(joint)] = servo.angle_for(counts * self._count_us)

    def close(self) -> None:
        """Relax every servo (best effort), then stop the I/O thread.  Idempotent."""
        with self._state_lock:
            if self._state == "closed":
                return
            self._state = "closing"
        thread = self._thread
        if thread is not None and thread.is_alive():
            if self._pca is not None:
                try:
                    self._submit(self._relax_job, self.config.bus.io_timeout_s, "switching the servos off on close",
                                 always=True)
                except HardwareError as exc:
                    LOG.warning("PlenIO.close(): could not switch the servos off: %s", exc)
            self._queue.put(None)
            thread.join(timeout=self.config.bus.io_timeout_s + 0.5)
            if thread.is_alive():
                LOG.warning("PlenIO.close(): the I/O thread is still blocked in an I2C transaction (left behind, "
                            "daemon)")
        with self._state_lock:
            self._state = "closed"

    def __enter__(self) -> "PlenIO":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    @property
    def failure(self) -> Optional[HardwareError]:
        """The HardwareError that stopped this PlenIO, or None."""
        return self._failure

    @property
    def pulse_count_us(self) -> Optional[float]:
        """Length of one PCA9685 count at the frequency the chip really runs, us (None before start)."""
        return self._count_us

    # ============================================================================================ plumbing
    def _check_state(self, allowed: Tuple[str, ...] = ("running",)) -> None:
        state = self._state
        if state in allowed:
            return
        if state == "failed" and self._failure is not None:
            f = self._failure
            raise HardwareError("PlenIO stopped after a hardware error (%s); close() it and build a new one" % f,
                                chip=f.chip, address=f.address, joint=f.joint, channel=f.channel)
        if state == "new":
            raise HardwareError("PlenIO not started: call start() first")
        if state == "starting":
            raise HardwareError("PlenIO is still starting")
        raise HardwareError("PlenIO is %s" % state)

    def _call(self, fn: Callable[[], Any], timeout: float, what: str,
              allowed: Tuple[str, ...] = ("running",)) -> Any:
        self._check_state(allowed)
        try:
            return self._submit(fn, timeout, what)
        except HardwareError as err:
            self._fail(err)
            raise

    def _submit(self, fn: Callable[[], Any], timeout: float, what: str, always: bool = False) -> Any:
        """Run ``fn`` on the I/O thread and wait for it.  Jobs still queued when PlenIO fails or closes are dropped
        unless ``always`` (switching the servos off), so a command from a caller that gave up never runs late."""
        fut = Future()  # type: Future
        self._queue.put((fn, fut, timeout, always))
        wait = answer_wait_s(timeout)
        try:
            return fut.result(timeout=wait)
        except FutureTimeout:
            step = self._step or _Step(None, None, what)
            raise step.error("%s: no answer within %.3g s (the I/O thread is stuck in: %s)"
                             % (what, wait, step.what)) from None

    def _fail(self, err: HardwareError) -> None:
        with self._state_lock:
            if self._state in ("failed", "closing", "closed"):
                return
            self._state = "failed"
            self._failure = err
        if self._pca is None:
            return
        try:
            self._submit(self._relax_job, self.config.bus.io_timeout_s, "switching the servos off after an error",
                         always=True)
            err.relaxed = True
        except HardwareError as exc:
            err.relaxed = False
            LOG.warning("PlenIO: after %s, switching the servos off failed too: %s", err, exc)
            # the caller waited for this attempt too: its error says so (and that the outputs may still be on)
            err.args = ("%s; then switching the servos off failed too: %s" % (err.args[0], exc),) + err.args[1:]

    def _run(self) -> None:
        self._bus.thread_ident = threading.get_ident()
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, fut, timeout, always = item
            if not fut.set_running_or_notify_cancel():
                continue
            if not always and self._state in ("failed", "closing", "closed"):
                fut.set_exception(HardwareError("dropped: PlenIO stopped before this job ran"))
                continue
            self._step = None
            self._bus.deadline = time.monotonic() + timeout
            try:
                result = fn()
            except BaseException as exc:   # noqa: B902 - every failure goes back to the caller
                fut.set_exception(self._wrap(exc, timeout))
            else:
                fut.set_result(result)
            finally:
                self._bus.deadline = math.inf

    def _wrap(self, exc: BaseException, timeout: float) -> BaseException:
        if isinstance(exc, HardwareError):
            return exc
        step = self._step or _Step(None, None, "using the bus")
        if isinstance(exc, _IOTimeout):
            err = step.error("%s did not finish within %.3g s (the chip never signalled completion)"
                             % (step.what, timeout))
        elif isinstance(exc, OSError):
            err = step.error("%s failed: %s" % (step.what, exc))
        else:
            err = step.error("%s failed: %s: %s" % (step.what, type(exc).__name__, exc))
        err.__cause__ = exc
        return err

    def _at(self, chip: str, address: int, what: str, joint: Optional[str] = None,
            channel: Optional[int] = None) -> None:
        self._step = _Step(chip, address, what, joint, channel)

    def _counts(self, servo, pulse_us: float) -> int:
        lo = int(math.ceil(servo.pulse_min_us / self._count_us - 1e-9))
        hi = int(math.floor(servo.pulse_max_us / self._count_us + 1e-9))
        return min(max(int(round(pulse_us / self._count_us)), lo), hi)

    def _feedback_index(self, joint: str) -> int:
        for k, fb in enumerate(self._feedback):
            if fb.joint == joint:
                return k
        raise ValueError("joint %r has no position feedback (feedback joints: %s)"
                         % (joint, ", ".join(f.joint for f in self._feedback)))

    def _joint_reading(self) -> JointReading:
        now = self._clock()
        positions = self._commanded.copy()
        sample_time = np.full(self._n, now)
        for k, i in enumerate(self._fb_idx):
            positions[i] = np.polyval(self._polys[k], self._volts[i])
            sample_time[i] = self._sample_time[i]
        servo_set = set(self._servo_idx)
        for i in range(self._n):
            if i not in servo_set:
                positions[i] = self._stance[i]
        return JointReading(positions=positions, volts=self._volts.copy(), sample_time=sample_time)

    # ============================================================================================ I/O-thread jobs
    def _start_job(self) -> None:
        import adafruit_bno055
        from adafruit_ads1x15.ads1115 import ADS1115
        from adafruit_ads1x15.analog_in import AnalogIn
        from adafruit_bus_device.i2c_device import I2CDevice
        from adafruit_pca9685 import PCA9685

        cfg = self.config
        pwm = cfg.pwm.address
        # The driver's reset writes MODE1 = 0, which would wake a chip still holding an earlier run's pulses:
        # switch every output off first (ALL_LED_OFF_H = full off).
        self._at("PCA9685", pwm, "switching every output off before set-up")
        device = I2CDevice(self._bus, pwm)
        with device:
            device.write(bytes([_ALL_LED_OFF_H, 0x10]))
        self._at("PCA9685", pwm, "setting the PWM frequency")
        pca = PCA9685(self._bus, address=pwm, reference_clock_speed=cfg.pwm.reference_clock_hz)
        pca.frequency = cfg.pwm.frequency_hz
        actual_hz = pca.frequency
        self._count_us = 1e6 / (actual_hz * 4096.0)
        self._pca = pca
        self._relax_job()
        adcs = {}
        for address in cfg.adc.addresses:
            self._at("ADS1115", address, "configuring the ADC")
            adcs[address] = ADS1115(self._bus, gain=cfg.adc.gain, data_rate=cfg.adc.data_rate_sps, address=address)
        self._ains = [AnalogIn(adcs[fb.address], fb.channel) for fb in self._feedback]
        self._at("BNO055", cfg.imu.address, "resetting and configuring the IMU")
        imu = adafruit_bno055.BNO055_I2C(self._bus, address=cfg.imu.address)   # resets: the profile is now zero
        self._imu = imu
        if cfg.imu.calibration_profile is not None:
            self._write_profile(cfg.imu.calibration_profile)
        self._enter_fusion_mode()
        self._read_feedback_job(list(range(len(self._feedback))))

    def _enter_fusion_mode(self) -> None:
        """Select the configured fusion mode and wait for its first fused orientation."""
        import adafruit_bno055
        address = self.config.imu.address
        mode = self.config.imu.fusion_mode
        self._at("BNO055", address, "selecting the %s fusion mode" % mode)
        self._imu.mode = getattr(adafruit_bno055, mode + "_MODE")
        self._at("BNO055", address, "waiting for the first fused orientation")
        deadline = time.monotonic() + _FUSED_WITHIN_S
        while True:
            quat = self._imu.quaternion
            if quat[0] is not None and sum(c * c for c in quat) > 0.25:
                return
            if time.monotonic() > deadline:
                raise self._step.error("no fused orientation %g s after selecting %s (quaternion %s)"
                                       % (_FUSED_WITHIN_S, mode, quat))
            time.sleep(0.01)

    def _read_profile_values(self) -> Tuple[int, ...]:
        """The 11 profile values through the driver (each property read also selects CONFIG mode and restores the
        mode it found, so call this in CONFIG mode to stay there)."""
        values = []     # type: List[int]
        for name, prop, count in _BNO055_PROFILE_PROPERTIES:
            self._at("BNO055", self.config.imu.address, "reading the calibration profile (%s)" % name)
            got = getattr(self._imu, prop)
            values.extend(int(v) for v in (got if count > 1 else (got,)))
        return tuple(values)

    def _write_profile(self, profile: ImuProfileConfig) -> None:
        """Write ``profile`` in CONFIG mode (the only mode the chip takes it in) and read it back; the caller then
        selects the fusion mode."""
        import adafruit_bno055
        address = self.config.imu.address
        self._at("BNO055", address, "selecting CONFIG mode to write the calibration profile")
        self._imu.mode = adafruit_bno055.CONFIG_MODE
        values = profile.values()
        at = 0
        for name, prop, count in _BNO055_PROFILE_PROPERTIES:
            self._at("BNO055", address, "writing the calibration profile (%s)" % name)
            part = tuple(values[at:at + count])
            setattr(self._imu, prop, part if count > 1 else part[0])   # the driver wants a tuple or an int
            at += count
        back = self._read_profile_values()
        if back != values:
            self._at("BNO055", address, "verifying the calibration profile")
            raise self._step.error("the calibration profile did not stick: wrote %s, read back %s (the chip takes "
                                   "it only in CONFIG mode)" % (list(values), list(back)))

    def _read_profile_job(self) -> ImuProfileConfig:
        import adafruit_bno055
        self._at("BNO055", self.config.imu.address, "selecting CONFIG mode to read the calibration profile")
        self._imu.mode = adafruit_bno055.CONFIG_MODE
        values = self._read_profile_values()
        self._enter_fusion_mode()
        return ImuProfileConfig.from_values(values)

    def _relax_job(self) -> None:
        address = self.config.pwm.address
        first = None
        for ch in range(_PCA9685_CHANNELS):
            self._at("PCA9685", address, "switching the output off", self._joint_of_channel.get(ch), ch)
            try:
                self._pca.channels[ch].duty_cycle = 0
            except _IOTimeout:
                raise
            except Exception as exc:    # keep switching the others off, report the first failure
                if first is None:
                    first = (self._step, exc)
        if first is not None:
            self._step = first[0]
            raise first[1]

    def _write_job(self, writes) -> None:
        address = self.config.pwm.address
        for servo, counts in writes:
            self._at("PCA9685", address, "writing the servo pulse", servo.joint, servo.channel)
            self._pca.channels[servo.channel].duty_cycle = counts << 4

    def _read_feedback_job(self, indices: List[int]) -> None:
        for k in indices:
            fb = self._feedback[k]
            self._at("ADS1115", fb.address, "reading the joint position", fb.joint, fb.channel)
            volts = float(self._ains[k].voltage)
            i = self._fb_idx[k]
            self._volts[i] = volts
            self._sample_time[i] = self._clock()

    def _imu_job(self) -> ImuReading:
        self._at("BNO055", self.config.imu.address, "reading the orientation")
        quat = self._imu.quaternion
        self._at("BNO055", self.config.imu.address, "reading the angular velocity")
        gyro = self._imu.gyro
        self._at("BNO055", self.config.imu.address, "reading the acceleration")
        accel = self._imu.acceleration
        self._at("BNO055", self.config.imu.address, "reading the calibration status")
        calibration = tuple(int(c) for c in self._imu.calibration_status)
        stamp = self._clock()
        if quat[0] is None or gyro[0] is None or accel[0] is None:
            raise self._step.error("not in a fusion mode (did the chip reset?): quaternion %s" % (quat,))
        w, x, y, z = (float(c) for c in quat)
        norm = math.sqrt(w * w + x * x + y * y + z * z)
        if norm < 0.5:
            raise self._step.error("returned an invalid quaternion (w, x, y, z) = %s" % (quat,))
        q_ws = np.array([x, y, z, w]) / norm
        orientation = quat_multiply(q_ws, quat_conjugate(self._mounting))
        orientation /= np.linalg.norm(orientation)
        return ImuReading(orientation=orientation,
                          angular_velocity=self._mounting_matrix @ np.asarray(gyro, dtype=np.float64),
                          linear_acceleration=self._mounting_matrix @ np.asarray(accel, dtype=np.float64),
                          calibration=calibration, time=stamp)


def open_plen_io(config: PlenHardwareConfig, robot: Any, bus: str, sim_hint: str,
                 **plant_options: Any) -> Tuple["PlenIO", Any]:
    """A started ``PlenIO`` and the simulated plant behind it (None on the robot).

    ``bus``: ``board`` (the Raspberry Pi's I2C through Adafruit Blinka, ``board.I2C()``) or ``sim`` (a
    ``simbus.SimulatedPlen`` built with ``plant_options``).  ConfigError when the board's bus cannot be opened
    (``sim_hint`` tells the user how to ask for the simulated one), HardwareError when a chip does not answer.
    """
    plant = None
    if bus == "sim":
        from op3_walk.hardware.simbus import SimulatedPlen
        plant = SimulatedPlen(config, robot, **plant_options)
        i2c = plant.bus
    elif bus == "board":
        try:
            import board    # Adafruit Blinka
            i2c = board.I2C()
        except Exception as exc:  # not a Pi, I2C disabled, Blinka missing: say which
            raise ConfigError("cannot open the I2C bus through Adafruit Blinka (board.I2C()): %s: %s. On the "
                              "robot's Raspberry Pi enable I2C (raspi-config) and check %s; elsewhere use %s"
                              % (type(exc).__name__, exc, config.bus.device, sim_hint)) from exc
    else:
        raise ConfigError("bus must be board or sim, got %r" % bus)
    io = PlenIO(config, robot, i2c)
    try:
        io.start()
    except BaseException:
        io.close()
        raise
    return io, plant
