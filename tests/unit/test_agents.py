"""Every agent (DQN, DDPG, TD3, SAC) through the one interface: update maths, learning toy tasks, exploration,
cadence, save/load, input checks, config files, prioritised and n-step replay inside the agents, the Trainer."""
import dataclasses
import io

import gymnasium
import numpy as np
import pytest
import torch
from torch import nn

from op3_walk.agents import AGENTS, DISCRETE_ALGOS, agent_classes
from op3_walk.agents.networks import EnsembleQ, GaussianActor
from op3_walk.agents.replay import Batch
from op3_walk.config import ConfigError, from_dict, load, load_yaml
from op3_walk.training.loop import Trainer, TrainConfig

ALGOS = ["dqn", "ddpg", "td3", "sac"]
CONTINUOUS = ["ddpg", "td3", "sac"]
OBS, ACT = 5, 3   # ACT is the number of actions for DQN


def make(algo, seed=0, obs_dim=OBS, act_dim=ACT, **overrides):
    agent_cls, config_cls = agent_classes(algo)
    base = dict(hidden_sizes=[32, 32], batch_size=16, buffer_size=500, learning_starts=0, torch_threads=1)
    if algo == "dqn":
        base.update(target_update_interval=10, train_freq=1)
    base.update(overrides)
    return agent_cls(obs_dim, act_dim, config_cls(**base), seed=seed)


def random_action(agent, rng):
    if agent.algo in DISCRETE_ALGOS:
        return int(rng.integers(agent.act_dim))
    return rng.uniform(-1, 1, agent.act_dim).astype(np.float32)


def filled(algo, n=64, seed=0, **overrides):
    agent = make(algo, seed=seed, **overrides)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        agent.observe(rng.normal(size=OBS), random_action(agent, rng), float(rng.normal()), rng.normal(size=OBS),
                      bool(rng.random() < 0.1))
    return agent


def networks(agent):
    return [getattr(agent, name) for name in type(agent).modules]


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True, map_location="cpu")


def actions_equal(a, b):
    return a == b if isinstance(a, int) else np.array_equal(a, b)


# ---------------------------------------------------------------- registry and interface
def test_registry_has_every_algorithm():
    assert sorted(AGENTS) == sorted(ALGOS)
    for algo in ALGOS:
        agent_cls, config_cls = agent_classes(algo)
        assert agent_cls.algo == algo and dataclasses.is_dataclass(config_cls)


@pytest.mark.parametrize("algo", ALGOS)
def test_interface(algo):
    agent = make(algo, learning_starts=2)
    for name in ("act", "observe", "ready", "updates_due", "update", "state_dict", "load_state_dict",
                 "set_exploration"):
        assert callable(getattr(agent, name)), name
    assert (agent.obs_dim, agent.act_dim, agent.env_steps, agent.updates) == (OBS, ACT, 0, 0)
    obs = np.zeros(OBS, dtype=np.float32)
    action = agent.act(obs)
    if algo == "dqn":
        assert type(action) is int and 0 <= action < ACT
    else:
        assert action.dtype == np.float32 and action.shape == (ACT,) and np.all(np.abs(action) <= 1)
    assert isinstance(agent.exploration, float)


# ---------------------------------------------------------------- update maths
@pytest.mark.parametrize("algo", ALGOS)
def test_updates_on_fixed_batch_lower_critic_loss(algo):
    lr = {"dqn": dict(lr=1e-3)}.get(algo, dict(critic_lr=1e-3))
    agent = filled(algo, gamma=0.5, **lr)
    batch = agent.memory.sample(16)
    first = agent.update(batch)["critic_loss"]
    for _ in range(200):
        stats = agent.update(batch)
    assert all(isinstance(v, float) for v in stats.values())
    assert set(stats) <= set(agent.loss_keys) and "critic_loss" in stats
    assert stats["critic_loss"] < 0.3 * first, (first, stats)
    assert agent.updates == 201


@pytest.mark.parametrize("algo", ALGOS)
def test_td_target_terminated_vs_truncated(algo):
    """A terminated transition's target is the reward alone; a truncated one (terminated=0) bootstraps."""
    agent = make(algo, gamma=0.5, hidden_sizes=[8], **({"target_noise": 0.0} if algo in ("td3", "ddpg") else {}))
    target_net = agent.q_target if algo == "dqn" else agent.critic_target
    with torch.no_grad():   # make every target estimate 100, whatever the input
        for p in target_net.parameters():
            p.zero_()
        last = target_net[-1] if algo == "dqn" else target_net.layers[-1]
        last.bias.fill_(100.0)
    n = 4
    rewards = torch.tensor([1.0, -2.0, 0.5, 3.0])
    batch = Batch(torch.zeros(n, OBS), torch.zeros(n, 1 if algo == "dqn" else ACT), rewards, torch.ones(n, OBS),
                  torch.tensor([1.0, 1.0, 0.0, 0.0]))
    target = agent.td_target(batch)
    assert torch.equal(target[:2], rewards[:2])
    if algo == "sac":   # the entropy bonus adds -alpha log pi(a'|s') to the bootstrapped value
        assert torch.all((target[2:] - rewards[2:] - 50.0).abs() < 10.0)
    else:
        assert torch.allclose(target[2:], rewards[2:] + 50.0)
    # n-step: the stored discount replaces gamma
    nstep = batch._replace(discounts=torch.tensor([0.25, 0.25, 0.25, 0.125]))
    if algo != "sac":
        assert torch.allclose(agent.td_target(nstep), torch.tensor([1.0, -2.0, 25.5, 15.5]))


@pytest.mark.parametrize("algo", ALGOS)
def test_observe_keeps_truncation_apart_from_termination(algo):
    agent = make(algo)
    rng = np.random.default_rng(0)
    obs = np.zeros(OBS)
    agent.observe(obs, random_action(agent, rng), 1.0, obs + 1, False, True)    # time limit
    agent.observe(obs + 1, random_action(agent, rng), 1.0, obs + 2, True, False)  # fell
    assert agent.memory.terminated[:2].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("algo", ALGOS)
def test_zero_importance_weights_leave_the_critic_unchanged(algo):
    agent = filled(algo)
    batch = agent.memory.sample(16)
    critic = agent.q_net if algo == "dqn" else agent.critic
    before = params(critic)
    agent.update(batch._replace(weights=torch.zeros(16)))
    assert same(params(critic), before)
    agent.update(batch._replace(weights=torch.ones(16)))
    assert not same(params(critic), before)


@pytest.mark.parametrize("algo", ALGOS)
def test_prioritized_replay_gets_td_errors(algo):
    agent = filled(algo, prioritized_replay=True, per_alpha=1.0, per_eps=1e-3)
    assert np.allclose(agent.memory.probabilities(), 1.0 / 64)   # all new: max priority (1)
    batch = agent.memory.sample(16)
    assert batch.weights is not None and torch.allclose(batch.weights, torch.ones(16))
    agent.update(batch)
    leaves = agent.memory.tree.leaves(64)
    touched = np.unique(batch.indices.numpy())
    assert not np.allclose(leaves[touched], 1.0)
    untouched = np.setdiff1d(np.arange(64), touched)
    assert np.allclose(leaves[untouched], 1.0)   # priority given when they were added
    assert agent.memory.max_priority == pytest.approx(max(1.0, leaves.max()))
    for _ in range(3):
        agent.update()   # sampled by priority, weighted loss


@pytest.mark.parametrize("algo", ALGOS)
def test_n_step_agent_learns_from_discounted_sums(algo):
    agent = make(algo, n_step=3, gamma=0.5)
    rng = np.random.default_rng(0)
    obs = np.zeros(OBS)
    for t in range(4):
        agent.observe(obs + t, random_action(agent, rng), 1.0, obs + t + 1, False, t == 3)
    assert len(agent.memory) == 4 and agent.env_steps == 4
    assert agent.memory.rewards[:4].tolist() == [1.75, 1.75, 1.5, 1.0]
    assert agent.memory.discounts[:4].tolist() == [0.125, 0.125, 0.25, 0.5]
    agent.update(agent.memory.sample(4))


# ---------------------------------------------------------------- learning toy tasks
@pytest.mark.parametrize("algo", CONTINUOUS)
def test_learns_contextual_bandit(algo):
    """obs ~ U(-1, 1), reward -(a - 0.5 obs)^2, every step terminal: the policy must become a = 0.5 obs."""
    extra = {"sac": dict(ent_coef_init=0.05, ent_coef_lr=3e-3)}.get(algo, dict(exploration_noise=0.2))
    _, config_cls = agent_classes(algo)
    cfg = config_cls(hidden_sizes=[64, 64], actor_lr=3e-3, critic_lr=3e-3, batch_size=64, buffer_size=5000,
                     learning_starts=200, gamma=0.0, torch_threads=1, **extra)
    agent = AGENTS[algo][0](1, 1, cfg, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(800):
        obs = rng.uniform(-1, 1, 1).astype(np.float32)
        action = agent.act(obs)
        agent.observe(obs, action, float(-(action[0] - 0.5 * obs[0]) ** 2), obs, True)
        for _ in range(agent.updates_due()):
            agent.update()
    assert agent.updates == 800 - 200 + 1
    grid = np.linspace(-1, 1, 21, dtype=np.float32)
    errors = [abs(agent.act(np.array([o]), explore=False)[0] - 0.5 * o) for o in grid]
    assert max(errors) < 0.1, errors


def test_dqn_learns_contextual_bandit():
    """Three arms: arm 1 pays obs, arm 2 pays -obs, arm 0 pays 0.1: the greedy arm must follow the context."""
    agent = make("dqn", obs_dim=1, act_dim=3, hidden_sizes=[32], lr=3e-3, gamma=0.0, batch_size=32,
                 learning_starts=100, exploration_decay_steps=300, exploration_final_eps=0.1,
                 target_update_interval=20)
    rng = np.random.default_rng(1)
    pay = [lambda o: 0.1, lambda o: o, lambda o: -o]
    for _ in range(800):
        obs = rng.uniform(-1, 1, 1).astype(np.float32)
        arm = agent.act(obs)
        agent.observe(obs, arm, float(pay[arm](obs[0]) + 0.05 * rng.normal()), obs, True)
        for _ in range(agent.updates_due()):
            agent.update()
    for o in (-0.9, -0.6, -0.4, 0.4, 0.6, 0.9):
        best = int(np.argmax([f(o) for f in pay]))
        assert agent.act(np.array([o]), explore=False) == best, o


# ---------------------------------------------------------------- exploration and cadence
@pytest.mark.parametrize("algo", ALGOS)
def test_set_exploration(algo):
    agent = make(algo, learning_starts=0)
    default = agent.exploration
    agent.set_exploration(0.0)
    assert agent.exploration == 0.0
    obs = np.linspace(-1, 1, OBS)
    assert all(actions_equal(agent.act(obs), agent.act(obs, explore=False)) for _ in range(20))
    for bad in (-0.1, float("nan"), "high", True) + ((1.5,) if algo == "dqn" else ()):
        with pytest.raises(ValueError):
            agent.set_exploration(bad)
    assert agent.exploration == 0.0
    state = roundtrip(agent.state_dict())
    other = make(algo)
    other.load_state_dict(state)
    assert other.exploration == 0.0   # an operator's override survives a restart
    agent.set_exploration(None)
    assert agent.exploration == default


def test_continuous_exploration_scales_the_noise():
    for algo, low, high in (("td3", 0.05, 0.15), ("sac", None, None)):
        agent = make(algo)
        obs = np.zeros(OBS)
        mean = agent.act(obs, explore=False)
        spreads = []
        for level in (0.1, 0.5):
            agent.set_exploration(level)
            spreads.append(np.std([agent.act(obs) - mean for _ in range(300)]))
        assert spreads[1] > 2 * spreads[0] > 0
        if low is not None:
            assert low < spreads[0] < high


def test_dqn_epsilon_schedule_and_cadence():
    agent = make("dqn", exploration_initial_eps=1.0, exploration_final_eps=0.1, exploration_decay_steps=100,
                 learning_starts=10, batch_size=4, train_freq=4, gradient_steps=3)
    rng = np.random.default_rng(0)
    due = []
    for step in range(1, 201):
        agent.observe(rng.normal(size=OBS), 1, 0.0, rng.normal(size=OBS), False)
        due.append(agent.updates_due())
        if step == 50:
            assert agent.exploration == pytest.approx(0.55)
    assert agent.exploration == pytest.approx(0.1)
    assert [i + 1 for i, d in enumerate(due) if d] == [s for s in range(12, 201, 4)]
    assert set(due) == {0, 3}


@pytest.mark.parametrize("algo", CONTINUOUS)
def test_updates_per_step(algo):
    agent = make(algo, learning_starts=20, batch_size=8, updates_per_step=3)
    rng = np.random.default_rng(0)
    for step in range(1, 25):
        agent.observe(rng.normal(size=OBS), random_action(agent, rng), 0.0, rng.normal(size=OBS), False)
        assert agent.updates_due() == (3 if step >= 20 else 0)


# ---------------------------------------------------------------- input checks
@pytest.mark.parametrize("algo", ALGOS)
def test_bad_observations_and_transitions_raise_and_change_nothing(algo):
    agent = filled(algo, n=5)
    for bad in (np.array([0.0, np.nan, 0.0, 0.0, 0.0]), np.zeros(OBS + 1), np.zeros((1, OBS))):
        with pytest.raises(ValueError, match="observation"):
            agent.act(bad, explore=False)
        with pytest.raises(ValueError):
            agent.act(bad)
    rng = np.random.default_rng(0)
    good = (np.zeros(OBS), random_action(agent, rng), 0.0, np.zeros(OBS), False)
    bad_action = (1.5 if algo == "dqn" else np.array([0.0, np.nan, 0.0]))
    for i, value in ((0, np.full(OBS, np.inf)), (3, np.zeros(OBS - 1)), (2, float("nan")), (1, bad_action),
                     (4, 1.0)):
        transition = list(good)
        transition[i] = value
        with pytest.raises(ValueError):
            agent.observe(*transition)
    assert agent.env_steps == 5 and len(agent.memory) == 5


@pytest.mark.parametrize("algo", ALGOS)
def test_act_accepts_read_only_and_strided_observations(algo):
    agent = make(algo)
    obs = np.linspace(-1, 1, OBS).astype(np.float32)
    read_only = np.frombuffer(obs.tobytes(), dtype=np.float32)   # e.g. a view of a ROS message buffer
    reversed_view = obs[::-1].copy()[::-1]                       # negative strides
    expected = agent.act(obs, explore=False)
    for view in (read_only, reversed_view, obs.astype(np.float64).tolist()):
        assert actions_equal(agent.act(view, explore=False), expected)


def test_dqn_action_checks():
    agent = make("dqn")
    obs = np.zeros(OBS)
    for bad in (ACT, -1, 1.0, True, np.array([0.5])):
        with pytest.raises(ValueError, match="action"):
            agent.observe(obs, bad, 0.0, obs, False)
    for good in (0, np.int64(2), np.array([1])):
        agent.observe(obs, good, 0.0, obs, False)
    assert agent.memory.actions[:3, 0].tolist() == [0.0, 2.0, 1.0]


# ---------------------------------------------------------------- persistence
@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("replay", [{}, {"prioritized_replay": True, "n_step": 3}])
def test_state_dict_round_trip_resumes_identically(algo, replay):
    agent = filled(algo, n=80, seed=1, **replay)
    for _ in range(5):
        agent.update()
    state = roundtrip(agent.state_dict(include_buffer=True))
    other = make(algo, seed=99, **replay)
    other.load_state_dict(state)
    assert (other.env_steps, other.updates) == (agent.env_steps, agent.updates) == (80, 5)
    for name in type(agent).optimizers:
        sa, sb = getattr(agent, name).state_dict(), getattr(other, name).state_dict()
        assert sa["param_groups"] == sb["param_groups"]
        for key in sa["state"]:
            for field, value in sa["state"][key].items():
                assert torch.equal(value, sb["state"][key][field])
    obs = np.linspace(-1, 1, OBS)
    assert actions_equal(agent.act(obs, explore=False), other.act(obs, explore=False))
    for _ in range(5):
        assert actions_equal(agent.act(obs), other.act(obs))   # exploration RNGs restored
    for _ in range(4):   # same samples, same noise, same delay phase
        assert agent.update() == other.update()
    for a, b in zip(networks(agent), networks(other)):
        assert same(params(a), params(b))
    rng = np.random.default_rng(5)
    for _ in range(4):   # n-step pending transitions were restored too
        t = (rng.normal(size=OBS), random_action(agent, rng), 1.0, rng.normal(size=OBS), False)
        agent.observe(*t)
        other.observe(*t)
    assert np.array_equal(agent.memory.rewards, other.memory.rewards)


@pytest.mark.parametrize("algo", ALGOS)
def test_load_state_dict_rejects_other_algorithms_and_shapes(algo):
    state = filled(algo, n=4).state_dict()
    with pytest.raises(ValueError, match="obs_dim"):
        make(algo, obs_dim=OBS + 1).load_state_dict(state)
    with pytest.raises(ValueError, match="hidden_sizes"):
        make(algo, hidden_sizes=[16]).load_state_dict(state)
    other = [a for a in ALGOS if a != algo][0]
    with pytest.raises(ValueError, match="algorithm"):
        make(other).load_state_dict(state)
    if algo != "dqn":
        with pytest.raises(ValueError, match="n_critics"):
            make(algo, n_critics=3).load_state_dict(state)


@pytest.mark.parametrize("algo", ALGOS)
def test_fused_optimizer_option(algo):
    for fused in (True, False):
        agent = make(algo, fused_optimizer=fused)
        for name in type(agent).optimizers:
            assert bool(getattr(agent, name).param_groups[0].get("fused")) is fused, name
        agent_state = filled(algo, n=20, fused_optimizer=not fused)
        agent_state.update()
        agent.load_state_dict(agent_state.state_dict())   # a checkpoint of the other kind keeps this one's kernel
        for name in type(agent).optimizers:
            assert bool(getattr(agent, name).param_groups[0].get("fused")) is fused, name


# ---------------------------------------------------------------- config files
@pytest.mark.parametrize("algo", ALGOS)
def test_yaml_sets_every_field_and_loads_strictly(algo):
    _, config_cls = agent_classes(algo)
    data = load_yaml("agents/%s.yaml" % algo)
    assert set(data) == {f.name for f in dataclasses.fields(config_cls)}
    assert load(config_cls, "agents/%s.yaml" % algo) == config_cls()   # dataclass defaults match the file
    with pytest.raises(ConfigError, match="unknown key"):
        load(config_cls, "agents/%s.yaml" % algo, overrides={"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="expected a number"):
        load(config_cls, "agents/%s.yaml" % algo, overrides={"gamma": "high"})


@pytest.mark.parametrize("algo, bad", [
    ("dqn", {"loss": "l1"}), ("dqn", {"train_freq": 0}), ("dqn", {"exploration_final_eps": 1.5}),
    ("dqn", {"tau": 0.0}), ("dqn", {"max_grad_norm": -1.0}), ("sac", {"ent_coef_init": 0.0}),
    ("sac", {"ent_coef_init": "auto"}), ("sac", {"n_critics": 0}), ("td3", {"n_step": 0}),
    ("ddpg", {"per_beta0": 1.5}), ("td3", {"per_eps": 0.0}), ("sac", {"batch_size": 600, "buffer_size": 500}),
])
def test_config_validation(algo, bad):
    with pytest.raises(ConfigError):
        from_dict(agent_classes(algo)[1], bad)


def test_ddpg_is_td3_with_one_critic_no_delay_no_smoothing():
    agent = make("ddpg")
    assert agent.critic.n_critics == 1 and agent.config.policy_delay == 1 and agent.config.target_noise == 0.0
    stats = filled("ddpg").update()
    assert "actor_loss" in stats   # the actor moves on every update


# ---------------------------------------------------------------- networks
def test_ensemble_critic_members_are_independent_mlps():
    torch.manual_seed(0)
    critic = EnsembleQ(OBS, ACT, [16, 8], n_critics=3)
    obs, act = torch.randn(7, OBS), torch.randn(7, ACT)
    out = critic(obs, act)
    assert out.shape == (3, 7)
    for i in range(3):
        h = torch.cat([obs, act], -1)
        for j, layer in enumerate(critic.layers):
            h = h @ layer.weight[i] + layer.bias[i]
            if j < len(critic.layers) - 1:
                h = torch.relu(h)
        assert torch.allclose(out[i], h.squeeze(-1), atol=1e-6)
    assert torch.allclose(critic.first(obs, act), out[0])
    frozen = critic(obs, act.requires_grad_(True), frozen=True).sum()
    frozen.backward()
    assert act.grad is not None and all(p.grad is None for p in critic.parameters())


@pytest.mark.parametrize("algo", CONTINUOUS)
def test_exportable_policy_is_a_plain_sequential(algo):
    agent = filled(algo, n=20)
    agent.update()
    net = agent.actor.net
    assert isinstance(net, nn.Sequential)
    kinds = [type(m) for m in net]
    assert kinds[0] is nn.Linear and kinds[-2:] == [nn.Linear, nn.Tanh]
    assert all(k in (nn.Linear, nn.ReLU) for k in kinds[:-1])
    obs = np.linspace(-1, 1, OBS).astype(np.float32)
    h = obs.astype(np.float64)
    for m in net:   # what a numpy exporter does
        if isinstance(m, nn.Linear):
            h = m.weight.detach().double().numpy() @ h + m.bias.detach().double().numpy()
        elif isinstance(m, nn.ReLU):
            h = np.maximum(h, 0.0)
        else:
            h = np.tanh(h)
    assert np.allclose(h, agent.act(obs, explore=False), atol=1e-5)


def test_sac_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = GaussianActor(OBS, ACT, [16])
    obs = torch.randn(256, OBS)
    action, log_prob = actor.sample(obs, torch.Generator().manual_seed(3))
    h = actor.trunk(obs)
    base = torch.distributions.Normal(actor.mean(h), actor.log_std(h).clamp(-20, 2).exp())
    squashed = torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform(cache_size=1)])
    expected = squashed.log_prob(action.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    assert torch.allclose(log_prob, expected, atol=1e-3)


# ---------------------------------------------------------------- the Trainer drives every agent
class DiscreteEnv(gymnasium.Env):
    """2-D observation, 3 actions, episodes of 6 steps (time limit)."""

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return obs, float(action == 1), False, self.t >= 6, {}


def test_trainer_runs_dqn_with_train_freq():
    agent = make("dqn", obs_dim=2, act_dim=3, learning_starts=10, batch_size=4, train_freq=4, gradient_steps=2,
                 n_step=2)
    records = []
    summary = Trainer(agent, DiscreteEnv(), TrainConfig(total_steps=42), on_episode=[records.append]).run()
    assert summary.env_steps == 42 and len(records) == 7
    assert agent.updates == 2 * len(range(12, 43, 4))
    assert records[-1].losses and "critic_loss" in records[-1].losses
    assert len(agent.memory) == 42   # every episode ended by truncation: n-step sums flushed, none pending
