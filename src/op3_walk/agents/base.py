"""What every off-policy agent shares: replay settings, counters, RNGs, the step-by-step interface, persistence.

The interface a driver (``op3_walk.training.Trainer``, a ROS node) uses, identical for DQN, DDPG, TD3 and SAC::

    action = agent.act(obs)                 # explore=True; explore=False: the deterministic policy
    next_obs, reward, terminated, truncated, _ = env.step(action)
    agent.observe(obs, action, reward, next_obs, terminated, truncated)   # only `terminated` stops bootstrapping
    for _ in range(agent.updates_due()):    # how many gradient steps are due after this env step
        stats = agent.update()              # {"critic_loss": ..., "q_mean": ..., ...} as floats

``updates_due()`` is ``config.updates_per_step`` on every env step once :meth:`ready` for the actor-critic agents;
DQN returns ``gradient_steps`` on every ``train_freq``-th env step.  ``set_exploration(value)`` overrides the
exploration level at run time (e.g. from a ROS service); ``exploration`` reads it.

Randomness comes only from the agent's own generators, all derived from ``seed``: a numpy generator for
random/explorative actions, one for replay sampling, and a torch generator for noise inside updates.  Network
initialisation uses a forked torch RNG seeded with ``seed``, leaving the global one untouched.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from op3_walk.agents.networks import load_optimizer_state
from op3_walk.agents.replay import ReplayMemory, check_vector
from op3_walk.config import doc, to_dict


@dataclass
class OffPolicyConfig:
    """Settings every off-policy agent has: networks, discount, replay memory, warm-up, threads, checkpoints."""

    hidden_sizes: List[int] = doc("hidden layer widths of every network (policy, each critic, Q-network)",
                                  default_factory=lambda: [256, 256])
    gamma: float = doc("discount factor per control step", default=0.99)
    batch_size: int = doc("transitions per gradient update", default=256)
    buffer_size: int = doc("replay memory capacity (transitions)", default=1000000)
    learning_starts: int = doc("env steps of uniform random actions before learning starts", default=5000)
    n_step: int = doc("steps summed in each TD target (1 = one-step TD; >1 = n-step returns, cut at episode ends)",
                      default=1)
    prioritized_replay: bool = doc("sample transitions in proportion to |TD error|^per_alpha (PER) instead of "
                                   "uniformly", default=False)
    per_alpha: float = doc("PER: priority exponent (0 = uniform)", default=0.6)
    per_beta0: float = doc("PER: initial importance-sampling exponent, annealed linearly to 1", default=0.4)
    per_beta_steps: int = doc("PER: env steps over which the importance-sampling exponent reaches 1", default=1000000)
    per_eps: float = doc("PER: added to |TD error| so no transition gets priority 0", default=1e-6)
    fused_optimizer: bool = doc("use torch's fused Adam kernel where supported (same maths, faster); otherwise "
                                "the default implementation", default=True)
    torch_threads: int = doc("torch CPU threads (torch.set_num_threads, process-wide); 0 = torch's default",
                             default=1)
    save_buffer: bool = doc("include the replay memory in checkpoints (large: ~0.6 GB per million transitions "
                            "at obs 62 / act 18)", default=False)

    def validate(self) -> None:
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError("hidden_sizes must be a non-empty list of positive widths, got %r" % (self.hidden_sizes,))
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1], got %r" % self.gamma)
        for name in ("learning_starts", "torch_threads", "per_alpha"):
            if getattr(self, name) < 0:
                raise ValueError("%s must be >= 0, got %r" % (name, getattr(self, name)))
        for name in ("batch_size", "n_step", "per_beta_steps"):
            if getattr(self, name) < 1:
                raise ValueError("%s must be >= 1, got %r" % (name, getattr(self, name)))
        if not 0.0 <= self.per_beta0 <= 1.0:
            raise ValueError("per_beta0 must be in [0, 1], got %r" % self.per_beta0)
        if not self.per_eps > 0:
            raise ValueError("per_eps must be > 0, got %r" % self.per_eps)
        if self.buffer_size < self.batch_size:
            raise ValueError("buffer_size (%d) must be >= batch_size (%d)" % (self.buffer_size, self.batch_size))

    def check_positive(self, *names: str) -> None:
        """ValueError unless every field in ``names`` is > 0 (for subclasses' ``validate``)."""
        for name in names:
            if not getattr(self, name) > 0:
                raise ValueError("%s must be > 0, got %r" % (name, getattr(self, name)))


class OffPolicyAgent:
    """Base of every agent: counters, RNGs, replay memory, ``observe``/``ready``/``updates_due``, checkpoints.

    Subclasses set ``algo``, build their networks and optimisers in :meth:`build`, list what to save in
    ``modules`` (networks) and ``optimizers`` (name -> config field holding its learning rate), and implement
    ``act``, ``update`` and the exploration hooks.
    """

    algo = ""
    modules: Tuple[str, ...] = ()
    optimizers: Dict[str, str] = {}
    architecture_keys: Tuple[str, ...] = ("hidden_sizes",)   # config keys a checkpoint must match
    loss_keys: Tuple[str, ...] = ()   # keys update() may return (for log columns)

    def __init__(self, obs_dim: int, act_dim: int, config: Any, seed: int = 0, device: str = "cpu"):
        config.validate()
        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        self.config = config
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        if self.obs_dim < 1 or self.act_dim < 1:
            raise ValueError("obs_dim and act_dim must be >= 1, got %d, %d" % (self.obs_dim, self.act_dim))
        self.device = torch.device(device)
        self.env_steps = 0   # transitions observed
        self.updates = 0     # (critic) gradient steps taken
        self._exploration_override: Optional[float] = None

        act_seed, memory_seed, torch_seed = np.random.SeedSequence(seed).generate_state(3)
        self.rng = np.random.default_rng(int(act_seed))
        self.memory = ReplayMemory(
            obs_dim, self.stored_action_dim(), config.buffer_size, seed=int(memory_seed), n_step=config.n_step,
            gamma=config.gamma, prioritized=config.prioritized_replay, alpha=config.per_alpha,
            beta0=config.per_beta0, beta_steps=config.per_beta_steps, eps=config.per_eps)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(torch_seed))
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            self.build()
        # acting on an accelerator reuses one device input tensor instead of allocating one per call
        self._obs_in = None if self.device.type == "cpu" else torch.zeros(1, self.obs_dim, device=self.device)

    # ------------------------------------------------------------------ to implement
    def build(self) -> None:
        """Create networks (under the agent's seeded RNG) and optimisers."""
        raise NotImplementedError

    def stored_action_dim(self) -> int:
        """Width of the action rows in the replay memory."""
        return self.act_dim

    def default_exploration(self) -> float:
        """The exploration level the config (or schedule) sets now, without an override."""
        raise NotImplementedError

    def check_exploration(self, value: float) -> None:
        if not (np.isfinite(value) and value >= 0.0):
            raise ValueError("exploration must be a finite number >= 0, got %r" % (value,))

    # ------------------------------------------------------------------ exploration
    @property
    def exploration(self) -> float:
        """Exploration level in force: noise std (TD3/DDPG), std multiplier (SAC) or epsilon (DQN)."""
        if self._exploration_override is not None:
            return self._exploration_override
        return self.default_exploration()

    def set_exploration(self, value: Optional[float]) -> None:
        """Override the exploration level from now on (kept in checkpoints); ``None`` returns to the config's.

        ValueError (and nothing changed) for a negative or non-finite value (or, for DQN, epsilon above 1).
        """
        if value is None:
            self._exploration_override = None
            return
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError("exploration must be a number, got %r" % (value,))
        value = float(value)
        self.check_exploration(value)
        self._exploration_override = value

    # ------------------------------------------------------------------ stepping
    def obs_tensor(self, obs: Any) -> torch.Tensor:
        """A checked observation as a ``(1, obs_dim)`` float32 tensor on the agent's device (ValueError if bad).

        On the CPU it wraps the checked numpy array without a copy; on another device it is copied into one
        preallocated device tensor.
        """
        arr = check_vector(obs, self.obs_dim, "observation")
        if not (arr.flags.c_contiguous and arr.flags.writeable):   # e.g. a view of a ROS message buffer
            arr = np.array(arr)
        arr = torch.from_numpy(arr).unsqueeze(0)
        if self._obs_in is None:
            return arr
        return self._obs_in.copy_(arr, non_blocking=False)

    def observe(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool,
                truncated: bool = False) -> None:
        """Store one transition.  Only ``terminated`` ends bootstrapping; ``truncated`` (a time limit) marks an
        episode end for n-step returns.  A malformed transition raises ``ValueError`` and changes nothing."""
        self.memory.add(obs, self.action_row(action), reward, next_obs, terminated, truncated)
        self.env_steps += 1

    def action_row(self, action: Any) -> Any:
        """``action`` as stored in the memory (DQN: the index as a 1-vector)."""
        return action

    def ready(self) -> bool:
        """Whether :meth:`update` may run: past ``learning_starts`` and at least one batch in memory."""
        return self.env_steps >= self.config.learning_starts and len(self.memory) >= self.config.batch_size

    def updates_due(self) -> int:
        """Gradient steps to take after the latest env step: ``updates_per_step`` once :meth:`ready`, else 0."""
        return self.config.updates_per_step if self.ready() else 0

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation preprocessing shared by acting and learning; identity for now.

        The place for running-mean/std normalisation: its statistics would then go into :meth:`state_dict` and the
        exported policy.
        """
        return obs

    def sample_batch(self, batch: Optional[Any]) -> Any:
        """``batch`` (for tests) or a fresh sample from the memory, on the agent's device."""
        if batch is None:
            batch = self.memory.sample(self.config.batch_size)
        return batch.to(self.device)

    def discounts(self, batch: Any) -> Any:
        """Per-transition bootstrap discount: ``gamma^k`` from an n-step memory, else the scalar ``gamma``."""
        return self.config.gamma if batch.discounts is None else batch.discounts

    def report_td_errors(self, batch: Any, td_abs: torch.Tensor) -> None:
        """Feed |TD errors| back to a prioritised memory (no-op for uniform replay or a batch without indices)."""
        if self.memory.prioritized and batch.indices is not None:
            self.memory.update_priorities(batch.indices, td_abs)

    # ------------------------------------------------------------------ persistence
    def critic_step(self, obs: torch.Tensor, batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """One gradient step of ``self.critic`` (an ensemble) onto ``self.td_target(batch)``; PER-weighted.

        Returns ``(critic_loss, q)`` detached: the summed mean squared TD errors and the (n_critics, B) estimates.
        """
        q = self.critic(obs, batch.actions)                       # (n_critics, B)
        td = q - self.td_target(batch)
        sq = td.pow(2)
        if batch.weights is not None:
            sq = sq * batch.weights
        critic_loss = sq.mean(dim=1).sum()
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optim.step()
        self.updates += 1
        self.report_td_errors(batch, td.detach().abs().mean(dim=0))
        return critic_loss.detach(), q.detach()

    def extra_state(self) -> Dict[str, Any]:
        """Agent-specific state beyond ``modules``/``optimizers`` (weights_only-safe types)."""
        return {}

    def load_extra_state(self, d: Dict[str, Any]) -> None:
        pass

    def state_dict(self, include_buffer: Optional[bool] = None) -> Dict[str, Any]:
        """Everything needed to resume, as ``torch.load(weights_only=True)``-safe types.

        ``include_buffer`` defaults to ``config.save_buffer``.
        """
        if include_buffer is None:
            include_buffer = self.config.save_buffer
        d: Dict[str, Any] = {"algo": self.algo, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                             "config": to_dict(self.config)}
        for name in self.modules:
            d[name] = getattr(self, name).state_dict()
        for name in self.optimizers:
            d[name] = getattr(self, name).state_dict()
        d.update({"env_steps": self.env_steps, "updates": self.updates,
                  "numpy_rng": self.rng.bit_generator.state, "torch_rng": self.generator.get_state(),
                  "exploration_override": self._exploration_override})
        d.update(self.extra_state())
        if include_buffer:
            d["memory"] = self.memory.state_dict()
        return d

    def check_compatible(self, d: Dict[str, Any]) -> None:
        """ValueError unless ``d`` is a state of this algorithm with the same dimensions and network sizes."""
        if d.get("algo", self.algo) != self.algo:
            raise ValueError("state is for algorithm %r, this agent is %r" % (d.get("algo"), self.algo))
        if (d["obs_dim"], d["act_dim"]) != (self.obs_dim, self.act_dim):
            raise ValueError("state has obs_dim %d, act_dim %d; this agent has obs_dim %d, act_dim %d"
                             % (d["obs_dim"], d["act_dim"], self.obs_dim, self.act_dim))
        for key in self.architecture_keys:
            mine = getattr(self.config, key)
            saved = d["config"][key] if key in d["config"] else self.legacy_default(key)
            if isinstance(mine, (list, tuple)):
                mine, saved = list(mine), list(saved)
            if saved != mine:
                raise ValueError("state has %s %s, this agent has %s" % (key, saved, mine))

    def legacy_default(self, key: str) -> Any:
        """Value of architecture key ``key`` for checkpoints written before the key existed."""
        raise KeyError(key)

    def load_weights(self, d: Dict[str, Any]) -> None:
        """Only the networks (and their targets) from a :meth:`state_dict` of the same algorithm and architecture;
        replay memory, optimiser state, counters and RNGs stay (e.g. a learner switching to a better policy).

        ``ValueError`` (and nothing changed) when the state does not fit this agent."""
        self.check_compatible(d)
        missing = [name for name in self.modules if name not in d]
        if missing:
            raise ValueError("state has no %s" % ", ".join(missing))
        backup = {name: {k: v.clone() for k, v in getattr(self, name).state_dict().items()} for name in self.modules}
        try:
            for name in self.modules:
                getattr(self, name).load_state_dict(d[name])
        except (RuntimeError, KeyError) as exc:
            for name in self.modules:
                getattr(self, name).load_state_dict(backup[name])
            raise ValueError("state does not fit this agent's networks: %s" % exc) from None

    def load_state_dict(self, d: Dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (memory too when it was saved).

        Raises ``ValueError`` when the algorithm, dimensions or network sizes differ.  Learning rates come from this
        agent's config, so a resumed run may change them; the rest of the optimiser state is restored.
        """
        self.check_compatible(d)
        for name in self.modules:
            getattr(self, name).load_state_dict(d[name])
        for name, lr_field in self.optimizers.items():
            load_optimizer_state(getattr(self, name), d[name], getattr(self.config, lr_field))
        self.env_steps = int(d["env_steps"])
        self.updates = int(d["updates"])
        self.rng.bit_generator.state = d["numpy_rng"]
        self.generator.set_state(d["torch_rng"])
        override = d.get("exploration_override")
        self._exploration_override = None if override is None else float(override)
        self.load_extra_state(d)
        if "memory" in d:
            self.memory.load_state_dict(d["memory"])
