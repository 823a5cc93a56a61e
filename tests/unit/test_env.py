"""WalkEnv: gymnasium compliance, determinism, standing, falling, truncation, action validation, spaces, rewards."""
import dataclasses
import math
import os
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import op3_walk.envs
from op3_walk import CONFIG_DIR
from op3_walk.config import ConfigError
from op3_walk.envs import (PLEN_WALK_ID, REWARD_TERMS, RewardWeights, WalkEnv, load_task, make_spaces,
                           observation_layout)
from op3_walk.robots import load_robot

pytestmark = pytest.mark.sim  # runs PyBullet: `make test-portable` runs it under two OpenBLAS kernels


@pytest.fixture(scope="module")
def env():
    e = WalkEnv()
    yield e
    e.close()


def rollout(env, seed, steps, action_seed=0):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    observations, rewards = [obs], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards)


@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
def test_check_env_passes_without_warnings(render_mode):
    e = gymnasium.make(PLEN_WALK_ID, render_mode=render_mode)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(e.unwrapped)
        assert not [str(w.message) for w in caught]
    finally:
        e.close()


def test_gymnasium_make_after_import():
    e = gymnasium.make(PLEN_WALK_ID)
    try:
        assert isinstance(e.unwrapped, WalkEnv)
        assert e.unwrapped.robot.name == "plen"
        assert e.spec.max_episode_steps is None  # the env truncates itself
        obs, _ = e.reset(seed=0)
        assert obs.shape == (62,)
        e.step(e.action_space.sample())
    finally:
        e.close()


def test_registration_is_idempotent():
    import importlib
    importlib.reload(op3_walk.envs)
    assert PLEN_WALK_ID in gymnasium.registry


def test_observation_layout_and_spaces(env):
    layout = observation_layout(env.robot, env.task)
    assert layout == env.layout == [("joint_positions", 18), ("joint_velocities", 18), ("gravity", 3), ("gyro", 3),
                      ("foot_contacts", 2), ("previous_action", 18)]
    obs_space, act_space = make_spaces(load_robot("plen"), load_task("walk"))
    assert obs_space == env.observation_space and act_space == env.action_space
    assert obs_space.shape == (sum(n for _, n in layout),) == (62,)
    assert obs_space.dtype == np.float32 and act_space.dtype == np.float32
    assert np.all(np.isfinite(obs_space.low)) and np.all(np.isfinite(obs_space.high))
    assert act_space.shape == (18,) and np.all(act_space.low == -1) and np.all(act_space.high == 1)


def test_reset_observation_blocks(env):
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    blocks, start = {}, 0
    for name, size in env.layout:
        blocks[name] = obs[start:start + size]
        start += size
    assert np.all(np.abs(blocks["joint_positions"]) <= env.task.reset_noise + 1e-6)
    assert np.any(blocks["joint_positions"] != 0)
    assert np.allclose(blocks["gravity"], (0, 0, -1), atol=1e-6)
    assert np.all(blocks["previous_action"] == 0)
    assert info["distance"] == 0.0 and env.step_count == 0


def test_same_seed_is_bit_identical_and_different_seed_differs(env):
    obs_a, rew_a = rollout(env, seed=7, steps=100)
    obs_b, rew_b = rollout(env, seed=7, steps=100)
    assert obs_a.tobytes() == obs_b.tobytes() and rew_a.tobytes() == rew_b.tobytes()
    other = WalkEnv()  # another env (and simulator) in the same process gives the same numbers
    try:
        obs_c, rew_c = rollout(other, seed=7, steps=100)
    finally:
        other.close()
    assert obs_a.tobytes() == obs_c.tobytes() and rew_a.tobytes() == rew_c.tobytes()
    obs_d, _ = rollout(env, seed=8, steps=100)
    assert obs_d.shape != obs_a.shape or not np.array_equal(obs_a, obs_d)


def test_stance_stands_for_three_seconds(env):
    env.reset(seed=0)
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    accelerations = []
    for _ in range(int(3 * env.robot.control_rate_hz)):
        obs, reward, terminated, truncated, info = env.step(zero)
        assert not terminated and not info["fell"]
        accelerations.append(info["state"].linear_acceleration)
    state = info["state"]
    assert state.base_position[2] == pytest.approx(0.158, abs=0.01)
    assert state.tilt() < 0.05
    # accelerometer at rest (averaged over the last 0.5 s: the stance has sub-mm stick-slip jitter)
    assert np.allclose(np.mean(accelerations[-30:], axis=0), (0, 0, 9.81), atol=0.2)
    assert state.foot_contacts.all()
    assert abs(info["distance"]) < 0.02
    assert reward > 0.0  # alive bonus dominates when standing still


def _tilted(axis, angle):
    return tuple(np.asarray(axis, dtype=float) * math.sin(angle / 2.0)) + (math.cos(angle / 2.0),)


@pytest.fixture(scope="module", params=["plen", "op3"])
def robot_env(request):
    e = WalkEnv(robot=request.param)
    yield e
    e.close()


@pytest.mark.parametrize("direction, axis, sign", [
    ("forward", (0, 1, 0), 1.0),   # +pitch: torso z leans to +x
    ("backward", (0, 1, 0), -1.0),
    ("left", (1, 0, 0), -1.0),     # -roll: torso z leans to +y
    ("right", (1, 0, 0), 1.0),
])
def test_falls_are_detected_in_every_direction(robot_env, direction, axis, sign):
    env = robot_env
    env.reset(seed=0, options={"base_orientation": _tilted(axis, sign * 0.45)})
    assert env.state.tilt() < env.task.max_tilt  # not already "fallen" at the start
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for _ in range(150):
        obs, reward, terminated, truncated, info = env.step(zero)
        if terminated:
            break
    assert terminated and info["fell"] and not truncated
    assert info["reward_terms"]["fall"] == -env.task.reward.fall
    assert info["reward_terms"]["alive"] == 0.0
    lean = {"forward": (0, 1), "backward": (0, -1), "left": (1, 1), "right": (1, -1)}[direction]
    assert lean[1] * info["state"].base_position[lean[0]] > 0.02  # it fell the way it leaned


def test_each_robot_stands_in_its_stance(robot_env):
    env = robot_env
    env.reset(seed=0)
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for _ in range(int(3 * env.robot.control_rate_hz)):
        obs, reward, terminated, truncated, info = env.step(zero)
        assert not terminated
    assert info["state"].base_position[2] == pytest.approx(env.robot.spawn_height, abs=0.01)
    assert info["state"].tilt() < 0.05 and info["state"].foot_contacts.all()


def test_truncation_at_max_episode_steps():
    with pytest.raises(ConfigError, match="max_episode_steps"):
        load_task(load_task("walk"), overrides={"max_episode_steps": 0})
    e = WalkEnv(task=load_task("walk", overrides={"max_episode_steps": 5}))
    try:
        e.reset(seed=0)
        zero = np.zeros(e.action_space.shape, dtype=np.float32)
        flags = [e.step(zero)[2:4] for _ in range(5)]
        assert flags[:4] == [(False, False)] * 4
        assert flags[4] == (False, True)
        assert e.step_count == 5
    finally:
        e.close()


@pytest.mark.parametrize("action", [np.full(18, np.nan), np.r_[np.zeros(17), np.inf], np.zeros(17),
                                    np.zeros(19), np.zeros((2, 18))])
def test_bad_actions_raise_and_do_not_advance(env, action):
    env.reset(seed=0)
    env.step(np.zeros(18))
    count, time = env.step_count, env.state.time
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    assert env.step_count == count and env.state.time == time
    env.step(np.zeros(18))  # still usable
    assert env.step_count == count + 1


def test_step_info_and_reward_terms(env):
    env.reset(seed=0)
    action = np.full(18, 0.1, dtype=np.float32)
    obs, reward, terminated, truncated, info = env.step(action)
    assert set(info) >= {"reward_terms", "fell", "distance", "state"}
    assert set(info["reward_terms"]) == {"forward_velocity", "alive", "tilt", "action_rate", "fall"}  # walk.yaml's
    assert reward == pytest.approx(sum(info["reward_terms"].values()))
    assert info["reward_terms"]["action_rate"] == pytest.approx(-env.task.reward.action_rate * 18 * 0.1 ** 2)
    assert info["distance"] == pytest.approx(info["state"].base_position[0], abs=1e-12)
    assert np.allclose(obs[-18:], 0.1)  # previous action
    assert env.state is info["state"] and env.step_count == 1


def test_reward_weights_name_every_term():
    assert [f.name for f in dataclasses.fields(RewardWeights)] == list(REWARD_TERMS)
    assert all(getattr(RewardWeights(), name) == 0.0 for name in REWARD_TERMS)  # a task lists what it uses


def test_forward_velocity_term_rewards_forward_motion():
    weights = RewardWeights(forward_velocity=2.0)
    robot = load_robot("plen")
    e = WalkEnv(robot=robot, task=dataclasses.replace(load_task("walk"), reward=weights, reset_noise=0.0))
    try:
        e.reset(seed=0, options={"base_orientation": _tilted((0, 1, 0), 0.45)})  # topples forward
        total = sum(e.step(np.zeros(18))[1] for _ in range(10))
        assert total > 0.0
        assert total == pytest.approx(2.0 * e.state.base_position[0] / e.robot.control_period_s, rel=1e-9)
    finally:
        e.close()


def test_invalid_task_config_raises(tmp_path):
    text = open(os.path.join(CONFIG_DIR, "tasks", "walk.yaml")).read()
    bad = tmp_path / "walk.yaml"
    bad.write_text(text.replace("max_tilt: 0.8", "max_tilt: 4.0"))
    with pytest.raises(ConfigError, match="max_tilt"):
        load_task(str(bad))
    bad.write_text(text + "\nspeed: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_task(str(bad))


def test_unknown_reset_option_raises(env):
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(seed=0, options={"push": 1.0})


def test_rgb_array_render():
    e = WalkEnv(render_mode="rgb_array")
    try:
        e.reset(seed=0)
        frame = e.render()
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
        assert e.metadata["render_fps"] == 50
    finally:
        e.close()
