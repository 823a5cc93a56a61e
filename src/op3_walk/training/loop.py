"""``Trainer``: one loop that trains an agent on a gymnasium env, in-process or through ROS.

The env may be the in-process ``WalkEnv`` or the ROS-backed env of ``op3_walk.ros``: the loop only sees the gymnasium
API. The agent interface (``act``, ``observe``, ``updates_due``, ``update``, ``env_steps``, ``updates``) is the one
every ``op3_walk.agents`` agent implements. After each env step the loop calls
``agent.observe(obs, action, reward, next_obs, terminated, truncated)`` and then ``agent.update()`` exactly
``agent.updates_due()`` times: the agent decides the update cadence (TD3/DDPG/SAC: ``updates_per_step`` on every
step once ready; DQN: ``gradient_steps`` on every ``train_freq``-th step). Truncation is kept apart from
termination: only ``terminated`` stops bootstrapping; ``truncated`` only ends n-step sums. The action goes to
``env.step`` as ``act`` returned it (a float32 array, or an int for DQN on a Discrete action space).
"""
import dataclasses
import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set

import numpy as np

from op3_walk.config import doc


class EnvUnavailable(RuntimeError):
    """A remote env stopped answering (e.g. its controller process died): the episode in progress is lost, and a
    later ``reset`` may bring the env back (a restarted controller).  Remote envs raise subclasses of it."""


@dataclasses.dataclass
class TrainConfig:
    """How long and how a training run goes (the learner's own settings, separate from the agent's)."""

    total_steps: int = doc("env steps to train for, counted over the whole run (a resumed run continues the count)",
                           20000)
    seed: int = doc("seed of the first episode (later episodes continue the env's RNG stream) and of the agent; "
                    "with several envs, env i's first episode gets seed + i", 0)
    checkpoint_every: int = doc("env steps between periodic checkpoints; 0 = only at the end", 5000)
    reconnect_timeout_s: float = doc("s to keep trying to reset envs that became unavailable (a controller being "
                                     "restarted, a host cut off) while no env is running, before the run fails; "
                                     "while another env runs, a lost env is retried for as long as training goes "
                                     "on; 0 = fail as soon as any env is lost", 0.0)
    overlap_updates: bool = doc("run the gradient updates due for step t after sending the action of step t+1, so a "
                                "remote env (a ROS controller in another process) steps while the learner trains; "
                                "the policy then acts one step's updates behind. The same order is used in-process, "
                                "so a seeded run gives the same result either way. false = act, step, observe, "
                                "update in strict sequence", True)

    def validate(self) -> None:
        """ValueError for a setting out of range (called by :class:`Trainer`, so no entry point can skip it)."""
        if self.total_steps < 0:
            raise ValueError("total_steps must be >= 0, got %d" % self.total_steps)
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0 (0 = only at the end), got %d" % self.checkpoint_every)
        if not self.reconnect_timeout_s >= 0:
            raise ValueError("reconnect_timeout_s must be >= 0, got %r" % self.reconnect_timeout_s)


@dataclasses.dataclass
class EpisodeRecord:
    """What one finished episode looked like (also what the EpisodeStats message and the CSV carry)."""

    episode: int
    episode_return: float
    length: int
    distance: float          # m walked forward since the reset
    fell: bool               # terminated by the task (not the time limit)
    wall_time: float         # s
    env_steps_per_s: float
    total_env_steps: int
    total_updates: int
    reward_terms: Dict[str, float]
    losses: Dict[str, float]  # mean of each loss over the episode's updates (empty before learning starts)
    actor: int = 0           # index of the env (actor) that ran the episode


@dataclasses.dataclass
class TrainSummary:
    episodes: int
    env_steps: int
    updates: int
    wall_time: float         # s of this run
    stopped_early: bool      # a stop request (shutdown) ended the run before its step budget
    new_env_steps: int       # env steps taken by this run (env_steps includes a resumed run's earlier steps)
    lost_episodes: int = 0   # episodes abandoned because their env became unavailable


class _Slot:
    """One env and the episode it is running."""

    def __init__(self, env: Any, index: int):
        self.env = env
        self.index = index
        self.obs: Any = None          # None: no episode running (not started yet, or the env is lost)
        self.action: Any = None
        self.lost_since: Optional[float] = None
        self.next_retry = 0.0
        self.start_episode(None)

    def start_episode(self, obs: Any) -> None:
        self.obs = obs
        self.started = time.monotonic()
        self.ep_return = 0.0
        self.length = 0
        self.terms: Dict[str, float] = {}
        self.loss_sums: Dict[str, float] = {}
        self.loss_counts: Dict[str, int] = {}
        self.info: Dict[str, Any] = {}

    def send(self, action: Any) -> None:
        """Hand the action to the env: remote envs with ``step_async`` start stepping now; others step in
        :meth:`receive`."""
        self.action = action
        if hasattr(self.env, "step_async"):
            self.env.step_async(action)

    def receive(self) -> Any:
        if hasattr(self.env, "step_async"):
            return self.env.step_wait()
        return self.env.step(self.action)


class Trainer:
    """Run ``agent`` on ``env`` (one env, or a list of envs: several actors feeding one agent) for
    ``config.total_steps`` env steps.

    Hooks: ``on_episode(record)`` after each episode, ``checkpoint(trainer)`` every ``checkpoint_every`` steps
    and at the end, ``should_stop()`` polled every step (e.g. ROS shutdown), ``on_step(trainer)`` after each step
    (progress display), ``log(message)`` for notes (a lost or recovered env).  ``lock`` is held while the agent is
    touched, so another thread (a ROS service) can take it to save a consistent checkpoint or change exploration.
    Setting ``paused`` (a ``threading.Event``) holds the loop between steps until it is cleared.

    With several envs, every round acts on each running env's observation (in env order), sends all actions, then
    collects the results in env order, storing and updating after each one: envs with ``step_async``/``step_wait``
    step concurrently.  Envs that also have ``step_poll`` (the ROS env: None while the answer is outstanding)
    are not run in rounds: each answer is stored as it arrives and that env gets its next action at once, so an
    env that falls silent holds up nobody while its timeout runs.  With one env and ``overlap_updates`` off, the
    calls are exactly act, step, observe, update; with it on (the default) the updates due after step t run once
    the actions of step t+1 are sent (act t+1, send, update for t, receive t+1, observe t+1, ...), so the ROS
    controller's physics runs in parallel with the learner's gradient steps.  Pending updates are run before an episode's record is made, before every
    checkpoint and when the run ends, so counts and checkpoints are the same as without overlap.
    An env raising :class:`EnvUnavailable` loses its episode in progress (the transitions it already stored stay in
    the replay memory) and training goes on with the others; it is reset again every ``RETRY_INTERVAL_S`` (at
    once when no other env is running) and takes part again with a fresh episode once a reset succeeds.  An env
    may offer ``available()`` (a cheap, non-blocking "worth trying a reset now?"); a lost env that says False is
    skipped until it says True.  The run fails only when no env has been running for
    ``config.reconnect_timeout_s`` (or at the first loss when it is 0).  ``actor_steps[i]`` counts the transitions
    env i has stored, ``actor_episodes[i]`` its finished episodes.
    """

    RETRY_INTERVAL_S = 2.0   # between reset attempts of a lost env while others keep training

    def __init__(self, agent: Any, env: Any, config: TrainConfig,
                 on_episode: Optional[List[Callable[[EpisodeRecord], None]]] = None,
                 checkpoint: Optional[Callable[["Trainer"], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None,
                 on_step: Optional[Callable[["Trainer"], None]] = None,
                 episodes_done: int = 0, log: Optional[Callable[[str], None]] = None):
        config.validate()
        self.agent = agent
        self.envs = list(env) if isinstance(env, (list, tuple)) else [env]
        if not self.envs:
            raise ValueError("Trainer needs at least one env")
        n_step = getattr(getattr(agent, "memory", None), "n_step", 1)
        if len(self.envs) > 1 and n_step > 1:
            # one memory holds one pending n-step window: several actors' transitions would interleave in it
            raise ValueError("n_step %d with %d actors: n-step returns are summed over one episode's consecutive "
                             "transitions and the replay memory keeps one pending window; use n_step: 1 with "
                             "several actors" % (n_step, len(self.envs)))
        self.env = self.envs[0]
        self.config = config
        self.on_episode = list(on_episode or [])
        self.checkpoint = checkpoint
        self.should_stop = should_stop or (lambda: False)
        self.on_step = on_step
        self.log = log or (lambda message: None)
        self.episodes = episodes_done
        self.lost_episodes = 0
        self.lost_envs: Set[int] = set()   # indices of the envs unavailable right now
        self.actor_steps = [0] * len(self.envs)      # transitions stored from each env
        self.actor_episodes = [0] * len(self.envs)   # episodes finished by each env
        self._slots: List[_Slot] = []
        self._idle_since: Optional[float] = None     # since when no env has been running (all lost)
        self._last_ckpt = 0
        self.lock = threading.RLock()
        self.paused = threading.Event()
        self.last_record: Optional[EpisodeRecord] = None
        self._pending: List[_Slot] = []   # one entry per gradient update due but not yet run (overlap_updates)

    def run(self) -> TrainSummary:
        """Train; a final checkpoint is written however the run ends (budget, stop request or error)."""
        start = time.monotonic()
        start_steps = self.agent.env_steps
        try:
            stopped = self._loop()
            with self.lock:
                self._run_pending()
        except BaseException:
            if self.checkpoint is not None:
                try:
                    self._checkpoint()
                except Exception:  # keep the original error; the periodic checkpoint is still on disk
                    pass
            raise
        if self.checkpoint is not None:
            self._checkpoint()
        return TrainSummary(episodes=self.episodes, env_steps=self.agent.env_steps, updates=self.agent.updates,
                            wall_time=time.monotonic() - start, stopped_early=stopped,
                            new_env_steps=self.agent.env_steps - start_steps, lost_episodes=self.lost_episodes)

    # -- episodes -------------------------------------------------------------------------------------------------
    def _lose(self, slot: _Slot, exc: Exception) -> None:
        if slot.obs is not None and slot.length:
            self.lost_episodes += 1
        self.lost_envs.add(slot.index)
        now = time.monotonic()
        if slot.lost_since is None:
            slot.lost_since = now
            self.log("env %d unavailable (%s); %s" % (slot.index, exc, "its episode is abandoned, retrying"
                                                       if self.config.reconnect_timeout_s > 0 else "giving up"))
        slot.obs = None
        slot.next_retry = now + self.RETRY_INTERVAL_S
        if not any(s.obs is not None for s in self._slots):
            if self._idle_since is None:
                self._idle_since = now
        if (self.config.reconnect_timeout_s == 0
                or (self._idle_since is not None and now - self._idle_since > self.config.reconnect_timeout_s)):
            raise exc

    def _reset(self, slot: _Slot, seed: Optional[int]) -> None:
        try:
            obs, _ = slot.env.reset(seed=seed)
        except EnvUnavailable as exc:
            if self.should_stop():
                return
            self._lose(slot, exc)
            return
        if slot.lost_since is not None:
            self.log("env %d is back after %.1f s" % (slot.index, time.monotonic() - slot.lost_since))
            slot.lost_since = None
        self.lost_envs.discard(slot.index)
        self._idle_since = None
        slot.start_episode(obs)

    def _run_pending(self) -> None:
        """Run the gradient updates owed to earlier steps (call with ``self.lock`` held)."""
        pending, self._pending = self._pending, []
        for slot in pending:
            for key, value in self.agent.update().items():
                slot.loss_sums[key] = slot.loss_sums.get(key, 0.0) + value
                slot.loss_counts[key] = slot.loss_counts.get(key, 0) + 1

    def _finish(self, slot: _Slot, terminated: bool) -> None:
        agent = self.agent
        with self.lock:
            self._run_pending()
        wall = max(time.monotonic() - slot.started, 1e-9)
        self.episodes += 1
        self.actor_episodes[slot.index] += 1
        record = EpisodeRecord(
            episode=self.episodes, episode_return=slot.ep_return, length=slot.length,
            distance=float(slot.info.get("distance", math.nan)), fell=bool(terminated), wall_time=wall,
            env_steps_per_s=slot.length / wall, total_env_steps=agent.env_steps, total_updates=agent.updates,
            reward_terms=slot.terms,
            losses={k: slot.loss_sums[k] / slot.loss_counts[k] for k in slot.loss_sums}, actor=slot.index)
        self.last_record = record
        for hook in self.on_episode:
            hook(record)

    def _retry_lost(self, slots: List[_Slot]) -> None:
        """Lost envs: try a reset now and then, or at once when nothing else runs (an env whose ``available()``
        says False is not tried; only the time limit is checked)."""
        running = any(s.obs is not None for s in slots)
        now = time.monotonic()
        for slot in slots:
            if slot.obs is None and (not running or now >= slot.next_retry):
                if slot.lost_since is not None and not getattr(slot.env, "available", lambda: True)():
                    self._lose(slot, EnvUnavailable("not reachable yet"))
                    continue
                self._reset(slot, None)

    def _store(self, slot: _Slot, result: Any) -> None:
        """One answered step of ``slot``: into the replay memory, updates due, episode bookkeeping, checkpoint,
        and the episode's end (record and reset)."""
        cfg, agent = self.config, self.agent
        next_obs, reward, terminated, truncated, info = result
        with self.lock:
            agent.observe(slot.obs, slot.action, float(reward), next_obs, bool(terminated), bool(truncated))
            self.actor_steps[slot.index] += 1
            self._pending.extend([slot] * agent.updates_due())
            if not cfg.overlap_updates:
                self._run_pending()
        slot.obs = next_obs
        slot.info = info
        slot.ep_return += float(reward)
        slot.length += 1
        for key, value in info.get("reward_terms", {}).items():
            slot.terms[key] = slot.terms.get(key, 0.0) + float(value)
        if self.on_step is not None:
            self.on_step(self)
        if (cfg.checkpoint_every and self.checkpoint is not None
                and agent.env_steps - self._last_ckpt >= cfg.checkpoint_every):
            self._last_ckpt = agent.env_steps
            self._checkpoint()
        if terminated or truncated:
            self._finish(slot, bool(terminated))
            if agent.env_steps < cfg.total_steps:
                self._reset(slot, None)

    def _loop(self) -> bool:
        cfg = self.config
        agent = self.agent
        seed: Optional[int] = cfg.seed if agent.env_steps == 0 else None
        self._last_ckpt = agent.env_steps
        slots = self._slots = [_Slot(env, i) for i, env in enumerate(self.envs)]
        for slot in slots:
            self._reset(slot, None if seed is None else seed + slot.index)
        if len(slots) > 1 and all(hasattr(env, "step_async") and hasattr(env, "step_poll") for env in self.envs):
            return self._loop_async(slots)
        while agent.env_steps < cfg.total_steps:
            if self.should_stop():
                return True
            if self.paused.is_set():
                time.sleep(0.02)
                continue
            self._retry_lost(slots)
            running = [s for s in slots if s.obs is not None]
            if not running:
                time.sleep(0.05)
                continue
            for slot in running:
                with self.lock:
                    action = agent.act(slot.obs, explore=True)
                try:
                    slot.send(action)
                except EnvUnavailable as exc:
                    self._lose(slot, exc)
            with self.lock:   # overlap_updates: the sent envs step while the learner trains on the last steps
                self._run_pending()
            for slot in running:
                if slot.obs is None:
                    continue
                try:
                    result = slot.receive()
                except Exception as exc:
                    if self.should_stop():   # the env's wait was cut short by a shutdown: not an error
                        return True
                    if isinstance(exc, EnvUnavailable):
                        self._lose(slot, exc)
                        continue
                    raise
                self._store(slot, result)
                if agent.env_steps >= cfg.total_steps:
                    break
        return False

    def _loop_async(self, slots: List[_Slot]) -> bool:
        """Several remote envs with ``step_poll``: each answer is stored as it comes and its env gets its next
        action at once, so a slow or silent env (until it is declared lost) holds up nobody else.  Envs may set
        ``on_answer`` (a callable) to wake the loop when an answer arrives."""
        cfg, agent = self.config, self.agent
        wake = threading.Event()
        for env in self.envs:
            env.on_answer = wake.set
        in_flight: List[_Slot] = []
        try:
            while agent.env_steps < cfg.total_steps:
                if self.should_stop():
                    return True
                self._retry_lost(slots)
                if not self.paused.is_set():   # paused: the answers in flight are still taken, nothing new sent
                    for slot in slots:
                        if slot.obs is not None and slot not in in_flight:
                            with self.lock:
                                action = agent.act(slot.obs, explore=True)
                            try:
                                slot.send(action)
                                in_flight.append(slot)
                            except EnvUnavailable as exc:
                                self._lose(slot, exc)
                if not in_flight:
                    time.sleep(0.02 if self.paused.is_set() else 0.05)
                    continue
                with self.lock:   # overlap_updates: the sent envs step while the learner trains
                    self._run_pending()
                wake.clear()
                answered = False
                for slot in list(in_flight):
                    try:
                        result = slot.env.step_poll()
                    except EnvUnavailable as exc:
                        in_flight.remove(slot)
                        if self.should_stop():
                            return True
                        self._lose(slot, exc)
                        continue
                    if result is None:
                        continue
                    in_flight.remove(slot)
                    answered = True
                    self._store(slot, result)
                    if agent.env_steps >= cfg.total_steps:
                        break
                if not answered:
                    wake.wait(0.05)
        finally:
            for env in self.envs:
                env.on_answer = None
        return False

    def _checkpoint(self) -> None:
        with self.lock:
            self._run_pending()
            self.checkpoint(self)


def evaluate_returns(policy: Callable[[np.ndarray], np.ndarray], env: Any, episodes: int, seed: int) -> List[float]:
    """Returns of ``episodes`` deterministic episodes (seeds ``seed``, ``seed+1``, ...)."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns
