"""Several actors feeding one Trainer when one of them drops off (its controller's host cut from the network) and
comes back: training goes on with the others, nothing already stored is lost, the lost actor is not reset while it
says it is unreachable, and it is taken back with a fresh episode.  ROS-free: remote envs are faked with
``step_async``/``step_wait``/``available`` like ``RosWalkEnv``."""
import time

import gymnasium
import numpy as np
import pytest

from op3_walk.agents.td3 import TD3Agent, TD3Config
from op3_walk.training.loop import EnvUnavailable, Trainer, TrainConfig


class Link:
    """The network link of one fake host."""

    def __init__(self):
        self.up = True


class RemoteToyEnv(gymnasium.Env):
    """A remote env on a host behind ``link``: while the link is down, answers and resets fail with
    EnvUnavailable and ``available()`` is False."""

    def __init__(self, link, horizon=25):
        self.observation_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
        self.link, self.horizon = link, horizon
        self.resets = 0
        self.resets_while_down = 0

    def available(self):
        return self.link.up

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if not self.link.up:
            self.resets_while_down += 1
            raise EnvUnavailable("host unreachable")
        self.resets += 1
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step_async(self, action):
        self.action = np.asarray(action)
        self.sent = time.monotonic()

    def step_wait(self):
        if not self.link.up:
            raise EnvUnavailable("no state within the timeout")
        return self._answer()

    def _answer(self):
        self.t += 1
        reward = -float(np.sum((self.action - 0.5) ** 2))
        return (self.np_random.uniform(-1, 1, 3).astype(np.float32), reward, False, self.t >= self.horizon,
                {"distance": 0.01 * self.t})


class PollingToyEnv(RemoteToyEnv):
    """Like RosWalkEnv: ``step_poll`` is None while an answer is outstanding; a silent env is declared lost only
    after ``timeout`` s."""

    def __init__(self, link, horizon=25, timeout=0.05):
        super().__init__(link, horizon)
        self.timeout = timeout

    def step_poll(self):
        if not self.link.up:
            if time.monotonic() - self.sent >= self.timeout:
                raise EnvUnavailable("no state within %.2f s" % self.timeout)
            return None
        return self._answer()


def small_agent(seed=0):
    return TD3Agent(3, 2, TD3Config(hidden_sizes=[16, 16], batch_size=8, buffer_size=5000, learning_starts=20),
                    seed=seed)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(Trainer, "RETRY_INTERVAL_S", 0.01)


@pytest.mark.parametrize("env_class", [RemoteToyEnv, PollingToyEnv])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_lost_actor_does_not_stop_training_and_is_taken_back_with_a_fresh_episode(seed, env_class):
    links = [Link(), Link()]
    envs = [env_class(links[0]), env_class(links[1], horizon=1000)]   # actor 1: one long episode in flight
    agent, records, trace = small_agent(seed), [], []
    phase = {"name": "both", "cut_at": None, "cut_time": None, "outage_s": None}

    def on_step(trainer):
        trace.append((agent.env_steps, len(agent.memory), list(trainer.actor_steps), set(trainer.lost_envs)))
        steps = trainer.actor_steps
        if phase["name"] == "both" and steps[1] >= 40:
            links[1].up = False                       # the cable of host 1 is pulled
            phase.update(name="cut", cut_at=list(steps), cut_time=time.monotonic())
        elif phase["name"] == "cut" and steps[0] >= phase["cut_at"][0] + 150:
            time.sleep(0.1)                           # the outage outlasts reconnect_timeout_s by far
            phase.update(name="back", outage_s=time.monotonic() - phase["cut_time"])
            links[1].up = True

    trainer = Trainer(agent, envs, TrainConfig(total_steps=500, seed=seed, reconnect_timeout_s=0.02),
                      on_episode=[records.append], on_step=on_step)
    summary = trainer.run()

    assert phase["name"] == "back" and phase["outage_s"] > 5 * 0.02
    assert summary.env_steps == 500 and not summary.stopped_early
    # nothing stored is ever lost: the replay memory and the step counter only grow, by one per transition
    assert all(b[0] == a[0] + 1 and b[1] >= a[1] for a, b in zip(trace, trace[1:]))
    assert len(agent.memory) == 500 == sum(trainer.actor_steps)
    # while actor 1 was lost, actor 0 went on alone and actor 1 stored nothing
    cut = phase["cut_at"]
    during = [t for t in trace if t[2][0] > cut[0] and 1 in t[3]]
    assert len(during) >= 100 and all(t[2][1] == cut[1] for t in during)
    # it was never reset while it said it was unreachable, and it came back with a fresh episode
    assert envs[1].resets_while_down == 0
    assert envs[1].resets == 2 and trainer.lost_envs == set()
    assert trainer.actor_steps[1] > cut[1] + 20
    assert summary.lost_episodes == 1                  # its episode in flight at the cut, and only that
    assert all(r.actor == 0 for r in records)          # (actor 1's fresh episode is still running at the end)


def test_the_run_fails_only_when_every_actor_is_lost_for_reconnect_timeout():
    links = [Link(), Link()]
    envs = [RemoteToyEnv(link) for link in links]
    agent, ckpts = small_agent(), []

    def on_step(trainer):
        if agent.env_steps == 60:
            links[0].up = False
        if agent.env_steps == 120:
            links[1].up = False

    trainer = Trainer(agent, envs, TrainConfig(total_steps=1000, reconnect_timeout_s=0.3), on_step=on_step,
                      checkpoint=lambda t: ckpts.append(t.agent.env_steps))
    start = time.monotonic()
    with pytest.raises(EnvUnavailable):
        trainer.run()
    assert time.monotonic() - start >= 0.3
    assert trainer.lost_envs == {0, 1} and ckpts == [agent.env_steps] and len(agent.memory) == agent.env_steps
    assert trainer.actor_steps[1] > trainer.actor_steps[0]   # actor 1 trained on after actor 0 was lost


def test_zero_reconnect_timeout_still_fails_at_the_first_loss():
    links = [Link(), Link()]
    envs = [RemoteToyEnv(link) for link in links]
    agent = small_agent()

    def on_step(trainer):
        if agent.env_steps == 30:
            links[1].up = False

    with pytest.raises(EnvUnavailable):
        Trainer(agent, envs, TrainConfig(total_steps=1000, reconnect_timeout_s=0.0), on_step=on_step).run()
    assert agent.env_steps < 40


def test_a_silent_actor_holds_up_nobody_while_its_timeout_runs():
    links = [Link(), Link()]
    timeout = 0.4
    envs = [PollingToyEnv(links[0], timeout=timeout), PollingToyEnv(links[1], timeout=timeout)]
    agent = small_agent()
    seen = {"cut": None, "steps_at_cut": None, "declared": None, "steps_at_declared": None}

    def on_step(trainer):
        seen["actor0"] = trainer.actor_steps[0]
        if seen["cut"] is None and trainer.actor_steps[1] >= 30:
            links[1].up = False                   # actor 1 falls silent: no answer, no error, until its timeout
            seen.update(cut=time.monotonic(), steps_at_cut=trainer.actor_steps[0])
        if seen["cut"] is not None and seen["declared"] is None and 1 in trainer.lost_envs:
            seen.update(declared=time.monotonic(), steps_at_declared=trainer.actor_steps[0])

    def declared_and_more():   # end once the loss is declared and actor 0 went on after it (whatever the speed)
        return seen["declared"] is not None and seen["actor0"] > seen["steps_at_declared"] + 10

    # a budget no machine spends within the timeout; the run ends through should_stop
    Trainer(agent, envs, TrainConfig(total_steps=200000, reconnect_timeout_s=60.0), on_step=on_step,
            should_stop=declared_and_more).run()
    assert seen["declared"] is not None and seen["declared"] - seen["cut"] >= timeout
    # while actor 1's timeout ran, actor 0 went on training (a round-by-round loop would have waited for it)
    assert seen["steps_at_declared"] - seen["steps_at_cut"] >= 20


def test_n_step_returns_with_several_actors_are_refused_not_mixed():
    cfg = TD3Config(hidden_sizes=[16, 16], batch_size=8, buffer_size=1000, learning_starts=20, n_step=3)
    agent = TD3Agent(3, 2, cfg, seed=0)
    with pytest.raises(ValueError, match="n_step 3 with 2 actors"):
        Trainer(agent, [RemoteToyEnv(Link()), RemoteToyEnv(Link())], TrainConfig(total_steps=50))
    Trainer(agent, RemoteToyEnv(Link()), TrainConfig(total_steps=50)).run()   # one actor: n-step is fine
    assert agent.env_steps == 50
