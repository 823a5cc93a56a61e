"""Replay memory shared by the off-policy agents.

A preallocated numpy ring buffer of transitions ``(obs, action, reward, next_obs, terminated)``.  Only
``terminated`` (the MDP ended: the robot fell) is stored; a time-limit truncation is not a terminal state, so the
caller stores the transition with ``terminated=False`` and the critic keeps bootstrapping from ``next_obs``.

``sample`` returns a :class:`Batch` of float32 torch tensors (the only numpy->torch conversion per update).
"""
from typing import Any, Dict, NamedTuple

import numpy as np
import torch


_FLOAT32_MAX = float(np.finfo(np.float32).max)


class Batch(NamedTuple):
    """A minibatch of transitions; float32 tensors, ``rewards`` and ``terminated`` have shape ``(B,)``."""
    obs: torch.Tensor          # (B, obs_dim)
    actions: torch.Tensor      # (B, act_dim), normalised to [-1, 1]
    rewards: torch.Tensor      # (B,)
    next_obs: torch.Tensor     # (B, obs_dim)
    terminated: torch.Tensor   # (B,), 1.0 where the episode ended in a terminal state, else 0.0

    def to(self, device: Any) -> "Batch":
        """The same batch on ``device`` (a no-op on the device it already lives on)."""
        return Batch(*(t.to(device, non_blocking=True) for t in self))


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


class ReplayMemory:
    """Fixed-capacity FIFO of transitions with uniform sampling.

    Arrays are preallocated with ``np.zeros`` (pages are only touched as they fill), so a large ``capacity`` costs
    memory as transitions arrive; :attr:`nbytes` reports the bytes holding data.  Sampling draws from the memory's
    own ``np.random.Generator`` seeded by ``seed``, so runs are reproducible and independent of global RNGs.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, seed: int = 0):
        if obs_dim < 1 or act_dim < 1 or capacity < 1:
            raise ValueError("obs_dim, act_dim and capacity must be >= 1, got %d, %d, %d"
                             % (obs_dim, act_dim, capacity))
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self.obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, act_dim), dtype=np.float32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.pos = 0    # next slot to write
        self.size = 0   # number of valid transitions

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        """Bytes holding stored transitions (for logging)."""
        per_row = 4 * (2 * self.obs_dim + self.act_dim + 2)
        return self.size * per_row

    def add(self, obs: Any, action: Any, reward: float, next_obs: Any, terminated: bool) -> None:
        """Store one transition, overwriting the oldest when full.

        Everything is checked before anything is written: a wrong shape or a NaN/inf raises ``ValueError`` and the
        memory is unchanged.
        """
        obs_v = check_vector(obs, self.obs_dim, "obs")
        act_v = check_vector(action, self.act_dim, "action")
        next_v = check_vector(next_obs, self.obs_dim, "next_obs")
        if isinstance(reward, (bool, np.bool_)) or not isinstance(reward, (int, float, np.integer, np.floating)):
            raise ValueError("reward must be a number, got %r" % (reward,))
        if not abs(float(reward)) <= _FLOAT32_MAX:  # also catches NaN
            raise ValueError("reward is not finite (as float32): %r" % (reward,))
        if not isinstance(terminated, (bool, np.bool_)):
            raise ValueError("terminated must be a bool, got %r" % (terminated,))
        i = self.pos
        self.obs[i] = obs_v
        self.actions[i] = act_v
        self.rewards[i] = reward
        self.next_obs[i] = next_v
        self.terminated[i] = 1.0 if terminated else 0.0
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn uniformly (with replacement) as CPU float32 tensors."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay memory")
        idx = self.rng.integers(0, self.size, size=batch_size)
        # fancy indexing copies, so the tensors never alias the ring buffer
        return Batch(torch.from_numpy(self.obs[idx]), torch.from_numpy(self.actions[idx]),
                     torch.from_numpy(self.rewards[idx]), torch.from_numpy(self.next_obs[idx]),
                     torch.from_numpy(self.terminated[idx]))

    # ---------------------------------------------------------------- persistence
    _ARRAYS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def state_dict(self) -> Dict[str, Any]:
        """The filled part as tensors plus positions and the sampler's RNG state (``weights_only``-safe)."""
        d = {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "capacity": self.capacity,
             "size": self.size, "pos": self.pos, "rng": self.rng.bit_generator.state}
        for name in self._ARRAYS:
            d[name] = torch.from_numpy(getattr(self, name)[:self.size].copy())
        return d

    def load_state_dict(self, d: Dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`.

        With the same capacity the layout (and so every later sample) is identical.  With a different capacity the
        transitions are reordered oldest-first and the newest ``capacity`` of them are kept.
        """
        if (d["obs_dim"], d["act_dim"]) != (self.obs_dim, self.act_dim):
            raise ValueError("replay memory holds obs_dim %d, act_dim %d; this memory has obs_dim %d, act_dim %d"
                             % (d["obs_dim"], d["act_dim"], self.obs_dim, self.act_dim))
        size, pos = int(d["size"]), int(d["pos"])
        arrays = {name: d[name].cpu().numpy() for name in self._ARRAYS}
        if any(len(a) != size for a in arrays.values()):
            raise ValueError("replay memory state is inconsistent: arrays do not hold %d rows" % size)
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
        for name, a in arrays.items():
            getattr(self, name)[:size] = a
        self.size, self.pos = size, new_pos
        self.rng.bit_generator.state = d["rng"]
