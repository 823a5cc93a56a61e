"""Velocity commands (op3_walk.envs.command): drawing per task and robot, and an external command (cmd_vel) clamped
to the trained ranges, timing out to zero, and reaching the observation through WalkEnv.command_override."""
import math

import numpy as np
import pytest

from op3_walk.config import ConfigError, from_dict
from op3_walk.envs import WalkEnv, load_task
from op3_walk.envs.command import ExternalCommand, command_bounds, draw_command
from op3_walk.envs.task import CommandConfig

RANGES = {"forward": [-0.1, 0.4], "lateral": [-0.1, 0.1], "yaw_rate": [-0.5, 0.5]}


def config(**changes):
    return from_dict(CommandConfig, dict(RANGES, **changes))


# -- task configuration --------------------------------------------------------------------------------------------
def test_per_robot_ranges_replace_the_task_ranges_for_that_robot_only():
    cfg = config(robots={"plen": {"forward": [0.0, 0.15], "yaw_rate": [-0.3, 0.3]}})
    plen = cfg.for_robot("plen")
    assert plen.forward == (0.0, 0.15) and plen.lateral == (0.0, 0.0) and plen.yaw_rate == (-0.3, 0.3)
    assert plen.robots == {} and plen.resample_s == cfg.resample_s
    other = cfg.for_robot("op3")
    assert (other.forward, other.lateral, other.yaw_rate) == ((-0.1, 0.4), (-0.1, 0.1), (-0.5, 0.5))


@pytest.mark.parametrize("bad", [{"zero_probability": 1.5}, {"zero_probability": -0.1},
                                 {"robots": {"plen": {"forward": [0.2, 0.1]}}},
                                 {"robots": {"plen": {"vx": [0.0, 0.1]}}}])
def test_bad_command_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        config(**bad)


@pytest.mark.parametrize("robot", ["plen", "op3"])
def test_velocity_tracking_ranges_include_slow_commands_turning_and_standing(robot):
    cfg = load_task("velocity_tracking").command.for_robot(robot)
    low, high = command_bounds(cfg)
    assert low[0] <= 0.05 and high[0] > 0.1           # slow forward commands (a peer's policies ignored < 0.3 m/s)
    assert low[2] < -0.3 and high[2] > 0.3            # turning both ways
    assert 0.0 < cfg.zero_probability < 0.5 and cfg.resample_s > 0.0
    tasks = load_task("velocity_tracking").command
    assert robot in tasks.robots                      # each robot has its own ranges


# -- drawing -------------------------------------------------------------------------------------------------------
def test_drawn_commands_stay_in_range_and_are_zero_with_the_given_probability():
    cfg = config(zero_probability=0.25)
    low, high = command_bounds(cfg)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        draws = np.array([draw_command(cfg, rng) for _ in range(2000)])
        assert np.all(draws >= low) and np.all(draws <= high)
        zero = np.all(draws == 0.0, axis=1).mean()
        assert 0.2 < zero < 0.3, zero
        moving = draws[~np.all(draws == 0.0, axis=1)]
        assert moving[:, 0].min() < 0.0 < moving[:, 0].max() and moving[:, 2].min() < -0.4


def test_without_a_zero_probability_the_rng_stream_is_the_old_one():
    cfg = config()
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    drawn = [draw_command(cfg, a) for _ in range(5)]
    old = [np.array([b.uniform(*cfg.forward), b.uniform(*cfg.lateral), b.uniform(*cfg.yaw_rate)]) for _ in range(5)]
    assert np.array_equal(np.array(drawn), np.array(old))
    assert not np.any(draw_command(from_dict(CommandConfig, {}), a))   # inactive: zero


# -- external command ----------------------------------------------------------------------------------------------
def test_external_command_is_clamped_to_the_trained_ranges():
    ext = ExternalCommand(config(), timeout_s=0.5)
    assert ext.value(0.0) is None and not ext.active             # the task's own command stands
    assert np.allclose(ext.receive((0.2, 0.0, -0.3), 1.0), (0.2, 0.0, -0.3)) and ext.clamped == 0
    assert np.allclose(ext.receive((2.0, -1.0, 3.0), 1.1), (0.4, -0.1, 0.5)) and ext.clamped == 1
    assert np.allclose(ext.receive((-5.0, 0.05, -9.0), 1.2), (-0.1, 0.05, -0.5)) and ext.clamped == 2
    assert np.allclose(ext.value(1.3), (-0.1, 0.05, -0.5)) and ext.received == 3


def test_external_command_times_out_to_zero_and_a_new_one_revives_it():
    ext = ExternalCommand(config(), timeout_s=0.5)
    ext.receive((0.3, 0.0, 0.2), 10.0)
    assert np.allclose(ext.value(10.5), (0.3, 0.0, 0.2))
    stale = ext.value(10.51)
    assert stale is not None and not np.any(stale)               # zero, not the task's command: stand still
    ext.receive((0.1, 0.0, 0.0), 20.0)
    assert np.allclose(ext.value(20.2), (0.1, 0.0, 0.0))


def test_non_finite_commands_are_ignored_and_bad_timeouts_refused():
    ext = ExternalCommand(config(), timeout_s=0.5)
    ext.receive((0.2, 0.0, 0.0), 0.0)
    assert ext.receive((math.nan, 0.0, 0.0), 0.1) is None and ext.rejected == 1
    assert np.allclose(ext.value(0.2), (0.2, 0.0, 0.0))          # the last good one, still timing out from t=0
    assert not np.any(ext.value(0.6))
    with pytest.raises(ValueError):
        ext.receive((0.1, 0.2), 0.0)
    for timeout in (0.0, -1.0):
        with pytest.raises(ValueError):
            ExternalCommand(config(), timeout_s=timeout)


# -- through the environment ---------------------------------------------------------------------------------------
def _command_block(env, obs):
    start = 0
    for name, size in env.layout:
        if name == "command":
            return obs[start:start + size]
        start += size
    raise AssertionError("no command block")


@pytest.mark.sim
def test_the_env_draws_the_robots_own_ranges_and_an_override_replaces_the_command():
    task = load_task("velocity_tracking", overrides={"command": dict(
        RANGES, resample_s=0.0, robots={"plen": {"forward": [0.05, 0.1], "yaw_rate": [0.2, 0.3]}})})
    env = WalkEnv(robot="plen", task=task)
    try:
        for seed in range(5):
            obs, info = env.reset(seed=seed)
            cmd = _command_block(env, obs)
            assert 0.05 <= cmd[0] <= 0.1 and cmd[1] == 0.0 and 0.2 <= cmd[2] <= 0.3
        drawn = env.command.copy()
        env.command_override = np.array([-0.02, 0.01, -0.4])
        obs, _, _, _, info = env.step(np.zeros(env.action_space.shape))
        assert np.allclose(_command_block(env, obs), (-0.02, 0.01, -0.4))
        assert np.allclose(info["command"], (-0.02, 0.01, -0.4))
        assert np.allclose(env.current_observation()[0][-3:], (-0.02, 0.01, -0.4))
        env.command_override = None
        obs, _, _, _, _ = env.step(np.zeros(env.action_space.shape))
        assert np.allclose(_command_block(env, obs), drawn)
    finally:
        env.close()
