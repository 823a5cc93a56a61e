"""DQN: Deep Q-Network (Mnih et al., 2015) with the usual options: double DQN, Huber loss, n-step, PER.

Discrete actions: ``act_dim`` is the number of actions, :meth:`DQNAgent.act` returns a Python ``int`` in
``[0, act_dim)`` and :meth:`DQNAgent.observe` takes that int back (stored in the replay memory as a 1-wide float32
row; exact for any realistic number of actions).

Each :meth:`DQNAgent.update`:

1. TD target ``r + discount * (1 - terminated) * Q'(s', a*)`` with ``a* = argmax_a Q(s', a)`` (double DQN, the
   online network picks and the target network evaluates) or ``a* = argmax_a Q'(s', a)`` (plain DQN);
2. loss: Huber (``smooth_l1``, delta 1) or squared error between ``Q(s, a)`` and the target, importance-weighted
   with PER; gradient norm clipped to ``max_grad_norm``;
3. every ``target_update_interval`` gradient steps: ``target <- (1 - tau) target + tau online`` (``tau = 1``: the
   classic hard copy).

Exploration is epsilon-greedy: uniform random actions before ``learning_starts``, then epsilon falls linearly from
``exploration_initial_eps`` to ``exploration_final_eps`` over the first ``exploration_decay_steps`` env steps (counted
from 0) and stays there.  :meth:`DQNAgent.set_exploration` overrides epsilon.  Training cadence: ``updates_due()``
is ``gradient_steps`` on every ``train_freq``-th env step once :meth:`ready`.

``q_net`` is the exportable network (``Linear, ReLU, ..., Linear``; the greedy action is the argmax of its output).
"""
import copy
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch.nn import functional as F

from op3_walk.agents.base import OffPolicyAgent, OffPolicyConfig
from op3_walk.agents.networks import adam, mlp, polyak_update
from op3_walk.agents.replay import Batch
from op3_walk.config import doc

LOSSES = ("huber", "mse")


@dataclass
class DQNConfig(OffPolicyConfig):
    """DQN hyper-parameters (``config/agents/dqn.yaml``)."""

    batch_size: int = doc("transitions per gradient update", default=64)
    buffer_size: int = doc("replay memory capacity (transitions)", default=100000)
    learning_starts: int = doc("env steps of uniform random actions before learning starts", default=1000)
    lr: float = doc("Adam learning rate of the Q-network", default=1e-4)
    train_freq: int = doc("env steps between training rounds", default=4)
    gradient_steps: int = doc("gradient steps per training round", default=1)
    target_update_interval: int = doc("gradient steps between target-network updates", default=1000)
    tau: float = doc("target update factor: target <- (1 - tau) target + tau online; 1 = hard copy", default=1.0)
    double_dqn: bool = doc("double DQN: the online network picks the next action, the target network values it",
                           default=True)
    loss: str = doc("TD loss: 'huber' (smooth L1, delta 1) or 'mse'", default="huber")
    max_grad_norm: float = doc("clip the gradient's global L2 norm to this; 0 = no clipping", default=10.0)
    exploration_initial_eps: float = doc("epsilon (probability of a random action) at env step 0", default=1.0)
    exploration_final_eps: float = doc("epsilon after the decay", default=0.05)
    exploration_decay_steps: int = doc("env steps over which epsilon falls linearly from initial to final",
                                       default=100000)

    def validate(self) -> None:
        super().validate()
        self.check_positive("lr")
        for name in ("train_freq", "gradient_steps", "target_update_interval", "exploration_decay_steps"):
            if getattr(self, name) < 1:
                raise ValueError("%s must be >= 1, got %r" % (name, getattr(self, name)))
        if not 0.0 < self.tau <= 1.0:
            raise ValueError("tau must be in (0, 1], got %r" % self.tau)
        if self.loss not in LOSSES:
            raise ValueError("loss must be one of %s, got %r" % (", ".join(LOSSES), self.loss))
        if self.max_grad_norm < 0:
            raise ValueError("max_grad_norm must be >= 0, got %r" % self.max_grad_norm)
        for name in ("exploration_initial_eps", "exploration_final_eps"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError("%s must be in [0, 1], got %r" % (name, getattr(self, name)))


class DQNAgent(OffPolicyAgent):
    """DQN with its replay memory, counters and RNGs; everything needed to resume is in :meth:`state_dict`."""

    algo = "dqn"
    modules = ("q_net", "q_target")
    optimizers = {"q_optim": "lr"}
    loss_keys = ("critic_loss", "q_mean")   # what update() reports

    def __init__(self, obs_dim: int, act_dim: int, config: DQNConfig, seed: int = 0, device: str = "cpu"):
        super().__init__(obs_dim, act_dim, config, seed=seed, device=device)

    @property
    def n_actions(self) -> int:
        return self.act_dim

    def build(self) -> None:
        cfg = self.config
        self.q_net = mlp(self.obs_dim, self.act_dim, cfg.hidden_sizes).to(self.device)
        self.q_target = copy.deepcopy(self.q_net).requires_grad_(False)
        self.q_optim = adam(self.q_net.parameters(), cfg.lr, cfg.fused_optimizer)

    def stored_action_dim(self) -> int:
        return 1

    # ------------------------------------------------------------------ acting
    def default_exploration(self) -> float:
        """Scheduled epsilon at the current env step."""
        cfg = self.config
        frac = min(1.0, self.env_steps / cfg.exploration_decay_steps)
        return cfg.exploration_initial_eps + frac * (cfg.exploration_final_eps - cfg.exploration_initial_eps)

    def check_exploration(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError("epsilon must be in [0, 1], got %r" % (value,))

    def act(self, obs: np.ndarray, explore: bool = True) -> int:
        """Action index for one observation.

        ``explore=True``: uniform random before ``learning_starts`` env steps, afterwards epsilon-greedy with
        epsilon = :attr:`exploration`.  ``explore=False``: greedy.  A NaN/inf or wrong-size observation raises
        ``ValueError``.
        """
        obs_t = self.obs_tensor(obs)
        if explore and (self.env_steps < self.config.learning_starts or self.rng.random() < self.exploration):
            return int(self.rng.integers(self.act_dim))
        with torch.inference_mode():
            return int(self.q_net(self.normalize_obs(obs_t))[0].argmax())

    def action_row(self, action: Any) -> np.ndarray:
        """The action index as a float32 1-vector; ValueError unless an integer in ``[0, act_dim)``."""
        if isinstance(action, np.ndarray) and action.shape in ((), (1,)) and action.dtype.kind in "iu":
            action = action.reshape(()).item()
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
            raise ValueError("action must be an integer index, got %r" % (action,))
        if not 0 <= int(action) < self.act_dim:
            raise ValueError("action %d is outside [0, %d)" % (int(action), self.act_dim))
        return np.array([action], dtype=np.float32)

    def updates_due(self) -> int:
        """``gradient_steps`` on every ``train_freq``-th env step once :meth:`ready`, else 0."""
        if self.ready() and self.env_steps % self.config.train_freq == 0:
            return self.config.gradient_steps
        return 0

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def td_target(self, batch: Batch) -> torch.Tensor:
        """``r + discount * (1 - terminated) * Q'(s', a*)``, ``a*`` by the online (double) or target network."""
        next_obs = self.normalize_obs(batch.next_obs)
        next_q_all = self.q_target(next_obs)
        if self.config.double_dqn:
            best = self.q_net(next_obs).argmax(dim=1, keepdim=True)
            next_q = next_q_all.gather(1, best).squeeze(1)
        else:
            next_q = next_q_all.max(dim=1).values
        return batch.rewards + self.discounts(batch) * (1.0 - batch.terminated) * next_q

    def update(self, batch: Optional[Batch] = None) -> Dict[str, float]:
        """One gradient step on a sampled batch (or on ``batch``, for tests).

        Returns ``critic_loss`` (the TD loss of the Q-network, named like the actor-critic agents' for common
        logs) and ``q_mean`` (mean Q of the taken actions).
        """
        cfg = self.config
        batch = self.sample_batch(batch)
        obs = self.normalize_obs(batch.obs)
        actions = batch.actions[:, :1].long()

        td_target = self.td_target(batch)
        q = self.q_net(obs).gather(1, actions).squeeze(1)
        if cfg.loss == "huber":
            per_sample = F.smooth_l1_loss(q, td_target, reduction="none")
        else:
            per_sample = (q - td_target).pow(2)
        if batch.weights is not None:
            per_sample = per_sample * batch.weights
        loss = per_sample.mean()
        self.q_optim.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.q_net.parameters(), cfg.max_grad_norm)
        self.q_optim.step()
        self.updates += 1
        self.report_td_errors(batch, (q.detach() - td_target).abs())
        if self.updates % cfg.target_update_interval == 0:
            polyak_update(self.q_target, self.q_net, cfg.tau)
        numbers = torch.stack([loss.detach(), q.detach().mean()]).tolist()
        return {"critic_loss": numbers[0], "q_mean": numbers[1]}
