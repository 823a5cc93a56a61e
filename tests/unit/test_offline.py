"""Recorded transitions (the .npz of `replay_bag buffer`): format checks, prefill into every kind of replay memory,
offline updates, and `train --prefill / --offline-updates`."""
import json
import os
import zipfile

import numpy as np
import pytest

from op3_walk.agents.dqn import DQNAgent, DQNConfig
from op3_walk.agents.td3 import TD3Agent, TD3Config
from op3_walk.training import cli
from op3_walk.training.checkpoint import read_meta
from op3_walk.training.offline import (TransitionsError, check_transitions, load_transitions, offline_updates,
                                       prefill, save_transitions)

OBS, ACT = 3, 2


def episodes(lengths, ends, obs_dim=OBS, act_dim=ACT, discrete=None, seed=0):
    """Transitions of consecutive episodes: ``lengths[i]`` steps ending as ``ends[i]`` ('term', 'trunc' or 'cut').

    next_obs of step k is obs of step k+1, as in a real episode; rewards are 1, 2, 3, ... so sums are easy to check.
    """
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "episode", "step")}
    reward = 0.0
    for e, (length, end) in enumerate(zip(lengths, ends), start=1):
        states = rng.uniform(-1, 1, (length + 1, obs_dim)).astype(np.float32)
        for k in range(length):
            reward += 1.0
            last = k == length - 1
            rows["obs"].append(states[k])
            rows["next_obs"].append(states[k + 1])
            rows["actions"].append(rng.integers(0, discrete) if discrete else rng.uniform(-1, 1, act_dim))
            rows["rewards"].append(reward)
            rows["terminated"].append(last and end == "term")
            rows["truncated"].append(last and end == "trunc")
            rows["episode"].append(e)
            rows["step"].append(k)
    t = {k: np.array(v) for k, v in rows.items()}
    t["actions"] = t["actions"].astype(np.int64 if discrete else np.float32)
    t["meta"] = {"robot": "toy", "task": "toy", "discrete": bool(discrete)}
    return t


def td3(n_step=1, prioritized=False, buffer_size=1000, obs_dim=OBS, act_dim=ACT):
    cfg = TD3Config(hidden_sizes=[16, 16], batch_size=8, buffer_size=buffer_size, learning_starts=0, n_step=n_step,
                    gamma=0.5, prioritized_replay=prioritized)
    return TD3Agent(obs_dim, act_dim, cfg, seed=0)


# -- the file format ---------------------------------------------------------------------------------------------
def test_save_load_round_trip_keeps_values_and_meta(tmp_path):
    t = episodes([4, 3], ["term", "trunc"])
    path = save_transitions(str(tmp_path / "sub" / "t.npz"), t, meta={"source": ["a.bag"]})
    loaded = load_transitions(path)
    for key in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "episode", "step"):
        assert np.array_equal(loaded[key], t[key]), key
    assert loaded["rewards"].dtype == np.float64 and loaded["terminated"].dtype == np.bool_
    assert loaded["meta"]["robot"] == "toy" and loaded["meta"]["source"] == ["a.bag"]
    assert loaded["meta"]["format"] == "op3_walk.transitions" and loaded["meta"]["version"] == 1
    assert not [f for f in os.listdir(tmp_path / "sub") if f != "t.npz"], "temporary file left behind"


def test_discrete_actions_round_trip(tmp_path):
    t = episodes([5], ["term"], discrete=4)
    loaded = load_transitions(save_transitions(str(tmp_path / "d.npz"), t))
    assert loaded["actions"].shape == (5,) and loaded["actions"].dtype == np.int64
    assert np.array_equal(loaded["actions"], t["actions"])


def test_missing_truncated_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(TransitionsError, match="does not exist"):
        load_transitions(str(tmp_path / "nope.npz"))
    good = save_transitions(str(tmp_path / "good.npz"), episodes([6], ["term"]))
    data = open(good, "rb").read()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(TransitionsError, match="not a readable transitions file"):
        load_transitions(str(cut))
    flipped = bytearray(data)
    flipped[len(flipped) // 3] ^= 0xFF          # inside compressed array data: CRC or zlib error
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(TransitionsError, match="not a readable transitions file"):
        load_transitions(str(bad))
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(TransitionsError, match="not a readable transitions file"):
        load_transitions(str(text))


def test_foreign_npz_files_are_refused(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, obs=np.zeros((2, 3)))
    with pytest.raises(TransitionsError, match="no meta entry"):
        load_transitions(str(plain))
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array(json.dumps({"format": "something.else"})))
    with pytest.raises(TransitionsError, match="not an op3_walk transitions file"):
        load_transitions(str(other))
    newer = tmp_path / "newer.npz"
    t = episodes([2], ["term"])
    np.savez(newer, meta=np.array(json.dumps({"format": "op3_walk.transitions", "version": 99})),
             **{k: v for k, v in t.items() if k != "meta"})
    with pytest.raises(TransitionsError, match="version 99"):
        load_transitions(str(newer))


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("rewards"), "lacks rewards"),
    (lambda t: t.update(next_obs=t["next_obs"][:, :2]), "next_obs has shape"),
    (lambda t: t.update(rewards=t["rewards"][:-1]), "rewards have shape"),
    (lambda t: t["obs"].__setitem__((2, 1), np.nan), "obs is not finite .* transition 2"),
    (lambda t: t["actions"].__setitem__((1, 0), np.inf), "actions is not finite"),
    (lambda t: t.update(terminated=t["terminated"].astype(np.float32)), "terminated must be .* bool"),
    (lambda t: t.update(actions=t["actions"][:, 0]), "actions must be"),
    (lambda t: t.update(episode=t["episode"][:3]), "episode must be"),
    (lambda t: t.update(obs=t["obs"][:0], next_obs=t["next_obs"][:0]), "holds no transitions"),
    (lambda t: t["meta"].update(discrete=True), "meta says discrete=True"),
])
def test_inconsistent_transitions_are_refused(change, message):
    t = episodes([3, 3], ["term", "cut"])
    change(t)
    with pytest.raises(TransitionsError, match=message):
        check_transitions(t)


def test_negative_discrete_action_is_refused():
    t = episodes([3], ["term"], discrete=3)
    t["actions"][1] = -1
    with pytest.raises(TransitionsError, match="negative discrete action"):
        check_transitions(t)


# -- prefill ---------------------------------------------------------------------------------------------------
def test_prefill_one_step_stores_every_transition_without_counting_env_steps():
    t = episodes([4, 3], ["term", "trunc"])
    agent = td3()
    assert prefill(agent, t) == 7
    m = agent.memory
    assert len(m) == 7 and agent.env_steps == 0
    assert np.array_equal(m.obs[:7], t["obs"]) and np.array_equal(m.next_obs[:7], t["next_obs"])
    assert np.allclose(m.actions[:7], t["actions"]) and np.allclose(m.rewards[:7], t["rewards"])
    assert np.array_equal(m.terminated[:7].astype(bool), t["terminated"])   # truncation is not terminal


def test_prefill_n_step_sums_stop_at_episode_ends_and_gaps():
    """3-step returns (gamma 0.5) by hand: episode 1 (4 steps, fell), episode 2 (3 steps, cut by the recording:
    no flag, but the next episode's episode/step says it ended), episode 3 (2 steps, time limit)."""
    t = episodes([4, 3, 2], ["term", "cut", "trunc"])
    agent = td3(n_step=3)
    prefill(agent, t)
    m = agent.memory
    assert len(m) == 9 and not m.pending
    g = 0.5
    # rewards are 1..9 in order
    expected = [1 + 2 * g + 3 * g * g, 2 + 3 * g + 4 * g * g, 3 + 4 * g, 4,   # episode 1 ends in a fall
                5 + 6 * g + 7 * g * g, 6 + 7 * g, 7,                       # episode 2 ends unflagged
                8 + 9 * g, 9]                                              # episode 3 hits its time limit
    assert np.allclose(m.rewards[:9], expected)
    assert np.allclose(m.discounts[:9], [g ** 3, g ** 3, g ** 2, g, g ** 3, g ** 2, g, g ** 2, g])
    assert list(m.terminated[:9]) == [0, 1, 1, 1, 0, 0, 0, 0, 0]   # windows that reach the fall
    assert np.array_equal(m.next_obs[4], t["next_obs"][6])   # bootstraps from episode 2's last state


def test_prefill_gap_inside_an_episode_ends_the_n_step_sum():
    t = episodes([5], ["term"])
    keep = [0, 1, 3, 4]                        # step 2 was lost
    t = dict({k: v[keep] for k, v in t.items() if k != "meta"}, meta=t["meta"])
    agent = td3(n_step=3)
    prefill(agent, t)
    assert np.allclose(agent.memory.rewards[:4], [1 + 2 * 0.5, 2, 4 + 5 * 0.5, 5])


def test_prefill_prioritised_memory_gives_new_transitions_the_top_priority():
    agent = td3(prioritized=True)
    prefill(agent, episodes([5], ["term"]))
    agent.memory.update_priorities(np.arange(5), np.full(5, 3.0))
    prefill(agent, episodes([2], ["trunc"], seed=1))
    p = agent.memory.probabilities()
    assert len(p) == 7 and np.allclose(p[5:], p[0])


def test_prefill_into_a_small_memory_keeps_the_newest():
    t = episodes([10, 10], ["term", "term"])
    agent = td3(buffer_size=12)
    assert prefill(agent, t) == 20
    assert len(agent.memory) == 12
    assert set(np.round(agent.memory.rewards[:12]).astype(int)) == set(range(9, 21))


def test_prefill_discrete_actions_into_dqn():
    t = episodes([6], ["term"], discrete=5)
    agent = DQNAgent(OBS, 5, DQNConfig(hidden_sizes=[8], batch_size=4, buffer_size=100, learning_starts=0), seed=0)
    assert prefill(agent, t) == 6
    assert np.array_equal(agent.memory.actions[:6, 0], t["actions"].astype(np.float32))


@pytest.mark.parametrize("make_agent, t, message", [
    (lambda: td3(obs_dim=4), episodes([3], ["term"]), "3-value observations; the agent expects 4"),
    (lambda: td3(act_dim=3), episodes([3], ["term"]), "2-value actions; the agent expects 3"),
    (lambda: td3(), episodes([3], ["term"], discrete=3), "discrete actions; td3 needs continuous"),
    (lambda: DQNAgent(OBS, 2, DQNConfig(hidden_sizes=[8], batch_size=4, buffer_size=50), seed=0),
     episodes([3], ["term"]), "continuous actions; dqn needs discrete"),
    (lambda: DQNAgent(OBS, 2, DQNConfig(hidden_sizes=[8], batch_size=4, buffer_size=50), seed=0),
     episodes([9], ["term"], discrete=6), "discrete action 5; the agent has 2 actions"),
])
def test_prefill_refuses_what_does_not_fit_and_stores_nothing(make_agent, t, message):
    agent = make_agent()
    with pytest.raises(TransitionsError, match=message):
        prefill(agent, t)
    assert len(agent.memory) == 0


def test_prefill_checks_robot_and_task():
    t = episodes([3], ["term"])
    t["meta"].update(robot="plen", task="walk")
    agent = td3()
    with pytest.raises(TransitionsError, match="robot 'plen'; this run uses 'op3'"):
        prefill(agent, t, expect={"robot": "op3", "task": "walk"})
    with pytest.raises(TransitionsError, match="walking env"):
        prefill(agent, t, expect={"env": "Pendulum-v1"})
    assert prefill(agent, t, expect={"robot": "plen", "task": "/some/where/config/tasks/walk.yaml"}) == 3


def test_offline_updates_train_on_the_prefilled_memory_only():
    agent = td3()
    with pytest.raises(TransitionsError, match="need at least one batch"):
        offline_updates(agent, 5)
    prefill(agent, episodes([20], ["term"]))
    losses = offline_updates(agent, 5)
    assert agent.updates == 5 and agent.env_steps == 0
    assert "critic_loss" in losses and np.isfinite(losses["critic_loss"])
    assert offline_updates(agent, 0) == {}


# -- the train CLI -----------------------------------------------------------------------------------------------
def walk_transitions(tmp_path, robot="plen", task="walk", n=40):
    """Transitions with the sizes of the walking env (what replay_bag buffer writes for it)."""
    from op3_walk.envs.walk_env import load_task, make_spaces
    from op3_walk.robots import load_robot
    obs_space, act_space = make_spaces(load_robot(robot), load_task(task))
    t = episodes([n], ["term"], obs_dim=obs_space.shape[0], act_dim=act_space.shape[0])
    t["meta"].update(robot=robot, task=task)
    return save_transitions(str(tmp_path / "walk.npz"), t)


def tiny_td3_yaml(tmp_path, learning_starts=10):
    path = tmp_path / "td3.yaml"
    path.write_text("hidden_sizes: [16, 16]\nbatch_size: 8\nbuffer_size: 1000\nlearning_starts: %d\n"
                    % learning_starts)
    return str(path)


@pytest.mark.sim
def test_train_prefill_then_offline_updates_then_env_steps(tmp_path, capsys):
    buf = walk_transitions(tmp_path)
    out = tmp_path / "run"
    code = cli.main(["--prefill", buf, "--offline-updates", "7", "--steps", "20", "--agent-config",
                     tiny_td3_yaml(tmp_path), "--out-dir", str(out), "--no-progress", "--no-tensorboard"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "prefilled 40 transitions from %s: replay memory holds 40" % buf in text
    assert "offline: 7 gradient updates" in text
    meta = read_meta(str(out / "checkpoint.pt"))
    assert meta["env_steps"] == 20
    assert len(meta["git"]["commit"]) == 40      # the code that trained it (export_policy carries it on)
    assert meta["updates"] >= 7 + 1          # the offline ones, then online ones (memory is past a batch)


def test_train_offline_only_with_zero_steps(tmp_path, capsys):
    buf = walk_transitions(tmp_path)
    out = tmp_path / "offline"
    code = cli.main(["--prefill", buf, "--offline-updates", "5", "--steps", "0", "--agent-config",
                     tiny_td3_yaml(tmp_path), "--out-dir", str(out), "--no-progress", "--no-tensorboard"])
    assert code == 0, capsys.readouterr()
    meta = read_meta(str(out / "checkpoint.pt"))
    assert meta["env_steps"] == 0 and meta["updates"] == 5


def test_train_prefill_errors_are_one_line(tmp_path, capsys):
    buf = walk_transitions(tmp_path)
    yaml_path = tiny_td3_yaml(tmp_path)
    code = cli.main(["--prefill", buf, "--robot", "op3", "--steps", "5", "--agent-config", yaml_path,
                     "--out-dir", str(tmp_path / "a"), "--no-progress", "--no-tensorboard"])
    assert code == 2 and "train: error: transitions were recorded with robot 'plen'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists(), "a refused file still created outputs"
    code = cli.main(["--prefill", str(tmp_path / "missing.npz"), "--steps", "5", "--agent-config", yaml_path,
                     "--out-dir", str(tmp_path / "b"), "--no-progress", "--no-tensorboard"])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = cli.main(["--offline-updates", "3", "--steps", "5", "--agent-config", yaml_path,
                     "--out-dir", str(tmp_path / "c"), "--no-progress", "--no-tensorboard"])
    assert code == 2 and "need at least one batch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--steps", "0"])
    with pytest.raises(SystemExit):
        cli.main(["--offline-updates", "-1"])


def test_zip_members_are_what_numpy_writes(tmp_path):
    """The file is a plain numpy .npz: other tools can read it without op3_walk."""
    path = save_transitions(str(tmp_path / "t.npz"), episodes([2], ["term"]))
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
    assert names == sorted("%s.npy" % k for k in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated",
                                                   "episode", "step", "meta"))
    with np.load(path) as data:
        assert json.loads(str(data["meta"]))["robot"] == "toy"


@pytest.mark.sim
def test_train_prefill_after_resume_extends_the_resumed_memory(tmp_path, capsys):
    buf = walk_transitions(tmp_path)
    config = tmp_path / "td3_buffer.yaml"
    config.write_text("hidden_sizes: [16, 16]\nbatch_size: 8\nbuffer_size: 1000\nlearning_starts: 5\n"
                      "save_buffer: true\n")
    out = tmp_path / "run"
    common = ["--agent-config", str(config), "--out-dir", str(out), "--no-progress", "--no-tensorboard"]
    assert cli.main(["--steps", "20"] + common) == 0
    capsys.readouterr()
    code = cli.main(["--steps", "25", "--resume", str(out / "checkpoint.pt"), "--prefill", buf] + common)
    assert code == 0
    assert "replay memory holds %d" % (20 + 40) in capsys.readouterr().out
