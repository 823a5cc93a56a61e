"""PlenIO (the PLEN chip layer) with the REAL Adafruit drivers against SimulatedPlen; and its config."""
import copy
import math
import time

import numpy as np
import pytest

from op3_walk.config import ConfigError, from_dict, load_yaml, to_dict
from op3_walk.hardware.plen_config import (DEFAULT_PATH, PlenHardwareConfig, estimate_tick_io, quat_multiply)
from op3_walk.hardware.plen_io import HardwareError, PlenIO
from op3_walk.hardware.simbus import SimulatedPlen

GENEROUS_S = 3.0    # "returns instead of hanging" bound


def axis_angle(axis, angle):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    return np.concatenate([axis * math.sin(angle / 2.0), [math.cos(angle / 2.0)]])


MOUNTING = quat_multiply(axis_angle([0, 0, 1], math.pi / 2), axis_angle([1, 0, 0], math.pi))   # z 90, upside down


def mounted_config(hw_config):
    data = to_dict(hw_config)
    data["imu"]["mounting_xyzw"] = [float(c) for c in MOUNTING]
    return from_dict(PlenHardwareConfig, data)


PROFILE = {"accel_offset": [-21, 13, -300], "mag_offset": [-32768, 96, 411], "gyro_offset": [-2, 1, 32767],
           "accel_radius": 1000, "mag_radius": 711}
PROFILE_VALUES = (-21, 13, -300, -32768, 96, 411, -2, 1, 32767, 1000, 711)


def profile_config(hw_config, profile=None):
    data = to_dict(hw_config)
    data["imu"]["calibration_profile"] = copy.deepcopy(PROFILE if profile is None else profile)
    return from_dict(PlenHardwareConfig, data)


def _profile(**changes):
    profile = copy.deepcopy(PROFILE)
    profile.update(changes)
    return lambda d: d["imu"].update(calibration_profile=profile)


def make_rig(config, robot, **plant_kwargs):
    plant_kwargs.setdefault("byte_time_s", 0.0)
    plant_kwargs.setdefault("time_driven", False)
    plen = SimulatedPlen(config, robot, **plant_kwargs)
    return plen, PlenIO(config, robot, plen.bus)


# ================================================================================================= config
def test_default_config_loads_and_fits_the_tick(hw_config, robot):
    assert len(hw_config.servos) == 16 and len(hw_config.feedback) == 16
    assert hw_config.imu.calibration_profile is None                # the shipped file stores none (null)
    assert not {"l_elbow", "r_elbow"} & {s.joint for s in hw_config.servos}
    est = estimate_tick_io(hw_config)
    assert est["total_s"] <= hw_config.bus.max_utilisation * est["period_s"]
    for servo in hw_config.servos:
        lo, hi = servo.angle_range()
        joint = robot.joint(servo.joint)
        assert lo <= joint.lower and joint.upper <= hi


def _edited(edit):
    data = copy.deepcopy(load_yaml(DEFAULT_PATH))
    edit(data)
    return data


def _servo(data, joint):
    return next(s for s in data["servos"] if s["joint"] == joint)


def _replace_with_elbow(data):
    _servo(data, "r_shoulder_roll")["joint"] = "l_elbow"
    data["feedback"] = [f for f in data["feedback"] if f["joint"] != "r_shoulder_roll"]


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: _servo(d, "l_hip_roll").update(channel=0), "channel 0 used by l_hip_yaw and l_hip_roll"),
    (lambda d: d["feedback"][1].update(channel=0), "ADS1115 0x48 channel 0 used by l_hip_yaw and l_hip_roll"),
    (lambda d: _servo(d, "l_knee").update(joint="l_kneee"), "unknown joint(s) l_kneee"),
    (_replace_with_elbow, "l_elbow is in passive_joints"),
    (lambda d: d["feedback"][0].update(address=0x4C), "0x4c is not in adc.addresses"),
    (lambda d: d.update(servo_count=16), "unknown key(s) servo_count"),
    (lambda d: d["bus"].update(frequncy_hz=1), "unknown key(s) frequncy_hz"),
    (lambda d: d["adc"].update(reads_per_tick=16), "per-tick I2C traffic does not fit"),
    (lambda d: _servo(d, "l_knee").update(pulse_max_us=5000), "pulse range"),
    (lambda d: _servo(d, "l_hip_yaw").update(span_rad=2.0), "joint limits"),
    (lambda d: d["imu"].update(mounting_xyzw=[0, 0, 1, 1]), "unit quaternion"),
    (lambda d: d["adc"].update(full_scale_v=5.0), "not an ADS1115 range"),
    (_profile(accel_offset=[1, 2]), "accel_offset needs 3 integers (x, y, z), got 2"),
    (_profile(gyro_offset=[0, 0, 0, 0]), "gyro_offset needs 3 integers"),
    (_profile(mag_radius=40000), "40000 outside the int16 range -32768..32767"),
    (_profile(mag_offset=[0, -32769, 0]), "-32769 outside the int16 range"),
    (_profile(accel_radius=1000.5), "accel_radius: expected an integer"),
    (_profile(radius=3), "unknown key(s) radius"),
    (lambda d: d["imu"].update(calibration_profile={"accel_offset": [0, 0, 0]}), "missing required key"),
])
def test_bad_config_is_a_config_error(edit, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(PlenHardwareConfig, _edited(edit), where=DEFAULT_PATH)
    assert fragment in str(err.value)


def test_plen_io_rejects_a_robot_faster_than_the_budget(hw_config, robot):
    from op3_walk.robots import load_robot
    fast = load_robot(robot, {"control_rate_hz": 120, "physics_rate_hz": 240})
    with pytest.raises(ConfigError, match="budget"):
        PlenIO(hw_config, fast, i2c=None)


# ================================================================================================= shared rig
@pytest.fixture(scope="module")
def rig(hw_config, robot):
    config = mounted_config(hw_config)
    plen, io = make_rig(config, robot)
    # an earlier run left channel 0 pulsing and the chip awake: start() must not let it through
    plen.pca.set_channel_counts(0, 0, 300)
    plen.pca.poke(0x00, 0x20)
    before = plen.pca.pulse_widths_us()
    io.start()
    after = plen.pca.pulse_widths_us()
    yield plen, io, before, after
    io.close()


def test_start_leaves_every_output_off_and_reads_every_joint(rig, robot):
    plen, io, before, after = rig
    assert before[0] is not None and all(p is None for p in after)
    reading = io.read_all_joints()
    assert np.allclose(reading.positions, plen.positions, atol=2e-3)
    names = list(robot.joint_names)
    elbows = [names.index("l_elbow"), names.index("r_elbow")]
    assert np.isnan(reading.volts[elbows]).all()
    assert np.isfinite(np.delete(reading.volts, elbows)).all()
    assert np.isfinite(reading.sample_time).all()
    assert reading.positions[elbows].tolist() == robot.stance[elbows].tolist()


def test_write_targets_produces_matching_pulse_widths(rig, hw_config, robot):
    plen, io, _, _ = rig
    rng = np.random.default_rng(3)
    targets = rng.uniform(robot.lower, robot.upper)
    targets[robot.joint_index("l_elbow")] = np.nan              # elbows are ignored, even NaN
    pulses = io.write_targets(targets)
    count_us = plen.pca.count_us
    assert io.pulse_count_us == pytest.approx(count_us)
    for servo in hw_config.servos:
        i = robot.joint_index(servo.joint)
        out = plen.pca.pulse_width_us(servo.channel)
        assert out == pytest.approx(pulses[i], abs=1e-6)            # what we report is what the chip outputs
        assert abs(out - servo.pulse_for(targets[i])) <= count_us  # within one 12-bit count (~4.9 us)
    assert np.isnan(pulses[robot.joint_index("l_elbow")]) and np.isnan(pulses[robot.joint_index("r_elbow")])


def test_invalid_commands_raise_before_any_traffic(rig, robot):
    plen, io, _, _ = rig
    count = plen.bus.transaction_count
    with pytest.raises(ValueError, match="shape"):
        io.write_targets(np.zeros(robot.n_joints - 1))
    bad = robot.stance.copy()
    bad[robot.joint_index("l_knee")] = np.nan
    with pytest.raises(ValueError, match="l_knee"):
        io.write_targets(bad)
    far = robot.stance.copy()
    far[robot.joint_index("l_hip_yaw")] = 2.5                   # beyond the 600..2800 us range: not clipped
    with pytest.raises(ValueError, match="l_hip_yaw.*outside"):
        io.write_targets(far)
    with pytest.raises(ValueError, match="l_elbow"):
        io.write_pulse_us("l_elbow", 1500)
    with pytest.raises(ValueError, match="outside"):
        io.write_pulse_us("l_knee", 3000)
    with pytest.raises(ValueError, match="r_elbow"):
        io.read_voltage("r_elbow")
    assert plen.bus.transaction_count == count
    assert io.failure is None


def test_servos_follow_and_feedback_reads_them_back(rig, robot):
    plen, io, _, _ = rig
    targets = robot.stance + np.where(np.arange(robot.n_joints) % 2 == 0, 0.2, -0.15)
    io.write_targets(targets)
    plen.advance(1.0)
    reading = io.read_all_joints()
    servo_mask = np.ones(robot.n_joints, bool)
    servo_mask[[robot.joint_index("l_elbow"), robot.joint_index("r_elbow")]] = False
    assert np.allclose(reading.positions[servo_mask], targets[servo_mask], atol=0.01)
    assert np.allclose(reading.positions[~servo_mask], robot.stance[~servo_mask])


def test_read_joints_is_a_round_robin_with_sample_times(rig, hw_config, robot):
    plen, io, _, _ = rig
    k = hw_config.adc.reads_per_tick
    prev = io.read_all_joints().sample_time
    fb_idx = [robot.joint_index(f.joint) for f in hw_config.feedback]
    updated = set()
    for tick in range(math.ceil(len(fb_idx) / k)):
        reading = io.read_joints()
        fresh = {i for i in fb_idx if reading.sample_time[i] > prev[i]}
        assert len(fresh) == k
        if tick < len(fb_idx) // k:
            assert not fresh & updated                     # no channel read twice before all were read
        updated |= fresh
        prev = reading.sample_time
    assert updated == set(fb_idx)


def test_positions_go_through_the_calibration_polynomial(rig, hw_config):
    plen, io, _, _ = rig
    for joint, shift_rad in (("l_knee", 1.3333333 * 0.15), ("r_knee", -1.3333333 * 0.15)):
        fb = hw_config.feedback_for(joint)
        nominal = plen._inverse_poly(fb)
        plen.set_true_curve(joint, lambda q, f=nominal: f(q) + 0.15)     # the real pot sits 0.15 V higher
        try:
            volts = io.read_voltage(joint)
            assert volts == pytest.approx(plen.volts(joint), abs=2 * 4.096 / 32768)
            reading = io.read_all_joints()
            q = reading.positions[plen.robot.joint_index(joint)]
            assert q == pytest.approx(plen.position(joint) + shift_rad, abs=2e-3)
            assert q == pytest.approx(np.polyval(fb.poly, volts))
        finally:
            plen.set_true_curve(joint, None)


def test_imu_reading_is_in_the_torso_frame_through_the_mounting(rig):
    plen, io, _, _ = rig
    q_body = axis_angle([0.2, -1.0, 0.4], 0.7)
    q_body = -q_body                                            # same rotation, every component sign flipped
    omega = np.array([0.3, -0.5, 1.2])
    accel = np.array([1.0, -2.0, 9.5])
    plen.set_imu(q_body, omega, accel, calibration=(1, 2, 3, 0))
    reading = io.read_imu()
    assert abs(abs(float(np.dot(reading.orientation, q_body))) - 1.0) < 1e-6
    assert np.allclose(reading.angular_velocity, omega, atol=2e-3)
    assert np.allclose(reading.linear_acceleration, accel, atol=0.02)
    assert reading.calibration == (1, 2, 3, 0)
    plen.set_imu()                                              # upright at rest: +9.81 on torso z
    reading = io.read_imu()
    assert np.allclose(reading.linear_acceleration, [0.0, 0.0, 9.81], atol=0.02)
    assert abs(abs(reading.orientation[3]) - 1.0) < 1e-6


def test_raw_pulse_and_relax(rig, hw_config):
    plen, io, _, _ = rig
    io.write_pulse_us("l_knee", 1500.0)
    assert plen.pulse_width_us("l_knee") == pytest.approx(1500.0, abs=plen.pca.count_us / 2 + 1e-6)
    io.relax()
    assert plen.all_outputs_off()
    io.write_pulse_us("l_knee", 1500.0)                         # usable again after relax
    assert plen.pulse_width_us("l_knee") is not None
    io.relax()


def test_all_i2c_traffic_stays_on_the_io_thread(rig):
    plen, io, _, _ = rig
    io.read_joints()
    io.read_imu()
    bus = plen.bus
    assert bus.transaction_count > 0
    assert list(bus.thread_names.values()) == ["plen-io"]
    assert bus.unlocked_transactions == 0


# ================================================================================================= failures
def test_configured_imu_profile_is_written_after_the_reset_and_read_back(hw_config, robot):
    config = profile_config(hw_config)
    assert config.imu.calibration_profile.values() == PROFILE_VALUES
    plen, io = make_rig(config, robot)
    plen.imu.set_calibration(0, 0, 0, 0)
    with io:
        io.start()
        assert plen.imu.resets == 1                                 # the driver's reset came first
        assert plen.imu.profile() == PROFILE_VALUES                 # written in CONFIG mode (else ignored)
        assert plen.imu.mode == 0x08                                # back in IMUPLUS
        assert io.read_imu_profile() == config.imu.calibration_profile
        assert plen.imu.mode == 0x08
        reading = io.read_imu()                                     # fused again after the CONFIG-mode read
        assert np.allclose(reading.linear_acceleration, [0.0, 0.0, 9.81], atol=0.02)
        assert reading.calibration == (0, 0, 0, 0)                  # a restored profile does not fake the status
    plain, io = make_rig(hw_config, robot)                          # no profile configured: the reset's zeros
    with io:
        io.start()
        assert plain.imu.profile() == (0,) * 11


def test_imu_profile_that_does_not_read_back_fails_start_naming_the_bno055(hw_config, robot):
    plen, io = make_rig(profile_config(hw_config), robot)
    write = plen.imu.write_registers

    def corrupting(pointer, data):                                  # one flipped bit in the gyroscope offsets
        if pointer == 0x61 and data:
            data = bytes([data[0] ^ 0x04]) + data[1:]
        write(pointer, data)
    plen.imu.write_registers = corrupting
    with pytest.raises(HardwareError) as err:
        io.start()
    assert err.value.chip == "BNO055" and err.value.address == 0x28
    assert "BNO055 at 0x28" in str(err.value) and "did not stick" in str(err.value)
    assert err.value.relaxed and plen.all_outputs_off()
    io.close()


def test_calls_before_start_and_after_close_raise(hw_config, robot):
    plen, io = make_rig(hw_config, robot)
    with pytest.raises(HardwareError, match="not started"):
        io.read_imu()
    io.close()
    io.close()
    with pytest.raises(HardwareError, match="closed"):
        io.write_targets(robot.stance)
    assert plen.bus.transaction_count == 0


def test_missing_imu_fails_start_naming_it(hw_config, robot):
    plen, io = make_rig(hw_config, robot)
    plen.bus.detach(hw_config.imu.address)
    t0 = time.monotonic()
    with pytest.raises(HardwareError) as err:
        io.start()
    assert time.monotonic() - t0 < GENEROUS_S
    assert err.value.chip == "BNO055" and "BNO055 at 0x28" in str(err.value)
    assert err.value.relaxed and plen.all_outputs_off()
    io.close()


@pytest.mark.parametrize("chip, address, call", [
    ("PCA9685", 0x40, lambda io, robot: io.write_targets(robot.stance)),
    ("ADS1115", 0x49, lambda io, robot: io.read_all_joints()),
    ("BNO055", 0x28, lambda io, robot: io.read_imu()),
])
def test_nack_mid_run_becomes_a_hardware_error_naming_the_chip(hw_config, robot, chip, address, call):
    plen, io = make_rig(hw_config, robot)
    io.start()
    io.write_targets(robot.stance)
    assert not plen.all_outputs_off()
    plen.bus.device(address).fail("nack")
    t0 = time.monotonic()
    with pytest.raises(HardwareError) as err:
        call(io, robot)
    assert time.monotonic() - t0 < GENEROUS_S
    message = str(err.value)
    assert err.value.chip == chip and err.value.address == address
    assert "%s at 0x%02x" % (chip, address) in message and "Remote I/O error" in message
    if chip == "ADS1115":
        chip_joints = [f.joint for f in hw_config.feedback if f.address == address]
        assert err.value.joint in chip_joints and err.value.joint in message
    if chip == "PCA9685":
        assert err.value.relaxed is False                     # nothing left to switch the servos off with
    else:
        assert err.value.relaxed is True and plen.all_outputs_off()
    # no half-state: every later call fails clearly, even on healthy chips, until close()
    for later in (io.read_imu, io.read_joints, lambda: io.write_targets(robot.stance)):
        with pytest.raises(HardwareError, match="stopped after a hardware error"):
            later()
    io.close()
    io.close()
    assert list(plen.bus.thread_names.values()) == ["plen-io"]


def test_a_stalled_bus_error_states_the_waits_the_caller_really_made(hw_config, robot):
    """A chip holding the clock line stalls the I/O thread inside one transaction: the caller gives up on the
    answer, then waits again for the servos to be switched off (queued behind the stuck job).  The error states
    both waits, and they add up to the time the caller really waited (not the job's 0.3 s limit alone)."""
    import re
    data = to_dict(hw_config)
    data["bus"]["io_timeout_s"] = 0.3            # long against scheduling noise
    config = from_dict(PlenHardwareConfig, data)
    plen, io = make_rig(config, robot)
    io.start()
    io.write_targets(robot.stance)
    plen.bus.device(0x4A).fail("stretch")        # holds SCL for the bus' stretch_timeout_s (2 s): no answer
    t0 = time.monotonic()
    with pytest.raises(HardwareError) as err:
        io.read_voltage("r_knee")
    waited = time.monotonic() - t0
    message = str(err.value)
    stated = [float(w) for w in re.findall(r"no answer within ([0-9.]+) s", message)]
    assert len(stated) == 2 and "switching the servos off failed too" in message, message
    assert err.value.relaxed is False
    assert sum(stated) <= waited + 0.01, (stated, waited)           # never more than it waited
    assert sum(stated) >= 0.8 * waited, (stated, waited, message)   # nor a fraction of it
    plen.bus.device(0x4A).recover()
    io.close()


def test_adc_conversion_that_never_completes_times_out(hw_config, robot):
    plen, io = make_rig(hw_config, robot)
    io.start()
    io.write_targets(robot.stance)
    plen.bus.device(0x4A).fail("hang")
    t0 = time.monotonic()
    with pytest.raises(HardwareError) as err:
        io.read_voltage("r_knee")
    assert time.monotonic() - t0 < GENEROUS_S
    message = str(err.value)
    assert "ADS1115 at 0x4a" in message and "r_knee" in message and "did not finish" in message
    assert err.value.relaxed is True and plen.all_outputs_off()   # the I/O thread was freed to relax
    io.close()
