"""TD3: Twin Delayed Deep Deterministic policy gradient (Fujimoto et al., 2018, arXiv:1802.09477).

Three changes over DDPG, all in :meth:`TD3Agent.update`:

1. twin critics: the TD target uses the smallest of ``n_critics`` (2) target-critic estimates (fights
   over-estimation);
2. target policy smoothing: clipped Gaussian noise on the target action (see :func:`target_policy_smoothing`);
3. delayed policy updates: the actor and the target networks move once every ``policy_delay`` critic updates.

DDPG (``op3_walk.agents.ddpg``) is this agent with ``policy_delay=1``, ``target_noise=0`` and ``n_critics=1``.

Typical loop (what ``op3_walk.training`` does)::

    action = agent.act(obs)                         # uniform random until learning_starts, then policy + noise
    next_obs, reward, terminated, truncated, _ = env.step(action)
    agent.observe(obs, action, reward, next_obs, terminated, truncated)   # truncation is not termination
    for _ in range(agent.updates_due()):            # updates_per_step once ready()
        stats = agent.update()

Actions are normalised to [-1, 1]; the env maps them to joint targets.  The critics are one
:class:`~op3_walk.agents.networks.EnsembleQ`; checkpoints written with the former two-network critic load too.
"""
import copy
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch

from op3_walk.agents.base import OffPolicyAgent, OffPolicyConfig
from op3_walk.agents.networks import Actor, EnsembleQ, adam, polyak_update
from op3_walk.agents.replay import Batch
from op3_walk.config import doc

__all__ = ["TD3Agent", "TD3Config", "polyak_update", "target_policy_smoothing"]


@dataclass
class TD3Config(OffPolicyConfig):
    """TD3 hyper-parameters (``config/agents/td3.yaml``)."""

    actor_lr: float = doc("Adam learning rate of the actor", default=3e-4)
    critic_lr: float = doc("Adam learning rate of the critics", default=3e-4)
    tau: float = doc("Polyak factor of the target networks: target <- (1 - tau) target + tau online", default=0.005)
    n_critics: int = doc("critics in the ensemble; the TD target takes the minimum over them (TD3: 2, DDPG: 1)",
                         default=2)
    policy_delay: int = doc("critic updates per actor (and target) update; 1 = DDPG-style", default=2)
    target_noise: float = doc("std of the Gaussian noise on target actions (action units, range [-1, 1])", default=0.2)
    target_noise_clip: float = doc("target action noise is clipped to +-this (action units)", default=0.5)
    exploration_noise: float = doc("std of the Gaussian noise added to actions while exploring (action units)",
                                   default=0.1)
    updates_per_step: int = doc("gradient updates per env step once learning (update-to-data ratio)", default=1)
    warmup_action_range: float = doc("before learning_starts, actions are uniform in [-this, this] (1 = the whole "
                                     "action range; a residual task wants a fraction: near its reference gait)",
                                     default=1.0)
    actor_output_init: float = doc("factor on the initial weights and bias of the actor's output layer (1 = "
                                   "PyTorch's default; ~0.01 = the first policy acts ~0, i.e. follows the reference "
                                   "gait of a residual task)", default=1.0)
    actor_action_penalty: float = doc("weight of mean(a^2) in the actor loss, whose Q term is divided by the batch's "
                                      "mean |Q| (as TD3+BC does) so the weight is scale-free; 0 = plain TD3. Keeps a "
                                      "residual policy near its reference gait unless the critic is sure", default=0.0)

    def validate(self) -> None:
        super().validate()
        self.check_positive("actor_lr", "critic_lr")
        if not 0.0 <= self.warmup_action_range <= 1.0:
            raise ValueError("warmup_action_range must be in [0, 1], got %r" % self.warmup_action_range)
        if not self.actor_action_penalty >= 0.0:
            raise ValueError("actor_action_penalty must be >= 0, got %r" % self.actor_action_penalty)
        if not self.actor_output_init > 0.0:
            raise ValueError("actor_output_init must be > 0, got %r" % self.actor_output_init)
        if not 0.0 < self.tau <= 1.0:
            raise ValueError("tau must be in (0, 1], got %r" % self.tau)
        for name in ("target_noise", "target_noise_clip", "exploration_noise"):
            if getattr(self, name) < 0:
                raise ValueError("%s must be >= 0, got %r" % (name, getattr(self, name)))
        for name in ("policy_delay", "updates_per_step", "n_critics"):
            if getattr(self, name) < 1:
                raise ValueError("%s must be >= 1, got %r" % (name, getattr(self, name)))


def target_policy_smoothing(actions: torch.Tensor, noise_std: float, noise_clip: float,
                            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """TD3's smoothed target action: ``clip(actions + clip(N(0, noise_std), -noise_clip, noise_clip), -1, 1)``."""
    if noise_std == 0.0:
        return actions
    noise = torch.randn(actions.shape, generator=generator, device=actions.device, dtype=actions.dtype)
    noise = (noise * noise_std).clamp_(-noise_clip, noise_clip)
    return (actions + noise).clamp_(-1.0, 1.0)


def convert_legacy_critic_optim(state: Dict[str, Any], n_layers: int) -> Dict[str, Any]:
    """Adam state of the former ``TwinQ`` critic (12 tensors for two 3-layer nets) for the ensemble critic."""
    old_ids = state["param_groups"][0]["params"]
    per_net = 2 * n_layers
    new_state = {}
    for i in range(per_net):
        first, second = state["state"].get(old_ids[i]), state["state"].get(old_ids[per_net + i])
        if not first or not second:
            continue
        kind = "weight" if i % 2 == 0 else "bias"
        entry = {"step": first["step"]}
        for key in ("exp_avg", "exp_avg_sq"):
            entry[key] = EnsembleQ.stack_legacy(kind, first[key], second[key])
        new_state[i] = entry
    groups = [dict(state["param_groups"][0], params=list(range(per_net)))]
    return {"state": new_state, "param_groups": groups}


class TD3Agent(OffPolicyAgent):
    """TD3 with its replay memory, counters and RNGs; everything needed to resume is in :meth:`state_dict`.

    ``actor.net`` is the exportable policy (``Linear, ReLU, ..., Linear, Tanh``); ``critic`` is an ``EnsembleQ`` of
    ``n_critics`` members.  Exploration (:meth:`set_exploration`) is the std of the Gaussian action noise.
    """

    algo = "td3"
    modules = ("actor", "critic", "actor_target", "critic_target")
    optimizers = {"actor_optim": "actor_lr", "critic_optim": "critic_lr"}
    architecture_keys = ("hidden_sizes", "n_critics")
    loss_keys = ("critic_loss", "actor_loss", "q_mean")   # what update() reports (actor_loss on policy steps)

    def __init__(self, obs_dim: int, act_dim: int, config: TD3Config, seed: int = 0, device: str = "cpu"):
        super().__init__(obs_dim, act_dim, config, seed=seed, device=device)

    def build(self) -> None:
        cfg = self.config
        self.actor = Actor(self.obs_dim, self.act_dim, cfg.hidden_sizes).to(self.device)
        if cfg.actor_output_init != 1.0:
            output = [m for m in self.actor.net if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                output.weight.mul_(cfg.actor_output_init)
                output.bias.mul_(cfg.actor_output_init)
        self.critic = EnsembleQ(self.obs_dim, self.act_dim, cfg.hidden_sizes, cfg.n_critics).to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optim = adam(self.actor.parameters(), cfg.actor_lr, cfg.fused_optimizer)
        self.critic_optim = adam(self.critic.parameters(), cfg.critic_lr, cfg.fused_optimizer)

    def legacy_default(self, key: str) -> Any:
        if key == "n_critics":
            return 2   # checkpoints from before n_critics existed had twin critics
        return super().legacy_default(key)

    # ------------------------------------------------------------------ acting
    def default_exploration(self) -> float:
        return self.config.exploration_noise

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        """Action for one observation: float32 ``(act_dim,)`` in [-1, 1].

        ``explore=True``: uniform random in +-``warmup_action_range`` before ``learning_starts`` env steps,
        afterwards the policy plus Gaussian noise of std :attr:`exploration`.  ``explore=False``: the deterministic
        policy.  A NaN/inf or wrong-size observation raises ``ValueError``.
        """
        obs_t = self.obs_tensor(obs)
        if explore and self.env_steps < self.config.learning_starts:
            bound = self.config.warmup_action_range
            return self.rng.uniform(-bound, bound, self.act_dim).astype(np.float32)
        with torch.inference_mode():
            action = self.actor(self.normalize_obs(obs_t))[0].cpu().numpy()
        noise = self.exploration if explore else 0.0
        if noise > 0:
            action = np.clip(action + self.rng.normal(0.0, noise, self.act_dim), -1.0, 1.0).astype(np.float32)
        return action

    # ------------------------------------------------------------------ learning
    def target_actions(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Smoothed actions of the target actor for the TD target."""
        return target_policy_smoothing(self.actor_target(next_obs), self.config.target_noise,
                                       self.config.target_noise_clip, self.generator)

    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """``r + discount * (1 - terminated) * min_i Q_i'(s', smoothed pi'(s'))``, shape ``(B,)``."""
        next_obs = self.normalize_obs(batch.next_obs)
        next_q = self.critic_target(next_obs, self.target_actions(next_obs)).min(dim=0).values
        return batch.rewards + self.discounts(batch) * (1.0 - batch.terminated) * next_q

    def update(self, batch: Optional[Batch] = None) -> Dict[str, float]:
        """One gradient step on a sampled batch (or on ``batch``, for tests).

        Returns ``critic_loss`` (sum over critics of the mean squared TD error, importance-weighted with PER),
        ``q_mean`` (mean online Q over the batch and critics) and, on the steps where the actor moved,
        ``actor_loss`` (``-mean Q1(s, pi(s))``; with ``actor_action_penalty`` ``-mean Q1 / mean |Q1| + penalty *
        mean a^2``).
        """
        cfg = self.config
        batch = self.sample_batch(batch)
        obs = self.normalize_obs(batch.obs)

        # Critic: regress every Q estimate onto the TD target.
        critic_loss, q = self.critic_step(obs, batch)
        values = [critic_loss, q.mean()]

        # Actor and targets: every policy_delay critic updates, ascend Q1(s, pi(s)) (critic weights frozen).
        if self.updates % cfg.policy_delay == 0:
            actions = self.actor(obs)
            q_pi = self.critic.first(obs, actions, frozen=True)
            if cfg.actor_action_penalty > 0.0:
                # TD3+BC's normalisation: the Q term's gradient has unit scale whatever the reward scale.
                actor_loss = (-q_pi.mean() / q_pi.detach().abs().mean().clamp_min(1e-6)
                              + cfg.actor_action_penalty * actions.pow(2).mean())
            else:
                actor_loss = -q_pi.mean()
            self.actor_optim.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optim.step()
            polyak_update(self.actor_target, self.actor, cfg.tau)
            polyak_update(self.critic_target, self.critic, cfg.tau)
            values.append(actor_loss.detach())
        numbers = torch.stack(values).tolist()   # one device->host transfer per update
        stats = {"critic_loss": numbers[0], "q_mean": numbers[1]}
        if len(numbers) > 2:
            stats["actor_loss"] = numbers[2]
        return stats

    # ------------------------------------------------------------------ persistence
    def load_state_dict(self, d: Dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; also accepts checkpoints of the former two-network (``TwinQ``) critic."""
        if EnsembleQ.is_legacy_twin_state(d.get("critic", {})):
            self.check_compatible(d)
            d = dict(d)
            d["critic"] = EnsembleQ.convert_legacy_state(d["critic"])
            d["critic_target"] = EnsembleQ.convert_legacy_state(d["critic_target"])
            d["critic_optim"] = convert_legacy_critic_optim(d["critic_optim"], len(self.config.hidden_sizes) + 1)
        super().load_state_dict(d)
