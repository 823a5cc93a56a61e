"""The shared training loop and session on a tiny env: budgets, truncation vs termination, stops, errors,
checkpoints, CSV, curve and resume."""
import csv

import gymnasium
import numpy as np
import pytest

from op3_walk.agents.td3 import TD3Agent, TD3Config
from op3_walk.training.checkpoint import CheckpointError, read_meta
from op3_walk.training.logger import EpisodeCsv
from op3_walk.training.loop import EpisodeRecord, Trainer, TrainConfig
from op3_walk.training.plots import moving_average, plot_learning_curves, read_episodes
from op3_walk.training.session import TrainingSession, build_agent


class ToyEnv(gymnasium.Env):
    """3-D observation, 2-D action; episodes end by time limit (``horizon``) or, if set, by ``terminate_at``."""

    def __init__(self, horizon=7, terminate_at=None, fail_at=None):
        self.observation_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
        self.horizon, self.terminate_at, self.fail_at = horizon, terminate_at, fail_at
        self.total = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.total += 1
        if self.fail_at is not None and self.total >= self.fail_at:
            raise RuntimeError("simulated backend failure")
        self.t += 1
        reward = -float(np.sum((np.asarray(action) - 0.5) ** 2))
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        truncated = not terminated and self.t >= self.horizon
        info = {"distance": 0.01 * self.t, "reward_terms": {"a": reward / 2, "b": reward / 2}}
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), reward, terminated, truncated, info


def small_agent(seed=0):
    cfg = TD3Config(hidden_sizes=[16, 16], batch_size=8, buffer_size=1000, learning_starts=20)
    return TD3Agent(3, 2, cfg, seed=seed)


def test_budget_truncation_and_periodic_checkpoints():
    env, agent, records, ckpts = ToyEnv(horizon=7), small_agent(), [], []
    trainer = Trainer(agent, env, TrainConfig(total_steps=100, checkpoint_every=40), on_episode=[records.append],
                      checkpoint=lambda t: ckpts.append(t.agent.env_steps))
    summary = trainer.run()
    assert agent.env_steps == summary.env_steps == 100 and not summary.stopped_early
    assert [r.length for r in records] == [7] * 14              # the unfinished 15th episode is not reported
    assert [r.episode for r in records] == list(range(1, 15))
    assert not any(r.fell for r in records)
    assert ckpts == [40, 80, 100]                                  # periodic + final
    assert agent.updates > 0 and summary.updates == agent.updates
    assert records[-1].losses and "critic_loss" in records[-1].losses
    assert records[0].reward_terms["a"] == pytest.approx(records[0].episode_return / 2)
    # Time-limit ends are not terminal for the agent's bootstrap targets.
    assert not np.any(agent.memory.terminated[:len(agent.memory)])


def test_termination_reaches_the_replay_memory():
    env, agent = ToyEnv(horizon=50, terminate_at=4), small_agent()
    records = []
    Trainer(agent, env, TrainConfig(total_steps=40), on_episode=[records.append]).run()
    flags = np.asarray(agent.memory.terminated[:len(agent.memory)], dtype=bool)
    assert flags.sum() == 10 and all(flags[3::4])
    assert all(r.fell for r in records)


def test_stop_request_ends_the_run_and_still_checkpoints():
    env, agent, ckpts = ToyEnv(), small_agent(), []
    trainer = Trainer(agent, env, TrainConfig(total_steps=1000), checkpoint=lambda t: ckpts.append(t.agent.env_steps),
                      should_stop=lambda: agent.env_steps >= 30)
    summary = trainer.run()
    assert summary.stopped_early and agent.env_steps == 30 and ckpts == [30]


def test_env_failure_propagates_after_a_final_checkpoint():
    env, agent, ckpts = ToyEnv(fail_at=25), small_agent(), []
    trainer = Trainer(agent, env, TrainConfig(total_steps=1000), checkpoint=lambda t: ckpts.append(t.agent.env_steps))
    with pytest.raises(RuntimeError, match="simulated backend failure"):
        trainer.run()
    assert ckpts == [24]


def test_session_outputs_and_resume(tmp_path):
    out = tmp_path / "run"
    meta = {"robot": "toy", "task": "toy"}
    s1 = TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=70, seed=1), str(out), meta)
    first = s1.run()
    assert first.env_steps == 70 and first.episodes == 10
    saved = read_meta(str(out / "checkpoint.pt"))
    assert saved["env_steps"] == 70 and saved["episodes"] == 10 and saved["robot"] == "toy"
    assert (out / "learning_curve.png").stat().st_size > 1000

    agent2 = small_agent(seed=5)
    s2 = TrainingSession(agent2, ToyEnv(), TrainConfig(total_steps=140, seed=1), str(out), meta,
                         resume=str(out / "checkpoint.pt"))
    assert agent2.env_steps == 70
    second = s2.run()
    assert second.env_steps == 140 and second.new_env_steps == 70 and second.episodes == 20
    rows = list(csv.DictReader(open(out / "episodes.csv")))
    assert [int(r["episode"]) for r in rows] == list(range(1, 21))
    assert int(rows[-1]["total_env_steps"]) == 140

    with pytest.raises(CheckpointError, match="robot"):
        TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=200), str(tmp_path / "other"),
                        {"robot": "plen", "task": "toy"}, resume=str(out / "checkpoint.pt"))


def test_unknown_algorithm_is_a_clear_error():
    from op3_walk.config import ConfigError
    with pytest.raises(ConfigError, match="unknown algorithm 'ppo'"):
        build_agent("ppo", 3, 2)


def record(i, terms=None):
    return EpisodeRecord(episode=i, episode_return=-float(i), length=10, distance=0.1 * i, fell=i % 2 == 0,
                         wall_time=0.5, env_steps_per_s=20.0, total_env_steps=10 * i, total_updates=5 * i,
                         reward_terms=terms or {"alive": 1.0, "forward": 0.5}, losses={"critic_loss": 0.25})


def test_csv_rows_are_flushed_and_headers_checked(tmp_path):
    path = tmp_path / "e.csv"
    log = EpisodeCsv(str(path))
    log(record(1))
    rows = list(csv.DictReader(open(path)))           # readable before close: flushed per row
    assert rows[0]["term_alive"] == "1" and rows[0]["loss_critic_loss"] == "0.25"
    assert rows[0]["loss_actor_loss"] == "nan"
    log(record(2))
    log.close()
    data = read_episodes(str(path))
    assert list(data["episode"]) == [1, 2] and list(data["fell"]) == [0, 1]
    other = EpisodeCsv(str(path))
    with pytest.raises(ValueError, match="other columns"):
        other(record(3, terms={"different": 1.0}))


def test_moving_average_and_plot(tmp_path):
    assert list(moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2)) == [1.0, 2.0, 4.0, 6.0]
    path = tmp_path / "e.csv"
    log = EpisodeCsv(str(path))
    for i in range(1, 6):
        log(record(i))
    log.close()
    png = plot_learning_curves([str(path)], str(tmp_path / "curve.png"))
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.csv"
    empty.write_text("episode,total_env_steps\n")
    with pytest.raises(ValueError, match="no episodes"):
        plot_learning_curves([str(empty)], str(tmp_path / "x.png"))
