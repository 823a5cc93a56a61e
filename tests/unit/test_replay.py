"""ReplayMemory: ring buffer semantics, batch format, input checks, persistence, n-step returns, prioritised
sampling (sum tree, proportional draws, importance weights)."""
import io

import numpy as np
import pytest
import torch

from op3_walk.agents.replay import Batch, PriorityTree, ReplayMemory

OBS, ACT = 3, 2


def transition(i, terminated=False):
    """A transition whose every field encodes ``i``, so samples can be traced back."""
    return (np.full(OBS, i, dtype=np.float32), np.full(ACT, i / 100.0, dtype=np.float32), float(i),
            np.full(OBS, i + 0.5, dtype=np.float32), terminated)


def filled(n, capacity=10, seed=0):
    mem = ReplayMemory(OBS, ACT, capacity, seed=seed)
    for i in range(n):
        mem.add(*transition(i, terminated=(i % 3 == 0)))
    return mem


def stored_ids(mem, draws=2000):
    return set(mem.sample(draws).obs[:, 0].int().tolist())


def test_wrap_around_keeps_newest():
    mem = filled(13, capacity=5)
    assert len(mem) == 5
    assert stored_ids(mem) == {8, 9, 10, 11, 12}


def test_sample_shapes_dtypes_and_consistency():
    mem = filled(7)
    batch = mem.sample(16)
    assert isinstance(batch, Batch)
    assert batch.obs.shape == (16, OBS) and batch.next_obs.shape == (16, OBS)
    assert batch.actions.shape == (16, ACT)
    assert batch.rewards.shape == (16,) and batch.terminated.shape == (16,)
    assert all(t.dtype == torch.float32 for t in batch[:5])
    assert batch.discounts is None and batch.weights is None   # one-step, uniform
    assert batch.indices.dtype == torch.int64 and torch.equal(batch.obs[:, 0], batch.indices.float())
    ids = batch.obs[:, 0]
    assert torch.equal(batch.rewards, ids)
    assert torch.equal(batch.next_obs[:, 0], ids + 0.5)
    assert torch.allclose(batch.actions[:, 0], ids / 100.0)
    # terminated is stored exactly as given (every third transition)
    assert torch.equal(batch.terminated, (ids.int() % 3 == 0).float())


def test_sample_does_not_alias_storage():
    mem = filled(4)
    batch = mem.sample(8)
    batch.obs.fill_(-1.0)
    assert (mem.obs[:4] >= 0).all()


def test_empty_sample_raises():
    with pytest.raises(ValueError, match="empty"):
        ReplayMemory(OBS, ACT, 4).sample(2)


@pytest.mark.parametrize("change, message", [
    (lambda t: (np.zeros(OBS + 1),) + t[1:], "obs has shape"),
    (lambda t: (t[0], np.array([np.nan, 0.0])) + t[2:], "action has non-finite"),
    (lambda t: t[:2] + (float("inf"),) + t[3:], "reward"),
    (lambda t: t[:2] + (1e39,) + t[3:], "reward"),  # finite in float64, inf in float32
    (lambda t: t[:3] + (np.zeros((OBS, 1)),) + t[4:], "next_obs has shape"),
    (lambda t: t[:4] + (1.0,), "terminated must be a bool"),
])
def test_bad_input_rejected_and_memory_unchanged(change, message):
    mem = filled(4, capacity=6)
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in mem.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        mem.add(*change(transition(99)))
    after = mem.state_dict()
    assert len(mem) == 4 and mem.pos == 4
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


def test_nbytes_counts_filled_part():
    mem = ReplayMemory(OBS, ACT, 1000)
    assert mem.nbytes == 0
    mem.add(*transition(1))
    assert mem.nbytes == 4 * (2 * OBS + ACT + 2)


def batches_equal(a, b):
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
               for x, y in zip(a, b))


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_round_trip_same_capacity_identical_samples():
    mem = filled(13, capacity=5, seed=3)
    state = roundtrip(mem.state_dict())
    assert state["obs"].shape == (5, OBS)
    copy = ReplayMemory(OBS, ACT, 5, seed=99)
    copy.load_state_dict(state)
    assert len(copy) == 5 and copy.pos == mem.pos
    assert batches_equal(mem.sample(32), copy.sample(32))
    mem.add(*transition(50))
    copy.add(*transition(50))
    assert stored_ids(mem) == stored_ids(copy) == {9, 10, 11, 12, 50}


def test_state_dict_partial_fill_stores_only_filled_rows():
    state = filled(3, capacity=100).state_dict()
    assert state["obs"].shape == (3, OBS) and state["size"] == 3


@pytest.mark.parametrize("capacity, expected", [(3, {10, 11, 12}), (8, {8, 9, 10, 11, 12})])
def test_state_dict_into_other_capacity_keeps_newest(capacity, expected):
    copy = ReplayMemory(OBS, ACT, capacity)
    copy.load_state_dict(roundtrip(filled(13, capacity=5).state_dict()))
    assert len(copy) == len(expected)
    assert stored_ids(copy) == expected
    copy.add(*transition(77))  # the next write evicts the oldest (or fills a free slot)
    newest = sorted(expected)[1:] if capacity == 3 else sorted(expected)
    assert stored_ids(copy) == set(newest) | {77}


def test_state_dict_dimension_mismatch():
    with pytest.raises(ValueError, match="obs_dim"):
        ReplayMemory(OBS + 1, ACT, 5).load_state_dict(filled(2).state_dict())


def test_truncated_flag_is_validated_and_ignored_by_one_step_memory():
    mem = ReplayMemory(OBS, ACT, 5)
    with pytest.raises(ValueError, match="truncated must be a bool"):
        mem.add(*transition(1), 1)
    mem.add(*transition(1), True)
    assert len(mem) == 1 and mem.terminated[0] == 0.0


# ---------------------------------------------------------------- n-step returns
def chain(mem, ids, rewards, last_terminated=False, last_truncated=False):
    """Add a continuous episode segment: obs id -> id + 1, with the given rewards."""
    for k, (i, r) in enumerate(zip(ids, rewards)):
        last = k == len(ids) - 1
        mem.add(np.full(OBS, i, np.float32), np.full(ACT, i / 100.0, np.float32), float(r),
                np.full(OBS, i + 1, np.float32), bool(last and last_terminated), bool(last and last_truncated))


def stored(mem):
    """(obs id, reward, next id, terminated, discount) of each stored row, oldest first (no wrap here)."""
    return [(int(mem.obs[i, 0]), float(mem.rewards[i]), int(mem.next_obs[i, 0]), bool(mem.terminated[i]),
             float(mem.discounts[i])) for i in range(len(mem))]


def test_n_step_returns_by_hand_including_episode_ends():
    mem = ReplayMemory(OBS, ACT, 50, n_step=3, gamma=0.5)
    chain(mem, [0, 1], [1, 2])
    assert len(mem) == 0 and len(mem.pending) == 2            # held back until 3 have arrived
    chain(mem, [2, 3, 4], [3, 4, 5], last_terminated=True)   # episode A ends by a fall
    chain(mem, [10, 11, 12, 13], [10, 20, 30, 40], last_truncated=True)   # episode B hits the time limit
    chain(mem, [20, 21], [1, 2])                             # episode C: never flagged ...
    chain(mem, [30], [3])                                    # ... a transition not continuing it ends it
    assert len(mem.pending) == 1
    mem.flush()
    assert mem.pending == []
    assert stored(mem) == [
        # episode A (gamma 0.5): full 3-step sums, then shorter sums that stop at the fall, no bootstrap
        (0, 1 + 0.5 * 2 + 0.25 * 3, 3, False, 0.125),
        (1, 2 + 0.5 * 3 + 0.25 * 4, 4, False, 0.125),
        (2, 3 + 0.5 * 4 + 0.25 * 5, 5, True, 0.125),
        (3, 4 + 0.5 * 5, 5, True, 0.25),
        (4, 5.0, 5, True, 0.5),
        # episode B: truncation stops the sums too, but each bootstraps from the last next_obs with gamma^k
        (10, 10 + 0.5 * 20 + 0.25 * 30, 13, False, 0.125),
        (11, 20 + 0.5 * 30 + 0.25 * 40, 14, False, 0.125),
        (12, 30 + 0.5 * 40, 14, False, 0.25),
        (13, 40.0, 14, False, 0.5),
        # episode C, cut by the discontinuity, then the lone transition flushed explicitly
        (20, 1 + 0.5 * 2, 22, False, 0.25),
        (21, 2.0, 22, False, 0.5),
        (30, 3.0, 31, False, 0.5),
    ]
    batch = mem.sample(64)
    assert batch.discounts is not None and batch.discounts.dtype == torch.float32
    assert torch.equal(batch.discounts, torch.from_numpy(mem.discounts[batch.indices.numpy()]))
    assert mem.nbytes == len(mem) * (4 * (2 * OBS + ACT + 2) + 4)


def test_n_step_bad_input_leaves_pending_unchanged_and_state_round_trips():
    mem = ReplayMemory(OBS, ACT, 5, n_step=3, gamma=0.9, seed=1)
    chain(mem, range(7), [1, 2, 3, 4, 5, 6, 7])
    with pytest.raises(ValueError):
        mem.add(np.full(OBS, 7.0), np.full(ACT, np.nan), 1.0, np.full(OBS, 8.0), False)
    assert len(mem.pending) == 2 and mem.added == 7
    copy = ReplayMemory(OBS, ACT, 5, n_step=3, gamma=0.9, seed=2)
    copy.load_state_dict(roundtrip(mem.state_dict()))
    for m in (mem, copy):
        chain(m, [7, 8], [8, 9], last_truncated=True)
    assert stored_ids(mem) == stored_ids(copy) == {4, 5, 6, 7, 8}
    assert np.array_equal(mem.rewards, copy.rewards) and np.array_equal(mem.discounts, copy.discounts)
    assert batches_equal(mem.sample(16), copy.sample(16))
    with pytest.raises(ValueError, match="3-step"):
        ReplayMemory(OBS, ACT, 5, n_step=2, gamma=0.9).load_state_dict(mem.state_dict())
    with pytest.raises(ValueError, match="gamma"):
        ReplayMemory(OBS, ACT, 5, n_step=3, gamma=0.99).load_state_dict(mem.state_dict())


# ---------------------------------------------------------------- prioritised replay
def prioritized(n=6, capacity=8, alpha=0.5, **kwargs):
    mem = ReplayMemory(OBS, ACT, capacity, seed=0, prioritized=True, alpha=alpha, **kwargs)
    for i in range(n):
        mem.add(*transition(i))
    return mem


def test_sum_tree_sums_mins_and_prefix_search():
    tree = PriorityTree(5)
    tree.set(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 0.5]))
    assert tree.total == 10.5 and tree.min == 0.5
    assert tree.find(np.array([0.0, 0.99, 1.0, 2.999, 3.0, 6.0, 9.99, 10.0, 10.49]), 5).tolist() == \
        [0, 0, 1, 1, 2, 3, 3, 4, 4]
    assert tree.find(np.array([11.0]), 5).tolist() == [4]   # past the end (rounding): clamped to the filled part
    tree.set(np.array([1, 1]), np.array([7.0, 5.0]))        # repeated index: last value wins
    assert tree.total == 13.5 and tree.leaves(5).tolist() == [1.0, 5.0, 3.0, 4.0, 0.5]
    single = PriorityTree(1)
    single.set(np.array([0]), np.array([2.0]))
    assert single.total == 2.0 and single.find(np.array([1.5]), 1).tolist() == [0]


def test_per_samples_in_proportion_to_priority():
    mem = prioritized(alpha=0.5, eps=1e-6)
    td = np.array([0.0, 1.0, 3.0, 8.0, 15.0, 24.0])
    mem.update_priorities(np.arange(6), td)
    expected = (td + 1e-6) ** 0.5 / np.sum((td + 1e-6) ** 0.5)
    assert np.allclose(mem.probabilities(), expected)
    counts = np.zeros(6)
    for _ in range(40):
        counts += np.bincount(mem.sample(500).indices.numpy(), minlength=6)
    freq = counts / counts.sum()
    assert np.abs(freq - expected).max() < 0.01, (freq, expected)
    assert counts[0] < 20   # priority ~0: (almost) never drawn


def test_per_importance_weights_and_beta_annealing():
    mem = prioritized(alpha=0.7, beta0=0.4, beta_steps=12)
    assert mem.beta == pytest.approx(0.4 + 0.6 * 6 / 12)
    mem.update_priorities(np.arange(6), np.array([0.5, 1.0, 2.0, 4.0, 0.1, 3.0]))
    batch = mem.sample(256)
    p = mem.probabilities()
    w_all = (6 * p) ** -mem.beta
    expected = w_all[batch.indices.numpy()] / w_all.max()
    assert np.allclose(batch.weights.numpy(), expected, rtol=1e-5)
    assert batch.weights.dtype == torch.float32 and batch.weights.max() <= 1.0
    assert np.isclose(batch.weights.numpy()[batch.indices.numpy() == 4], 1.0).all()   # the rarest weighs 1
    for i in range(6, 20):
        mem.add(*transition(i))
    assert mem.beta == 1.0


def test_per_new_transitions_get_the_max_priority():
    mem = prioritized(alpha=0.5, eps=1e-6)
    mem.update_priorities(np.array([0, 1]), np.array([24.0, 0.0]))
    mem.add(*transition(6))
    assert mem.tree.leaves(7)[6] == pytest.approx(np.sqrt(24.0 + 1e-6))
    assert mem.max_priority == pytest.approx(24.0 + 1e-6)
    assert mem.nbytes == 7 * (4 * (2 * OBS + ACT + 2) + 32)


@pytest.mark.parametrize("indices, errors, message", [
    ([0, 1], [1.0, float("nan")], "non-finite"),
    ([0, 9], [1.0, 1.0], "outside"),
    ([0, 1, 2], [1.0, 1.0], "3 indices but 2"),
])
def test_per_bad_priority_updates_change_nothing(indices, errors, message):
    mem = prioritized()
    mem.update_priorities(np.arange(6), np.arange(6.0))
    leaves, total = mem.tree.leaves(6).copy(), mem.tree.total
    with pytest.raises(ValueError, match=message):
        mem.update_priorities(np.array(indices), np.array(errors))
    assert np.array_equal(mem.tree.leaves(6), leaves) and mem.tree.total == total


def test_per_accepts_tensors_and_is_a_no_op_without_per():
    mem = prioritized()
    batch = mem.sample(4)
    mem.update_priorities(batch.indices, torch.full((4,), 2.0))
    uniform = filled(4)
    uniform.update_priorities(np.arange(4), np.ones(4))   # uniform memory: ignored
    assert uniform.tree is None and uniform.sample(3).weights is None


def test_per_state_round_trip_and_capacity_change():
    mem = prioritized(n=13, capacity=8)
    mem.update_priorities(np.arange(8), np.arange(8.0) * 2)
    state = roundtrip(mem.state_dict())
    copy = ReplayMemory(OBS, ACT, 8, prioritized=True, alpha=0.5, seed=7)
    copy.load_state_dict(state)
    assert copy.max_priority == mem.max_priority and copy.tree.total == pytest.approx(mem.tree.total)
    assert batches_equal(mem.sample(32), copy.sample(32))
    small = ReplayMemory(OBS, ACT, 4, prioritized=True, alpha=0.5)
    small.load_state_dict(state)   # keeps the newest 4 (ids 9..12, rows 1..4 of the saved ring) with their priorities
    assert stored_ids(small) == {9, 10, 11, 12}
    assert np.allclose(small.tree.leaves(4), mem.tree.leaves(8)[[1, 2, 3, 4]])
    plain = ReplayMemory(OBS, ACT, 8, prioritized=True, alpha=0.5)
    plain.load_state_dict(roundtrip(filled(5, capacity=8).state_dict()))   # saved without PER: priorities 1
    assert np.allclose(plain.probabilities(), 0.2)
