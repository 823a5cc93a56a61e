"""Checkpoints: round trip, atomic replacement, corrupt files, metadata checks."""
import functools
import inspect
import os
import time
from collections import OrderedDict

import numpy as np
import pytest
import torch

from op3_walk.training import checkpoint as ckpt
from op3_walk.training.checkpoint import CheckpointError, load_checkpoint, read_meta, save_checkpoint


def meta(**overrides):
    m = dict(robot="op3", algo="td3", obs_dim=62, act_dim=18, env_steps=1000, episodes=7, task="walk")
    m.update(overrides)
    return m


def payload(value=1.0):
    return {"agent": {"actor": OrderedDict(w=torch.full((3, 2), value)), "env_steps": 1000, "lr": 3e-4,
                      "rng": {"state": 2 ** 100 + 3, "name": "PCG64"}, "sizes": [256, 256], "flag": True,
                      "none": None, "pair": (1, 2)},
            "trainer": {"episodes": 7}}


def test_round_trip(tmp_path):
    path = str(tmp_path / "deep" / "run" / "checkpoint.pt")
    assert save_checkpoint(path, payload(), meta()) == path  # parent folders created
    loaded, m = load_checkpoint(path, expect={"robot": "op3", "algo": "td3", "obs_dim": 62, "act_dim": 18})
    assert torch.equal(loaded["agent"]["actor"]["w"], torch.full((3, 2), 1.0))
    expected = payload()
    expected["agent"].pop("actor")
    loaded["agent"].pop("actor")
    assert loaded == expected
    assert m["robot"] == "op3" and m["episodes"] == 7 and m["task"] == "walk"
    assert abs(m["created"] - time.time()) < 60
    assert read_meta(path) == m
    assert sorted(os.listdir(os.path.dirname(path))) == ["checkpoint.pt"]


def test_created_kept_when_given(tmp_path):
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, {}, meta(created=123.0))
    assert read_meta(path)["created"] == 123.0


def test_meta_must_name_required_keys(tmp_path):
    m = meta()
    del m["robot"]
    with pytest.raises(ValueError, match="robot"):
        save_checkpoint(str(tmp_path / "c.pt"), {}, m)


def test_unsafe_types_refused_before_writing(tmp_path):
    path = str(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="payload.agent.buf.*numpy"):
        save_checkpoint(path, {"agent": {"buf": np.zeros(3)}}, meta())
    with pytest.raises(ValueError, match="meta.when"):
        save_checkpoint(path, {}, meta(when=object()))
    assert os.listdir(str(tmp_path)) == []


def test_failed_write_keeps_old_checkpoint_and_leaves_no_temp(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, payload(1.0), meta(env_steps=1))

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="checkpoint.pt.*disk full"):
        save_checkpoint(path, payload(2.0), meta(env_steps=2))
    monkeypatch.undo()
    loaded, m = load_checkpoint(path)
    assert m["env_steps"] == 1 and torch.equal(loaded["agent"]["actor"]["w"], torch.full((3, 2), 1.0))
    assert os.listdir(str(tmp_path)) == ["checkpoint.pt"]


def test_overwrite_replaces(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, payload(1.0), meta(env_steps=1))
    save_checkpoint(path, payload(2.0), meta(env_steps=2))
    assert read_meta(path)["env_steps"] == 2
    assert os.listdir(str(tmp_path)) == ["checkpoint.pt"]


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_meta(path)


def test_truncated_file(tmp_path):
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, payload(), meta())
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="c.pt cannot be read"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_meta(path)


def test_random_bytes(tmp_path):
    path = str(tmp_path / "noise.pt")
    with open(path, "wb") as fh:
        fh.write(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="noise.pt"):
        load_checkpoint(path)


class Sneaky:
    """Unpickling this would run arbitrary code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_pickles_refused(tmp_path):
    path = str(tmp_path / "evil.pt")
    torch.save({"format": ckpt.FORMAT, "version": 1, "meta": meta(), "payload": {"x": Sneaky()}}, path)
    with pytest.raises(CheckpointError, match="evil.pt cannot be read"):
        load_checkpoint(path)


def test_other_format_and_newer_version(tmp_path):
    other = str(tmp_path / "other.pt")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="other.pt is not an op3_walk checkpoint"):
        load_checkpoint(other)
    newer = str(tmp_path / "newer.pt")
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION + 1, "meta": meta(), "payload": {}}, newer)
    with pytest.raises(CheckpointError, match="newer.pt has format version 2, newer"):
        load_checkpoint(newer)


def test_expect_mismatch_names_both_values(tmp_path):
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, payload(), meta())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expect={"robot": "plen", "algo": "td3"})
    assert str(info.value) == "checkpoint %s was made for robot 'op3', this run uses 'plen'" % path
    with pytest.raises(CheckpointError, match="obs_dim 62, this run uses 40"):
        load_checkpoint(path, expect={"obs_dim": 40})
    with pytest.raises(CheckpointError, match="robot 'op3', this run uses 'plen'.*act_dim 18, this run uses 12"):
        read_meta(path, expect={"robot": "plen", "act_dim": 12})
    with pytest.raises(CheckpointError, match="has no 'gait'"):
        load_checkpoint(path, expect={"gait": "trot"})


def test_agent_checkpoint_round_trip(tmp_path):
    """The TD3 agent's state (buffer included) passes the safety check and loads back."""
    from op3_walk.agents.td3 import TD3Agent, TD3Config
    cfg = TD3Config(hidden_sizes=[8], batch_size=4, buffer_size=50, learning_starts=0, save_buffer=True)
    agent = TD3Agent(3, 2, cfg, seed=0)
    for i in range(6):
        agent.observe(np.full(3, i), np.zeros(2), 1.0, np.full(3, i + 1), i == 5)
    agent.update()
    path = save_checkpoint(str(tmp_path / "a.pt"), {"agent": agent.state_dict()},
                           meta(obs_dim=3, act_dim=2, env_steps=agent.env_steps))
    state, _ = load_checkpoint(path, expect={"algo": agent.algo, "obs_dim": 3, "act_dim": 2})
    other = TD3Agent(3, 2, cfg, seed=5)
    other.load_state_dict(state["agent"])
    assert other.updates == 1 and len(other.memory) == 6
    assert np.array_equal(other.act(np.ones(3), explore=False), agent.act(np.ones(3), explore=False))


def test_torch_without_mmap_still_reads_checkpoints(tmp_path, monkeypatch):
    """torch 2.0's ``torch.load`` has no ``mmap`` and hands unknown keywords to the unpickler (a TypeError there);
    such a torch must read a good checkpoint (without memory-mapping), not call it corrupt."""
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, payload(2.0), meta())
    real_load = torch.load
    seen = []

    def load_2_0(f, map_location=None, pickle_module=None, *, weights_only=False, **pickle_load_args):
        seen.append(sorted(pickle_load_args))
        if pickle_load_args:
            raise TypeError("Unpickler() got an unexpected keyword argument %r" % sorted(pickle_load_args)[0])
        return real_load(f, map_location=map_location, weights_only=weights_only)

    monkeypatch.setattr(torch, "load", load_2_0)
    assert read_meta(path, expect={"robot": "op3"})["env_steps"] == 1000
    loaded, m = load_checkpoint(path)
    assert torch.equal(loaded["agent"]["actor"]["w"], torch.full((3, 2), 2.0)) and m["episodes"] == 7
    assert seen == [[], []]   # neither call passed mmap (or anything else) on to the unpickler
    with open(path, "wb") as fh:
        fh.write(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):   # a corrupt file is still one
        read_meta(path)


def test_mmap_used_where_torch_has_it(tmp_path, monkeypatch):
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, payload(), meta())
    real_load = torch.load
    calls = []

    @functools.wraps(real_load)   # the signature of this torch's load (which has mmap)
    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    assert "mmap" in inspect.signature(spy).parameters
    monkeypatch.setattr(torch, "load", spy)
    read_meta(path)
    load_checkpoint(path)
    assert [c.get("mmap") for c in calls] == [True, None] and all(c["weights_only"] for c in calls)


def test_torch_without_weights_only_refuses_to_load(tmp_path, monkeypatch):
    """A torch older than 1.13 cannot load without unpickling arbitrary objects: a clear error naming the version
    needed, not an attempt and not 'corrupt'."""
    path = str(tmp_path / "c.pt")
    save_checkpoint(path, payload(), meta())

    def load_1_12(f, map_location=None, pickle_module=None, **pickle_load_args):
        raise AssertionError("must not be called")

    monkeypatch.setattr(torch, "load", load_1_12)
    with pytest.raises(CheckpointError, match=r"cannot load checkpoints safely.*torch >= 2\.1"):
        load_checkpoint(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_networks_are_neither_saved_over_a_good_checkpoint_nor_loaded(tmp_path, bad):
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, payload(), meta())
    good = open(path, "rb").read()
    diverged = payload()
    diverged["agent"]["actor"]["w"][1, 0] = bad
    with pytest.raises(CheckpointError, match=r"not saving .*payload\.agent\.actor\.w holds non-finite.*previous "
                                              r"checkpoint is kept"):
        save_checkpoint(path, diverged, meta())
    assert open(path, "rb").read() == good and os.listdir(str(tmp_path)) == ["checkpoint.pt"]
    # a file written by other means (an older op3_walk, another tool) is refused when loaded
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION, "meta": meta(), "payload": diverged},
               str(tmp_path / "nan.pt"))
    with pytest.raises(CheckpointError, match="unusable: payload.agent.actor.w holds non-finite"):
        load_checkpoint(str(tmp_path / "nan.pt"))
    # replay data is not a network: a NaN observation in it does not make the checkpoint unusable
    with_memory = payload()
    with_memory["agent"]["memory"] = {"obs": torch.tensor([[bad, 0.0]])}
    save_checkpoint(str(tmp_path / "memory.pt"), with_memory, meta())
    assert load_checkpoint(str(tmp_path / "memory.pt"))[0]["agent"]["memory"]["obs"].shape == (1, 2)


class _FullDisk:
    """A file that takes ``room`` bytes, then fails every write with ENOSPC, as a full disk does."""

    def __init__(self, fh, room):
        self.fh, self.room = fh, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_a_full_disk_is_reported_as_such_and_loses_nothing(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, payload(), meta())
    good = open(path, "rb").read()
    real_fdopen = os.fdopen
    monkeypatch.setattr(ckpt.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode), room=600))
    big = payload()
    big["agent"]["actor"]["w"] = torch.ones(50000)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(path, big, meta())
    message = str(err.value)
    assert "no space left on device" in message and "previous checkpoint is kept" in message
    assert "enforce fail" not in message and "unexpected pos" not in message
    assert open(path, "rb").read() == good and os.listdir(str(tmp_path)) == ["checkpoint.pt"]


def test_a_really_full_filesystem(tmp_path):
    """The same on a real 256 kB tmpfs, where this machine lets the test mount one."""
    import subprocess
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (%s): the simulated full disk test covers the mapping"
                    % (done.stderr.strip() or "mount exit %d" % done.returncode))
    try:
        big = payload()
        big["agent"]["actor"]["w"] = torch.ones(200000)   # 800 kB of weights
        with pytest.raises(CheckpointError, match="no space left on device"):
            save_checkpoint(str(mnt / "checkpoint.pt"), big, meta())
        assert os.listdir(str(mnt)) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
