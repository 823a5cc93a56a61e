"""ReplayMemory: ring buffer semantics, batch format, input checks, persistence."""
import io

import numpy as np
import pytest
import torch

from op3_walk.agents.replay import Batch, ReplayMemory

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
    assert all(t.dtype == torch.float32 for t in batch)
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
    for a, b in zip(mem.sample(32), copy.sample(32)):
        assert torch.equal(a, b)
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
