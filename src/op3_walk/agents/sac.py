"""SAC: Soft Actor-Critic (Haarnoja et al., 2018, arXiv:1812.05905), with automatic entropy tuning.

Each :meth:`SACAgent.update`:

1. critics: regress every Q estimate onto
   ``r + discount * (1 - terminated) * (min_i Q_i'(s', a') - alpha log pi(a'|s'))`` with ``a' ~ pi(.|s')`` (a fresh
   sample from the current policy, no target actor);
2. actor: minimise ``alpha log pi(a|s) - min_i Q_i(s, a)`` with reparameterised ``a ~ pi(.|s)`` (critic weights
   frozen);
3. entropy coefficient ``alpha`` (``autotune``): minimise ``-log_alpha * (log pi(a|s) + target_entropy)``, which
   raises ``alpha`` while the policy's entropy is below ``target_entropy`` (``target_entropy_per_dim * act_dim``);
4. Polyak-average the target critics.

The policy is a squashed Gaussian (:class:`~op3_walk.agents.networks.GaussianActor`); acting without exploration
uses ``tanh(mean)``, which is also what ``actor.net`` exports.  :meth:`SACAgent.set_exploration` scales the policy's
standard deviation while exploring (1 = sample the learned policy, 0 = its mean).
"""
import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch

from op3_walk.agents.base import OffPolicyAgent, OffPolicyConfig
from op3_walk.agents.networks import EnsembleQ, GaussianActor, adam, load_optimizer_state, polyak_update
from op3_walk.agents.replay import Batch
from op3_walk.config import doc


@dataclass
class SACConfig(OffPolicyConfig):
    """SAC hyper-parameters (``config/agents/sac.yaml``)."""

    actor_lr: float = doc("Adam learning rate of the policy", default=3e-4)
    critic_lr: float = doc("Adam learning rate of the critics", default=3e-4)
    tau: float = doc("Polyak factor of the target critics: target <- (1 - tau) target + tau online", default=0.005)
    n_critics: int = doc("critics in the ensemble; targets and the policy objective use their minimum", default=2)
    autotune: bool = doc("learn the entropy coefficient alpha so the policy entropy tracks target_entropy; "
                         "false: alpha stays at ent_coef_init", default=True)
    ent_coef_init: float = doc("initial (autotune) or fixed entropy coefficient alpha", default=1.0)
    ent_coef_lr: float = doc("Adam learning rate of log(alpha) (autotune only)", default=3e-4)
    target_entropy_per_dim: float = doc("target policy entropy per action dimension (nats); the target is this "
                                        "times act_dim (-1: the usual -act_dim)", default=-1.0)
    updates_per_step: int = doc("gradient updates per env step once learning (update-to-data ratio)", default=1)

    def validate(self) -> None:
        super().validate()
        self.check_positive("actor_lr", "critic_lr", "ent_coef_init", "ent_coef_lr")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError("tau must be in (0, 1], got %r" % self.tau)
        for name in ("updates_per_step", "n_critics"):
            if getattr(self, name) < 1:
                raise ValueError("%s must be >= 1, got %r" % (name, getattr(self, name)))


class SACAgent(OffPolicyAgent):
    """SAC with its replay memory, counters and RNGs; everything needed to resume is in :meth:`state_dict`."""

    algo = "sac"
    modules = ("actor", "critic", "critic_target")
    optimizers = {"actor_optim": "actor_lr", "critic_optim": "critic_lr"}
    architecture_keys = ("hidden_sizes", "n_critics")
    loss_keys = ("critic_loss", "actor_loss", "q_mean", "ent_coef", "entropy")   # what update() reports

    def __init__(self, obs_dim: int, act_dim: int, config: SACConfig, seed: int = 0, device: str = "cpu"):
        super().__init__(obs_dim, act_dim, config, seed=seed, device=device)

    def build(self) -> None:
        cfg = self.config
        self.actor = GaussianActor(self.obs_dim, self.act_dim, cfg.hidden_sizes).to(self.device)
        self.critic = EnsembleQ(self.obs_dim, self.act_dim, cfg.hidden_sizes, cfg.n_critics).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_optim = adam(self.actor.parameters(), cfg.actor_lr, cfg.fused_optimizer)
        self.critic_optim = adam(self.critic.parameters(), cfg.critic_lr, cfg.fused_optimizer)
        self.target_entropy = cfg.target_entropy_per_dim * self.act_dim
        self.log_ent_coef = torch.tensor(math.log(cfg.ent_coef_init), device=self.device,
                                         requires_grad=cfg.autotune)
        self.ent_coef_optim = adam([self.log_ent_coef], cfg.ent_coef_lr, cfg.fused_optimizer) if cfg.autotune else None

    @property
    def ent_coef(self) -> float:
        """The entropy coefficient alpha now."""
        return float(self.log_ent_coef.detach().exp())

    # ------------------------------------------------------------------ acting
    def default_exploration(self) -> float:
        return 1.0

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        """Action for one observation: float32 ``(act_dim,)`` in [-1, 1].

        ``explore=True``: uniform random before ``learning_starts`` env steps, afterwards a sample of the policy
        (its std scaled by :attr:`exploration`).  ``explore=False``: ``tanh(mean)``.  A NaN/inf or wrong-size
        observation raises ``ValueError``.
        """
        obs_t = self.obs_tensor(obs)
        if explore and self.env_steps < self.config.learning_starts:
            return self.rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)
        with torch.inference_mode():
            obs_t = self.normalize_obs(obs_t)
            scale = self.exploration if explore else 0.0
            if scale > 0.0:
                action = self.actor.sample(obs_t, self.generator, std_scale=scale)[0]
            else:
                action = self.actor(obs_t)
            return action[0].cpu().numpy()

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """``r + discount * (1 - terminated) * (min_i Q_i'(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(.|s')``."""
        next_obs = self.normalize_obs(batch.next_obs)
        next_action, next_log_prob = self.actor.sample(next_obs, self.generator)
        next_q = self.critic_target(next_obs, next_action).min(dim=0).values
        next_q = next_q - self.log_ent_coef.detach().exp() * next_log_prob
        return batch.rewards + self.discounts(batch) * (1.0 - batch.terminated) * next_q

    def update(self, batch: Optional[Batch] = None) -> Dict[str, float]:
        """One gradient step of critics, actor and (autotune) entropy coefficient; targets move every update.

        Returns ``critic_loss`` (sum over critics of the mean squared TD error, importance-weighted with PER),
        ``q_mean``, ``actor_loss``, ``ent_coef`` (alpha used in this update) and ``entropy`` (``-mean log pi``).
        """
        cfg = self.config
        batch = self.sample_batch(batch)
        obs = self.normalize_obs(batch.obs)
        alpha = self.log_ent_coef.detach().exp()

        critic_loss, q = self.critic_step(obs, batch)

        action, log_prob = self.actor.sample(obs, self.generator)
        q_pi = self.critic(obs, action, frozen=True).min(dim=0).values
        actor_loss = (alpha * log_prob - q_pi).mean()
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optim.step()

        log_prob = log_prob.detach()
        if self.ent_coef_optim is not None:
            ent_loss = -(self.log_ent_coef * (log_prob + self.target_entropy)).mean()
            self.ent_coef_optim.zero_grad(set_to_none=True)
            ent_loss.backward()
            self.ent_coef_optim.step()
        polyak_update(self.critic_target, self.critic, cfg.tau)

        numbers = torch.stack([critic_loss, q.mean(), actor_loss.detach(), alpha,
                               -log_prob.mean()]).tolist()
        return dict(zip(("critic_loss", "q_mean", "actor_loss", "ent_coef", "entropy"), numbers))

    # ------------------------------------------------------------------ persistence
    def extra_state(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"log_ent_coef": self.log_ent_coef.detach().clone()}
        if self.ent_coef_optim is not None:
            d["ent_coef_optim"] = self.ent_coef_optim.state_dict()
        return d

    def load_extra_state(self, d: Dict[str, Any]) -> None:
        with torch.no_grad():
            if self.config.autotune:
                self.log_ent_coef.copy_(d["log_ent_coef"])
            # a fixed coefficient comes from this run's config, like the learning rates
        if self.ent_coef_optim is not None and "ent_coef_optim" in d:
            load_optimizer_state(self.ent_coef_optim, d["ent_coef_optim"], self.config.ent_coef_lr)
