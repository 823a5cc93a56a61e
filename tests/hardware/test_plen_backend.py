"""The PLEN hardware backend on the real Adafruit drivers and the simulated bus, alone and behind the safety layer:
reset moves nothing, commands become pulses, a scripted bad policy meets every intervention at the pulse level,
and a chip that stops answering mid-run stops the robot with a clear error."""
import math

import numpy as np
import pytest

from op3_walk.backends.plen_hardware import PlenHardwareBackend, open_plen_backend
from op3_walk.config import ConfigError
from op3_walk.hardware.plen_io import HardwareError
from op3_walk.hardware.safety import SafeBackend, load_safety_config
from op3_walk.robots import load_robot


@pytest.fixture(scope="module")
def plen():
    return load_robot("plen")


def opened(plen, **options):
    options.setdefault("byte_time_s", 0.0)      # bus timing is make bench-hardware's business, not these tests'
    return open_plen_backend(plen, bus="sim", **options)


def pulses(backend):
    return [backend.plant.pulse_width_us(s.joint) for s in backend.io.config.servos]


def tilted(angle):
    return (math.sin(angle / 2.0), 0.0, 0.0, math.cos(angle / 2.0))    # roll about x


def test_reset_moves_nothing_and_reads_the_pose_height_and_contacts(plen):
    crouch = {"l_knee": -0.8, "r_knee": -0.8}
    backend = opened(plen, initial_positions=crouch)
    try:
        assert isinstance(backend, PlenHardwareBackend)
        state = backend.reset(plen.stance, (0.0, 0.0, 0.3))
        assert all(p is None for p in pulses(backend))             # still limp: reset commands nothing
        knee = plen.joint_index("l_knee")
        assert state.joint_positions[knee] == pytest.approx(-0.8, abs=0.01)
        assert state.tilt() == pytest.approx(0.0, abs=1e-6) and state.foot_contacts.all()
        assert 0.10 < state.base_position[2] < 0.17                 # from kinematics, not the requested 0.3 m
        assert state.linear_acceleration[2] == pytest.approx(9.81, abs=0.05)
        with pytest.raises(ValueError, match="non-finite"):
            backend.reset(np.full(plen.n_joints, np.nan), (0.0, 0.0, 0.2))
    finally:
        backend.close()


def test_commands_become_pulses_and_the_servos_follow(plen):
    backend = opened(plen)
    try:
        backend.reset(plen.stance, (0.0, 0.0, 0.16))
        target = plen.stance.copy()
        knee = plen.joint_index("r_knee")
        target[knee] = -0.4
        for _ in range(15):                    # 0.3 s at 50 Hz: every feedback channel read several times
            backend.apply(target)
            state = backend.step()
        servo = backend.io.config.servo("r_knee")
        assert backend.plant.pulse_width_us("r_knee") == pytest.approx(servo.pulse_for(-0.4), abs=5.0)
        assert state.joint_positions[knee] == pytest.approx(-0.4, abs=0.02)
        assert backend.stats.values()["hardware ticks"] == 15
    finally:
        backend.close()
    assert all(p is None for p in pulses(backend))                  # close() relaxes


def test_a_scripted_bad_policy_meets_every_intervention_at_the_pulse_level(plen):
    backend = opened(plen)
    cfg = load_safety_config(plen, overrides={"start_ramp_s": 0.1, "watchdog_hold_s": 0.1, "watchdog_relax_s": 0.1,
                                              "shutdown_ramp_s": 0.0})
    safe = SafeBackend(backend, plen, cfg)
    knee = plen.joint_index("l_knee")
    servo = backend.io.config.servo("l_knee")
    try:
        safe.reset(plen.stance, (0.0, 0.0, 0.16))
        for _ in range(10):                    # safe start: ramp to the stance
            safe.apply(plen.stance)
            safe.step()
        assert safe.state == "running"
        # 1. far beyond the knee's limit: clamped to limit - margin, then slew-limited on the way there
        wild = plen.stance.copy()
        wild[knee] = -5.0
        before = backend.plant.pulse_width_us("l_knee")
        safe.apply(wild)
        safe.step()
        step_pulse = backend.plant.pulse_width_us("l_knee")
        cap = safe.max_velocity[knee] * plen.control_period_s * 2.0     # at most two periods of slew
        assert 0 < abs(servo.angle_for(step_pulse) - servo.angle_for(before)) <= cap + 0.01
        for _ in range(60):
            safe.apply(wild)
            safe.step()
        floor = plen.lower[knee] + cfg.limit_margin_rad
        assert servo.angle_for(backend.plant.pulse_width_us("l_knee")) == pytest.approx(floor, abs=0.01)
        stats = safe.stats()
        assert stats["clamped_commands"] >= 60 and stats["slew_limited_commands"] >= 1
        # 2. NaN: rejected, the pulses stay what they were
        held = pulses(backend)
        bad = plen.stance.copy()
        bad[3] = math.nan
        safe.apply(bad)
        safe.step()
        assert pulses(backend) == held and safe.stats()["rejected_commands"] == 1
        # 3. silence: hold, then relax (outputs off)
        import time
        time.sleep(0.25)
        safe.step()
        safe.step()
        assert safe.stats()["watchdog_holds"] == 1 and safe.stats()["watchdog_relaxes"] == 1
        assert all(p is None for p in pulses(backend))
        # 4. e-stop: outputs off and latched against commands
        safe.apply(plen.stance)
        safe.step()
        safe.estop("test button")
        for _ in range(3):
            safe.apply(plen.stance)
            safe.step()
        assert all(p is None for p in pulses(backend)) and safe.stats()["ignored_commands"] >= 3
        ok, _ = safe.reset_estop()
        assert ok
        # 5. fall: the IMU says the torso rolled 70 degrees -> relaxed and latched
        for _ in range(10):
            safe.apply(plen.stance)
            safe.step()
        assert any(p is not None for p in pulses(backend))
        backend.plant.set_imu(tilted(1.2))
        safe.apply(plen.stance)
        safe.step()
        assert safe.state == "fallen" and safe.stats()["falls"] == 1
        assert all(p is None for p in pulses(backend))
        assert not safe.reset_estop()[0]                  # still lying down: refused
    finally:
        safe.close()


@pytest.mark.parametrize("axis", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)])
def test_the_simulated_imu_tilts_and_an_estop_reset_is_refused_until_the_robot_is_upright(plen, axis):
    """The simulated PLEN's torso can be tilted (SimulatedPlen.tilt): the real BNO055 driver reads it through the
    IMU mounting, and the safety layer refuses reset_estop while the torso leans beyond reset_max_tilt_rad."""
    backend = opened(plen)
    cfg = load_safety_config(plen, overrides={"start_ramp_s": 0.1, "shutdown_ramp_s": 0.0})
    safe = SafeBackend(backend, plen, cfg)
    try:
        safe.reset(plen.stance, (0.0, 0.0, 0.16))
        assert safe.step().tilt() == pytest.approx(0.0, abs=0.01)
        safe.estop("test button")
        lean = 0.5 * (cfg.reset_max_tilt_rad + cfg.fall_tilt_rad)     # beyond the reset limit, short of a fall
        backend.plant.tilt(lean, axis)
        state = safe.step()
        assert state.tilt() == pytest.approx(lean, abs=0.01)
        assert state.linear_acceleration[2] == pytest.approx(9.81 * math.cos(lean), abs=0.1)
        ok, why = safe.reset_estop()
        assert not ok and "tilt" in why and safe.latched and safe.stats()["estop_reset_refusals"] == 1
        assert safe.state == "estopped"                                # a lean is not a fall
        backend.plant.tilt(0.0)
        assert safe.step().tilt() == pytest.approx(0.0, abs=0.01)
        ok, why = safe.reset_estop()
        assert ok and not safe.latched, why
        with pytest.raises(ValueError, match="horizontal"):
            backend.plant.tilt(0.3, (0.0, 0.0, 1.0))
    finally:
        safe.close()


@pytest.mark.parametrize("chip", ["PCA9685", "ADS1115", "BNO055"])
def test_a_chip_that_stops_answering_mid_run_stops_the_robot_with_a_clear_error(plen, chip):
    backend = opened(plen)
    try:
        backend.reset(plen.stance, (0.0, 0.0, 0.16))
        for _ in range(3):
            backend.apply(plen.stance)
            backend.step()
        address = {"PCA9685": backend.io.config.pwm.address, "ADS1115": backend.io.config.adc.addresses[1],
                   "BNO055": backend.io.config.imu.address}[chip]
        backend.plant.bus.device(address).fail("nack")
        target = plen.stance + 0.05                        # a new target, so the PCA9685 is written this tick
        with pytest.raises(HardwareError, match=chip) as raised:
            for _ in range(5):                             # the ADCs are read round robin: within 4 ticks
                backend.apply(target)
                backend.step()
                target = target + 0.01
        assert "0x%02x" % address in str(raised.value).lower()
        assert chip in backend.stats.values()["hardware error"]
        if chip != "PCA9685":                              # the PWM board still answers: every output is off
            assert all(p is None for p in pulses(backend))
        with pytest.raises(HardwareError):
            backend.step()                                 # and it stays stopped
    finally:
        backend.close()


@pytest.mark.parametrize("chip", ["PCA9685", "ADS1115"])
def test_safe_close_after_a_chip_fault_logs_instead_of_raising(plen, chip, caplog):
    """After a chip fault the inner backend refuses every call (its outputs already off where the PWM board still
    answers): SafeBackend.close() must still shut down quietly (a shutdown path calls it) and log what failed."""
    backend = opened(plen)
    safe = SafeBackend(backend, plen, load_safety_config(plen, overrides={"start_ramp_s": 0.1,
                                                                          "shutdown_ramp_s": 0.2}))
    safe.reset(plen.stance, (0.0, 0.0, 0.16))
    for _ in range(10):
        safe.apply(plen.stance)
        safe.step()
    address = {"PCA9685": backend.io.config.pwm.address, "ADS1115": backend.io.config.adc.addresses[1]}[chip]
    backend.plant.bus.device(address).fail("nack")
    target = plen.stance + 0.05
    with pytest.raises(HardwareError, match=chip):
        for _ in range(5):                                 # the ADCs are read round robin: within 4 ticks
            safe.apply(target)
            safe.step()
            target = target + 0.01
    caplog.set_level("WARNING")
    safe.close()                                           # ramp and relax refused by the stopped chip layer
    assert safe.state == "closed" and backend._closed
    logged = [r for r in caplog.records if r.name == "op3_walk.hardware.safety"]
    assert logged and all(r.levelname == "ERROR" for r in logged)
    assert any("stopped after a hardware error" in r.getMessage() for r in logged), [r.getMessage() for r in logged]
    if chip != "PCA9685":                                  # the PWM board still answers: every output is off
        assert all(p is None for p in pulses(backend))
    safe.close()                                           # idempotent, still quiet


def test_open_refuses_a_bad_bus_name_and_explains_a_missing_board(plen):
    with pytest.raises(ConfigError, match="board or sim"):
        open_plen_backend(plen, bus="usb")
    with pytest.raises(ConfigError, match="hardware/i2c: sim"):
        open_plen_backend(plen, bus="board")               # this machine has no Raspberry Pi I2C bus
