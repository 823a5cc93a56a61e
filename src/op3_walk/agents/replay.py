"""Replay memory shared by every off-policy agent: uniform or prioritised sampling, 1-step or n-step returns.

A preallocated numpy ring buffer of transitions ``(obs, action, reward, next_obs, terminated)``.  Only
``terminated`` (the MDP ended: the robot fell) stops bootstrapping; a time-limit truncation is not a terminal state,
so the critic keeps bootstrapping from ``next_obs``.

**n-step returns** (``n_step > 1``): transitions are held back until ``n`` have arrived, then the oldest is stored as
``(obs_t, a_t, r_t + g r_{t+1} + ... + g^(k-1) r_{t+k-1}, next_obs_{t+k-1}, terminated_{t+k-1})`` with the discount
``g^k`` to apply to the bootstrap (:attr:`Batch.discounts`), ``k = n`` in mid-episode.  At an episode end the
pending transitions are all stored with shorter sums (``k < n``): after a termination the stored ``terminated`` is
1 and nothing is bootstrapped; after a truncation ``terminated`` is 0 and each bootstraps from the episode's last
``next_obs``.  An episode end is the ``terminated``/``truncated`` flag of :meth:`ReplayMemory.add`, a call to
:meth:`ReplayMemory.flush`, or (a safety net for callers that never flag truncation) a transition whose ``obs`` is
not the previous transition's ``next_obs``.

**Prioritised replay** (``prioritized=True``, Schaul et al. 2016, proportional variant): transition ``i`` is drawn
with probability ``p_i^alpha / sum_j p_j^alpha`` (stratified over ``batch_size`` equal segments of a sum tree),
``p_i = |TD error| + eps`` as last reported through :meth:`ReplayMemory.update_priorities`; new transitions get the
largest priority seen so far.  The batch carries importance weights ``w_i = (N P(i))^-beta / max_j w_j`` (the max
over the whole memory, via a min tree), ``beta`` annealed linearly from ``beta0`` to 1 over ``beta_steps`` added
transitions.

``sample`` returns a :class:`Batch` of torch tensors: the indices are drawn first, then each array is gathered once
and wrapped without a further copy.
"""
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch


_FLOAT32_MAX = float(np.finfo(np.float32).max)


class Batch(NamedTuple):
    """A minibatch of transitions; float32 tensors, ``rewards`` and ``terminated`` have shape ``(B,)``.

    The last three fields are optional (``None``): agents use their own ``gamma`` when ``discounts`` is ``None``
    and an unweighted loss when ``weights`` is ``None``.
    """
    obs: torch.Tensor          # (B, obs_dim)
    actions: torch.Tensor      # (B, act_dim), normalised to [-1, 1]; DQN: (B, 1) holding the action index
    rewards: torch.Tensor      # (B,), the n-step discounted sum with n_step > 1
    next_obs: torch.Tensor     # (B, obs_dim)
    terminated: torch.Tensor   # (B,), 1.0 where the episode ended in a terminal state, else 0.0
    discounts: Optional[torch.Tensor] = None  # (B,), gamma^k for the bootstrap; None: one step (agent's gamma)
    weights: Optional[torch.Tensor] = None    # (B,), importance-sampling weights (max 1); None: uniform sampling
    indices: Optional[torch.Tensor] = None    # (B,) int64 rows in the memory, for update_priorities

    def to(self, device: Any) -> "Batch":
        """The same batch on ``device`` (a no-op on the device it already lives on)."""
        return Batch(*(None if t is None else t.to(device, non_blocking=True) for t in self))


def check_vector(value: Any, dim: int, name: str) -> np.ndarray:
    """``value`` as a float32 vector of length ``dim``; ValueError on a wrong shape or a non-finite entry."""
    with np.errstate(over="ignore", invalid="ignore"):  # too-large values become inf and are reported below
        arr = np.asarray(value, dtype=np.float32)
    if arr.shape != (dim,):
        raise ValueError("%s has shape %s, expected (%d,)" % (name, arr.shape, dim))
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        raise ValueError("%s has non-finite values (NaN/inf or beyond float32) at index %s" % (name, bad.tolist()))
    return arr


def check_reward(reward: Any) -> float:
    """``reward`` as a float; ValueError unless it is a real number finite in float32."""
    if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, (int, float, np.integer, np.floating)):
        raise ValueError("reward must be a number, got %r" % (reward,))
    if not abs(float(reward)) <= _FLOAT32_MAX:  # also catches NaN
        raise ValueError("reward is not finite (as float32): %r" % (reward,))
    return float(reward)


def check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError("%s must be a bool, got %r" % (name, value))
    return bool(value)


class PriorityTree:
    """Sum and min segment trees (float64) over ``capacity`` leaves, with vectorised updates and prefix search.

    Node 1 is the root, node ``k`` has children ``2k`` and ``2k + 1``; leaf ``i`` is node ``leaf0 + i``.  Unused
    leaves hold 0 in the sum tree and +inf in the min tree.
    """

    def __init__(self, capacity: int):
        leaf0 = 1
        while leaf0 < capacity:
            leaf0 *= 2
        self.capacity = int(capacity)
        self.leaf0 = leaf0
        self.depth = leaf0.bit_length() - 1
        self.sums = np.zeros(2 * leaf0, dtype=np.float64)
        self.mins = np.full(2 * leaf0, np.inf, dtype=np.float64)

    def set(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Leaves ``indices`` take ``values`` (for a repeated index the last value wins); ancestors are recomputed."""
        nodes = np.asarray(indices, dtype=np.int64) + self.leaf0
        self.sums[nodes] = values
        self.mins[nodes] = values
        for _ in range(self.depth):
            nodes = nodes // 2
            left, right = 2 * nodes, 2 * nodes + 1
            self.sums[nodes] = self.sums[left] + self.sums[right]
            self.mins[nodes] = np.minimum(self.mins[left], self.mins[right])

    def leaves(self, count: int) -> np.ndarray:
        return self.sums[self.leaf0:self.leaf0 + count]

    @property
    def total(self) -> float:
        return float(self.sums[1])

    @property
    def min(self) -> float:
        return float(self.mins[1])

    def find(self, prefix: np.ndarray, size: int) -> np.ndarray:
        """For each ``prefix`` in ``[0, total)`` the leaf whose cumulative-sum interval contains it."""
        u = np.array(prefix, dtype=np.float64)
        nodes = np.ones(len(u), dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * nodes
            left_sum = self.sums[left]
            go_right = u >= left_sum
            u -= np.where(go_right, left_sum, 0.0)
            nodes = left + go_right
        # rounding can push a prefix just past the last non-empty leaf: clamp into the filled part
        return np.minimum(nodes - self.leaf0, size - 1)


class ReplayMemory:
    """Fixed-capacity FIFO of transitions; uniform or prioritised sampling; optional n-step returns.

    Arrays are preallocated with ``np.zeros`` (pages are only touched as they fill), so a large ``capacity`` costs
    memory as transitions arrive; :attr:`nbytes` reports the bytes holding data.  Sampling draws from the memory's
    own ``np.random.Generator`` seeded by ``seed``, so runs are reproducible and independent of global RNGs.

    ``gamma`` is only used for n-step sums (``n_step > 1``); ``alpha``, ``beta0``, ``beta_steps`` and ``eps`` only
    with ``prioritized=True``.
    """

    _ARRAYS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, seed: int = 0, n_step: int = 1,
                 gamma: float = 0.99, prioritized: bool = False, alpha: float = 0.6, beta0: float = 0.4,
                 beta_steps: int = 100000, eps: float = 1e-6):
        if obs_dim < 1 or act_dim < 1 or capacity < 1:
            raise ValueError("obs_dim, act_dim and capacity must be >= 1, got %d, %d, %d"
                             % (obs_dim, act_dim, capacity))
        if n_step < 1:
            raise ValueError("n_step must be >= 1, got %r" % (n_step,))
        if not 0.0 <= gamma <= 1.0:
            raise ValueError("gamma must be in [0, 1], got %r" % (gamma,))
        if prioritized and not (alpha >= 0.0 and 0.0 <= beta0 <= 1.0 and beta_steps >= 1 and eps > 0.0):
            raise ValueError("prioritized replay needs alpha >= 0, beta0 in [0, 1], beta_steps >= 1 and eps > 0; "
                             "got %r, %r, %r, %r" % (alpha, beta0, beta_steps, eps))
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.capacity = int(capacity)
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self.prioritized = bool(prioritized)
        self.alpha, self.beta0, self.beta_steps, self.eps = float(alpha), float(beta0), int(beta_steps), float(eps)
        self.rng = np.random.default_rng(seed)
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, act_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        # gamma^k per stored transition; only kept for n-step returns (one step: the agent's gamma)
        self.discounts = np.zeros(capacity, dtype=np.float32) if self.n_step > 1 else None
        self.tree = PriorityTree(capacity) if self.prioritized else None
        self.max_priority = 1.0   # largest |TD error| + eps seen (new transitions get it, raised to alpha)
        self.pos = 0      # next slot to write
        self.size = 0     # number of valid transitions
        self.added = 0    # transitions ever passed to add() (drives the beta schedule)
        # n-step: transitions of the current episode not yet stored, oldest first: (obs, action, reward, next, term)
        self.pending: List[Tuple[np.ndarray, np.ndarray, float, np.ndarray, bool]] = []

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        """Bytes holding stored transitions (for logging); PER adds 32 bytes a row (two float64 trees)."""
        per_row = 4 * (2 * self.obs_dim + self.act_dim + 2)
        if self.discounts is not None:
            per_row += 4
        if self.tree is not None:
            per_row += 32
        return self.size * per_row

    @property
    def beta(self) -> float:
        """Current importance-sampling exponent (PER): ``beta0`` rising linearly to 1 over ``beta_steps`` adds."""
        return self.beta0 + (1.0 - self.beta0) * min(1.0, self.added / self.beta_steps)

    # ------------------------------------------------------------------ writing
    def add(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool,
            truncated: bool = False) -> None:
        """Store one transition, overwriting the oldest when full (with n-step returns: queue it, see module doc).

        Everything is checked before anything is written: a wrong shape or a NaN/inf raises ``ValueError`` and the
        memory is unchanged.  ``truncated`` only matters for n-step returns (it ends the episode's sums).
        """
        obs_v = check_vector(obs, self.obs_dim, "obs")
        act_v = check_vector(action, self.act_dim, "action")
        next_v = check_vector(next_obs, self.obs_dim, "next_obs")
        reward = check_reward(reward)
        terminated = check_flag(terminated, "terminated")
        truncated = check_flag(truncated, "truncated")
        self.added += 1
        if self.n_step == 1:
            self._write(obs_v, act_v, reward, next_v, terminated, None)
            return
        if self.pending and not np.array_equal(obs_v, self.pending[-1][3]):
            self.flush()  # not a continuation of the pending episode: it ended (unflagged truncation)
        self.pending.append((obs_v, act_v, reward, next_v, terminated))
        if terminated or truncated:
            self.flush()
        elif len(self.pending) == self.n_step:
            self._store_oldest_pending()

    def flush(self) -> None:
        """End the pending n-step episode: store each held-back transition with the rewards it has (1-step: no-op)."""
        while self.pending:
            self._store_oldest_pending()

    def _store_oldest_pending(self) -> None:
        ret, discount = 0.0, 1.0
        for _, _, r, _, _ in self.pending:
            ret += discount * r
            discount *= self.gamma
        obs_v, act_v = self.pending[0][0], self.pending[0][1]
        _, _, _, next_v, terminated = self.pending[-1]
        self._write(obs_v, act_v, ret, next_v, terminated, discount)
        self.pending.pop(0)

    def _write(self, obs_v: np.ndarray, act_v: np.ndarray, reward: float, next_v: np.ndarray, terminated: bool,
               discount: Optional[float]) -> None:
        i = self.pos
        self.obs[i] = obs_v
        self.actions[i] = act_v
        self.rewards[i] = reward
        self.next_obs[i] = next_v
        self.terminated[i] = 1.0 if terminated else 0.0
        if self.discounts is not None:
            self.discounts[i] = discount
        if self.tree is not None:
            self.tree.set(np.array([i]), np.array([self.max_priority ** self.alpha]))
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    # ------------------------------------------------------------------ sampling
    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions (with replacement), uniformly or by priority, as CPU tensors."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay memory")
        weights = None
        if self.tree is None:
            idx = self.rng.integers(0, self.size, size=batch_size)
        else:
            total = self.tree.total
            prefix = (np.arange(batch_size) + self.rng.random(batch_size)) * (total / batch_size)
            idx = self.tree.find(prefix, self.size)
            # w_i / max_j w_j = (p_i / p_min)^-beta, with p the stored (already alpha-powered) priorities
            w = (self.tree.sums[self.tree.leaf0 + idx] / self.tree.min) ** (-self.beta)
            weights = torch.from_numpy(w.astype(np.float32))
        # fancy indexing copies, so the tensors never alias the ring buffer
        return Batch(torch.from_numpy(self.obs[idx]), torch.from_numpy(self.actions[idx]),
                     torch.from_numpy(self.rewards[idx]), torch.from_numpy(self.next_obs[idx]),
                     torch.from_numpy(self.terminated[idx]),
                     None if self.discounts is None else torch.from_numpy(self.discounts[idx]),
                     weights, torch.from_numpy(idx))

    def probabilities(self) -> np.ndarray:
        """Sampling probability of each stored transition (uniform without PER); for tests and diagnostics."""
        if self.tree is None:
            return np.full(self.size, 1.0 / self.size) if self.size else np.zeros(0)
        leaves = self.tree.leaves(self.size)
        return leaves / leaves.sum()

    def update_priorities(self, indices: Any, td_errors: Any) -> None:
        """Set the priorities of rows ``indices`` from their absolute TD errors (no-op without PER).

        ValueError (and nothing changed) on mismatched lengths, an index outside the filled part or a non-finite
        error.
        """
        if self.tree is None:
            return
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64).ravel()
        err = td_errors.detach().cpu().numpy() if isinstance(td_errors, torch.Tensor) else np.asarray(td_errors)
        err = np.abs(np.asarray(err, dtype=np.float64).ravel())
        if idx.shape != err.shape:
            raise ValueError("update_priorities: %d indices but %d TD errors" % (idx.size, err.size))
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise ValueError("update_priorities: index outside the %d stored transitions" % self.size)
        if not np.all(np.isfinite(err)):
            raise ValueError("update_priorities: non-finite TD errors")
        priority = err + self.eps
        if priority.size:
            self.max_priority = max(self.max_priority, float(priority.max()))
        self.tree.set(idx, priority ** self.alpha)

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> Dict[str, Any]:
        """The filled part as tensors plus positions, pending n-step transitions, priorities and the sampler's RNG
        state (``torch.load(weights_only=True)``-safe)."""
        d: Dict[str, Any] = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "capacity": self.capacity,
                             "size": self.size, "pos": self.pos, "rng": self.rng.bit_generator.state,
                             "n_step": self.n_step, "gamma": self.gamma, "added": self.added}
        for name in self._ARRAYS:
            d[name] = torch.from_numpy(getattr(self, name)[:self.size].copy())
        if self.discounts is not None:
            d["discounts"] = torch.from_numpy(self.discounts[:self.size].copy())
            d["pending"] = {
                "obs": torch.from_numpy(np.array([p[0] for p in self.pending], dtype=np.float32)
                                        .reshape(-1, self.obs_dim)),
                "actions": torch.from_numpy(np.array([p[1] for p in self.pending], dtype=np.float32)
                                            .reshape(-1, self.act_dim)),
                "rewards": [p[2] for p in self.pending],
                "next_obs": torch.from_numpy(np.array([p[3] for p in self.pending], dtype=np.float32)
                                             .reshape(-1, self.obs_dim)),
                "terminated": [p[4] for p in self.pending],
            }
        if self.tree is not None:
            d["priorities"] = torch.from_numpy(self.tree.leaves(self.size).copy())
            d["max_priority"] = self.max_priority
            d["alpha"] = self.alpha
        return d

    def load_state_dict(self, d: Dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`.

        With the same capacity the layout (and so every later sample) is identical.  With a different capacity the
        transitions are reordered oldest-first and the newest ``capacity`` of them are kept.  A memory saved with
        other n-step settings is refused (its rewards are sums over another horizon); priorities are restored when
        both memories are prioritised with the same ``alpha``, and start at 1 otherwise.
        """
        if (d["obs_dim"], d["act_dim"]) != (self.obs_dim, self.act_dim):
            raise ValueError("replay memory holds obs_dim %d, act_dim %d; this memory has obs_dim %d, act_dim %d"
                             % (d["obs_dim"], d["act_dim"], self.obs_dim, self.act_dim))
        saved_n = int(d.get("n_step", 1))
        if saved_n != self.n_step or (saved_n > 1 and float(d["gamma"]) != self.gamma):
            raise ValueError("replay memory holds %d-step returns (gamma %s); this memory uses %d-step (gamma %s)"
                             % (saved_n, d.get("gamma"), self.n_step, self.gamma))
        size, pos = int(d["size"]), int(d["pos"])
        names = list(self._ARRAYS) + (["discounts"] if self.discounts is not None else [])
        arrays = {name: d[name].cpu().numpy() for name in names}
        priorities = None
        if self.tree is not None:
            if "priorities" in d and float(d.get("alpha", self.alpha)) == self.alpha:
                priorities = d["priorities"].cpu().numpy().astype(np.float64)
            else:
                priorities = np.ones(size, dtype=np.float64)
            arrays["priorities"] = priorities
        if any(len(a) != size for a in arrays.values()):
            raise ValueError("replay memory state is inconsistent: arrays do not hold %d rows" % size)
        pending = []
        if self.n_step > 1:
            p = d["pending"]
            pending = [(p["obs"][i].numpy().copy(), p["actions"][i].numpy().copy(), float(p["rewards"][i]),
                        p["next_obs"][i].numpy().copy(), bool(p["terminated"][i])) for i in range(len(p["rewards"]))]
        if int(d["capacity"]) == self.capacity:
            new_pos = pos
        else:
            if size == int(d["capacity"]):  # saved memory was full: oldest row is at pos
                order = np.concatenate([np.arange(pos, size), np.arange(0, pos)])
                arrays = {name: a[order] for name, a in arrays.items()}
            keep = min(size, self.capacity)
            arrays = {name: a[size - keep:] for name, a in arrays.items()}
            size = keep
            new_pos = size % self.capacity
        priorities = arrays.pop("priorities", None)
        for name, a in arrays.items():
            getattr(self, name)[:size] = a
        self.size, self.pos = size, new_pos
        self.rng.bit_generator.state = d["rng"]
        self.added = int(d.get("added", size))
        self.pending = pending
        if self.tree is not None:
            self.tree = PriorityTree(self.capacity)
            if size:
                self.tree.set(np.arange(size), priorities)
            self.max_priority = float(d.get("max_priority", 1.0))
