"""PLEN calibration tools against SimulatedPlen (the real Adafruit drivers on the simulated bus): feedback sweep and
fit recover a known nonlinear potentiometer curve, a dead input is named, the saved YAML loads and reads angles back
right through PlenIO, horn-offset arithmetic and session, IMU status, and the CLI end to end."""
import dataclasses
import datetime
import io as stdio
import math

import numpy as np
import pytest
import yaml

from op3_walk.config import ConfigError, load_yaml, resolve
from op3_walk.hardware import calibration as cal
from op3_walk.hardware.calibration import (CalibrationError, calibrate_feedback, fit_feedback, horn_offset_session,
                                           horn_offset_step, imu_calibration_status, save_calibration,
                                           watch_imu_calibration)
from op3_walk.hardware.plen_config import DEFAULT_PATH, load_hardware_config
from op3_walk.hardware.plen_io import PlenIO
from op3_walk.hardware.simbus import BNO055Sim, SimulatedPlen

# "true" potentiometers, written as the volts -> rad polynomial a perfect calibration must find
_x = np.poly1d([1.0, -1.5])                                             # V - 1.5
KNEE_POLY = (0.05 * _x ** 3 + 0.1 * _x ** 2 + 1.2 * _x - 0.3).coeffs    # monotonic cubic, not the placeholder
HIP_POLY = np.array([-1.0 / 0.9, 1.2 / 0.9])                           # V = 1.2 - 0.9 q (placeholder: 1.65 - 0.75 q)
TRUE_POLYS = {"l_knee": KNEE_POLY, "r_hip_pitch": HIP_POLY}


def inverse(poly):
    """rad -> V of the pot whose exact calibration is ``poly`` (V -> rad)."""
    grid = np.linspace(0.0, 3.3, 40001)
    q = np.polyval(poly, grid)
    if q[-1] < q[0]:
        grid, q = grid[::-1], q[::-1]
    return lambda angle: float(np.interp(angle, q, grid))


TRUE_CURVES = {joint: inverse(poly) for joint, poly in TRUE_POLYS.items()}
STAMP = datetime.datetime(2024, 5, 6, 7, 8)


def half_count(pio, servo):
    """Angle of half a PCA9685 count: how far a written pulse may be from the requested angle, rad."""
    return 0.5 * pio.pulse_count_us / servo.us_per_rad + 1e-9


@pytest.fixture(scope="module")
def rig(hw_config, robot):
    plen = SimulatedPlen(hw_config, robot, byte_time_s=0.0, time_driven=False, true_curves=TRUE_CURVES)
    pio = PlenIO(hw_config, robot, plen.bus)
    pio.start()
    yield plen, pio
    pio.close()


@pytest.fixture(scope="module")
def fits(rig, robot):
    plen, pio = rig
    seen = []

    def progress(joint, index, total, angle, volts):
        seen.append((joint, index, total, angle, volts, plen.position(joint), plen.position("l_hip_pitch")))
    result = calibrate_feedback(pio, ["l_knee", "r_hip_pitch"], settle_s=0.05, samples_per_angle=3,
                                sleep=plen.advance, progress=progress)
    return result, seen


# ================================================================================================= fit
def test_fit_recovers_a_known_cubic_and_reports_its_error():
    volts = np.linspace(0.8, 2.2, 15)
    fit = fit_feedback(np.polyval(KNEE_POLY, volts), volts, degree=3, joint="l_knee")
    assert np.allclose(fit.poly, KNEE_POLY, atol=1e-9)
    assert fit.rms_rad < 1e-12 and fit.max_rad < 1e-12 and fit.points == 15
    noisy = volts + np.random.default_rng(0).normal(0.0, 0.002, volts.size)
    fit = fit_feedback(np.polyval(KNEE_POLY, volts), noisy, degree=3)
    assert 1e-4 < fit.rms_rad < 5e-3 and fit.max_rad >= fit.rms_rad
    assert fit.residuals_rad == pytest.approx(fit.angle_for(noisy) - np.polyval(KNEE_POLY, volts))


@pytest.mark.parametrize("angles, volts, fragment", [
    ([0.0, 0.1, 0.2, 0.3], [1.0, 1.1, 1.2, 1.3], "too few"),                          # degree 3 needs 5
    ([0.0, 0.1, 0.2, 0.3, 0.4], [1.0, 1.1, float("nan"), 1.3, 1.4], "non-finite"),
    (np.linspace(-1, 1, 20), np.full(20, 3.3), "voltage does not change"),            # wiper at VDD
    (np.linspace(-1, 1, 20), 1.6 + 0.0002 * np.arange(20), "not connected"),          # floating input, 4 mV
    (np.linspace(-1, 1, 20), 1.5 + 0.7 * np.abs(np.linspace(-1, 1, 20)), "not monotonic"),   # V shape
    (np.linspace(-1, 1, 20), np.clip(1.6 + 1.5 * np.linspace(-1, 1, 20), 0, 2.5), "not monotonic"),  # clipped
    ([0.0, 0.1], [1.0, 1.1, 1.2], "2 angles but 3 voltages"),
])
def test_fit_refuses_what_cannot_be_a_calibration(angles, volts, fragment):
    with pytest.raises(ValueError, match=fragment):
        fit_feedback(angles, volts, degree=3, joint="l_knee", supply_v=3.3)


# ================================================================================================= sweep
def test_sweep_recovers_the_true_curves_and_returns_to_stance(rig, fits, robot, hw_config):
    plen, pio = rig
    result, seen = fits
    assert list(result) == ["l_knee", "r_hip_pitch"]
    for joint, fit in result.items():
        lo, hi = cal.sweep_range(hw_config.servo(joint), robot.joint(joint))
        j = robot.joint(joint)
        assert j.lower < lo < hi < j.upper and fit.points == cal.DEFAULT_POINTS
        q = np.linspace(lo, hi, 101)
        v = np.array([TRUE_CURVES[joint](a) for a in q])
        assert np.max(np.abs(fit.angle_for(v) - q)) < 1e-3                    # ADC LSB 0.125 mV ~ 1.5e-4 rad
        assert fit.rms_rad < 5e-4 and fit.max_rad < 1e-3
        old = hw_config.feedback_for(joint).angle_for(v) - q
        assert np.max(np.abs(old)) > 0.05                                     # the placeholder was really wrong
        # back at stance (to the PCA9685's resolution), commanded and measured
        tol = half_count(pio, hw_config.servo(joint))
        assert plen.commanded(joint) == pytest.approx(robot.stance[robot.joint_index(joint)], abs=tol)
        assert plen.position(joint) == pytest.approx(plen.commanded(joint), abs=1e-9)
    # progress per point; the servo was at the commanded angle when read; the others held the stance
    assert len(seen) == 2 * cal.DEFAULT_POINTS
    for joint, index, total, angle, volts, position, hip in seen:
        assert position == pytest.approx(angle, abs=1e-9) and total == cal.DEFAULT_POINTS
        assert hip == seen[0][6]
    assert seen[0][6] == pytest.approx(robot.stance[robot.joint_index("l_hip_pitch")],
                                       abs=half_count(pio, hw_config.servo("l_hip_pitch")))


def test_dead_input_is_named_and_the_others_still_fit(rig, robot):
    plen, pio = rig
    knee = plen.position("r_knee")
    plen.set_true_curve("l_ankle_roll", lambda q: 3.3)     # wiper lost: input pulled to VDD
    try:
        with pytest.raises(CalibrationError) as err:
            calibrate_feedback(pio, ["l_ankle_roll", "r_knee"], points=6, settle_s=0.0, samples_per_angle=1,
                               degree=2, sleep=plen.advance)
    finally:
        plen.set_true_curve("l_ankle_roll", None)
    text = str(err.value)
    assert "l_ankle_roll" in text and "voltage does not change" in text and "ADS1115 0x49 AIN1" in text
    assert "at VDD" in text and "PCA9685 channel 5" in text
    assert list(err.value.failures) == ["l_ankle_roll"] and list(err.value.fits) == ["r_knee"]
    assert plen.position("l_ankle_roll") == pytest.approx(0.0, abs=half_count(pio, pio.config.servo("l_ankle_roll")))
    assert plen.position("r_knee") == pytest.approx(knee, abs=1e-9)              # returned to stance anyway


def test_sweep_checks_its_arguments_before_moving(rig):
    plen, pio = rig
    with pytest.raises(ValueError, match="l_elbow"):
        calibrate_feedback(pio, ["l_elbow"], sleep=plen.advance)
    with pytest.raises(ValueError, match=r"l_knee: sweep angle\(s\) \[0.5"):
        calibrate_feedback(pio, ["l_knee"], angles={"l_knee": [-0.5, 0.0, 0.5]}, sleep=plen.advance)


# ================================================================================================= save
def test_saved_yaml_keeps_the_file_loads_and_reads_back_right(fits, hw_config, robot, tmp_path):
    result, _ = fits
    out = tmp_path / "plen.yaml"
    save_calibration(DEFAULT_PATH, str(out), fits=result, horn_offsets={"l_knee": 0.0314}, when=STAMP)
    before = open(resolve(DEFAULT_PATH)).read().splitlines()
    after = out.read_text().splitlines()
    changed = [line for line in after if line not in before]
    assert len(changed) == 4 + 2 + 1                      # record block (4 lines), 2 polys, 1 horn line
    assert any("l_knee" in line and "horn_offset_rad: 0.0314," in line for line in changed)
    assert any(line.startswith("# PLACEHOLDERS: the per-joint numbers below") for line in after)   # comments kept
    assert any(line.startswith("  address: 0x40             # PCA9685 I2C address") for line in after)
    assert any(line.startswith("# l_knee: feedback 2024-05-06 07:08 degree 3, 20 points, rms ") and
               line.endswith(" | horn 2024-05-06 07:08 +1.80 deg") for line in after)
    new = load_hardware_config(str(out))
    assert np.allclose(new.feedback_for("l_knee").poly, result["l_knee"].poly, rtol=1e-8)
    assert new.servo("l_knee").horn_offset_rad == 0.0314
    assert new.feedback_for("l_hip_yaw").poly == hw_config.feedback_for("l_hip_yaw").poly
    # a second run updates the record instead of adding another
    save_calibration(str(out), str(out), fits={"r_hip_pitch": result["r_hip_pitch"].poly}, when=STAMP)
    again = out.read_text()
    assert again.count(cal.RECORD_BEGIN) == 1 and "# r_hip_pitch: feedback 2024-05-06 07:08 (polynomial given)" in again
    # PlenIO with the saved config reads the true pots right
    new = load_hardware_config(str(out))
    plen = SimulatedPlen(new, robot, byte_time_s=0.0, time_driven=False, true_curves=TRUE_CURVES)
    with PlenIO(new, robot, plen.bus) as pio:
        pio.start()
        for knee, hip in ((-0.7, 0.6), (-0.2, -0.5), (0.2, 0.0)):
            plen.set_positions({"l_knee": knee, "r_hip_pitch": hip})
            reading = pio.read_all_joints()
            assert reading.positions[robot.joint_index("l_knee")] == pytest.approx(knee, abs=1e-3)
            assert reading.positions[robot.joint_index("r_hip_pitch")] == pytest.approx(hip, abs=1e-3)


def test_save_without_one_line_entries_regenerates_with_a_header(tmp_path):
    block = tmp_path / "block.yaml"
    block.write_text(yaml.safe_dump(load_yaml(DEFAULT_PATH), default_flow_style=False, sort_keys=False))
    out = tmp_path / "out.yaml"
    save_calibration(str(block), str(out), fits={"r_knee": [0.01, -1.2, 2.0]}, when=STAMP)
    text = out.read_text()
    assert text.startswith("# Generated by calibrate_plen on 2024-05-06 07:08 from ")
    assert load_hardware_config(str(out)).feedback_for("r_knee").poly == [0.01, -1.2, 2.0]


def test_save_imu_profile_edits_one_line_or_adds_it_to_the_imu_block(tmp_path):
    values = (-21, 13, -30, -183, 96, 411, -2, 1, 0, 1000, 711)
    out = tmp_path / "plen.yaml"
    save_calibration(DEFAULT_PATH, str(out), imu_profile=values, imu_note="IMUPLUS", when=STAMP)
    before = open(resolve(DEFAULT_PATH)).read().splitlines()
    after = out.read_text().splitlines()
    changed = [line for line in after if line not in before]
    assert len(changed) == 3 + 1                                # record block (3 lines), the profile line
    assert "  calibration_profile: {accel_offset: [-21, 13, -30], mag_offset: [-183, 96, 411], gyro_offset: " \
           "[-2, 1, 0], accel_radius: 1000, mag_radius: 711}" in after
    assert "# imu: imu 2024-05-06 07:08 calibration profile (IMUPLUS)" in after
    assert load_hardware_config(str(out)).imu.calibration_profile.values() == values
    # a file without the key (written before it existed): the line is added at the end of the imu block
    old = tmp_path / "old.yaml"
    k = before.index("  calibration_profile: null")
    assert before[k - 3].startswith("  # calibration_profile:")
    old.write_text("\n".join(before[:k - 3] + before[k + 1:]) + "\n")
    save_calibration(str(old), str(old), imu_profile=values, when=STAMP)
    lines = old.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("  calibration_profile: {"))
    assert lines[k - 2].startswith("  fusion_mode: IMUPLUS") and lines[k - 1].startswith("  # calibration_profile:")
    save_calibration(str(old), str(old), imu_profile=[0] * 11, when=STAMP)     # again: replaced, not added
    text = old.read_text()
    assert text.count("calibration_profile: {") == 1 and text.count("# imu: imu ") == 1
    assert load_hardware_config(str(old)).imu.calibration_profile.values() == (0,) * 11
    with pytest.raises(ValueError, match="11 values"):
        save_calibration(DEFAULT_PATH, str(tmp_path / "bad.yaml"), imu_profile=[0] * 10)
    with pytest.raises(ValueError, match="int16"):
        save_calibration(DEFAULT_PATH, str(tmp_path / "bad.yaml"), imu_profile=[40000] + [0] * 10)
    assert not (tmp_path / "bad.yaml").exists()


def test_save_refuses_a_result_that_would_not_load(tmp_path):
    out = tmp_path / "bad.yaml"
    with pytest.raises(ConfigError, match="horn_offset_rad"):
        save_calibration(DEFAULT_PATH, str(out), horn_offsets={"l_knee": 0.6})
    with pytest.raises(ValueError, match="l_elbow has 0 feedback entries"):
        save_calibration(DEFAULT_PATH, str(out), fits={"l_elbow": [1.0, 0.0]})
    assert not out.exists()
    assert cal._yaml_float(1e-5) == "1.0e-05" and yaml.safe_load(cal._yaml_float(-2e20)) == -2e20


# ================================================================================================= horn
def test_horn_offset_step_moves_the_limb_by_the_key():
    step = math.radians(0.5)
    assert horn_offset_step(0.0, "+") == pytest.approx(-step)          # limb toward +: offset down
    assert horn_offset_step(0.0, "-") == pytest.approx(step)
    assert horn_offset_step(0.01, ">", step_rad=0.01) == pytest.approx(0.01 - 5 * 0.01)
    assert horn_offset_step(0.01, "<", step_rad=0.01) == pytest.approx(0.06)
    assert horn_offset_step(0.3, "0") == 0.0 and horn_offset_step(0.3, "r", start_rad=0.1) == 0.1
    assert horn_offset_step(0.49, "-", step_rad=0.05) == 0.5                # clamped to what the config takes
    with pytest.raises(ValueError, match="unknown key 'x'"):
        horn_offset_step(0.0, "x")


def test_horn_session_writes_the_pulse_and_the_limb_follows(rig, hw_config, robot):
    plen, pio = rig
    keys = iter(["+", "++>", "-", "", "s"])
    lines = []
    offset = horn_offset_session(pio, "l_knee", 0.0, lambda: next(keys), lines.append)
    step = math.radians(0.5)
    assert offset == pytest.approx(-(1 + 2 + 5 - 1) * step)
    servo = hw_config.servo("l_knee")
    expected = dataclasses.replace(servo, horn_offset_rad=offset).pulse_for(0.0)
    assert plen.pulse_width_us("l_knee") == pytest.approx(expected, abs=pio.pulse_count_us)
    plen.advance(0.5)
    assert plen.position("l_knee") == pytest.approx(-offset, abs=half_count(pio, servo))   # '+': limb toward +
    assert any("pot " in line and "horn_offset_rad -0.0611" in line for line in lines)
    assert horn_offset_session(pio, "r_knee", -0.6, lambda: next(keys), lines.append) is None    # s: skip
    with pytest.raises(KeyboardInterrupt):
        horn_offset_session(pio, "r_knee", -0.6, lambda: "q", lines.append)


# ================================================================================================= IMU
def test_imu_status_explains_what_is_missing():
    status = imu_calibration_status((0, 3, 1, 0), "IMUPLUS")
    assert status.required == ("gyro", "accel") and not status.done and status.missing == ["accel"]
    assert "orientations" in status.advice()[0] and "mag 0/3 (not required)" in status.summary()
    ndof = imu_calibration_status((2, 3, 3, 1), "NDOF")
    assert ndof.missing == ["sys", "mag"] and "figure eight" in ndof.advice()[1]
    assert imu_calibration_status((0, 3, 3, 0)).done
    with pytest.raises(ValueError):
        imu_calibration_status((0, 4, 3, 0))


def test_imu_watch_reads_the_chip_until_calibrated(rig):
    plen, pio = rig
    plen.set_imu(calibration=(1, 2, 0, 0))
    steps = iter([(1, 3, 1, 0), (2, 3, 2, 0), (3, 3, 3, 1)])
    lines = []
    try:
        status = watch_imu_calibration(pio, timeout_s=10.0, poll_s=0.0,
                                       sleep=lambda dt: plen.set_imu(calibration=next(steps)), out=lines.append)
    finally:
        plen.set_imu(calibration=(3, 3, 3, 3))
    assert status.done and status.levels == {"sys": 3, "gyro": 3, "accel": 3, "mag": 1}
    assert lines[0] == "IMU calibration (IMUPLUS): sys 1/3 (not required)  gyro 2/3  accel 0/3  mag 0/3 (not required)"
    assert "still for a few seconds" in lines[1]
    clock = iter([0.0, 0.0, 5.0, 11.0])
    plen.set_imu(calibration=(0, 0, 0, 0))
    try:
        status = watch_imu_calibration(pio, timeout_s=10.0, sleep=lambda dt: None, clock=lambda: next(clock),
                                       out=lines.append)
    finally:
        plen.set_imu(calibration=(3, 3, 3, 3))
    assert not status.done and status.missing == ["gyro", "accel"]


# ================================================================================================= CLI
SIM = ["--bus", "sim", "--sim-byte-time-s", "0"]


def test_cli_feedback_sim_writes_a_loadable_config(tmp_path, capsys):
    out = tmp_path / "plen.yaml"
    rc = cal.main(["feedback", *SIM, "--joints", "l_knee,r_hip_pitch", "--points", "8", "--settle", "0.01",
                   "--samples", "2", "--speed", "8", "--round-trip", "--write", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "SIMULATED" in text and "hyst[deg]" in text and "wrote 2 polynomial(s)" in text
    cfg = load_hardware_config(str(out))
    default = load_hardware_config()
    assert cfg.feedback_for("l_knee").poly != default.feedback_for("l_knee").poly
    assert cfg.feedback_for("l_hip_yaw").poly == default.feedback_for("l_hip_yaw").poly
    # the same fit fails a strict limit: exit 1, nothing written
    strict = tmp_path / "strict.yaml"
    rc = cal.main(["feedback", *SIM, "--joints", "r_knee", "--points", "6", "--settle", "0", "--samples", "1",
                   "--speed", "8", "--max-rms-rad", "1e-9", "--write", str(strict)])
    text = capsys.readouterr().out
    assert rc == 1 and "fit error above --max-rms-rad" in text and not strict.exists()


def test_cli_imu_and_horn_sim(tmp_path, capsys, monkeypatch):
    rc = cal.main(["imu", *SIM, "--poll", "0.01", "--timeout", "5"])
    text = capsys.readouterr().out
    assert rc == 0 and "needs gyro (0/3)" in text and "IMU calibrated" in text
    monkeypatch.setattr("sys.stdin", stdio.StringIO("++\n\ns\n"))
    out = tmp_path / "horn.yaml"
    rc = cal.main(["horn", *SIM, "--joints", "l_knee", "r_knee", "--write", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert load_hardware_config(str(out)).servo("l_knee").horn_offset_rad == pytest.approx(-math.radians(1.0),
                                                                                           abs=1e-6)
    assert load_hardware_config(str(out)).servo("r_knee").horn_offset_rad == 0.0


def test_cli_imu_write_saves_the_chip_profile_and_a_new_plenio_restores_it(tmp_path, capsys, robot):
    out = tmp_path / "plen.yaml"
    rc = cal.main(["imu", *SIM, "--poll", "0.01", "--timeout", "5", "--write", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "no profile is stored" in text and "wrote the BNO055 calibration profile" in text
    assert "IMUPLUS does not calibrate the magnetometer" in text
    # what the simulated chip's routine found for gyro and accel; IMUPLUS leaves the magnetometer part at the
    # reset's zeros
    learned = BNO055Sim.DEFAULT_LEARNED_PROFILE
    expected = tuple(learned[0:3]) + (0, 0, 0) + tuple(learned[6:10]) + (0,)
    cfg = load_hardware_config(str(out))
    assert cfg.imu.calibration_profile.values() == expected
    before = open(resolve(DEFAULT_PATH)).read().splitlines()
    assert len([line for line in out.read_text().splitlines() if line not in before]) == 3 + 1
    # a new PlenIO on a fresh (reset, zero-profile) chip writes it back
    plen = SimulatedPlen(cfg, robot, byte_time_s=0.0, time_driven=False)
    assert plen.imu.profile() == (0,) * 11
    with PlenIO(cfg, robot, plen.bus) as pio:
        pio.start()
        assert plen.imu.resets == 1 and plen.imu.profile() == expected
    # not calibrated in time: nothing written, exit 1
    late = tmp_path / "late.yaml"
    rc = cal.main(["imu", *SIM, "--poll", "0.01", "--timeout", "0", "--write", str(late)])
    assert rc == 1 and "nothing written" in capsys.readouterr().out and not late.exists()


def test_cli_errors_exit_2(capsys, tmp_path):
    assert cal.main(["feedback", "--bus", "board"]) == 2
    assert "board.I2C()" in capsys.readouterr().err
    assert cal.main(["feedback", *SIM, "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert cal.main(["feedback", *SIM, "--joints", "l_elbow"]) == 2
    assert "l_elbow" in capsys.readouterr().err
