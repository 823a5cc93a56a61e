"""TD3 agent: update maths, acting, learning a toy task, config, save/load."""
import dataclasses
import io

import numpy as np
import pytest
import torch
from torch import nn

from op3_walk.agents import AGENTS, agent_classes
from op3_walk.agents.replay import Batch
from op3_walk.agents.td3 import TD3Agent, TD3Config, polyak_update, target_policy_smoothing
from op3_walk.config import ConfigError, from_dict, load, load_yaml

OBS, ACT = 5, 3


def small_config(**overrides):
    base = dict(hidden_sizes=[32, 32], batch_size=16, buffer_size=500, learning_starts=0, torch_threads=1)
    base.update(overrides)
    return TD3Config(**base)


def filled_agent(n=64, seed=0, **overrides):
    agent = TD3Agent(OBS, ACT, small_config(**overrides), seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        agent.observe(rng.normal(size=OBS), rng.uniform(-1, 1, ACT), float(rng.normal()), rng.normal(size=OBS),
                      bool(rng.random() < 0.1))
    return agent


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- update maths
def test_repeated_updates_on_fixed_batch_lower_critic_loss():
    agent = filled_agent(critic_lr=1e-3)
    batch = agent.memory.sample(16)
    first = agent.update(batch)["critic_loss"]
    for _ in range(100):
        last = agent.update(batch)["critic_loss"]
    assert last < 0.3 * first


def test_polyak_update_is_exact():
    torch.manual_seed(0)
    target, online = nn.Linear(4, 3), nn.Linear(4, 3)
    expected = [(t + o) / 2 for t, o in zip(params(target), params(online))]
    polyak_update(target, online, 0.5)
    assert same(params(target), expected)
    polyak_update(target, online, 1.0)
    assert same(params(target), params(online))


def test_polyak_update_small_tau():
    torch.manual_seed(1)
    target, online = nn.Linear(4, 3), nn.Linear(4, 3)
    expected = [0.99 * t + 0.01 * o for t, o in zip(params(target), params(online))]
    polyak_update(target, online, 0.01)
    assert all(torch.allclose(p, e, atol=1e-7, rtol=0) for p, e in zip(params(target), expected))


def test_actor_and_targets_move_only_every_policy_delay():
    agent = filled_agent(policy_delay=2)
    actor0, actor_t0, critic_t0 = params(agent.actor), params(agent.actor_target), params(agent.critic_target)
    critic0 = params(agent.critic)
    stats = agent.update()
    assert set(stats) == {"critic_loss", "q_mean"}
    assert not same(params(agent.critic), critic0)
    assert same(params(agent.actor), actor0)
    assert same(params(agent.actor_target), actor_t0) and same(params(agent.critic_target), critic_t0)
    stats = agent.update()
    assert set(stats) == {"critic_loss", "q_mean", "actor_loss"}
    assert not same(params(agent.actor), actor0)
    assert not same(params(agent.actor_target), actor_t0) and not same(params(agent.critic_target), critic_t0)
    assert agent.updates == 2
    assert all(p.requires_grad for p in agent.critic.parameters())


def test_target_policy_smoothing_clips_noise_and_actions():
    gen = torch.Generator().manual_seed(0)
    zeros = torch.zeros(2000, 4)
    smoothed = target_policy_smoothing(zeros, noise_std=10.0, noise_clip=0.5, generator=gen)
    assert smoothed.abs().max() == 0.5
    assert (smoothed.abs() == 0.5).float().mean() > 0.9  # huge noise: nearly all clipped
    near_edge = target_policy_smoothing(torch.full((2000, 4), 0.9), 10.0, 0.5, gen)
    assert near_edge.min() >= 0.4 - 1e-6 and near_edge.max() == 1.0  # noise clip, then action clip to [-1, 1]
    small = target_policy_smoothing(zeros, 0.2, 0.5, gen)
    assert 0.15 < small.std() < 0.25 and small.abs().max() <= 0.5
    assert torch.equal(target_policy_smoothing(zeros + 0.3, 0.0, 0.5, gen), zeros + 0.3)
    a = target_policy_smoothing(zeros, 0.2, 0.5, torch.Generator().manual_seed(7))
    b = target_policy_smoothing(zeros, 0.2, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_td_target_ignores_next_state_when_terminated():
    """With gamma > 0 and terminated=1, Q regresses onto the reward alone."""
    agent = TD3Agent(1, 1, small_config(hidden_sizes=[16], critic_lr=1e-2, target_noise=0.0), seed=0)
    n = 32
    batch = Batch(torch.zeros(n, 1), torch.zeros(n, 1), torch.full((n,), 2.0), torch.zeros(n, 1), torch.ones(n))
    with torch.no_grad():  # make the target critic predict something far from the reward
        for p in agent.critic_target.parameters():
            p.fill_(0.0)
        agent.critic_target.layers[-1].bias.fill_(100.0)   # both members
    for _ in range(300):
        stats = agent.update(batch)
    assert abs(stats["q_mean"] - 2.0) < 0.05


# ---------------------------------------------------------------- learning
def test_learns_contextual_bandit():
    """obs ~ U(-1, 1), reward -(a - 0.5 obs)^2, every step terminal: the policy must become a = 0.5 obs."""
    cfg = TD3Config(hidden_sizes=[64, 64], actor_lr=3e-3, critic_lr=3e-3, batch_size=64, buffer_size=5000,
                    learning_starts=200, exploration_noise=0.2, torch_threads=1)
    agent = TD3Agent(1, 1, cfg, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(800):
        obs = rng.uniform(-1, 1, 1).astype(np.float32)
        action = agent.act(obs)
        agent.observe(obs, action, float(-(action[0] - 0.5 * obs[0]) ** 2), obs, True)
        if agent.ready():
            agent.update()
    assert agent.updates == 800 - 200 + 1
    grid = np.linspace(-1, 1, 21, dtype=np.float32)
    errors = [abs(agent.act(np.array([o]), explore=False)[0] - 0.5 * o) for o in grid]
    assert max(errors) < 0.1, errors


# ---------------------------------------------------------------- acting
@pytest.mark.parametrize("obs, message", [
    (np.array([0.0, np.nan, 0.0, 0.0, 0.0]), "non-finite.*index \\[1\\]"),
    (np.array([0.0, 0.0, 0.0, np.inf, 0.0]), "non-finite"),
    (np.zeros(OBS + 1), "shape \\(6,\\), expected \\(5,\\)"),
    (np.zeros((1, OBS)), "shape"),
])
def test_act_rejects_bad_observations(obs, message):
    agent = TD3Agent(OBS, ACT, small_config(), seed=0)
    with pytest.raises(ValueError, match="observation.*" + message):
        agent.act(obs, explore=False)


def test_act_random_before_learning_starts_then_policy():
    cfg = small_config(learning_starts=3)
    a, b = TD3Agent(OBS, ACT, cfg, seed=4), TD3Agent(OBS, ACT, cfg, seed=4)
    obs = np.zeros(OBS, dtype=np.float32)
    random_actions = [a.act(obs) for _ in range(50)]
    assert all(x.dtype == np.float32 and x.shape == (ACT,) for x in random_actions)
    assert all(np.array_equal(x, b.act(obs)) for x in random_actions)  # agent-seeded
    flat = np.concatenate(random_actions)
    assert flat.min() >= -1 and flat.max() <= 1 and flat.std() > 0.4  # uniform on [-1, 1]: std 0.577
    for _ in range(3):
        a.observe(obs, random_actions[0], 0.0, obs, False)
    assert a.env_steps == 3
    policy = a.act(obs, explore=False)
    noisy = [a.act(obs) for _ in range(200)]
    spread = np.std([n - policy for n in noisy])
    assert 0.05 < spread < 0.15  # exploration_noise 0.1 around the policy, no longer uniform


def test_explore_false_is_deterministic_and_bounded():
    agent = TD3Agent(OBS, ACT, small_config(learning_starts=100), seed=0)
    obs = np.full(OBS, 50.0)  # saturate the tanh
    first = agent.act(obs, explore=False)
    assert np.array_equal(first, agent.act(obs, explore=False))
    assert first.dtype == np.float32 and np.all(np.abs(first) <= 1.0)


def test_ready_needs_learning_starts_and_a_batch():
    agent = TD3Agent(OBS, ACT, small_config(learning_starts=20, batch_size=16), seed=0)
    obs, act = np.zeros(OBS), np.zeros(ACT)
    for i in range(20):
        assert not agent.ready()
        agent.observe(obs, act, 0.0, obs, False)
    assert agent.ready()
    with pytest.raises(ValueError):
        agent.observe(obs, act, float("nan"), obs, False)
    assert agent.env_steps == 20 and len(agent.memory) == 20


# ---------------------------------------------------------------- persistence
def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True, map_location="cpu")


def test_state_dict_round_trip_resumes_identically():
    agent = filled_agent(n=80, seed=1)
    for _ in range(5):
        agent.update()
    state = roundtrip(agent.state_dict(include_buffer=True))
    other = TD3Agent(OBS, ACT, small_config(), seed=99)
    other.load_state_dict(state)

    assert (other.env_steps, other.updates) == (agent.env_steps, agent.updates) == (80, 5)
    for opt_a, opt_b in ((agent.actor_optim, other.actor_optim), (agent.critic_optim, other.critic_optim)):
        sa, sb = opt_a.state_dict(), opt_b.state_dict()
        assert sa["param_groups"] == sb["param_groups"]
        for key in sa["state"]:
            for name, value in sa["state"][key].items():
                assert torch.equal(value, sb["state"][key][name])
    obs = np.linspace(-1, 1, OBS)
    assert np.array_equal(agent.act(obs, explore=False), other.act(obs, explore=False))
    assert np.array_equal(agent.act(obs), other.act(obs))  # exploration RNG restored
    for _ in range(4):  # same samples, same smoothing noise, same policy-delay phase
        assert agent.update() == other.update()
    for net in ("actor", "critic", "actor_target", "critic_target"):
        assert same(params(getattr(agent, net)), params(getattr(other, net))), net


def test_state_dict_buffer_follows_save_buffer():
    assert "memory" not in filled_agent(n=4).state_dict()
    assert "memory" in filled_agent(n=4, save_buffer=True).state_dict()
    state = filled_agent(n=4).state_dict(include_buffer=True)
    assert state["memory"]["size"] == 4
    fresh = TD3Agent(OBS, ACT, small_config(), seed=0)
    fresh.load_state_dict(filled_agent(n=4).state_dict())  # no buffer: memory stays empty
    assert len(fresh.memory) == 0 and fresh.env_steps == 4


def test_load_state_dict_rejects_other_dims_and_sizes():
    state = filled_agent(n=4).state_dict()
    with pytest.raises(ValueError, match="obs_dim 5, act_dim 3.*obs_dim 6, act_dim 3"):
        TD3Agent(OBS + 1, ACT, small_config()).load_state_dict(state)
    with pytest.raises(ValueError, match="act_dim"):
        TD3Agent(OBS, ACT + 1, small_config()).load_state_dict(state)
    with pytest.raises(ValueError, match="hidden_sizes"):
        TD3Agent(OBS, ACT, small_config(hidden_sizes=[16])).load_state_dict(state)


def test_load_state_dict_takes_learning_rates_from_config():
    state = filled_agent(n=4).state_dict()
    agent = TD3Agent(OBS, ACT, small_config(actor_lr=1e-5, critic_lr=2e-5))
    agent.load_state_dict(state)
    assert agent.actor_optim.param_groups[0]["lr"] == 1e-5
    assert agent.critic_optim.param_groups[0]["lr"] == 2e-5


# ---------------------------------------------------------------- config
def test_yaml_sets_every_field_and_loads():
    data = load_yaml("agents/td3.yaml")
    assert set(data) == {f.name for f in dataclasses.fields(TD3Config)}
    cfg = load(TD3Config, "agents/td3.yaml")
    assert cfg.hidden_sizes == [256, 256] and cfg.save_buffer is False
    assert cfg == TD3Config()  # dataclass defaults match the file


@pytest.mark.parametrize("bad", [{"tau": 0.0}, {"policy_delay": 0}, {"hidden_sizes": []}, {"gamma": 1.5},
                                 {"buffer_size": 10, "batch_size": 256}, {"exploration_noise": -0.1},
                                 {"torch_threads": -1}, {"actor_lr": 0.0}])
def test_config_validation(bad):
    with pytest.raises(ConfigError):
        from_dict(TD3Config, bad)


def test_registry():
    assert agent_classes("td3") == (TD3Agent, TD3Config) == AGENTS["td3"]
    with pytest.raises(ValueError, match="known: ddpg, dqn, sac, td3"):
        agent_classes("nope")


def legacy_critic(state, n_layers):
    """An ensemble critic state dict written the way the former two-``nn.Sequential`` ``TwinQ`` stored it."""
    out = {}
    for i in range(n_layers):
        w, b = state["layers.%d.weight" % i], state["layers.%d.bias" % i]
        for k, net in enumerate(("q1_net", "q2_net")):
            out["%s.%d.weight" % (net, 2 * i)] = w[k].t().contiguous()
            out["%s.%d.bias" % (net, 2 * i)] = b[k, 0].clone()
    return out


def legacy_optim(state, n_layers):
    per_net = 2 * n_layers
    new = {}
    for i in range(per_net):
        entry = state["state"][i]
        for k in range(2):
            slot = {"step": entry["step"].clone()}
            for key in ("exp_avg", "exp_avg_sq"):
                t = entry[key][k]
                slot[key] = t.t().contiguous() if i % 2 == 0 else t[0].clone()
            new[k * per_net + i] = slot
    group = dict(state["param_groups"][0], params=list(range(2 * per_net)), fused=None)
    return {"state": new, "param_groups": [group]}


def test_loads_checkpoints_of_the_former_two_network_critic():
    """Checkpoints written before the ensemble critic (keys q1_net.*, q2_net.*, 12 Adam slots) resume exactly."""
    agent = filled_agent(n=80, seed=1)
    for _ in range(3):
        agent.update()
    state = agent.state_dict(include_buffer=True)
    n_layers = len(agent.config.hidden_sizes) + 1
    legacy = dict(state, critic=legacy_critic(state["critic"], n_layers),
                  critic_target=legacy_critic(state["critic_target"], n_layers),
                  critic_optim=legacy_optim(state["critic_optim"], n_layers))
    for key in ("n_critics", "n_step", "prioritized_replay", "fused_optimizer"):
        legacy["config"] = {k: v for k, v in legacy["config"].items() if k != key}
    del legacy["exploration_override"]
    other = TD3Agent(OBS, ACT, small_config(), seed=7)
    other.load_state_dict(roundtrip(legacy))
    obs, act = torch.randn(4, OBS), torch.rand(4, ACT)
    assert torch.equal(other.critic(obs, act), agent.critic(obs, act))
    assert other.critic_optim.param_groups[0]["fused"] == agent.critic_optim.param_groups[0]["fused"]
    for _ in range(3):
        assert other.update() == agent.update()
    with pytest.raises(ValueError, match="n_critics"):
        TD3Agent(OBS, ACT, small_config(n_critics=3)).load_state_dict(legacy)


def test_update_stats_and_fused_default():
    agent = filled_agent()
    assert agent.critic.n_critics == 2 and agent.config.fused_optimizer
    assert agent.critic_optim.param_groups[0]["fused"] is True   # torch >= 2.4 has a fused CPU Adam
    stats = agent.update()
    assert all(type(v) is float for v in stats.values())


def test_warmup_range_and_small_initial_actor_keep_a_residual_policy_near_zero():
    import numpy as np
    from op3_walk.agents.td3 import TD3Agent, TD3Config
    agent = TD3Agent(4, 3, TD3Config(hidden_sizes=[16], learning_starts=10, warmup_action_range=0.2,
                                     actor_output_init=0.01), seed=0)
    obs = np.ones(4, dtype=np.float32)
    warmup = np.array([agent.act(obs) for _ in range(200)])
    assert np.abs(warmup).max() <= 0.2 and np.abs(warmup).max() > 0.1
    default = TD3Agent(4, 3, TD3Config(hidden_sizes=[16]), seed=0)
    small = np.abs(agent.act(obs, explore=False)).max()
    assert small < 0.05 * max(np.abs(default.act(obs, explore=False)).max(), 1e-3) + 1e-3


def test_actor_action_penalty_holds_the_policy_off_the_bounds_a_linear_critic_pushes_it_to():
    """Reward sum(a) + 3 on one-step episodes: plain TD3's actor runs to the bound; with the TD3+BC-style penalty
    (Q term / mean |Q| + p * mean a^2) it settles near the interior optimum d / (6 p) (here 3 / 12 = 0.25)."""
    def trained(penalty):
        agent = TD3Agent(OBS, 3, small_config(actor_lr=3e-3, critic_lr=3e-3, actor_action_penalty=penalty,
                                              policy_delay=1), seed=0)
        rng = np.random.default_rng(0)
        for _ in range(512):
            a = rng.uniform(-1, 1, 3)
            agent.observe(rng.normal(size=OBS), a, float(a.sum() + 3.0), rng.normal(size=OBS), True)
        for _ in range(600):
            agent.update()
        probe = rng.normal(size=(32, OBS)).astype(np.float32)
        return np.mean([agent.act(o, explore=False) for o in probe])
    plain, penalised = trained(0.0), trained(2.0)
    assert plain > 0.9
    assert 0.1 < penalised < 0.45, penalised
    with pytest.raises(ValueError, match="actor_action_penalty"):
        small_config(actor_action_penalty=-1.0).validate()
