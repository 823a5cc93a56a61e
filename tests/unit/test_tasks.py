"""Task options of WalkEnv: observation blocks, velocity command, domain randomisation, latency, pushes."""
import math
import os
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from op3_walk.config import ConfigError
from op3_walk.envs import ENV_IDS, WalkEnv, load_task

pytestmark = pytest.mark.sim  # runs PyBullet: `make test-portable` runs it under two OpenBLAS kernels

NOMINAL = {"enabled": True, "friction": [0.8, 0.8], "mass_scale": [1.0, 1.0], "kp_scale": [1.0, 1.0],
           "latency_steps": [0, 0], "joint_position_noise": 0.0, "joint_velocity_noise": 0.0, "gyro_noise": 0.0,
           "orientation_noise": 0.0}


def make(robot="plen", task="walk", **overrides):
    return WalkEnv(robot=robot, task=load_task(task, overrides=overrides or None))


def randomized(**changes):
    return dict(NOMINAL, **changes)


def blocks(env, obs):
    out, start = {}, 0
    for name, size in env.layout:
        out[name] = obs[start:start + size]
        start += size
    assert start == obs.size
    return out


def run(env, seed, steps, actions=None):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    trace = [obs]
    for _ in range(steps):
        action = rng.uniform(-1, 1, env.action_space.shape) if actions is None else actions
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append(np.append(obs, reward))
        if terminated or truncated:
            break
    return np.concatenate(trace), info


def test_optional_observation_blocks():
    env = make(observation={"orientation": "quaternion", "command": True, "privileged": True},
               command={"forward": [0.1, 0.3], "lateral": [0.0, 0.0], "yaw_rate": [-0.2, 0.2]})
    try:
        assert [name for name, _ in env.layout] == ["joint_positions", "joint_velocities", "quaternion", "gyro",
                                                    "foot_contacts", "previous_action", "command", "privileged"]
        obs, info = env.reset(seed=1)
        assert env.observation_space.contains(obs)
        b = blocks(env, obs)
        assert np.allclose(b["quaternion"], (0, 0, 0, 1), atol=1e-6)
        assert 0.1 <= b["command"][0] <= 0.3 and b["command"][1] == 0.0 and abs(b["command"][2]) <= 0.2
        assert np.allclose(b["command"], info["command"])
        assert b["privileged"][3] == pytest.approx(env.robot.spawn_height, abs=1e-3)  # torso height
        obs, _, _, _, info = env.step(np.zeros(env.action_space.shape))
        assert np.allclose(blocks(env, obs)["command"], info["command"])
    finally:
        env.close()


def test_command_is_drawn_per_episode_from_the_seeded_rng():
    env = make(command={"forward": [0.0, 0.5], "resample_s": 0.0})
    try:
        first = env.reset(seed=3)[1]["command"]
        again = env.reset(seed=3)[1]["command"]
        other = env.reset(seed=4)[1]["command"]
        assert np.array_equal(first, again) and not np.array_equal(first, other)
        assert 0.0 <= first[0] <= 0.5
    finally:
        env.close()


def test_command_resamples_during_the_episode():
    env = make(command={"forward": [0.0, 0.5], "resample_s": 0.5})
    try:
        env.reset(seed=0)
        seen = {tuple(env.step(np.zeros(18))[4]["command"]) for _ in range(int(1.6 * env.robot.control_rate_hz))}
        assert len(seen) >= 3
    finally:
        env.close()


def test_randomisation_is_off_by_default_and_deterministic_when_on():
    assert not load_task("walk").randomization.enabled
    on = randomized(friction=[0.4, 1.25], mass_scale=[0.9, 1.1], kp_scale=[0.8, 1.2], latency_steps=[0, 2],
                    joint_position_noise=0.01, push_interval_s=0.3, push_force=[0.5, 1.0])
    a, b = make(randomization=on), make(randomization=on)
    plain = make()
    try:
        trace_a, _ = run(a, seed=5, steps=60)
        trace_b, _ = run(b, seed=5, steps=60)
        assert trace_a.tobytes() == trace_b.tobytes()  # same seed: same physics, noise, latency and pushes
        trace_c, _ = run(a, seed=6, steps=60)
        assert trace_c.shape != trace_a.shape or not np.array_equal(trace_a, trace_c)
        trace_plain, _ = run(plain, seed=5, steps=60)
        assert trace_plain.shape != trace_a.shape or not np.array_equal(trace_plain, trace_a)
    finally:
        for env in (a, b, plain):
            env.close()


def test_nominal_randomisation_changes_nothing():
    rand, plain = make(randomization=NOMINAL), make()
    try:
        assert run(rand, seed=2, steps=50)[0].tobytes() == run(plain, seed=2, steps=50)[0].tobytes()
    finally:
        rand.close()
        plain.close()


def test_mass_scaling_reaches_the_simulator():
    heavy = make(randomization=randomized(mass_scale=[1.2, 1.2]))
    try:
        heavy.reset(seed=0)
        for _ in range(30):
            state = heavy.step(np.zeros(18))[4]["state"]
        assert state.foot_forces.sum() / 9.81 == pytest.approx(1.2 * 0.496, rel=0.03)
    finally:
        heavy.close()


def test_low_friction_makes_feet_slip():
    def slip(friction):
        env = make(randomization=randomized(friction=[friction, friction]))
        try:
            env.reset(seed=0)
            action = np.zeros(18)
            for k in range(120):  # swing the legs back and forth with both feet down
                action[[2, 8]] = 0.8 * math.sin(2 * math.pi * k / 30.0)
                info = env.step(action)[4]
            return abs(info["state"].base_position[0]) + abs(info["state"].base_position[1])
        finally:
            env.close()
    assert slip(0.05) != slip(1.25)


@pytest.mark.parametrize("latency", [0, 1, 2])
def test_action_latency_delays_the_targets_by_whole_periods(latency):
    env = make(randomization=randomized(latency_steps=[latency, latency]))
    try:
        env.reset(seed=0)
        assert env.latency_steps == latency
        stance, initial = env.robot.stance, env.backend.joint_targets  # the reset pose is held meanwhile
        applied = []
        for k in range(4):
            env.step(np.full(18, 0.1 * (k + 1)))
            applied.append(env.backend.joint_targets)
        for k in range(4):
            expected = initial if k < latency else stance + 0.1 * (k + 1 - latency) * env.task.action.scale
            assert np.allclose(applied[k], expected, atol=1e-9), (k, applied[k][:3])
    finally:
        env.close()


def test_pushes_disturb_the_robot():
    pushed = make(randomization=randomized(push_interval_s=0.2, push_force=[2.0, 2.0], push_duration_s=0.1))
    calm = make(randomization=NOMINAL)
    try:
        speeds = []
        for env in (pushed, calm):
            env.reset(seed=0)
            top = 0.0
            for _ in range(40):
                state = env.step(np.zeros(18))[4]["state"]
                top = max(top, float(np.linalg.norm(state.base_linear_velocity[:2])))
            speeds.append(top)
        assert speeds[0] > 5 * speeds[1]
    finally:
        pushed.close()
        calm.close()


def test_observation_noise_only_when_asked():
    noisy = make(randomization=randomized(joint_position_noise=0.05))
    try:
        obs_a, _ = noisy.reset(seed=0)
        b = blocks(noisy, obs_a)
        assert np.std(b["joint_positions"]) > 0.02  # reset noise alone is +-0.02 uniform
        assert np.array_equal(b["previous_action"], np.zeros(18)) and set(b["foot_contacts"]) <= {0.0, 1.0}
    finally:
        noisy.close()


@pytest.mark.parametrize("section, value, match", [
    ("randomization", {"friction": [1.0, 0.5]}, "friction"),
    ("randomization", {"latency_steps": [-1, 2]}, "latency_steps"),
    ("action", {"mode": "teleport"}, "mode"),
    ("observation", {"orientation": "euler"}, "orientation"),
    ("command", {"forward": [0.5, 0.1]}, "forward"),
    ("randomization", {"wind": 3.0}, "unknown key"),
])
def test_bad_task_sections_are_refused(section, value, match):
    with pytest.raises(ConfigError, match=match):
        load_task("walk", overrides={section: value})


# -- every registered environment ----------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_registered_env_passes_check_env_and_is_bit_reproducible(env_id):
    env = gymnasium.make(env_id)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env.unwrapped)
        assert not [str(w.message) for w in caught]
        walk = env.unwrapped
        robot, task = ENV_IDS[env_id]
        assert walk.robot.name == robot and env.spec.kwargs["task"] == task
        assert walk.observation_space.shape == (sum(n for _, n in walk.layout),)

        def episode(seed):
            obs, _ = env.reset(seed=seed)
            env.action_space.seed(seed)
            out = [obs.tobytes()]
            for _ in range(40):
                obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
                out.append(obs.tobytes() + np.float64(reward).tobytes())
                assert set(info["reward_terms"]) == {name for name, _ in walk.task.reward.active()}
                if terminated or truncated:
                    break
            return out
        assert episode(11) == episode(11)
    finally:
        env.close()


@pytest.mark.parametrize("robot", ["plen", "op3"])
def test_residual_with_zero_action_replays_the_open_loop_gait(robot):
    from op3_walk.robots.gait import play
    env = WalkEnv(robot=robot, task=load_task("residual_walk", overrides={"reset_noise": 0.0}))
    try:
        env.reset(seed=0)
        steps = int(round(3.0 * env.robot.control_rate_hz))
        for _ in range(steps):
            info = env.step(np.zeros(env.action_space.shape))[4]
        result = play(env.robot, env.gait, seconds=3.0)
        assert info["distance"] == pytest.approx(result.distance, abs=1e-9)
        assert info["distance"] > 0.0
    finally:
        env.close()


@pytest.mark.parametrize("robot", ["plen", "op3"])
def test_gait_scaling_action_13_is_the_reference_gait(robot):
    env = WalkEnv(robot=robot, task="zmp_tracking")
    try:
        assert env.action_space == gymnasium.spaces.Discrete(27)
        assert np.array_equal(env.action_map.scales(13), np.ones(3))  # (0, 0, 0): unscaled
        env.reset(seed=0)
        env.step(13)
        assert np.allclose(env.backend.joint_targets,
                           np.clip(env.gait.joint_targets(env.robot.control_period_s), env.robot.lower,
                                   env.robot.upper))
        env.step(26)  # every group +10%
        t = 2 * env.robot.control_period_s
        assert np.allclose(env.backend.joint_targets, np.clip(env.gait.joint_targets(t, scales=[1.1, 1.1, 1.1]),
                                                              env.robot.lower, env.robot.upper))
        for bad in (27, -1, 1.5, np.array([1, 2]), "3"):
            with pytest.raises(ValueError, match="discrete action"):
                env.step(bad)
        assert env.step_count == 2
    finally:
        env.close()


def test_posture_actions_hold_their_posture():
    env = gymnasium.make("op3_walk/Op3ForwardDQN-v0").unwrapped
    try:
        assert env.action_space.n == len(env.action_map.names) >= 10
        env.reset(seed=0)
        k = env.action_map.names.index("lift_left")
        for _ in range(25):
            obs, reward, terminated, truncated, info = env.step(k)
        assert np.allclose(env.backend.joint_targets, env.action_map.table[k])
        from op3_walk.robots.kinematics import BipedKinematics
        (left, _), (right, _) = BipedKinematics(env.robot).foot_poses(info["state"].joint_positions)
        assert left[2] - right[2] == pytest.approx(0.04, abs=0.005)  # the joints reached it: left sole 4 cm up
        assert np.array_equal(blocks(env, obs)["previous_action"], np.eye(env.action_space.n)[k])
    finally:
        env.close()


def test_readme_lists_every_env_as_the_configs_say():
    from op3_walk import PACKAGE_ROOT
    from op3_walk.envs import describe
    assert describe.main(["--check", os.path.join(PACKAGE_ROOT, "README.md")]) == 0
    table = describe.table()
    assert all("`%s`" % env_id in table for env_id in ENV_IDS)
