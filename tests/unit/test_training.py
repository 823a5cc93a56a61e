"""The shared training loop and session on a tiny env: budgets, truncation vs termination, stops, errors,
checkpoints, CSV, curve and resume; gymnasium envs (continuous and discrete, BipedalWalker) through the same session
and the `train` CLI; TensorBoard scalars; env-time vs learner-time speeds."""
import csv
import dataclasses
import os
import time

import gymnasium
import numpy as np
import pytest

from op3_walk.agents import AGENTS, agent_classes
from op3_walk.agents.td3 import TD3Agent, TD3Config
from op3_walk.config import ConfigError
from op3_walk.training import cli
from op3_walk.training.checkpoint import CheckpointError, read_meta
from op3_walk.training.logger import EpisodeCsv
from op3_walk.training.loop import EpisodeRecord, Trainer, TrainConfig
from op3_walk.training.plots import moving_average, plot_learning_curves, read_episodes
from op3_walk.training.session import (RunExistsError, TrainingSession, build_agent, build_agent_for_env, make_gym_env, space_dims,
                                       truncate_csv, wants_discrete)


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


class AsyncToyEnv(ToyEnv):
    """ToyEnv with the remote env's step_async/step_wait split; logs every call with the agent's update count."""

    def __init__(self, log, agent_ref, **kwargs):
        super().__init__(**kwargs)
        self.log, self.agent_ref = log, agent_ref

    def step_async(self, action):
        self.log.append(("send", self.agent_ref[0].updates))
        self._pending = action

    def step_wait(self):
        self.log.append(("wait", self.agent_ref[0].updates))
        return ToyEnv.step(self, self._pending)


@pytest.mark.parametrize("overlap", [True, False])
def test_update_overlap_trains_while_the_env_steps_and_keeps_counts_and_checkpoints(overlap):
    log, agent_ref, ckpt_pending = [], [small_agent()], []
    env = AsyncToyEnv(log, agent_ref, horizon=7)
    agent = agent_ref[0]

    def checkpoint(trainer):
        ckpt_pending.append((trainer.agent.env_steps, len(trainer._pending)))

    summary = Trainer(agent, env, TrainConfig(total_steps=60, checkpoint_every=25, overlap_updates=overlap),
                      checkpoint=checkpoint).run()
    # TD3 here: one update per step from learning_starts (20) on, whichever the order: 41 in all
    assert summary.updates == agent.updates == 60 - 20 + 1
    sends = [n for kind, n in log if kind == "send"]
    waits = [n for kind, n in log if kind == "wait"]
    grew = sum(1 for s, w in zip(sends, waits) if w > s)   # updates ran between sending an action and its result
    if overlap:
        assert grew > 20
    else:
        assert grew == 0
    assert ckpt_pending and all(pending == 0 for _, pending in ckpt_pending)   # checkpoints see every update


def test_update_overlap_is_deterministic_and_only_reorders():
    def run(overlap, seed=3):
        agent = small_agent(seed)
        Trainer(agent, ToyEnv(horizon=9), TrainConfig(total_steps=80, seed=seed, overlap_updates=overlap)).run()
        return agent

    a, b, strict = run(True), run(True), run(False)
    assert a.updates == b.updates == strict.updates
    for pa, pb in zip(a.actor.parameters(), b.actor.parameters()):
        assert np.array_equal(pa.detach().numpy(), pb.detach().numpy())
    assert any(not np.array_equal(pa.detach().numpy(), ps.detach().numpy())
               for pa, ps in zip(a.actor.parameters(), strict.actor.parameters()))


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


def test_a_fresh_session_never_overwrites_or_appends_to_an_earlier_run(tmp_path):
    out, meta = tmp_path / "run", {"robot": "toy", "task": "toy"}
    TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=70, seed=1), str(out), meta,
                    tensorboard=False, log=lambda line: None).run()
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "episodes.csv")}
    with pytest.raises(RunExistsError, match="already holds a training run.*resume:=auto.*another output folder"):
        TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=21, seed=2), str(out), meta,
                        tensorboard=False, log=lambda line: None)
    assert {name: (out / name).read_bytes() for name in before} == before
    # episodes logged without a checkpoint (a run killed before its first one) are a run too ...
    (out / "checkpoint.pt").unlink()
    with pytest.raises(RunExistsError, match="episodes.csv"):
        TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=21), str(out), meta, tensorboard=False)
    # ... which a restarted learner (resume: auto, nothing to resume) may take over, starting its CSV afresh
    lines = []
    TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=21, seed=2), str(out), meta, tensorboard=False,
                    log=lines.append, discard_unsaved=True).run()
    assert [int(r["episode"]) for r in csv.DictReader(open(out / "episodes.csv"))] == [1, 2, 3]
    assert any("dropped the 10 CSV rows" in line for line in lines)
    # an empty folder, or one with only a header, is free
    (tmp_path / "empty").mkdir()
    TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=7), str(tmp_path / "empty"), meta,
                    tensorboard=False, log=lambda line: None).run()


@pytest.mark.parametrize("bad, match", [({"total_steps": -5}, "total_steps"),
                                        ({"checkpoint_every": -1}, "checkpoint_every"),
                                        ({"reconnect_timeout_s": float("nan")}, "reconnect_timeout_s")])
def test_out_of_range_train_settings_are_refused_by_every_entry_point(tmp_path, bad, match):
    config = TrainConfig(**dict({"total_steps": 20}, **bad))
    with pytest.raises(ValueError, match=match):
        Trainer(small_agent(), ToyEnv(), config)
    with pytest.raises(ValueError, match=match):
        TrainingSession(small_agent(), ToyEnv(), config, str(tmp_path / "r"), {"robot": "toy", "task": "toy"})
    assert not (tmp_path / "r").exists()


def test_cli_refuses_a_negative_checkpoint_interval_and_an_occupied_folder(tmp_path, capsys):
    yaml_path, out = tiny_agent_yaml(tmp_path, "td3"), str(tmp_path / "cli")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--env", "Pendulum-v1", "--steps", "50", "--checkpoint-every", "-1", "--out-dir", out])
    assert exc.value.code == 2 and "--checkpoint-every must be >= 0" in capsys.readouterr().err
    args = ["--env", "Pendulum-v1", "--agent-config", yaml_path, "--steps", "50", "--out-dir", out, "--no-progress",
            "--no-tensorboard"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(args) == 2
    assert "already holds a training run" in capsys.readouterr().err


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


# ---------------------------------------------------------------------------------------------------------------
# Any gymnasium env through the same session; discrete action spaces; TensorBoard; timing; checkpoint log lines.


def tiny_agent_yaml(tmp_path, algo, **extra):
    """A YAML with tiny networks and an early start for ``algo``, using only keys its config class has."""
    _, config_cls = agent_classes(algo)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    wanted = dict(hidden_sizes=[16, 16], batch_size=16, buffer_size=2000, learning_starts=50, train_freq=4,
                  gradient_steps=1, target_update_interval=20, exploration_fraction=0.5, **extra)
    lines = ["%s: %s  # test setting" % (k, v if not isinstance(v, bool) else str(v).lower())
             for k, v in wanted.items() if k in fields]
    path = tmp_path / ("%s_tiny.yaml" % algo)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_gym_env_spaces_and_rescaling():
    env = make_gym_env("Pendulum-v1")
    assert space_dims(env) == (3, 1, False)
    assert float(env.action_space.low[0]) == -1.0 and float(env.action_space.high[0]) == 1.0   # torque +-2 N m
    assert env.action_space.dtype == np.float32
    env.reset(seed=0)
    env.step(np.ones(1, np.float32))
    assert env.unwrapped.last_u == pytest.approx(2.0)
    env.close()
    cartpole = make_gym_env("CartPole-v1")
    assert space_dims(cartpole) == (4, 2, True)                  # act_dim = number of actions
    with pytest.raises(ConfigError, match="td3 needs a Box"):
        build_agent_for_env("td3", cartpole)
    cartpole.close()
    with pytest.raises(ConfigError, match="cannot make gymnasium env 'NoSuchEnv-v0'"):
        make_gym_env("NoSuchEnv-v0")


@pytest.mark.parametrize("algo", sorted(AGENTS))
def test_every_agent_trains_through_the_session_on_a_gym_env(tmp_path, algo):
    env_id = "CartPole-v1" if wants_discrete(algo) else "Pendulum-v1"
    env = make_gym_env(env_id)
    agent = build_agent_for_env(algo, env, tiny_agent_yaml(tmp_path, algo), seed=1)
    lines = []
    session = TrainingSession(agent, env, TrainConfig(total_steps=300, seed=1, checkpoint_every=0),
                              str(tmp_path / "run"), {"env": env_id}, log=lines.append)
    summary = session.run()
    env.close()
    assert summary.env_steps == 300 and summary.updates > 0
    meta = read_meta(session.checkpoint_path)
    assert meta["env"] == env_id and meta["algo"] == algo and "robot" not in meta
    rows = list(csv.DictReader(open(session.csv_path)))
    assert rows and rows[-1]["distance_m"] == "nan"
    assert any(float(r["updates_per_s"]) > 0 for r in rows) and float(rows[-1]["env_only_steps_per_s"]) > 0
    assert os.listdir(session.tb_dir) and (tmp_path / "run" / "learning_curve.png").exists()
    assert lines and lines[-1].startswith("checkpoint %s at env step 300: " % session.checkpoint_path)
    # A checkpoint of another env is refused.
    with pytest.raises(CheckpointError, match="env 'Pendulum-v1'|env 'CartPole-v1'"):
        other = "Pendulum-v1" if env_id == "CartPole-v1" else "MountainCarContinuous-v0"
        TrainingSession(build_agent_for_env(algo, make_gym_env(env_id), tiny_agent_yaml(tmp_path, algo)),
                        ToyEnv(), TrainConfig(total_steps=400), str(tmp_path / "other"), {"env": other},
                        resume=session.checkpoint_path, tensorboard=False, log=lines.append)


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    session = TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=70, seed=1), str(tmp_path / "r"),
                              {"robot": "toy", "task": "toy"}, log=lambda line: None)
    session.run()
    acc = EventAccumulator(session.tb_dir)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("episode/return", "episode/length", "episode/distance_m", "episode/fell", "reward_terms/a",
                "reward_terms/b", "train/critic_loss", "train/q_mean", "train/actor_loss", "speed/env_steps_per_s",
                "speed/env_only_steps_per_s", "speed/updates_per_s", "progress/updates"):
        assert tag in tags, tag
    returns = acc.Scalars("episode/return")
    assert [e.step for e in returns] == [7 * i for i in range(1, 11)]     # x = env steps


def test_no_tensorboard_and_buffer_size_in_the_checkpoint_line(tmp_path):
    cfg = TD3Config(hidden_sizes=[16, 16], batch_size=8, buffer_size=1000, learning_starts=20, save_buffer=True)
    lines = []
    session = TrainingSession(TD3Agent(3, 2, cfg), ToyEnv(), TrainConfig(total_steps=30), str(tmp_path / "r"),
                              {"robot": "toy", "task": "toy"}, tensorboard=False, log=lines.append)
    session.run()
    assert not os.path.exists(session.tb_dir)
    assert len(lines) == 1 and "at env step 30: " in lines[0] and "replay memory 30 transitions" in lines[0]


def test_timing_splits_env_time_from_learner_time(tmp_path):
    class SlowEnv(ToyEnv):
        def step(self, action):
            time.sleep(0.002)
            return super().step(action)

    session = TrainingSession(small_agent(), SlowEnv(), TrainConfig(total_steps=70), str(tmp_path / "r"),
                              {"robot": "toy", "task": "toy"}, tensorboard=False, log=lambda line: None)
    session.run()
    rows = list(csv.DictReader(open(session.csv_path)))
    for r in rows:
        env_only = float(r["env_only_steps_per_s"])
        assert env_only < 1 / 0.002 and env_only >= float(r["env_steps_per_s"])
    assert float(rows[0]["updates_per_s"]) == 0.0 and float(rows[-1]["updates_per_s"]) > 0   # learning starts at 20


def test_truncate_csv_drops_rows_past_a_checkpoint(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("episode,total_env_steps\n1,10\n2,20\n3,30\n")
    assert truncate_csv(str(path), 2) == 1
    assert path.read_text().splitlines() == ["episode,total_env_steps", "1,10", "2,20"]
    assert truncate_csv(str(path), 5) == 0 and truncate_csv(str(tmp_path / "none.csv"), 0) == 0


@pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning")  # Box2D's SWIG
def test_bipedal_walker_runs_through_the_trainer(tmp_path):
    env = make_gym_env("BipedalWalker-v3")
    assert space_dims(env) == (24, 4, False)
    agent = TD3Agent(24, 4, TD3Config(hidden_sizes=[16, 16], batch_size=16, buffer_size=1000, learning_starts=100))
    records = []
    summary = Trainer(agent, env, TrainConfig(total_steps=300, seed=0), on_episode=[records.append]).run()
    env.close()
    assert summary.env_steps == 300 and summary.updates > 0
    assert all(np.isfinite(r.episode_return) for r in records)


def test_cli_env_option(tmp_path, capsys):
    yaml_path = tiny_agent_yaml(tmp_path, "td3")
    out = tmp_path / "cli"
    code = cli.main(["--env", "Pendulum-v1", "--agent-config", yaml_path, "--steps", "250", "--out-dir", str(out),
                     "--no-progress", "--no-tensorboard", "--checkpoint-every", "0"])
    assert code == 0
    assert read_meta(str(out / "checkpoint.pt"))["env"] == "Pendulum-v1"
    assert not (out / "tb").exists()
    captured = capsys.readouterr()
    assert "250 env steps" in captured.out
    # Resuming with another env id is refused with a one-line error.
    code = cli.main(["--env", "MountainCarContinuous-v0", "--agent-config", yaml_path, "--steps", "300",
                     "--out-dir", str(tmp_path / "x"), "--resume", str(out / "checkpoint.pt"), "--no-progress"])
    assert code == 2 and "was made for env 'Pendulum-v1'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--env", "Pendulum-v1", "--robot", "plen"])
    code = cli.main(["--env", "CartPole-v1", "--algo", "td3", "--out-dir", str(tmp_path / "y"), "--no-progress"])
    assert code == 2 and "td3 needs a Box" in capsys.readouterr().err


def test_resume_keeps_tensorboard_points_up_to_the_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    meta, out = {"robot": "toy", "task": "toy"}, str(tmp_path / "r")
    TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=70, seed=1), out, meta,
                    log=lambda line: None).run()
    TrainingSession(small_agent(), ToyEnv(), TrainConfig(total_steps=140, seed=1), out, meta,
                    resume=os.path.join(out, "checkpoint.pt"), log=lambda line: None).run()
    acc = EventAccumulator(os.path.join(out, "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("episode/return")] == [7 * i for i in range(1, 21)]
