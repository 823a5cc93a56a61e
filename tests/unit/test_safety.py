"""SafeBackend: a scripted bad policy against a fake backend (records what reached it) and against PyBullet.

Every test runs on a fake clock (no sleeps) and asserts on what reached the inner backend and on the counters.
"""
import dataclasses
import math
import threading

import numpy as np
import pytest

from op3_walk.backends.base import Backend, RobotState
from op3_walk.backends.pybullet_backend import PyBulletBackend
from op3_walk.config import ConfigError, from_dict
from op3_walk.hardware.safety import (COUNTERS, SafeBackend, SafetyConfig, load_safety_config, read_shadow_csv)
from op3_walk.robots import load_robot

UPRIGHT = (0.0, 0.0, 0.0, 1.0)


def pitched(angle):
    """Quaternion (x, y, z, w) of a rotation by ``angle`` about the y axis."""
    return (0.0, math.sin(angle / 2.0), 0.0, math.cos(angle / 2.0))


class FakeClock:
    """A clock that moves only when told; ``sleep`` advances it."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def advance(self, dt):
        self.t += dt

    sleep = advance


class FakeBackend(Backend):
    """Perfect position tracking; records every call (``log``) and every target (``applied``). Cannot relax."""

    def __init__(self, robot):
        self.robot = robot
        self.log = []
        self.applied = []
        self.q = robot.stance.copy()
        self.targets = self.q.copy()
        self.orientation = UPRIGHT
        self.angular_velocity = np.zeros(3)
        self.limp = False
        self.closed = False

    def state(self):
        n = self.robot.n_joints
        return RobotState(time=0.0, joint_positions=self.q.copy(), joint_velocities=np.zeros(n),
                          joint_efforts=np.zeros(n), base_position=np.zeros(3),
                          base_orientation=np.array(self.orientation, dtype=float), base_linear_velocity=np.zeros(3),
                          base_angular_velocity=self.angular_velocity.copy(),
                          linear_acceleration=np.array([0.0, 0.0, 9.81]), foot_contacts=np.ones(2, dtype=bool))

    def reset(self, joint_positions, base_position, base_orientation=UPRIGHT):
        self.log.append("reset")
        self.q = np.array(joint_positions, dtype=float)
        self.targets = self.q.copy()
        self.orientation = tuple(base_orientation)
        self.limp = False
        return self.state()

    def apply(self, joint_targets):
        assert np.all(np.isfinite(joint_targets)) and np.shape(joint_targets) == (self.robot.n_joints,)
        assert np.all(joint_targets >= self.robot.lower) and np.all(joint_targets <= self.robot.upper)
        self.log.append("apply")
        self.applied.append(np.array(joint_targets, dtype=float))
        self.targets = np.array(joint_targets, dtype=float)
        self.limp = False

    def step(self):
        self.log.append("step")
        if not self.limp:
            self.q = self.targets.copy()
        return self.state()

    def close(self):
        self.log.append("close")
        self.closed = True


class LimpFakeBackend(FakeBackend):
    """A fake that can relax (torque off)."""

    def relax(self):
        self.log.append("relax")
        self.limp = True


class RecordingPyBullet(PyBulletBackend):
    """PyBullet that records the targets it is given and can go limp (motors with zero force)."""

    def __init__(self, robot):
        super().__init__(robot)
        self.applied = []
        self.relaxes = 0

    def apply(self, joint_targets):
        self.applied.append(np.array(joint_targets, dtype=float))
        super().apply(joint_targets)

    def relax(self, joints=None, friction_torque=0.0):
        super().relax(joints, friction_torque)
        self.relaxes += 1


class RigidPyBullet(PyBulletBackend):
    """PyBullet as a backend that cannot relax (Backend's default relax)."""

    relax = Backend.relax


@pytest.fixture(scope="module")
def plen():
    return load_robot("plen")


@pytest.fixture
def clock():
    return FakeClock()


def make(inner, clock, **overrides):
    """SafeBackend around ``inner`` with the plen defaults changed by ``overrides``; records its interventions."""
    config = load_safety_config(inner.robot, overrides=overrides)
    safe = SafeBackend(inner, inner.robot, config, clock=clock, sleep=clock.sleep)
    safe.events = []
    safe.on_intervention.append(lambda kind, detail: safe.events.append((kind, detail)))
    return safe


def cycle(safe, clock, targets=None):
    """One control period: advance the clock, apply (unless None), step."""
    clock.advance(safe.control_period_s)
    if targets is not None:
        safe.apply(targets)
    return safe.step()


def kinds(safe):
    return [kind for kind, _ in safe.events]


def running(inner, clock, **overrides):
    """A SafeBackend past its start ramp (no ramp, fast slew: the intervention under test stands alone)."""
    overrides.setdefault("start_ramp_s", 0.0)
    safe = make(inner, clock, **overrides)
    safe.reset(inner.robot.stance, (0.0, 0.0, inner.robot.spawn_height))
    cycle(safe, clock, inner.robot.stance)
    assert safe.state == "running"
    return safe


def fast(robot):
    """Slew limits far above anything the tests command."""
    return {name: 1000.0 for name in robot.joint_names}


# -- config --------------------------------------------------------------------------------------------------------
def test_config_file_for_both_robots_is_strict_and_documented():
    for name in ("plen", "op3"):
        cfg = load_safety_config(name)
        assert isinstance(cfg, SafetyConfig) and cfg.fall_action == "relax" and not cfg.shadow
    assert load_safety_config("op3").start_ramp_s == 3.0 and load_safety_config("plen").start_ramp_s == 2.0
    assert all(f.metadata.get("doc") for f in dataclasses.fields(SafetyConfig))
    with pytest.raises(ConfigError, match="unknown key"):
        load_safety_config("plen", overrides={"fall_tilt": 1.0})
    for bad in ({"fall_action": "explode"}, {"reset_max_tilt_rad": 2.0}, {"max_velocity_fraction": 0.0},
                {"watchdog_hold_s": 0.0}):
        with pytest.raises(ConfigError):
            from_dict(SafetyConfig, bad)
    with pytest.raises(ValueError, match="unknown joint"):
        SafeBackend(FakeBackend(load_robot("plen")), config=SafetyConfig(max_velocity={"l_tail": 1.0}))


def test_backend_relax_defaults_to_not_implemented_naming_the_class(plen):
    with pytest.raises(NotImplementedError, match="FakeBackend"):
        FakeBackend(plen).relax()
    # torque_off on a fall needs a backend that can relax: refused up front
    with pytest.raises(ValueError, match="torque_off"):
        SafeBackend(FakeBackend(plen), config=SafetyConfig(fall_action="torque_off"))


# -- 1. joint limits, NaN ------------------------------------------------------------------------------------------
def test_out_of_limit_targets_are_clamped_inside_the_margin(plen, clock):
    inner = FakeBackend(plen)
    safe = running(inner, clock, max_velocity=fast(plen))
    margin = safe.config.limit_margin_rad
    cycle(safe, clock, plen.upper + 1.0)
    assert np.allclose(inner.applied[-1], plen.upper - margin)
    cycle(safe, clock, plen.lower - 5.0)
    assert np.allclose(inner.applied[-1], plen.lower + margin)
    inside = plen.stance
    cycle(safe, clock, inside)
    assert np.allclose(inner.applied[-1], inside)
    stats = safe.stats()
    assert stats["clamped_commands"] == 2 and stats["rejected_commands"] == 0
    assert kinds(safe).count("clamp") == 2 and "l_hip_yaw" in safe.events[kinds(safe).index("clamp")][1]


def test_nan_and_wrong_size_commands_are_rejected_and_the_last_safe_target_held(plen, clock):
    inner = FakeBackend(plen)
    safe = running(inner, clock)
    good = plen.stance + 0.01
    cycle(safe, clock, good)
    sent = len(inner.applied)
    bad = good.copy()
    bad[3] = np.nan
    cycle(safe, clock, bad)
    cycle(safe, clock, np.full(plen.n_joints, np.inf))
    cycle(safe, clock, good[:5])
    cycle(safe, clock, "not numbers")
    assert len(inner.applied) == sent                         # nothing reached the robot
    assert np.allclose(inner.targets, good)                   # it holds the last safe targets
    assert safe.stats()["rejected_commands"] == 4 and kinds(safe).count("reject") == 4
    assert "l_knee" in safe.events[kinds(safe).index("reject")][1]
    assert safe.stats()["commands"] == 2                      # rejected commands are not commands


# -- 2. slew limit ---------------------------------------------------------------------------------------------------
def test_a_jump_is_slew_limited_to_the_per_joint_cap_and_a_pause_allows_no_jump(plen, clock):
    inner = FakeBackend(plen)
    safe = running(inner, clock, max_velocity={"l_knee": 1.0})
    period = plen.control_period_s
    cap = safe.max_velocity
    assert np.isclose(cap[plen.joint_index("l_hip_yaw")], 0.5 * 8.0) and cap[plen.joint_index("l_knee")] == 1.0
    goal = plen.stance + 0.25                                  # inside every joint's limits
    previous = inner.applied[-1]
    cycle(safe, clock, goal)
    assert np.allclose(inner.applied[-1] - previous, np.minimum(cap * period, 0.25))
    for _ in range(3):
        previous = inner.applied[-1]
        cycle(safe, clock, goal)
        assert np.all(np.abs(inner.applied[-1] - previous) <= cap * period + 1e-12)
    assert safe.stats()["slew_limited_commands"] == 4
    # after a 5 s pause (the watchdog off for this), the step allowed is two periods' worth, not 5 s
    safe.config.watchdog_hold_s = 100.0
    previous = inner.applied[-1]
    clock.advance(5.0)
    safe.apply(plen.stance - 0.25)
    assert np.allclose(np.abs(inner.applied[-1] - previous), np.minimum(cap * 2 * period, np.abs(
        plen.stance - 0.25 - previous)))


# -- 3. watchdog -----------------------------------------------------------------------------------------------------
def test_silence_holds_then_relaxes_and_a_fresh_command_ramps_from_the_slumped_pose(plen, clock):
    inner = LimpFakeBackend(plen)
    safe = running(inner, clock)
    cfg = safe.config
    sent = len(inner.applied)
    periods = int(math.ceil(cfg.watchdog_hold_s / plen.control_period_s)) + 1
    for _ in range(periods):
        cycle(safe, clock)                                      # the policy went silent
    assert safe.state == "holding" and safe.stats()["watchdog_holds"] == 1 and "relax" not in inner.log
    assert len(inner.applied) == sent and np.allclose(inner.targets, plen.stance)  # held: nothing new sent
    clock.advance(cfg.watchdog_relax_s)
    cycle(safe, clock)
    assert safe.state == "relaxed" and inner.log.count("relax") == 1
    stats = safe.stats()
    assert stats["watchdog_relaxes"] == 1 and stats["limp"] and kinds(safe)[-2:] == ["watchdog_hold",
                                                                                         "watchdog_relax"]
    inner.q = plen.stance + 0.2                                 # the limp robot slumped
    cycle(safe, clock)                                          # (and the sensors read it)
    cycle(safe, clock, plen.stance + 0.3)                       # the policy comes back
    assert np.allclose(inner.applied[sent], np.clip(plen.stance + 0.2, safe._lower, safe._upper))
    assert safe.state == "ramping" and safe.stats()["start_ramps"] == 2


def test_watchdog_goes_to_stance_where_the_backend_cannot_relax(plen, clock):
    inner = FakeBackend(plen)
    safe = running(inner, clock, watchdog_relax_s=0.0)
    cycle(safe, clock, plen.stance + 0.2)
    cycle(safe, clock, plen.stance + 0.2)
    for _ in range(60):
        cycle(safe, clock)
    assert safe.state == "relaxed" and safe.stats()["watchdog_relaxes"] == 1
    steps = np.abs(np.diff(inner.applied, axis=0))
    assert np.all(steps <= safe.max_velocity * plen.control_period_s + 1e-9)   # slowly, not a jump
    assert np.allclose(inner.applied[-1], plen.stance)
    assert "cannot relax" in safe.stats()["last_intervention_detail"]


# -- 4. e-stop -------------------------------------------------------------------------------------------------------
def test_estop_latches_ignores_commands_and_resets_only_when_asked(plen, clock):
    inner = LimpFakeBackend(plen)
    safe = running(inner, clock)
    safe.estop("operator button")
    assert inner.log[-1] == "relax" and safe.state == "estopped" and safe.latched
    sent = len(inner.applied)
    for _ in range(200):                                        # the policy keeps sending; time passes
        cycle(safe, clock, plen.stance + 0.1)
    assert len(inner.applied) == sent and safe.state == "estopped"
    with pytest.raises(RuntimeError, match="reset_estop"):      # an episode reset does not clear it
        safe.reset(plen.stance, (0.0, 0.0, plen.spawn_height))
    stats = safe.stats()
    assert stats["estops"] == 1 and stats["ignored_commands"] == 200 and stats["latch_reason"] == "operator button"
    assert stats["watchdog_holds"] == 0                         # latched: the watchdog has nothing to do
    ok, message = safe.reset_estop()
    assert ok and "operator button" in message and safe.state == "relaxed" and not safe.latched
    inner.q = plen.stance - 0.1                                 # someone moved the limp robot
    cycle(safe, clock)
    cycle(safe, clock, plen.stance + 0.1)                       # through the safe-start ramp again
    assert np.allclose(inner.applied[sent], np.clip(plen.stance - 0.1, safe._lower, safe._upper))
    assert safe.state == "ramping" and safe.stats()["estop_resets"] == 1
    assert kinds(safe).count("estop") == 1 and "estop_reset" in kinds(safe)


def test_estop_hold_keeps_the_targets_and_an_estop_from_another_thread_stops_the_loop(plen, clock):
    inner = LimpFakeBackend(plen)
    safe = running(inner, clock, estop_action="hold")
    safe.estop()
    assert "relax" not in inner.log and safe.state == "estopped" and np.allclose(inner.targets, plen.stance)
    assert safe.reset_estop()[0]
    cycle(safe, clock, plen.stance)
    # a loop thread applying and stepping, an e-stop from a "service" thread: nothing passes after estop() returns
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            safe.apply(plen.stance)
            safe.step()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        while len(inner.applied) < 50 and thread.is_alive():
            pass
        safe.estop("service call")
        sent, steps = len(inner.applied), safe.stats()["steps"]
        while safe.stats()["steps"] < steps + 200 and thread.is_alive():
            pass                                                # the loop runs on, its commands ignored
    finally:
        stop.set()
        thread.join()
    assert len(inner.applied) == sent and safe.stats()["ignored_commands"] > 0


# -- 5. fall -----------------------------------------------------------------------------------------------------------
@pytest.mark.sim
def test_a_tilted_pybullet_robot_is_detected_as_fallen_relaxed_and_latched(plen, clock):
    inner = RecordingPyBullet(plen)
    try:
        safe = running(inner, clock)
        for _ in range(5):
            cycle(safe, clock, plen.stance)
        assert safe.state == "running" and safe.stats()["falls"] == 0
        inner.set_pose(plen.stance, (0.0, 0.0, 0.3), pitched(1.3))     # knocked over (forwards)
        cycle(safe, clock, plen.stance)
        stats = safe.stats()
        assert stats["falls"] == 1 and safe.state == "fallen" and stats["latch_reason"].startswith("fall: tilt 1.")
        assert inner.relaxes == 1 and stats["limp"]
        sent = len(inner.applied)
        for _ in range(10):
            cycle(safe, clock, plen.stance)
        assert len(inner.applied) == sent                               # latched: commands ignored
        ok, why = safe.reset_estop()                                    # still lying there: refused
        assert not ok and "tilt" in why and safe.stats()["estop_reset_refusals"] == 1
        inner.set_pose(plen.stance, (0.0, 0.0, plen.spawn_height), pitched(-0.1))  # picked up (backwards tilt)
        cycle(safe, clock)
        assert safe.reset_estop()[0] and safe.state == "relaxed"
        assert kinds(safe).count("fall") == 1
    finally:
        inner.close()


@pytest.mark.sim
def test_reset_tilted_is_a_fall_at_the_first_step_and_rate_and_hold_options(plen, clock):
    inner = RigidPyBullet(plen)                   # cannot relax: fall_action relax holds instead
    try:
        safe = make(inner, clock)
        safe.reset(plen.stance, (0.0, 0.0, 0.3), pitched(-1.2))   # backwards: the tilt test is sign-free
        cycle(safe, clock)
        assert safe.state == "fallen" and safe.stats()["falls"] == 1
        assert "holding (cannot relax)" in safe.stats()["last_intervention_detail"]
    finally:
        inner.close()
    fake = LimpFakeBackend(plen)
    safe = running(fake, clock, fall_rate_rad_s=5.0, fall_action="torque_off")
    fake.angular_velocity = np.array([0.0, 6.0, 0.0])
    cycle(safe, clock, plen.stance)
    assert safe.state == "fallen" and "angular rate" in safe.stats()["latch_reason"] and fake.log[-1] == "relax"
    fake = LimpFakeBackend(plen)
    safe = running(fake, clock, fall_action="hold")
    fake.orientation = pitched(1.5)
    cycle(safe, clock, plen.stance)
    assert safe.state == "fallen" and "relax" not in fake.log


# -- 6. safe start / shutdown ------------------------------------------------------------------------------------------
@pytest.mark.sim
def test_safe_start_ramps_a_pybullet_robot_from_its_present_pose(plen, clock):
    inner = RecordingPyBullet(plen)
    try:
        safe = make(inner, clock, start_ramp_s=0.5, fall_tilt_rad=3.0)   # dropped from 30 cm: no fall latch here
        crouch = plen.stance + 0.4 * (np.clip(plen.stance + 0.5, plen.lower, plen.upper) - plen.stance)
        present = safe.reset(crouch, (0.0, 0.0, 0.3)).joint_positions    # held in the air, not in its stance
        greedy = plen.upper + 1.0                                        # a policy that wants everything at once
        cycle(safe, clock, greedy)
        assert np.allclose(inner.applied[0], np.clip(present, safe._lower, safe._upper))
        assert safe.state == "ramping"
        period = plen.control_period_s
        n = 1
        while safe.state == "ramping" and n < 100:
            cycle(safe, clock, greedy)
            n += 1
        assert abs((n - 1) - 0.5 / period) <= 1                          # the ramp lasted start_ramp_s
        ramp = np.array(inner.applied[:-1])
        distance = np.abs(ramp - plen.stance).max(axis=1)
        assert np.all(np.diff(distance) < 1e-12) and distance[-1] < 0.02   # straight to the stance
        assert np.all(np.abs(np.diff(ramp, axis=0)) <= safe.max_velocity * period + 1e-9)
        # ramp over: the policy's targets pass, clamped and slew limited
        assert safe.state == "running"
        assert np.allclose(inner.applied[-1], np.minimum(ramp[-1] + safe.max_velocity * period, safe._upper))
        assert safe.stats()["start_ramps"] == 1 and safe.stats()["slew_limited_commands"] == 1
    finally:
        inner.close()


def test_close_ramps_to_the_rest_pose_then_relaxes_then_closes(plen, clock):
    inner = LimpFakeBackend(plen)
    safe = running(inner, clock, shutdown_ramp_s=0.5, rest_pose={"l_hip_pitch": 0.5, "r_hip_pitch": 0.5})
    for _ in range(20):
        cycle(safe, clock, plen.stance + 0.1)
    before, t0 = len(inner.applied), clock()
    safe.close()
    ramp = np.array(inner.applied[before:])
    rest = plen.stance.copy()
    rest[[plen.joint_index("l_hip_pitch"), plen.joint_index("r_hip_pitch")]] = 0.5
    assert len(ramp) == int(round(0.5 / plen.control_period_s)) and np.allclose(ramp[-1], rest)
    assert np.allclose(np.diff(ramp, axis=0), (ramp[-1] - ramp[0]) / (len(ramp) - 1))   # evenly spaced
    assert inner.log[-3:] == ["step", "relax", "close"] and inner.closed
    assert clock() - t0 == pytest.approx(0.5, abs=1e-9)                # paced by the (fake) sleep
    assert safe.state == "closed"
    safe.close()                                                        # again: nothing
    assert inner.log.count("close") == 1
    with pytest.raises(RuntimeError):
        safe.apply(plen.stance)


class FaultedBackend(LimpFakeBackend):
    """After ``fault()`` every call but close() raises, as a hardware backend does after a chip fault."""

    faulted = False

    def fault(self):
        self.faulted = True

    def _refuse(self, what):
        if self.faulted:
            self.log.append(what + " refused")
            raise RuntimeError("stopped after a hardware error")

    def apply(self, joint_targets):
        self._refuse("apply")
        super().apply(joint_targets)

    def step(self):
        self._refuse("step")
        return super().step()

    def relax(self):
        self._refuse("relax")
        super().relax()


def test_close_after_a_fault_logs_and_still_closes_the_inner_backend(plen, clock, caplog):
    inner = FaultedBackend(plen)
    safe = running(inner, clock, shutdown_ramp_s=0.5)
    for _ in range(20):
        cycle(safe, clock, plen.stance + 0.1)
    inner.fault()
    caplog.set_level("WARNING")
    safe.close()                                            # never raises after a fault: it logs
    assert inner.closed and safe.state == "closed"
    assert "relax refused" in inner.log and inner.log[-1] == "close"
    messages = [r.getMessage() for r in caplog.records if r.name == "op3_walk.hardware.safety"]
    assert any("shutdown ramp stopped" in m and "stopped after a hardware error" in m for m in messages), messages
    assert any("relax() failed" in m for m in messages), messages
    safe.close()
    assert inner.log.count("close") == 1


# -- 7. shadow mode ----------------------------------------------------------------------------------------------------
def test_shadow_mode_never_forwards_the_policy_and_logs_what_would_have_been_sent(plen, clock, tmp_path):
    path = str(tmp_path / "shadow" / "run.csv")
    inner = FakeBackend(plen)
    safe = make(inner, clock, shadow=True, shadow_csv=path, start_ramp_s=0.2)
    safe.reset(plen.stance - 0.05, (0.0, 0.0, plen.spawn_height))
    rng = np.random.default_rng(0)
    commands = [plen.stance + rng.uniform(-2.0, 2.0, plen.n_joints) for _ in range(40)]
    for command in commands:
        cycle(safe, clock, command)
    # the robot only ever got the safe-start ramp from its pose to the stance, then held the stance
    distance = np.abs(np.array(inner.applied) - plen.stance).max(axis=1)
    assert np.all(np.diff(distance) <= 1e-12) and np.allclose(inner.applied[-1], plen.stance)
    assert all(not np.allclose(a, np.clip(c, safe._lower, safe._upper)) for a, c in zip(inner.applied, commands))
    log = safe.shadow_log()
    assert len(log) == 40 and safe.stats()["shadow_commands"] == 40
    targets = np.array([r.targets for r in log])
    assert np.all(targets >= safe._lower - 1e-12) and np.all(targets <= safe._upper + 1e-12)
    assert np.all(np.abs(np.diff(targets, axis=0)) <= safe.max_velocity * plen.control_period_s + 1e-9)
    assert safe.stats()["clamped_commands"] > 0 and safe.stats()["slew_limited_commands"] > 0
    safe.close()
    back = read_shadow_csv(path)
    assert back.joint_names == plen.joint_names and np.array_equal(back.targets, targets)
    assert np.array_equal(back.step, [r.step for r in log]) and np.allclose(back.time, [r.time for r in log])
    # shadow_inner relax: the robot is only relaxed, never given a target
    inner = LimpFakeBackend(plen)
    safe = make(inner, clock, shadow=True, shadow_inner="relax")
    safe.reset(plen.stance, (0.0, 0.0, plen.spawn_height))
    for command in commands[:10]:
        cycle(safe, clock, command)
    assert inner.applied == [] and "relax" in inner.log and len(safe.shadow_log()) == 10


def test_stats_report_every_counter_and_the_state(plen, clock):
    safe = running(FakeBackend(plen), clock)
    stats = safe.stats()
    assert set(COUNTERS) <= set(stats)
    assert stats["state"] == "running" and stats["commands"] == 1 and stats["seconds_since_command"] == 0.0
    safe.on_intervention.append(lambda kind, detail: 1 / 0)          # a broken callback does not break the layer
    safe.apply(np.full(plen.n_joints, np.nan))
    assert safe.stats()["callback_errors"] == 1 and safe.stats()["rejected_commands"] == 1
