"""TD3: Twin Delayed Deep Deterministic policy gradient (Fujimoto et al., 2018, arXiv:1802.09477).

Three changes over DDPG, all in :meth:`TD3Agent.update`:

1. twin critics: the TD target uses the smaller of two target-critic estimates (fights over-estimation);
2. target policy smoothing: clipped Gaussian noise on the target action (see :func:`target_policy_smoothing`);
3. delayed policy updates: the actor and the target networks move once every ``policy_delay`` critic updates.

DDPG is this agent with ``policy_delay=1`` and ``target_noise=0``.

Typical loop (what ``op3_walk.training`` does)::

    action = agent.act(obs)                         # uniform random until learning_starts, then policy + noise
    next_obs, reward, terminated, truncated, _ = env.step(action)
    agent.observe(obs, action, reward, next_obs, terminated)   # truncation is not termination
    if agent.ready():
        for _ in range(agent.config.updates_per_step):
            stats = agent.update()

Actions are normalised to [-1, 1]; the env maps them to joint targets.
"""
import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from op3_walk.agents.networks import Actor, TwinQ
from op3_walk.agents.replay import Batch, ReplayMemory, check_vector
from op3_walk.config import doc, to_dict


@dataclass
class TD3Config:
    """TD3 hyper-parameters (``config/agents/td3.yaml``)."""

    hidden_sizes: List[int] = doc("hidden layer widths of the actor and of each critic",
                                  default_factory=lambda: [256, 256])
    actor_lr: float = doc("Adam learning rate of the actor", default=3e-4)
    critic_lr: float = doc("Adam learning rate of the twin critics", default=3e-4)
    gamma: float = doc("discount factor per control step", default=0.99)
    tau: float = doc("Polyak factor of the target networks: target <- (1 - tau) target + tau online", default=0.005)
    policy_delay: int = doc("critic updates per actor (and target) update; 1 = DDPG-style", default=2)
    target_noise: float = doc("std of the Gaussian noise on target actions (action units, range [-1, 1])", default=0.2)
    target_noise_clip: float = doc("target action noise is clipped to +-this (action units)", default=0.5)
    exploration_noise: float = doc("std of the Gaussian noise added to actions while exploring (action units)",
                                   default=0.1)
    batch_size: int = doc("transitions per gradient update", default=256)
    buffer_size: int = doc("replay memory capacity (transitions)", default=1000000)
    learning_starts: int = doc("env steps of uniform random actions before learning starts", default=5000)
    updates_per_step: int = doc("gradient updates per env step once learning", default=1)
    torch_threads: int = doc("torch CPU threads (torch.set_num_threads, process-wide); 0 = torch's default",
                             default=1)
    save_buffer: bool = doc("include the replay memory in checkpoints (large: ~0.6 GB per million transitions "
                            "at obs 62 / act 18)", default=False)

    def validate(self) -> None:
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError("hidden_sizes must be a non-empty list of positive widths, got %r" % (self.hidden_sizes,))
        for name in ("actor_lr", "critic_lr"):
            if not getattr(self, name) > 0:
                raise ValueError("%s must be > 0, got %r" % (name, getattr(self, name)))
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1], got %r" % self.gamma)
        if not 0.0 < self.tau <= 1.0:
            raise ValueError("tau must be in (0, 1], got %r" % self.tau)
        for name in ("target_noise", "target_noise_clip", "exploration_noise", "learning_starts", "torch_threads"):
            if getattr(self, name) < 0:
                raise ValueError("%s must be >= 0, got %r" % (name, getattr(self, name)))
        for name in ("policy_delay", "batch_size", "updates_per_step"):
            if getattr(self, name) < 1:
                raise ValueError("%s must be >= 1, got %r" % (name, getattr(self, name)))
        if self.buffer_size < self.batch_size:
            raise ValueError("buffer_size (%d) must be >= batch_size (%d)" % (self.buffer_size, self.batch_size))


def target_policy_smoothing(actions: torch.Tensor, noise_std: float, noise_clip: float,
                            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """TD3's smoothed target action: ``clip(actions + clip(N(0, noise_std), -noise_clip, noise_clip), -1, 1)``."""
    noise = torch.randn(actions.shape, generator=generator, device=actions.device, dtype=actions.dtype)
    noise = (noise * noise_std).clamp_(-noise_clip, noise_clip)
    return (actions + noise).clamp_(-1.0, 1.0)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """In place: ``target <- (1 - tau) * target + tau * online`` for every parameter."""
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    torch._foreach_mul_(target_params, 1.0 - tau)
    torch._foreach_add_(target_params, online_params, alpha=tau)


class TD3Agent:
    """TD3 with its replay memory, counters and RNGs; everything needed to resume is in :meth:`state_dict`.

    Randomness comes only from the agent's own generators, all derived from ``seed``: a numpy generator for
    random/explorative actions, one for replay sampling, and a torch generator for target smoothing noise.  Network
    initialisation uses a forked torch RNG seeded with ``seed``, leaving the global one untouched.
    """

    algo = "td3"

    def __init__(self, obs_dim: int, act_dim: int, config: TD3Config, seed: int = 0, device: str = "cpu"):
        config.validate()
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        self.config = config
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.device = torch.device(device)
        self.env_steps = 0   # transitions observed
        self.updates = 0     # critic gradient steps taken

        act_seed, memory_seed, torch_seed = np.random.SeedSequence(seed).generate_state(3)
        self.rng = np.random.default_rng(int(act_seed))
        self.memory = ReplayMemory(obs_dim, act_dim, config.buffer_size, seed=int(memory_seed))
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(torch_seed))

        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            actor = Actor(obs_dim, act_dim, config.hidden_sizes)
            critic = TwinQ(obs_dim, act_dim, config.hidden_sizes)
        self.actor = actor.to(self.device)
        self.critic = critic.to(self.device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)

    # ------------------------------------------------------------------ acting
    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation preprocessing shared by acting and learning; identity for now.

        The place for running-mean/std normalisation: its statistics would then go into :meth:`state_dict` and the
        exported policy.
        """
        return obs

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        """Action for one observation: float32 ``(act_dim,)`` in [-1, 1].

        ``explore=True``: uniform random before ``learning_starts`` env steps, afterwards the policy plus Gaussian
        noise (``exploration_noise``).  ``explore=False``: the deterministic policy.  A NaN/inf or wrong-size
        observation raises ``ValueError``.
        """
        obs = check_vector(obs, self.obs_dim, "observation")
        if explore and self.env_steps < self.config.learning_starts:
            return self.rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
        with torch.no_grad():
            obs_t = self.normalize_obs(torch.from_numpy(obs).to(self.device).unsqueeze(0))
            action = self.actor(obs_t).squeeze(0).cpu().numpy()
        if explore and self.config.exploration_noise > 0:
            action = action + self.rng.normal(0.0, self.config.exploration_noise, self.act_dim)
            action = np.clip(action, -1.0, 1.0)
        return action.astype(np.float32)

    def observe(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray,
                terminated: bool) -> None:
        """Store one transition; ``terminated`` only (a time-limit truncation is not a terminal state)."""
        self.memory.add(obs, action, reward, next_obs, terminated)
        self.env_steps += 1

    def ready(self) -> bool:
        """Whether :meth:`update` may run: past ``learning_starts`` and at least one batch in memory."""
        return self.env_steps >= self.config.learning_starts and len(self.memory) >= self.config.batch_size

    # ------------------------------------------------------------------ learning
    def target_actions(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Smoothed actions of the target actor for the TD target."""
        return target_policy_smoothing(self.actor_target(next_obs), self.config.target_noise,
                                       self.config.target_noise_clip, self.generator)

    def update(self, batch: Optional[Batch] = None) -> Dict[str, float]:
        """One gradient step on a sampled batch (or on ``batch``, for tests).

        Returns ``critic_loss`` (sum of both critics' mean squared TD error), ``q_mean`` (mean online Q over the
        batch and both critics) and, on the steps where the actor moved, ``actor_loss`` (``-mean Q1(s, pi(s))``).
        """
        cfg = self.config
        if batch is None:
            batch = self.memory.sample(cfg.batch_size)
        batch = batch.to(self.device)
        obs = self.normalize_obs(batch.obs)
        next_obs = self.normalize_obs(batch.next_obs)
        rewards = batch.rewards  # reward scaling, if ever needed, goes here

        # Critic: regress both Q estimates onto r + gamma * (1 - terminated) * min(Q1', Q2')(s', smoothed pi'(s')).
        with torch.no_grad():
            next_q = self.critic_target(next_obs, self.target_actions(next_obs)).min(dim=0).values
            td_target = rewards + cfg.gamma * (1.0 - batch.terminated) * next_q
        q = self.critic(obs, batch.actions)                       # (2, B)
        critic_loss = (q - td_target).pow(2).mean(dim=1).sum()
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optim.step()
        self.updates += 1
        stats = {"critic_loss": critic_loss.item(), "q_mean": q.detach().mean().item()}

        # Actor and targets: every policy_delay critic updates, ascend Q1(s, pi(s)).
        if self.updates % cfg.policy_delay == 0:
            self.critic.requires_grad_(False)  # no critic weight gradients needed for the actor step
            try:
                actor_loss = -self.critic.q1(obs, self.actor(obs)).mean()
                self.actor_optim.zero_grad(set_to_none=True)
                actor_loss.backward()
                self.actor_optim.step()
            finally:
                self.critic.requires_grad_(True)
            polyak_update(self.actor_target, self.actor, cfg.tau)
            polyak_update(self.critic_target, self.critic, cfg.tau)
            stats["actor_loss"] = actor_loss.item()
        return stats

    # ------------------------------------------------------------------ persistence
    def state_dict(self, include_buffer: Optional[bool] = None) -> Dict[str, Any]:
        """Everything needed to resume, as ``torch.load(weights_only=True)``-safe types.

        ``include_buffer`` defaults to ``config.save_buffer``.
        """
        if include_buffer is None:
            include_buffer = self.config.save_buffer
        d = {
            "algo": self.algo,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": to_dict(self.config),
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "actor_target": self.actor_target.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "actor_optim": self.actor_optim.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "env_steps": self.env_steps,
            "updates": self.updates,
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": self.generator.get_state(),
        }
        if include_buffer:
            d["memory"] = self.memory.state_dict()
        return d

    def load_state_dict(self, d: Dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (memory too when it was saved).

        Raises ``ValueError`` when the algorithm, dimensions or network sizes differ.  Learning rates come from this
        agent's config, so a resumed run may change them; the rest of the optimiser state is restored.
        """
        if d.get("algo", self.algo) != self.algo:
            raise ValueError("state is for algorithm %r, this agent is %r" % (d.get("algo"), self.algo))
        if (d["obs_dim"], d["act_dim"]) != (self.obs_dim, self.act_dim):
            raise ValueError("state has obs_dim %d, act_dim %d; this agent has obs_dim %d, act_dim %d"
                             % (d["obs_dim"], d["act_dim"], self.obs_dim, self.act_dim))
        saved_hidden = list(d["config"]["hidden_sizes"])
        if saved_hidden != list(self.config.hidden_sizes):
            raise ValueError("state has hidden_sizes %s, this agent has %s" % (saved_hidden, self.config.hidden_sizes))
        self.actor.load_state_dict(d["actor"])
        self.critic.load_state_dict(d["critic"])
        self.actor_target.load_state_dict(d["actor_target"])
        self.critic_target.load_state_dict(d["critic_target"])
        self.actor_optim.load_state_dict(d["actor_optim"])
        self.critic_optim.load_state_dict(d["critic_optim"])
        for group in self.actor_optim.param_groups:
            group["lr"] = self.config.actor_lr
        for group in self.critic_optim.param_groups:
            group["lr"] = self.config.critic_lr
        self.env_steps = int(d["env_steps"])
        self.updates = int(d["updates"])
        self.rng.bit_generator.state = d["numpy_rng"]
        self.generator.set_state(d["torch_rng"])
        if "memory" in d:
            self.memory.load_state_dict(d["memory"])
