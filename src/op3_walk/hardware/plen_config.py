"""Configuration of the PLEN hardware: I2C bus, PCA9685 servo board, ADS1115 feedback ADCs, BNO055 IMU, per joint.

Loaded from ``config/hardware/plen.yaml`` with the strict loader (``op3_walk.config``): unknown keys, wrong types and
inconsistent values raise ``ConfigError`` naming the key.  ``validate`` also loads the robot named by ``robot``
(``config/robots/<robot>.yaml``) and checks the joints against it, and checks that the I2C traffic of one control
tick fits the control period (``estimate_tick_io``).

Angle conventions (every angle in rad):

- servo angle ``theta``: 0 at the middle pulse ``(pulse_min_us + pulse_max_us) / 2``; ``span_rad`` is the angle the
  horn turns between ``pulse_min_us`` and ``pulse_max_us``, linearly, so
  ``pulse_us = mid + theta * (pulse_max_us - pulse_min_us) / span_rad``;
- joint angle ``q`` (robot convention, ``config/robots/plen.yaml``): ``q = horn_offset_rad + direction * theta``,
  i.e. ``horn_offset_rad`` is the joint angle at the middle pulse and ``direction`` (+1/-1) says whether the servo
  turns with or against the joint;
- feedback: ``q = numpy.polyval(poly, volts)``, coefficients highest power first (``[a, b]`` means
  ``q = a * volts + b``); the polynomial maps the ADC voltage straight to the joint angle (direction and horn offset
  included), as fitted by the calibration tool.

Quaternions in this package are (x, y, z, w) unless a name says ``wxyz``; the helpers at the bottom work on them.
"""
import dataclasses
import math
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from op3_walk.config import ConfigError, doc, load

DEFAULT_PATH = "hardware/plen.yaml"

#: ADS1115 programmable-gain full-scale ranges, V -> the ``gain`` key of the Adafruit driver.
ADS1115_FULL_SCALE_TO_GAIN = {6.144: 2.0 / 3.0, 4.096: 1, 2.048: 2, 1.024: 4, 0.512: 8, 0.256: 16}
#: ADS1115 data rates, samples per second.
ADS1115_DATA_RATES = (8, 16, 32, 64, 128, 250, 475, 860)
#: Internal-oscillator tolerance of the ADS1115 (data sheet: +-10 %): a conversion may take this much longer.
ADS1115_RATE_TOLERANCE = 0.10
#: The four ADS1115 addresses (ADDR pin to GND, VDD, SDA, SCL).
ADS1115_ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)
PCA9685_CHANNELS = 16
#: BNO055 fusion modes PlenIO may select (names of the Adafruit driver constants without ``_MODE``).
BNO055_FUSION_MODES = ("IMUPLUS", "NDOF", "NDOF_FMC_OFF")
PULSE_LIMITS_US = (400.0, 3000.0)   # what any hobby servo could accept; configured ranges must lie inside
#: BNO055 calibration profile: the 22 bytes at 0x55..0x6A, 11 little-endian int16 in this order.
BNO055_PROFILE_REGISTER = 0x55
BNO055_PROFILE_FORMAT = "<11h"
BNO055_PROFILE_BYTES = 22
INT16_RANGE = (-32768, 32767)


@dataclasses.dataclass
class BusConfig:
    """The I2C bus."""

    device: str = doc("Linux I2C device the chips are on (/dev/i2c-1 on a Raspberry Pi header)", "/dev/i2c-1")
    frequency_hz: float = doc("I2C clock, Hz (the Pi defaults to 100000: set dtparam=i2c_arm_baudrate=400000)",
                              400000.0)
    transaction_overhead_s: float = doc("software + driver time per I2C transaction on the robot's computer, s "
                                        "(used for the per-tick budget; measure it with make bench-hardware)", 1e-4)
    io_timeout_s: float = doc("limit for one per-tick call (write_targets, read_joints, read_imu, read_voltage, "
                              "write_pulse_us, relax), s; past it the call raises HardwareError", 0.1)
    start_timeout_s: float = doc("limit for start() (the BNO055 driver alone sleeps ~0.77 s; writing and verifying "
                                 "an imu.calibration_profile adds ~0.45 s), read_all_joints and read_imu_profile, s",
                                 5.0)
    max_utilisation: float = doc("share of the control period the estimated per-tick I2C traffic may take (0..1]",
                                 0.8)

    def validate(self) -> None:
        if not 1000.0 <= self.frequency_hz <= 1000000.0:
            raise ValueError("frequency_hz must lie in 1 kHz..1 MHz, got %g" % self.frequency_hz)
        if self.transaction_overhead_s < 0.0:
            raise ValueError("transaction_overhead_s must be >= 0")
        if not self.io_timeout_s > 0.0 or not self.start_timeout_s > 0.0:
            raise ValueError("io_timeout_s and start_timeout_s must be positive")
        if not 0.0 < self.max_utilisation <= 1.0:
            raise ValueError("max_utilisation must lie in (0, 1], got %g" % self.max_utilisation)

    @property
    def byte_time_s(self) -> float:
        """Time of one byte on the wire (8 bits + ACK), s."""
        return 9.0 / self.frequency_hz


@dataclasses.dataclass
class PwmConfig:
    """The PCA9685 16-channel PWM board driving the servos."""

    address: int = doc("I2C address (7-bit)", 0x40)
    frequency_hz: float = doc("servo frame rate, Hz (the chip rounds it: 50 -> 50.03 with a 25 MHz clock)", 50.0)
    reference_clock_hz: int = doc("PCA9685 internal oscillator, Hz (nominally 25 MHz; real chips run a few % off: "
                                  "measure a pulse and correct it here)", 25000000)

    def validate(self) -> None:
        if not 0x40 <= self.address <= 0x7F:
            raise ValueError("pwm.address 0x%02x is not a PCA9685 address (0x40..0x7f)" % self.address)
        if not 24.0 <= self.frequency_hz <= 400.0:
            raise ValueError("pwm.frequency_hz must lie in 24..400 Hz for servos, got %g" % self.frequency_hz)
        if not 20000000 <= self.reference_clock_hz <= 30000000:
            raise ValueError("pwm.reference_clock_hz %d is implausible (PCA9685: ~25 MHz)" % self.reference_clock_hz)


@dataclasses.dataclass
class ServoConfig:
    """One servo: its PCA9685 channel and its pulse <-> angle map."""

    joint: str = doc("robot joint driven by this servo")
    channel: int = doc("PCA9685 channel, 0..15")
    pulse_min_us: float = doc("shortest pulse the servo may get, us", 600.0)
    pulse_max_us: float = doc("longest pulse the servo may get, us", 2800.0)
    span_rad: float = doc("angle the horn turns from pulse_min_us to pulse_max_us, rad", math.radians(220.0))
    horn_offset_rad: float = doc("joint angle at the middle pulse, rad (horn mounting error, up to ~+-9 deg)", 0.0)
    direction: int = doc("+1: the joint angle grows with the pulse width; -1: it shrinks", 1)

    def validate(self) -> None:
        if not 0 <= self.channel < PCA9685_CHANNELS:
            raise ValueError("servo %s: channel %d outside 0..15" % (self.joint, self.channel))
        lo, hi = PULSE_LIMITS_US
        if not lo <= self.pulse_min_us < self.pulse_max_us <= hi:
            raise ValueError("servo %s: pulse range %g..%g us must satisfy %g <= min < max <= %g"
                             % (self.joint, self.pulse_min_us, self.pulse_max_us, lo, hi))
        if self.pulse_max_us - self.pulse_min_us < 500.0:
            raise ValueError("servo %s: pulse range %g..%g us is narrower than 500 us"
                             % (self.joint, self.pulse_min_us, self.pulse_max_us))
        if not 0.5 <= self.span_rad <= 2.0 * math.pi:
            raise ValueError("servo %s: span_rad %g outside 0.5..2*pi" % (self.joint, self.span_rad))
        if abs(self.horn_offset_rad) > 0.5:
            raise ValueError("servo %s: |horn_offset_rad| %g > 0.5 rad: re-seat the horn" % (self.joint,
                                                                                           self.horn_offset_rad))
        if self.direction not in (-1, 1):
            raise ValueError("servo %s: direction must be +1 or -1, got %d" % (self.joint, self.direction))

    @property
    def pulse_mid_us(self) -> float:
        return 0.5 * (self.pulse_min_us + self.pulse_max_us)

    @property
    def us_per_rad(self) -> float:
        """Pulse change per radian of servo angle, us/rad."""
        return (self.pulse_max_us - self.pulse_min_us) / self.span_rad

    def pulse_for(self, q: float) -> float:
        """Pulse width (us, unrounded, unchecked) that puts the joint at ``q`` rad."""
        return self.pulse_mid_us + self.direction * (q - self.horn_offset_rad) * self.us_per_rad

    def angle_for(self, pulse_us: float) -> float:
        """Joint angle (rad) that pulse width ``pulse_us`` commands."""
        return self.horn_offset_rad + self.direction * (pulse_us - self.pulse_mid_us) / self.us_per_rad

    def angle_range(self) -> Tuple[float, float]:
        """Joint angles (low, high) the pulse range can express, rad."""
        a, b = self.angle_for(self.pulse_min_us), self.angle_for(self.pulse_max_us)
        return (min(a, b), max(a, b))


@dataclasses.dataclass
class AdcConfig:
    """The ADS1115 chips reading the servo potentiometers."""

    addresses: List[int] = doc("I2C addresses of the ADS1115 chips (0x48..0x4b)",
                               default_factory=lambda: list(ADS1115_ADDRESSES))
    full_scale_v: float = doc("PGA full-scale range, V: one of 6.144, 4.096, 2.048, 1.024, 0.512, 0.256", 4.096)
    data_rate_sps: int = doc("conversion rate, samples/s: one of 8, 16, 32, 64, 128, 250, 475, 860 "
                             "(one single-shot read takes 1/rate s + bus time)", 860)
    reads_per_tick: int = doc("feedback channels read per read_joints() call (round robin; the rest keep their "
                              "latest sample, whose time is reported)", 4)
    supply_v: float = doc("ADS1115 VDD, V: inputs are clipped to 0..VDD (3.3 on the Pi's rail)", 3.3)

    def validate(self) -> None:
        bad = [a for a in self.addresses if a not in ADS1115_ADDRESSES]
        if bad:
            raise ValueError("adc.addresses: %s not ADS1115 addresses (0x48..0x4b)"
                             % ", ".join("0x%02x" % a for a in bad))
        if len(set(self.addresses)) != len(self.addresses):
            raise ValueError("adc.addresses lists an address twice: %s" % self.addresses)
        if self.gain is None:
            raise ValueError("adc.full_scale_v %g is not an ADS1115 range (%s)"
                             % (self.full_scale_v, ", ".join(str(v) for v in ADS1115_FULL_SCALE_TO_GAIN)))
        if self.data_rate_sps not in ADS1115_DATA_RATES:
            raise ValueError("adc.data_rate_sps %d is not an ADS1115 rate (%s)"
                             % (self.data_rate_sps, ", ".join(map(str, ADS1115_DATA_RATES))))
        if self.reads_per_tick < 1:
            raise ValueError("adc.reads_per_tick must be >= 1")
        if not 2.0 <= self.supply_v <= 5.5:
            raise ValueError("adc.supply_v %g outside the ADS1115's 2.0..5.5 V" % self.supply_v)

    @property
    def gain(self):
        """The Adafruit driver's ``gain`` value for ``full_scale_v`` (None if it is not a valid range)."""
        for fs, gain in ADS1115_FULL_SCALE_TO_GAIN.items():
            if abs(fs - self.full_scale_v) < 1e-9:
                return gain
        return None


@dataclasses.dataclass
class FeedbackConfig:
    """One joint's position feedback: ADC chip, channel and calibration polynomial."""

    joint: str = doc("robot joint whose potentiometer is wired to this input")
    address: int = doc("I2C address of the ADS1115 (one of adc.addresses)")
    channel: int = doc("single-ended input AIN0..AIN3 of that chip: 0..3")
    poly: List[float] = doc("calibration polynomial volts -> joint angle rad, numpy.polyval order (highest power "
                            "first): [a, b] means q = a*V + b")

    def validate(self) -> None:
        if not 0 <= self.channel <= 3:
            raise ValueError("feedback %s: channel %d outside 0..3" % (self.joint, self.channel))
        if not self.poly:
            raise ValueError("feedback %s: empty calibration polynomial" % self.joint)
        if not all(math.isfinite(c) for c in self.poly):
            raise ValueError("feedback %s: non-finite polynomial coefficient" % self.joint)

    def angle_for(self, volts):
        """Joint angle(s), rad, for ADC voltage(s) ``volts``."""
        return np.polyval(np.asarray(self.poly, dtype=np.float64), volts)


@dataclasses.dataclass
class ImuProfileConfig:
    """A BNO055 calibration profile: the sensor offsets and radii the chip's own calibration found (registers
    0x55..0x6A, read in CONFIG mode), restored by ``PlenIO.start()`` so the chip need not calibrate from scratch.

    Raw int16 register values, in the units the chip had when they were read: the Adafruit driver leaves UNIT_SEL at
    its power-on value (m/s^2, dps) and sets the accelerometer to 4 g on every start, so accelerometer offsets are in
    0.01 m/s^2, magnetometer offsets in 1/16 uT, gyroscope offsets in 1/16 dps; the radii in LSB.  A profile is only
    meaningful for the chip (and mounting) it was read from.
    """

    accel_offset: List[int] = doc("accelerometer offsets x, y, z (ACC_OFFSET 0x55..0x5A)")
    mag_offset: List[int] = doc("magnetometer offsets x, y, z (MAG_OFFSET 0x5B..0x60)")
    gyro_offset: List[int] = doc("gyroscope offsets x, y, z (GYR_OFFSET 0x61..0x66)")
    accel_radius: int = doc("accelerometer radius (ACC_RADIUS 0x67..0x68)")
    mag_radius: int = doc("magnetometer radius (MAG_RADIUS 0x69..0x6A)")

    def validate(self) -> None:
        for name in ("accel_offset", "mag_offset", "gyro_offset"):
            if len(getattr(self, name)) != 3:
                raise ValueError("BNO055 calibration profile: %s needs 3 integers (x, y, z), got %d"
                                 % (name, len(getattr(self, name))))
        lo, hi = INT16_RANGE
        bad = [v for v in self.values() if not lo <= v <= hi]
        if bad:
            raise ValueError("BNO055 calibration profile: %s outside the int16 range %d..%d of its registers"
                             % (", ".join(str(v) for v in bad), lo, hi))

    def values(self) -> Tuple[int, ...]:
        """The 11 register values in register order (accel xyz, mag xyz, gyro xyz, accel radius, mag radius)."""
        return tuple(int(v) for v in list(self.accel_offset) + list(self.mag_offset) + list(self.gyro_offset)
                     + [self.accel_radius, self.mag_radius])

    @classmethod
    def from_values(cls, values: Sequence[int]) -> "ImuProfileConfig":
        """From the 11 register values in register order; ValueError on a wrong count or range."""
        v = [int(x) for x in values]
        if len(v) != 11:
            raise ValueError("a BNO055 calibration profile has 11 values, got %d" % len(v))
        profile = cls(accel_offset=v[0:3], mag_offset=v[3:6], gyro_offset=v[6:9], accel_radius=v[9],
                      mag_radius=v[10])
        profile.validate()
        return profile

    def to_bytes(self) -> bytes:
        """The 22 register bytes 0x55..0x6A as the chip stores them (little-endian int16)."""
        return struct.pack(BNO055_PROFILE_FORMAT, *self.values())

    @classmethod
    def from_bytes(cls, data: bytes) -> "ImuProfileConfig":
        if len(data) != BNO055_PROFILE_BYTES:
            raise ValueError("a BNO055 calibration profile is %d bytes, got %d" % (BNO055_PROFILE_BYTES, len(data)))
        return cls.from_values(struct.unpack(BNO055_PROFILE_FORMAT, bytes(data)))

    def to_yaml_dict(self) -> Dict[str, object]:
        """Plain data for the YAML file (key order as the fields)."""
        return {"accel_offset": [int(v) for v in self.accel_offset], "mag_offset": [int(v) for v in self.mag_offset],
                "gyro_offset": [int(v) for v in self.gyro_offset], "accel_radius": int(self.accel_radius),
                "mag_radius": int(self.mag_radius)}


@dataclasses.dataclass
class ImuConfig:
    """The BNO055 IMU."""

    address: int = doc("I2C address (0x28 with ADR low, 0x29 with ADR high)", 0x28)
    mounting_xyzw: List[float] = doc("rotation sensor frame -> torso frame as a unit quaternion x, y, z, w: maps "
                                     "vectors measured on the chip's axes into the torso frame (REP 103: x forward, "
                                     "y left, z up)", default_factory=lambda: [0.0, 0.0, 0.0, 1.0])
    fusion_mode: str = doc("BNO055 fusion mode: IMUPLUS (gyro + accelerometer: no magnetometer, immune to the "
                           "servos' magnetic fields, yaw drifts slowly), NDOF or NDOF_FMC_OFF (absolute yaw from "
                           "the magnetometer)", "IMUPLUS")
    calibration_profile: Optional[ImuProfileConfig] = doc(
        "BNO055 calibration profile written to the chip at every start (after the driver's reset, in CONFIG mode) "
        "and verified by reading it back; written by calibrate_plen imu --write; null: none, the chip calibrates "
        "from scratch after every start", None)

    def validate(self) -> None:
        if self.address not in (0x28, 0x29):
            raise ValueError("imu.address 0x%02x is not a BNO055 address (0x28, 0x29)" % self.address)
        if len(self.mounting_xyzw) != 4:
            raise ValueError("imu.mounting_xyzw needs 4 numbers (x, y, z, w)")
        norm = math.sqrt(sum(c * c for c in self.mounting_xyzw))
        if abs(norm - 1.0) > 1e-3:
            raise ValueError("imu.mounting_xyzw must be a unit quaternion (norm %.6f)" % norm)
        if self.fusion_mode not in BNO055_FUSION_MODES:
            raise ValueError("imu.fusion_mode %r: one of %s" % (self.fusion_mode, ", ".join(BNO055_FUSION_MODES)))

    @property
    def mounting(self) -> np.ndarray:
        """Normalised mounting quaternion (x, y, z, w), sensor -> torso."""
        q = np.asarray(self.mounting_xyzw, dtype=np.float64)
        return q / np.linalg.norm(q)


@dataclasses.dataclass
class PlenHardwareConfig:
    """Everything the chip layer (``PlenIO``) and the simulator (``SimulatedPlen``) need to know."""

    robot: str = doc("robot config name or path whose joints these are (config/robots/<robot>.yaml)", "plen")
    control_rate_hz: float = doc("rate of read_joints/write_targets/read_imu calls the I2C budget is checked "
                                 "against, Hz (must be >= the robot's control_rate_hz)", 50.0)
    bus: BusConfig = doc("I2C bus", default_factory=BusConfig)
    pwm: PwmConfig = doc("PCA9685 servo board", default_factory=PwmConfig)
    adc: AdcConfig = doc("ADS1115 feedback ADCs", default_factory=AdcConfig)
    imu: ImuConfig = doc("BNO055 IMU", default_factory=ImuConfig)
    passive_joints: List[str] = doc("robot joints without a servo on this build (held at their stance; the PLEN "
                                    "elbows); they must not appear in servos or feedback",
                                    default_factory=lambda: ["l_elbow", "r_elbow"])
    servos: List[ServoConfig] = doc("one entry per servo", default_factory=list)
    feedback: List[FeedbackConfig] = doc("one entry per joint with position feedback", default_factory=list)

    # ---------------------------------------------------------------------------------------------------- checks
    def validate(self) -> None:
        if not self.control_rate_hz > 0.0:
            raise ValueError("control_rate_hz must be positive")
        for what, names in (("servos", [s.joint for s in self.servos]),
                            ("feedback", [f.joint for f in self.feedback]),
                            ("passive_joints", list(self.passive_joints))):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError("%s: joint(s) listed twice: %s" % (what, ", ".join(dup)))
        channels = [s.channel for s in self.servos]
        for ch in sorted({c for c in channels if channels.count(c) > 1}):
            raise ValueError("servos: PCA9685 channel %d used by %s" % (
                ch, " and ".join(s.joint for s in self.servos if s.channel == ch)))
        for servo in self.servos:
            period_us = 1e6 / self.pwm.frequency_hz
            if servo.pulse_max_us >= period_us:
                raise ValueError("servo %s: pulse_max_us %g does not fit the %g us PWM period"
                                 % (servo.joint, servo.pulse_max_us, period_us))
        seen = {}
        for fb in self.feedback:
            if fb.address not in self.adc.addresses:
                raise ValueError("feedback %s: ADS1115 address 0x%02x is not in adc.addresses" % (fb.joint,
                                                                                                 fb.address))
            key = (fb.address, fb.channel)
            if key in seen:
                raise ValueError("feedback: ADS1115 0x%02x channel %d used by %s and %s"
                                 % (fb.address, fb.channel, seen[key], fb.joint))
            seen[key] = fb.joint
        # Imported here: op3_walk.robots imports nothing from hardware, but keep module import light.
        from op3_walk.robots.description import load_robot
        try:
            robot = load_robot(self.robot)
        except ConfigError as exc:
            raise ValueError("robot %r: %s" % (self.robot, exc)) from exc
        self.check_robot(robot)
        self.check_budget()

    def check_robot(self, robot) -> None:
        """ValueError unless this config matches ``robot`` (a ``RobotConfig``): every joint is a servo or passive,
        every named joint exists, each joint's limits fit its pulse range, the control rate fits."""
        names = list(robot.joint_names)
        for what, listed in (("servos", [s.joint for s in self.servos]),
                             ("feedback", [f.joint for f in self.feedback]),
                             ("passive_joints", list(self.passive_joints))):
            unknown = [n for n in listed if n not in names]
            if unknown:
                raise ValueError("%s: unknown joint(s) %s (robot %s has: %s)"
                                 % (what, ", ".join(unknown), robot.name, ", ".join(names)))
        servo_joints = {s.joint for s in self.servos}
        for passive in self.passive_joints:
            if passive in servo_joints:
                raise ValueError("joint %s is in passive_joints (it has no servo on this build) and must not be "
                                 "listed in servos" % passive)
        for fb in self.feedback:
            if fb.joint not in servo_joints:
                raise ValueError("feedback %s: joint has no servo (passive joint): no potentiometer to read"
                                 % fb.joint)
        covered = servo_joints | set(self.passive_joints)
        missing = [n for n in names if n not in covered]
        if missing:
            raise ValueError("joint(s) %s of robot %s have neither a servo nor a passive_joints entry"
                             % (", ".join(missing), robot.name))
        for servo in self.servos:
            joint = robot.joint(servo.joint)
            lo, hi = servo.angle_range()
            if joint.lower < lo - 1e-9 or joint.upper > hi + 1e-9:
                raise ValueError("servo %s: joint limits [%.3f, %.3f] rad need pulses outside %g..%g us (they "
                                 "express [%.3f, %.3f] rad): check span_rad, horn_offset_rad and the pulse range"
                                 % (servo.joint, joint.lower, joint.upper, servo.pulse_min_us, servo.pulse_max_us,
                                    lo, hi))
        if robot.control_rate_hz > self.control_rate_hz + 1e-9:
            raise ValueError("robot %s runs at %g Hz but the I2C budget was checked for control_rate_hz %g Hz"
                             % (robot.name, robot.control_rate_hz, self.control_rate_hz))

    def check_budget(self) -> None:
        """ValueError when the estimated I2C time of one control tick exceeds its share of the period."""
        est = estimate_tick_io(self)
        period = 1.0 / self.control_rate_hz
        allowed = self.bus.max_utilisation * period
        if est["total_s"] > allowed:
            raise ValueError(
                "per-tick I2C traffic does not fit: estimated %.1f ms (PWM %.1f ms for %d servos, ADC %.1f ms for "
                "%d single-shot reads at %d SPS, IMU %.1f ms) > %.0f%% of the %.1f ms period at %g Hz; lower "
                "adc.reads_per_tick, raise adc.data_rate_sps or bus.frequency_hz, or lower control_rate_hz"
                % (est["total_s"] * 1e3, est["pwm_s"] * 1e3, len(self.servos), est["adc_s"] * 1e3,
                   est["adc_reads"], self.adc.data_rate_sps, est["imu_s"] * 1e3, self.bus.max_utilisation * 100.0,
                   period * 1e3, self.control_rate_hz))

    # ---------------------------------------------------------------------------------------------------- lookups
    def servo(self, joint: str) -> ServoConfig:
        for s in self.servos:
            if s.joint == joint:
                return s
        raise KeyError(joint)

    def feedback_for(self, joint: str) -> FeedbackConfig:
        for f in self.feedback:
            if f.joint == joint:
                return f
        raise KeyError(joint)


def estimate_tick_io(config: PlenHardwareConfig) -> Dict[str, float]:
    """Estimated I2C time of one control tick (write_targets + read_joints + read_imu), s, by part.

    Counts what the Adafruit drivers put on the wire: a PCA9685 channel write is one 6-byte transaction (address,
    register, ON/OFF); an ADS1115 single-shot read is a config write, a conversion (1/rate, +10 % oscillator
    tolerance) polled by 2-byte register reads (worst case: two polls past the end) and the result read; a BNO055
    property read first reads the mode register.  Each transaction also costs ``bus.transaction_overhead_s``.
    """
    byte = config.bus.byte_time_s
    overhead = config.bus.transaction_overhead_s

    def tx(n_bytes: int) -> float:
        return n_bytes * byte + overhead

    def reg_read(n_data: int) -> float:
        return tx(3 + n_data)   # address+W, register, address+R (repeated start), data

    pwm = len(config.servos) * tx(6)
    conversion = (1.0 + ADS1115_RATE_TOLERANCE) / config.adc.data_rate_sps
    adc_read = tx(4) + conversion + 2 * reg_read(2) + reg_read(2)
    reads = min(config.adc.reads_per_tick, len(config.feedback))
    adc = reads * adc_read
    # quaternion, gyro, acceleration: mode read + data; calibration status: one register
    imu = 3 * reg_read(1) + reg_read(8) + 2 * reg_read(6) + reg_read(1)
    return {"pwm_s": pwm, "adc_s": adc, "adc_read_s": adc_read, "adc_reads": reads, "imu_s": imu,
            "total_s": pwm + adc + imu, "period_s": 1.0 / config.control_rate_hz}


def load_hardware_config(path: str = DEFAULT_PATH, overrides=None) -> PlenHardwareConfig:
    """Load and validate ``config/hardware/plen.yaml`` (or ``path``); ``ConfigError`` on any problem."""
    return load(PlenHardwareConfig, path, overrides)


# ------------------------------------------------------------------------------------------- quaternion helpers
def quat_multiply(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """Hamilton product ``a * b`` of quaternions (x, y, z, w): rotation ``b`` first, then ``a``."""
    ax, ay, az, aw = (float(v) for v in a)
    bx, by, bz, bw = (float(v) for v in b)
    return np.array([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz])


def quat_conjugate(q: Sequence[float]) -> np.ndarray:
    """Inverse rotation of unit quaternion ``q`` (x, y, z, w)."""
    x, y, z, w = (float(v) for v in q)
    return np.array([-x, -y, -z, w])


def quat_matrix(q: Sequence[float]) -> np.ndarray:
    """Rotation matrix (3, 3) of quaternion ``q`` (x, y, z, w; normalised here)."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(np.asarray(q, dtype=np.float64))
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def quat_rotate(q: Sequence[float], v: Sequence[float]) -> np.ndarray:
    """Vector ``v`` rotated by quaternion ``q`` (x, y, z, w)."""
    return quat_matrix(q) @ np.asarray(v, dtype=np.float64)
