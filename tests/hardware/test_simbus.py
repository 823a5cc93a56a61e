"""The simulated I2C bus and chips, driven by the REAL Adafruit drivers (unmodified) and by raw transactions."""
import errno
import math
import struct
import threading
import time

import numpy as np
import pytest

from adafruit_ads1x15.ads1115 import ADS1115
from adafruit_ads1x15.analog_in import AnalogIn
from adafruit_pca9685 import PCA9685

from op3_walk.hardware.plen_config import quat_matrix, quat_multiply
from op3_walk.hardware.simbus import (SLEEP_QUANTUM_S, ADS1115Sim, BNO055Sim, PCA9685Sim, SimulatedI2CBus,
                                      SimulatedPlen, STANDARD_GRAVITY)


def fast_bus():
    return SimulatedI2CBus(byte_time_s=0.0)


def raw_read(bus, address, register, n):
    buf = bytearray(n)
    bus.writeto_then_readfrom(address, bytes([register]), buf)
    return bytes(buf)


def axis_angle(axis, angle):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    return np.concatenate([axis * math.sin(angle / 2.0), [math.cos(angle / 2.0)]])


# ------------------------------------------------------------------------------------------------- bus
def test_missing_or_nacking_device_raises_eremoteio_and_recovers():
    bus = fast_bus()
    pca = bus.attach(PCA9685Sim(0x40))
    with pytest.raises(OSError) as err:
        bus.writeto(0x41, b"\x00")
    assert err.value.errno == errno.EREMOTEIO
    assert bus.scan() == [0x40]
    pca.fail("nack")
    for call in (lambda: bus.writeto(0x40, b"\x00\x00"), lambda: raw_read(bus, 0x40, 0, 1),
                 lambda: bus.readfrom_into(0x40, bytearray(1))):
        with pytest.raises(OSError) as err:
            call()
        assert err.value.errno == errno.EREMOTEIO and "PCA9685" in str(err.value)
    assert bus.scan() == []
    pca.recover()
    assert raw_read(bus, 0x40, 0x00, 1) == b"\x11"      # MODE1 power-on value
    with pytest.raises(ValueError, match="No I2C device"):   # the driver's own probe turns the NACK into this
        PCA9685(bus, address=0x41)


def test_stretch_failure_times_out_instead_of_hanging():
    bus = SimulatedI2CBus(byte_time_s=0.0, stretch_timeout_s=0.2)
    pca = bus.attach(PCA9685Sim(0x40))
    pca.fail("stretch")
    t0 = time.monotonic()
    with pytest.raises(OSError) as err:
        bus.writeto(0x40, b"\x00\x00")
    assert err.value.errno == errno.ETIMEDOUT
    assert time.monotonic() - t0 < 5.0


def test_bus_time_is_charged_and_threads_are_recorded():
    bus = SimulatedI2CBus(frequency_hz=400000.0)
    bus.attach(PCA9685Sim(0x40))
    t0 = time.perf_counter()
    for _ in range(20):
        bus.writeto(0x40, bytes([0x06, 0, 0, 0, 0]))    # 1 address + 5 data bytes
    elapsed = time.perf_counter() - t0
    expected = 20 * 6 * 9 / 400000.0
    assert bus.bus_time_s == pytest.approx(expected)
    # really spent (lower bound only): short transactions accumulate until more than SLEEP_QUANTUM_S is owed
    assert elapsed >= expected - SLEEP_QUANTUM_S
    assert bus.transaction_count == 20 and bus.transactions_by_address == {0x40: 20}
    other = threading.Thread(target=lambda: bus.writeto(0x40, b"\x06\x00"), name="other")
    other.start()
    other.join()
    assert len(bus.transactions_by_thread) == 2
    assert sorted(bus.thread_names.values()) == sorted([threading.current_thread().name, "other"])
    assert bus.unlocked_transactions == 21                 # raw calls above never took try_lock
    assert bus.try_lock() and not bus.try_lock()
    bus.unlock()


# ------------------------------------------------------------------------------------------------- PCA9685
def test_pca9685_driver_prescale_and_channel_pulse_widths():
    bus = fast_bus()
    sim = bus.attach(PCA9685Sim(0x40))
    pca = PCA9685(bus)
    pca.frequency = 50
    assert sim.prescale == 121                                  # round(25e6 / 4096 / 50) - 1
    assert sim.frequency_hz == pytest.approx(50.03, abs=0.01)
    assert pca.frequency == pytest.approx(sim.frequency_hz)     # the driver reads the prescale back
    assert sim.regs[0] & 0x20                                   # auto-increment on, awake
    pca.channels[3].duty_cycle = 0x1000                         # 0x1000 >> 4 = 256 counts
    assert sim.pulse_width_us(3) == pytest.approx(256 * 1e6 / 50.03 / 4096, rel=1e-3)
    assert sim.pulse_width_us(4) is None                        # power-on: full off
    pca.channels[3].duty_cycle = 0
    assert sim.pulse_width_us(3) is None
    pca.channels[5].duty_cycle = 0xFFFF                         # full on
    assert sim.pulse_width_us(5) == pytest.approx(sim.period_us)


def test_servokit_angles_become_matching_pulses():
    from adafruit_servokit import ServoKit
    bus = fast_bus()
    sim = bus.attach(PCA9685Sim(0x40))
    kit = ServoKit(channels=16, i2c=bus, frequency=50)
    count_us = sim.count_us
    assert count_us == pytest.approx(4.88, abs=0.01)
    for ch, angle in ((0, 0.0), (1, 45.0), (7, 90.0), (15, 180.0)):
        servo = kit.servo[ch]
        servo.set_pulse_width_range(600, 2800)
        servo.angle = angle
        expected = 600.0 + angle / 180.0 * 2200.0
        assert abs(sim.pulse_width_us(ch) - expected) <= count_us + 1e-6     # within one 12-bit count


def test_pca9685_register_semantics():
    bus = fast_bus()
    sim = bus.attach(PCA9685Sim(0x40))
    bus.writeto(0x40, bytes([0x00, 0x00]))          # wake, AI off
    bus.writeto(0x40, bytes([0xFE, 50]))            # PRE_SCALE while awake: ignored
    assert sim.prescale == 0x1E
    bus.writeto(0x40, bytes([0x00, 0x10]))          # sleep
    bus.writeto(0x40, bytes([0xFE, 50]))
    assert sim.prescale == 50
    bus.writeto(0x40, bytes([0x06, 1, 2, 3, 4]))    # AI off: every byte lands on LED0_ON_L
    assert raw_read(bus, 0x40, 0x06, 1) == b"\x04" and sim.regs[0x07] == 0
    bus.writeto(0x40, bytes([0x00, 0x20]))          # wake with AI
    bus.writeto(0x40, bytes([0x06, 0x00, 0x00, 0x23, 0x01]))   # ON = 0, OFF = 0x0123 little-endian
    assert raw_read(bus, 0x40, 0x06, 4) == bytes([0x00, 0x00, 0x23, 0x01])
    time.sleep(0.001)                               # oscillator start-up after wake
    assert sim.pulse_width_us(0) == pytest.approx(0x123 * sim.count_us)
    bus.writeto(0x40, bytes([0xFD, 0x10]))          # ALL_LED_OFF_H full off
    assert all(p is None for p in sim.pulse_widths_us())
    assert raw_read(bus, 0x40, 0xFD, 1) == b"\x00"  # ALL_LED registers read as 0


# ------------------------------------------------------------------------------------------------- ADS1115
@pytest.fixture
def ads_rig():
    bus = fast_bus()
    sim = bus.attach(ADS1115Sim(0x48, supply_v=3.3))
    ads = ADS1115(bus, gain=1, data_rate=860, address=0x48)
    return bus, sim, ads


def test_ads1115_driver_reads_channel_voltages(ads_rig):
    bus, sim, ads = ads_rig
    lsb = 4.096 / 32768
    for ch, volts in enumerate((0.0, 0.4321, 1.65, 3.2)):
        sim.set_voltage(ch, volts)
    for ch, volts in enumerate((0.0, 0.4321, 1.65, 3.2)):
        assert AnalogIn(ads, ch).voltage == pytest.approx(volts, abs=lsb)
    sim.set_voltage(3, 5.0)                                     # above VDD: clipped to 3.3 V
    assert AnalogIn(ads, 3).voltage == pytest.approx(3.3, abs=lsb)
    ads.gain = 2                                                # +-2.048 V range: 3.0 V saturates
    sim.set_voltage(2, 3.0)
    assert AnalogIn(ads, 2).value == 32767
    assert AnalogIn(ads, 2).voltage == pytest.approx(2.048, abs=2 * 2.048 / 32768)
    assert sim.conversions >= 6


def test_ads1115_negative_differential_value_is_big_endian_signed(ads_rig):
    bus, sim, ads = ads_rig
    sim.set_voltage(0, 0.5)
    sim.set_voltage(1, 1.7)
    diff = AnalogIn(ads, 0, 1)
    assert diff.value < 0
    assert diff.voltage == pytest.approx(-1.2, abs=4.096 / 32768)
    code = int(round(-1.2 / 4.096 * 32768))
    assert raw_read(bus, 0x48, 0x00, 2) == struct.pack(">h", code)   # conversion register, MSB first


def test_ads1115_single_shot_takes_one_sample_period_and_hang_never_completes(ads_rig):
    bus, sim, ads = ads_rig
    sim.set_voltage(1, 1.0)
    config = 0x8000 | (5 << 12) | (1 << 9) | 0x0100 | (0 << 5) | 0x0003   # OS, AIN1, +-4.096 V, single, 8 SPS
    bus.writeto(0x48, bytes([0x01, config >> 8, config & 0xFF]))
    assert raw_read(bus, 0x48, 0x01, 2)[0] & 0x80 == 0          # converting: OS reads 0
    time.sleep(1.0 / 8 + 0.02)
    assert raw_read(bus, 0x48, 0x01, 2)[0] & 0x80               # done
    assert struct.unpack(">h", raw_read(bus, 0x48, 0x00, 2))[0] == int(round(1.0 / 4.096 * 32768))
    sim.fail("hang")
    config = (config & ~(0x7 << 5)) | (7 << 5)                   # 860 SPS
    bus.writeto(0x48, bytes([0x01, config >> 8, config & 0xFF]))
    time.sleep(0.02)                                             # 17 conversion times
    assert raw_read(bus, 0x48, 0x01, 2)[0] & 0x80 == 0 and sim.converting()
    sim.recover()
    assert not sim.converting()


# ------------------------------------------------------------------------------------------------- BNO055
@pytest.fixture(scope="module")
def bno_rig():
    import adafruit_bno055
    bus = fast_bus()
    sim = bus.attach(BNO055Sim(0x28))
    sensor = adafruit_bno055.BNO055_I2C(bus, address=0x28)      # resets the chip, sleeps ~0.77 s
    return bus, sim, sensor


def test_bno055_driver_setup(bno_rig):
    bus, sim, sensor = bno_rig
    assert sim.resets == 1 and sim.mode == 0x0C                 # reset once, then NDOF
    assert sim.p1[0x08] & 0x03 == 0x01                          # accel range 4 g (page 1 ACC_Config)
    assert sim.page == 0
    assert sensor.mode == 0x0C


def test_bno055_driver_reads_state_with_library_units(bno_rig):
    bus, sim, sensor = bno_rig
    q = axis_angle([0.3, -1.0, 0.2], 2.5)                      # x, y, z, w: has negative components
    wxyz = (q[3], q[0], q[1], q[2])
    gyro = np.array([0.5, -1.25, 3.0])
    accel = np.array([1.5, -2.25, 9.0])
    sim.set_state(wxyz, gyro, accel)
    sim.set_calibration(3, 2, 1, 0)
    sim.set_temperature(-7.0)
    assert np.allclose(sensor.quaternion, wxyz, atol=1.0 / (1 << 14))
    assert np.allclose(sensor.gyro, gyro, atol=math.radians(1.0 / 16.0))     # rad/s (register: 1/16 dps)
    assert np.allclose(sensor.acceleration, accel, atol=0.01)                  # m/s^2 (register: 1/100)
    gravity = quat_matrix(q).T @ np.array([0.0, 0.0, STANDARD_GRAVITY])
    assert np.allclose(sensor.gravity, gravity, atol=0.01)
    assert np.allclose(sensor.linear_acceleration, accel - gravity, atol=0.02)
    assert sensor.calibration_status == (3, 2, 1, 0)
    assert sensor.temperature == -7
    raw = raw_read(bus, 0x28, 0x20, 8)                          # QUA_Data_w_LSB.. little-endian int16
    assert raw == struct.pack("<hhhh", *[int(round(c * (1 << 14))) for c in wxyz])
    assert struct.unpack("<h", raw[4:6])[0] < 0                 # y component negative


def test_bno055_config_mode_zeroes_outputs_and_ignores_config_writes_when_fused(bno_rig):
    bus, sim, sensor = bno_rig
    bus.writeto(0x28, bytes([0x3B, 0x06]))                      # UNIT_SEL outside CONFIG mode: ignored
    assert raw_read(bus, 0x28, 0x3B, 1) == b"\x80"
    sensor.mode = 0x00
    assert raw_read(bus, 0x28, 0x20, 8) == bytes(8)
    assert sensor.quaternion == (None, None, None, None)        # the driver knows CONFIG has no fusion
    sensor.mode = 0x0C
    assert sensor.quaternion[0] is not None


PROFILE = (-2, 300, -32768, 32767, 1, -1, 16, -16, 0, 1000, 640)     # accel xyz, mag xyz, gyro xyz, radii


def test_bno055_profile_registers_decode_through_the_driver(bno_rig):
    bus, sim, sensor = bno_rig
    sensor.mode = 0x00                                          # CONFIG
    bus.writeto(0x28, bytes([0x55]) + struct.pack("<11h", *PROFILE))
    raw = raw_read(bus, 0x28, 0x55, 22)
    assert raw[:2] == b"\xfe\xff" and raw[4:6] == b"\x00\x80"  # -2, -32768: LSB first
    assert sim.profile() == PROFILE
    sensor.mode = 0x0C                                          # the driver's properties switch to CONFIG and back
    assert sensor.offsets_accelerometer == PROFILE[0:3]
    assert sensor.offsets_magnetometer == PROFILE[3:6]
    assert sensor.offsets_gyroscope == PROFILE[6:9]
    assert (sensor.radius_accelerometer, sensor.radius_magnetometer) == PROFILE[9:11]
    sensor.offsets_gyroscope = (5, -6, 7)
    assert sim.profile()[6:9] == (5, -6, 7) and sim.mode == 0x0C


def test_bno055_profile_takes_writes_only_in_config_mode_and_a_reset_clears_it():
    bus = fast_bus()
    sim = bus.attach(BNO055Sim(0x28, reset_time_s=0.0))
    payload = struct.pack("<11h", *PROFILE)
    bus.writeto(0x28, bytes([0x3D, 0x08]))                      # IMUPLUS
    bus.writeto(0x28, bytes([0x55]) + payload)
    assert raw_read(bus, 0x28, 0x55, 22) == bytes(22)           # ignored outside CONFIG mode
    bus.writeto(0x28, bytes([0x3D, 0x00]))
    bus.writeto(0x28, bytes([0x55]) + payload)
    assert raw_read(bus, 0x28, 0x55, 22) == payload
    sim.set_calibration(1, 2, 0, 0)
    bus.writeto(0x28, bytes([0x3D, 0x08]))
    assert sim.profile() == PROFILE                             # a written profile leaves CALIB_STAT alone
    assert raw_read(bus, 0x28, 0x35, 1) == bytes([1 << 6 | 2 << 4])
    bus.writeto(0x28, bytes([0x3F, 0x20]))                      # SYS_TRIGGER reset
    assert sim.profile() == (0,) * 11 and sim.resets == 1


def test_bno055_calibration_routine_fills_the_profile_of_the_sensors_the_mode_uses():
    bus = fast_bus()
    learned = tuple(range(101, 112))
    sim = bus.attach(BNO055Sim(0x28, learned_profile=learned))
    sim.set_calibration(0, 0, 0, 0)
    sim.set_calibration(3, 3, 3, 3)                             # CONFIG mode: the routine does not run
    assert sim.profile() == (0,) * 11
    sim.set_calibration(0, 0, 0, 0)
    bus.writeto(0x28, bytes([0x3D, 0x08]))                      # IMUPLUS: gyro and accel, no magnetometer
    sim.set_calibration(0, 3, 0, 3)
    assert sim.profile() == (0, 0, 0, 0, 0, 0, 107, 108, 109, 0, 0)
    sim.set_calibration(0, 3, 3, 3)
    assert sim.profile() == (101, 102, 103, 0, 0, 0, 107, 108, 109, 110, 0)
    with pytest.raises(ValueError):
        BNO055Sim(0x28, learned_profile=(0,) * 10)


# ------------------------------------------------------------------------------------------------- plant
def test_simulated_plen_servo_follows_pwm_and_feedback_follows_joint(hw_config, robot):
    plen = SimulatedPlen(hw_config, robot, byte_time_s=0.0, time_driven=False)
    assert set(plen.bus.scan()) == {0x28, 0x40, 0x48, 0x49, 0x4A, 0x4B}
    pca = PCA9685(plen.bus)
    pca.frequency = 50
    servo = hw_config.servo("l_knee")
    start = plen.position("l_knee")
    target = start + 0.5
    counts = int(round(servo.pulse_for(target) / plen.pca.count_us))
    pca.channels[servo.channel].duty_cycle = counts << 4
    time.sleep(0.001)                                             # oscillator start-up
    plen.advance(0.02)
    assert plen.position("l_knee") == pytest.approx(start + 8.0 * 0.02)   # speed-limited, 8 rad/s
    plen.advance(1.0)
    assert plen.position("l_knee") == pytest.approx(servo.angle_for(counts * plen.pca.count_us))
    fb = hw_config.feedback_for("l_knee")
    assert fb.angle_for(plen.adc_of("l_knee").voltages[fb.channel]) == pytest.approx(plen.position("l_knee"))
    pca.channels[servo.channel].duty_cycle = 0                     # limp: stays where pushed
    plen.set_positions({"l_knee": -0.1})
    plen.advance(1.0)
    assert plen.position("l_knee") == pytest.approx(-0.1)
    assert plen.position("l_elbow") == robot.joint("l_elbow").stance


def test_simulated_plen_time_driven_follows_the_clock(hw_config, robot):
    plen = SimulatedPlen(hw_config, robot, byte_time_s=0.0)
    pca = PCA9685(plen.bus)
    pca.frequency = 50
    servo = hw_config.servo("r_hip_pitch")
    target = plen.position("r_hip_pitch") - 0.3
    pca.channels[servo.channel].duty_cycle = int(round(servo.pulse_for(target) / plen.pca.count_us)) << 4
    time.sleep(0.3)                                                # 0.3 rad needs ~0.04 s at 8 rad/s
    plen.sync()
    assert plen.position("r_hip_pitch") == pytest.approx(target, abs=0.01)


def test_simulated_plen_imu_goes_through_the_mounting(hw_config, robot):
    from op3_walk.config import from_dict, to_dict
    mounting = quat_multiply(axis_angle([0, 0, 1], math.pi / 2), axis_angle([1, 0, 0], math.pi))
    data = to_dict(hw_config)
    data["imu"]["mounting_xyzw"] = [float(c) for c in mounting]
    cfg = from_dict(type(hw_config), data)
    plen = SimulatedPlen(cfg, robot, byte_time_s=0.0, time_driven=False)
    sensor_accel = plen.imu.accel                                  # default: upright at rest
    assert np.allclose(quat_matrix(mounting) @ sensor_accel, [0, 0, STANDARD_GRAVITY])
    assert np.allclose(sensor_accel, [0, 0, -STANDARD_GRAVITY])   # chip mounted upside down
