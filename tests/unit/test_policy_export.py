"""export_policy: checkpoint (as training writes it) -> .npz -> NumpyPolicy acts like the agent, for every algorithm;
bad checkpoints and mismatched robots/tasks are refused."""
import json
import os

import numpy as np
import pytest
import torch

from op3_walk.agents import AGENTS
from op3_walk.policy.export import ExportError, export_policy, main
from op3_walk.policy.runtime import NumpyPolicy, PolicyFileError, PolicyMismatchError, expected_interface
from op3_walk.training.checkpoint import CheckpointError, save_checkpoint

TASK_OF = {"td3": "walk", "ddpg": "walk", "sac": "walk", "dqn": "zmp_tracking"}   # dqn needs a discrete task


def small_agent(algo, obs_dim, act_dim, seed=7, cls=None):
    """A tiny agent; seed 7 so that the exporter (which rebuilds with seed 0) must really load the weights."""
    agent_cls, config_cls = AGENTS[algo]
    config = config_cls(hidden_sizes=[16, 8], batch_size=32, buffer_size=64, learning_starts=0)
    return (cls or agent_cls)(obs_dim, act_dim, config, seed=seed)


def write_checkpoint(path, agent, **meta):
    """What TrainingSession.save writes."""
    full = dict(algo=agent.algo, obs_dim=agent.obs_dim, act_dim=agent.act_dim, env_steps=agent.env_steps,
                updates=agent.updates, episodes=3)
    full.update(meta)
    return save_checkpoint(str(path), {"agent": agent.state_dict(), "trainer": {"episodes": 3}}, full)


def trained_a_little(agent, steps=80):
    """A few real updates, so the actor is not at its initialisation and the agent's counters move."""
    rng = np.random.default_rng(0)
    for _ in range(steps):
        obs = rng.normal(size=agent.obs_dim).astype(np.float32)
        action = agent.act(obs)
        agent.observe(obs, action, float(rng.normal()), rng.normal(size=agent.obs_dim).astype(np.float32), False)
        for _ in range(agent.updates_due()):
            agent.update()
    return agent


@pytest.mark.parametrize("algo", sorted(AGENTS))
def test_exported_policy_acts_like_the_agent(tmp_path, algo):
    iface = expected_interface("plen", TASK_OF[algo])
    agent = trained_a_little(small_agent(algo, iface.obs_dim, iface.action_size))
    assert agent.updates > 0
    ckpt = write_checkpoint(tmp_path / "checkpoint.pt", agent, robot="plen", task=TASK_OF[algo])
    policy, worst = export_policy(ckpt, str(tmp_path / "out" / "policy.npz"))
    assert sorted(os.listdir(tmp_path / "out")) == ["policy.npz"]      # no temporary file left behind

    assert policy.algo == algo and policy.robot == "plen" and policy.task == TASK_OF[algo]
    assert policy.env_steps == agent.env_steps and policy.source_checkpoint == os.path.abspath(ckpt)
    assert policy.layer_sizes == [iface.obs_dim, 16, 8, iface.action_size]
    assert policy.control_rate_hz == 50.0 and not policy.normalizes_observations
    assert policy.discrete == (algo == "dqn")
    assert policy.meta["updates"] == agent.updates and len(policy.meta["source_sha256"]) == 64
    policy.check_compatible("plen", TASK_OF[algo])

    rng = np.random.default_rng(42)
    for _ in range(200):
        obs = rng.normal(0.0, 2.0, iface.obs_dim).astype(np.float32)
        expected = agent.act(obs, explore=False)
        if algo == "dqn":
            assert policy.act(obs) == expected
        else:
            got = policy.act(obs)
            assert got.dtype == np.float32 and got.shape == (iface.action_size,)
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    if algo != "dqn":
        assert worst <= 1e-5


def test_policy_file_records_configs_and_the_code_that_trained_and_exported_it(tmp_path):
    from op3_walk.provenance import git_version
    iface = expected_interface("op3", "op3_walk_fast")
    agent = small_agent("td3", iface.obs_dim, iface.action_size)
    trained = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True}
    ckpt = write_checkpoint(tmp_path / "a.pt", agent, robot="op3", task="op3_walk_fast", git=trained)
    meta = export_policy(ckpt, str(tmp_path / "a.npz"))[0].meta
    assert meta["training_git"] == trained and meta["export_git"] == git_version()
    assert len(meta["export_git"]["commit"]) == 40            # the tests run in the repository
    assert meta["agent_config"]["hidden_sizes"] == [16, 8] and meta["agent_config"]["actor_action_penalty"] == 0.0
    assert meta["task_config"]["action"]["gait"] == "op3_fast" and meta["task_config"]["reward"]["posture"] == 1.0
    old = write_checkpoint(tmp_path / "b.pt", agent, robot="op3", task="op3_walk_fast")   # before the field
    assert export_policy(old, str(tmp_path / "b.npz"))[0].meta["training_git"] == {"commit": "", "dirty": False}
    assert git_version(str(tmp_path)) == {"commit": "", "dirty": False}                  # not a repository


def test_exported_policy_is_refused_by_another_robot_or_task(tmp_path):
    iface = expected_interface("plen", "walk")
    ckpt = write_checkpoint(tmp_path / "c.pt", small_agent("td3", iface.obs_dim, iface.action_size),
                            robot="plen", task="walk")
    policy, _ = export_policy(ckpt, str(tmp_path / "p.npz"))
    with pytest.raises(PolicyMismatchError, match="robot plen, not op3"):
        policy.check_compatible("op3", "walk")
    with pytest.raises(PolicyMismatchError, match="observation layout differs"):
        policy.check_compatible("plen", "velocity_tracking")
    with pytest.raises(PolicyMismatchError, match="mode policy 'joint_targets', expected 'residual'"):
        policy.check_compatible("plen", "residual_walk")


def test_checkpoint_that_does_not_fit_its_own_robot_is_refused(tmp_path):
    iface = expected_interface("plen", "walk")
    agent = small_agent("td3", iface.obs_dim, iface.action_size)
    ckpt = write_checkpoint(tmp_path / "c.pt", agent, robot="op3", task="walk")   # op3 has 20 joints
    with pytest.raises(ExportError, match="observation 68 / action 20, but the checkpoint has 62 / 18"):
        export_policy(ckpt, str(tmp_path / "p.npz"))
    ckpt = write_checkpoint(tmp_path / "d.pt", agent, robot="plen", task="zmp_tracking")
    with pytest.raises(ExportError):
        export_policy(ckpt, str(tmp_path / "p.npz"))
    assert not (tmp_path / "p.npz").exists()


def test_corrupt_checkpoint_and_corrupt_policy_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="bad.pt"):
        export_policy(str(bad), str(tmp_path / "p.npz"))
    iface = expected_interface("plen", "walk")
    ckpt = write_checkpoint(tmp_path / "c.pt", small_agent("sac", iface.obs_dim, iface.action_size),
                            robot="plen", task="walk")
    export_policy(ckpt, str(tmp_path / "p.npz"))
    data = (tmp_path / "p.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(PolicyFileError, match="half.npz cannot be read"):
        NumpyPolicy(str(tmp_path / "half.npz"))


def test_gymnasium_env_checkpoint_exports_but_fits_no_robot(tmp_path):
    agent = small_agent("td3", 3, 1)
    ckpt = write_checkpoint(tmp_path / "pendulum.pt", agent, env="Pendulum-v1")
    policy, _ = export_policy(ckpt, str(tmp_path / "pendulum.npz"))
    assert policy.env == "Pendulum-v1" and policy.robot == "" and policy.observation_layout == [("observation", 3)]
    obs = np.array([0.5, -0.2, 1.0], np.float32)
    np.testing.assert_allclose(policy.act(obs), agent.act(obs, explore=False), atol=1e-5)
    with pytest.raises(PolicyMismatchError, match="gymnasium env 'Pendulum-v1'"):
        policy.check_compatible("plen", "walk")


class NormalizingTD3(AGENTS["td3"][0]):
    """A TD3 agent with fixed observation normalisation, as a future agent with running statistics would have."""

    def build(self):
        super().build()
        gen = np.random.default_rng(5)
        self.mean = torch.tensor(gen.normal(size=self.obs_dim), dtype=torch.float32)
        self.std = torch.tensor(gen.uniform(0.5, 3.0, self.obs_dim), dtype=torch.float32)

    def normalize_obs(self, obs):
        return ((obs - self.mean) / self.std).clamp(-3.0, 3.0)

    def observation_normalization(self):
        return self.mean, self.std, 3.0


class SilentlyNormalizingTD3(NormalizingTD3):
    """Normalises but does not say how: an export would act differently, so it is refused."""

    observation_normalization = None


def test_observation_normalisation_is_exported(tmp_path):
    iface = expected_interface("plen", "walk")
    agent = small_agent("td3", iface.obs_dim, iface.action_size, cls=NormalizingTD3)
    from op3_walk.policy.export import policy_arrays, verify
    arrays = policy_arrays(agent, iface, {"source_checkpoint": "", "env_steps": 0})
    assert set(arrays) >= {"obs_mean", "obs_std", "obs_clip"} and float(arrays["obs_clip"]) == 3.0
    policy = NumpyPolicy.from_arrays(arrays)
    assert policy.normalizes_observations
    verify(agent, policy, samples=100)      # raises if any action differs by more than 1e-5
    obs = np.random.default_rng(0).normal(0.0, 10.0, iface.obs_dim).astype(np.float32)   # clipping matters here
    np.testing.assert_allclose(policy.act(obs), agent.act(obs, explore=False), atol=1e-5)

    silent = small_agent("td3", iface.obs_dim, iface.action_size, cls=SilentlyNormalizingTD3)
    with pytest.raises(ExportError, match="normalises observations"):
        policy_arrays(silent, iface, {})


def test_unfaithful_export_is_refused_before_writing(tmp_path, monkeypatch):
    iface = expected_interface("plen", "walk")
    ckpt = write_checkpoint(tmp_path / "c.pt", small_agent("td3", iface.obs_dim, iface.action_size),
                            robot="plen", task="walk")
    from op3_walk.policy import export as export_module
    real = export_module.network_arrays

    def off_by_a_bit(net):
        weights, biases, activations = real(net)
        biases[-1] = biases[-1] + 1e-3
        return weights, biases, activations
    monkeypatch.setattr(export_module, "network_arrays", off_by_a_bit)
    with pytest.raises(ExportError, match="differs from the agent"):
        export_policy(ckpt, str(tmp_path / "p.npz"))
    assert not (tmp_path / "p.npz").exists()


def test_command_line(tmp_path, capsys):
    iface = expected_interface("plen", "walk")
    ckpt = write_checkpoint(tmp_path / "run" / "checkpoint.pt", small_agent("ddpg", iface.obs_dim,
                                                                            iface.action_size),
                            robot="plen", task="walk")
    assert main([ckpt]) == 0                                   # default: next to the checkpoint
    out = capsys.readouterr().out
    assert "ddpg policy for robot plen, task walk" in out and "max |numpy - torch|" in out
    policy = NumpyPolicy(str(tmp_path / "run" / "checkpoint.npz"))
    assert json.loads(json.dumps(policy.meta))["algo"] == "ddpg"
    assert main([ckpt, "--out", str(tmp_path / "x.npz"), "--check-samples", "0"]) == 0
    assert (tmp_path / "x.npz").exists()
    assert main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "y.npz")]) == 1
    assert "export_policy: error:" in capsys.readouterr().err and not (tmp_path / "y.npz").exists()
    assert main([ckpt, "--robot", "op3", "--out", str(tmp_path / "z.npz")]) == 1
    assert "robot" in capsys.readouterr().err
