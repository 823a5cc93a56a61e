"""The open-loop reference gait: a periodic, continuous, reachable pattern that walks each robot in PyBullet."""
import os

import numpy as np
import pytest

from op3_walk import CONFIG_DIR
from op3_walk.config import ConfigError
from op3_walk.robots import load_robot
from op3_walk.robots.gait import (GAITS_DIR, GaitConfig, ReferenceGait, load_gait, main, to_walking_frame)
from op3_walk.robots.kinematics import rot_y

pytestmark = pytest.mark.sim  # runs PyBullet: `make test-portable` runs it under two OpenBLAS kernels

GAITS = sorted(f[:-5] for f in os.listdir(GAITS_DIR) if f.endswith(".yaml"))
REFERENCE_GAITS = [g for g in GAITS if "_" not in g]          # config/gaits/<robot>.yaml, one per robot
RECIPE_GAITS = [g for g in GAITS if "_" in g]                 # <robot>_<variant>.yaml: bases of walking recipes
MIN_DISTANCE = {"plen": 0.3, "op3": 1.0}  # m in 10 s without falling (the acceptance criterion)
# The residual task whose zero action plays each gait (evaluate's reference source, with the task's seeded reset noise)
GAIT_TASKS = {"plen": "residual_walk", "op3": "residual_walk", "plen_fast": "plen_walk_fast",
              "op3_fast": "op3_walk_fast"}
# A recipe gait may ask some joints for more than their speed limit: the servos (and PyBullet's motors, capped at
# the same speed) lag those targets, and the residual policy learns on top of what the robot really does. Bounded,
# so a typo cannot ask for a jump.
RECIPE_SPEED_MARGIN = 1.35


@pytest.fixture(scope="module", params=GAITS)
def gait(request):
    robot = load_robot(request.param.split("_")[0])
    gait = ReferenceGait(robot, load_gait(request.param))
    gait.speed_margin = RECIPE_SPEED_MARGIN if request.param in RECIPE_GAITS else 1.0
    # feet of a faster gait move further per control step: scale that bound by its nominal speed over the robot's
    nominal = lambda c: 2.0 * c.step_length / c.period_s   # noqa: E731
    gait.cadence_ratio = max(1.0, nominal(gait.config) / nominal(load_gait(robot.name)))
    return gait


def times(gait, cycles=2.0, start=None):
    """Control instants over ``cycles`` gait cycles, starting after the ramp-in unless ``start`` is given."""
    dt = gait.robot.control_period_s
    t0 = gait.config.ramp_s if start is None else start
    return t0 + dt * np.arange(int(round(cycles * gait.config.period_s / dt)) + 1)


def test_every_robot_has_a_gait():
    robots = sorted(f[:-5] for f in os.listdir(os.path.join(CONFIG_DIR, "robots")) if f.endswith(".yaml"))
    assert REFERENCE_GAITS == robots
    assert all(g.split("_")[0] in robots for g in RECIPE_GAITS), RECIPE_GAITS


def test_gait_config_is_strict(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load_gait("plen", {"step_lenght": 0.01})
    with pytest.raises(ConfigError, match="double_support_ratio"):
        load_gait("plen", {"double_support_ratio": 1.0})
    with pytest.raises(ConfigError, match="foot_z"):
        load_gait("plen", {"foot_z": 0.1})
    with pytest.raises(ConfigError, match="missing required key 'period_s'"):
        bad = tmp_path / "g.yaml"
        bad.write_text("step_length: 0.01\n")
        load_gait(str(bad))
    assert isinstance(load_gait("plen"), GaitConfig)


def test_gait_beyond_the_joint_limits_is_rejected():
    robot = load_robot("plen")
    with pytest.raises(ValueError, match="outside its limits|out of reach"):
        ReferenceGait(robot, load_gait("plen", {"foot_lift": 0.03}))


def test_periodic_after_ramp(gait):
    period = gait.config.period_s
    for t in times(gait, 1.0):
        np.testing.assert_allclose(gait.joint_targets(t + period), gait.joint_targets(t), atol=1e-9)
        np.testing.assert_allclose(gait.foot_targets(t + 3 * period), gait.foot_targets(t), atol=1e-12)
        np.testing.assert_allclose(gait.zmp_reference(t + period), gait.zmp_reference(t), atol=1e-12)


def test_starts_from_the_neutral_pose(gait):
    np.testing.assert_array_equal(gait.joint_targets(0.0), gait.neutral)
    assert gait.amplitude(0.0) == 0.0 and gait.amplitude(gait.config.ramp_s) == 1.0


def test_continuous_and_within_servo_speed(gait):
    """Targets never jump: between control steps no joint moves more than its speed limit allows."""
    dt = gait.robot.control_period_s
    ts = times(gait, 3.0, start=0.0)
    q = np.array([gait.joint_targets(t) for t in ts])
    steps = np.abs(np.diff(q, axis=0))
    assert np.all(steps <= gait.speed_margin * gait.robot.velocity * dt), steps.max(axis=0)
    feet = np.array([gait.foot_targets(t) for t in ts])
    assert np.abs(np.diff(feet, axis=0)).max() < 0.05 * gait.cadence_ratio * gait.kinematics.legs[0].length
    # the ZMP crosses from foot to foot during each double support: bound its step by that crossing speed
    zmp = np.array([gait.zmp_reference(t) for t in ts])
    span = np.abs(feet[:, 0, :2] - feet[:, 1, :2]).max(axis=0).sum()
    double_support = gait.config.double_support_ratio * gait.config.period_s / 2.0
    assert np.abs(np.diff(zmp, axis=0)).sum(axis=1).max() <= 1.01 * span * dt / double_support


def test_targets_reach_the_feet_within_the_limits(gait):
    """The joint targets put the feet exactly where the pattern says (so nothing was clipped), flat on the ground
    plane of the walking frame."""
    lean = rot_y(-gait.config.torso_pitch)  # walking frame -> torso frame
    for t in times(gait, 1.0, start=0.0):
        q = gait.joint_targets(t)
        assert np.all(q >= gait.robot.lower) and np.all(q <= gait.robot.upper)
        for (position, rotation), target, leg in zip(gait.kinematics.foot_poses(q), gait.foot_targets(t),
                                                     gait.kinematics.legs):
            np.testing.assert_allclose(position, lean.dot(target), atol=1e-9)
            np.testing.assert_allclose(lean.T.dot(rotation), leg.foot_rotation0, atol=1e-9)


def test_support_phase_and_feet_agree(gait):
    cfg = gait.config
    speed = cfg.speed
    dt = gait.robot.control_period_s
    ts = times(gait, 2.0)
    for t, t_next in zip(ts[:-1], ts[1:]):
        phase = gait.phase(t)
        assert 0.0 <= phase < 1.0
        support = gait.support(t)
        in_double = (phase % 0.5) * 2.0 < cfg.double_support_ratio
        if in_double:
            assert support.tolist() == [True, True]
        else:
            assert support.tolist() == ([False, True] if phase < 0.5 else [True, False])
        feet, feet_next = gait.foot_targets(t), gait.foot_targets(t_next)
        for leg in range(2):
            if support[leg]:
                assert feet[leg, 2] == cfg.foot_z
                if gait.support(t_next)[leg]:  # a stance foot moves back at the walking speed
                    assert feet_next[leg, 0] - feet[leg, 0] == pytest.approx(-speed * dt, abs=1e-12)
            else:
                assert feet[leg, 2] >= cfg.foot_z
        zmp = gait.zmp_reference(t)
        if not in_double:
            stance = 1 if phase < 0.5 else 0
            np.testing.assert_allclose(zmp, feet[stance, :2] + gait.sole_centres[stance], atol=1e-12)
        else:
            soles = feet[:, :2] + gait.sole_centres
            lo, hi = soles.min(axis=0), soles.max(axis=0)
            assert np.all(zmp >= lo - 1e-12) and np.all(zmp <= hi + 1e-12)
    first_full_cycle = np.ceil(cfg.ramp_s / cfg.period_s)
    mid_swing = cfg.period_s * (first_full_cycle + cfg.double_support_ratio / 2 + (1 - cfg.double_support_ratio) / 4)
    assert gait.foot_targets(mid_swing)[0, 2] == pytest.approx(cfg.foot_z + cfg.foot_lift)


def test_scales(gait):
    t = gait.config.ramp_s + 0.3 * gait.config.period_s
    base = gait.joint_targets(t)
    np.testing.assert_array_equal(gait.joint_targets(t, (1.0, 1.0, 1.0)), base)
    legs = gait.kinematics.legs
    hip_pitch = [leg.indices[2] for leg in legs]
    scaled = gait.joint_targets(t, (1.1, 1.0, 1.0))
    changed = np.flatnonzero(scaled != base)
    assert set(changed) <= set(hip_pitch) and len(changed) > 0
    expected = gait.neutral[hip_pitch] + 1.1 * (base[hip_pitch] - gait.neutral[hip_pitch])
    np.testing.assert_allclose(scaled[hip_pitch], np.clip(expected, gait.robot.lower[hip_pitch],
                                                          gait.robot.upper[hip_pitch]))
    with pytest.raises(ValueError, match="3 factors"):
        gait.joint_targets(t, (1.0, 1.0))


def test_to_walking_frame():
    half = np.pi / 4  # heading 90 degrees: quaternion about z
    q = (0.0, 0.0, np.sin(half), np.cos(half))
    np.testing.assert_allclose(to_walking_frame([1.0, 3.0, 0.0], [1.0, 2.0, 0.3], q), [1.0, 0.0], atol=1e-12)


def seeded_walks(name, episodes):
    """``episodes`` 10 s episodes (seeds 0, 1, ...) of gait ``name`` played open loop (its residual task with zero
    actions, checked to be the gait's targets) from the task's seeded reset noise on every joint angle."""
    from op3_walk.envs.task import load_task
    from op3_walk.training import evaluate as ev
    task = load_task(GAIT_TASKS[name])
    assert task.action.mode == "residual" and (task.action.gait or name.split("_")[0]) == name
    assert 0.0 < task.reset_noise <= 0.02  # small noise: different episodes, the same gait
    result = ev.evaluate(ev.reference_source(name.split("_")[0], GAIT_TASKS[name]), gates=["nominal"],
                         episodes=episodes, seconds=10.0)
    assert result.seconds == pytest.approx(10.0)
    return result.gates["nominal"]


def walked(episode, robot):
    return (not episode.fell and episode.distance >= MIN_DISTANCE[robot]
            and episode.lateral_drift < 0.5 * episode.distance and episode.max_tilt < 0.5)


# A walking simulation is chaotic: one trajectory's numbers change with the last bits of the arithmetic (numpy's
# OpenBLAS kernel, the CPU, the library build), so these tests assert the gaits' properties over seeded episodes
# with margins, never one trajectory (README "Determinism"; `make test-portable` runs them under two kernels).
@pytest.mark.parametrize("name", [g for g in GAITS if g != "op3_fast"])  # op3_fast, marginal: the next test
def test_open_loop_gait_walks(name):
    """The behaviour the issue asks for: 10 s of simulated time, forward, without falling, heading roughly
    straight, in at least 9 of 10 seeded episodes (measured over seeds 0-19 on two OpenBLAS kernels: no falls,
    distances >= 1.38x the bound, drift and tilt >= 3x inside theirs)."""
    robot = name.split("_")[0]
    episodes = seeded_walks(name, 10)
    assert sum(walked(e, robot) for e in episodes) >= 9, [e.to_dict() for e in episodes]


def test_op3_fast_gait_walks_but_falls_in_many_episodes():
    """op3_fast, the base of the OP3 walking recipe, is marginal open loop: it falls in a third to a half of the
    episodes (with 0.01 rad reset noise; measured on the OpenBLAS kernels Haswell / SkylakeX: 10 / 11 falls over
    seeds 0-19, 13 / 15 over seeds 0-39), which is why the recipe trains a residual policy on it.  This test
    asserts what it does hold, with margins (measured over seeds 0-19 in brackets): every episode walks forward
    until it ends (>= 0.55 m, >= 0.085 m/s), the mean speed is above 0.12 m/s (0.162-0.164), and the episodes
    that stay up (at least 5 of 20 asserted; 9-10) walk the issue's 1.0 m in 10 s (>= 1.31 m), most of them
    straight ahead (median drift 0.05-0.06 of the distance), though a few veer (up to 0.58)."""
    episodes = seeded_walks("op3_fast", 20)
    rows = [e.to_dict() for e in episodes]
    upright = [e for e in episodes if not e.fell]
    assert len(upright) >= 5, rows
    assert all(e.distance > 0.2 and e.speed > 0.04 for e in episodes), rows
    assert np.mean([e.speed for e in episodes]) > 0.12, rows
    assert all(e.distance >= MIN_DISTANCE["op3"] and e.max_tilt < 0.5 for e in upright), rows
    assert np.median([e.lateral_drift / e.distance for e in upright]) < 0.25, rows


def test_player_cli_writes_a_frame_strip(tmp_path, capsys):
    png = tmp_path / "strip.png"
    assert main(["--robot", "plen", "--seconds", "0.5", "--frames", str(png), "--n-frames", "2"]) == 0
    out = capsys.readouterr().out
    assert "distance walked" in out and "fell: no" in out
    assert png.stat().st_size > 1000
    assert main(["--robot", "plen", "--gait", "nonexistent"]) == 1
