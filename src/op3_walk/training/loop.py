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
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from op3_walk.config import doc


@dataclasses.dataclass
class TrainConfig:
    """How long and how a training run goes (the learner's own settings, separate from the agent's)."""

    total_steps: int = doc("env steps to train for, counted over the whole run (a resumed run continues the count)",
                           20000)
    seed: int = doc("seed of the first episode (later episodes continue the env's RNG stream) and of the agent", 0)
    checkpoint_every: int = doc("env steps between periodic checkpoints; 0 = only at the end", 5000)

    def validate(self) -> None:
        if self.total_steps < 1:
            raise ValueError("total_steps must be >= 1")
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0")


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


@dataclasses.dataclass
class TrainSummary:
    episodes: int
    env_steps: int
    updates: int
    wall_time: float         # s of this run
    stopped_early: bool      # a stop request (shutdown) ended the run before its step budget
    new_env_steps: int       # env steps taken by this run (env_steps includes a resumed run's earlier steps)


class Trainer:
    """Run ``agent`` on ``env`` for ``config.total_steps`` env steps.

    Hooks: ``on_episode(record)`` after each episode, ``checkpoint(trainer)`` every ``checkpoint_every`` steps
    and at the end, ``should_stop()`` polled every step (e.g. ROS shutdown), ``on_step(trainer)`` after each step
    (progress display). ``lock`` is held while the agent is touched, so another thread (a ROS service) can take
    it to save a consistent checkpoint.
    """

    def __init__(self, agent: Any, env: Any, config: TrainConfig,
                 on_episode: Optional[List[Callable[[EpisodeRecord], None]]] = None,
                 checkpoint: Optional[Callable[["Trainer"], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None,
                 on_step: Optional[Callable[["Trainer"], None]] = None,
                 episodes_done: int = 0):
        self.agent = agent
        self.env = env
        self.config = config
        self.on_episode = list(on_episode or [])
        self.checkpoint = checkpoint
        self.should_stop = should_stop or (lambda: False)
        self.on_step = on_step
        self.episodes = episodes_done
        self.lock = threading.RLock()
        self.last_record: Optional[EpisodeRecord] = None

    def run(self) -> TrainSummary:
        """Train; a final checkpoint is written however the run ends (budget, stop request or error)."""
        start = time.monotonic()
        start_steps = self.agent.env_steps
        try:
            stopped = self._loop()
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
                            new_env_steps=self.agent.env_steps - start_steps)

    def _loop(self) -> bool:
        cfg = self.config
        agent = self.agent
        stopped = False
        seed: Optional[int] = cfg.seed if agent.env_steps == 0 else None
        last_ckpt = agent.env_steps
        while agent.env_steps < cfg.total_steps:
            obs, _ = self.env.reset(seed=seed)
            seed = None
            ep_start = time.monotonic()
            ep_return, length = 0.0, 0
            terms: Dict[str, float] = {}
            loss_sums: Dict[str, float] = {}
            loss_counts: Dict[str, int] = {}
            info: Dict[str, Any] = {}
            terminated = truncated = False
            while not (terminated or truncated):
                if self.should_stop():
                    stopped = True
                    break
                with self.lock:
                    action = agent.act(obs, explore=True)
                try:
                    next_obs, reward, terminated, truncated, info = self.env.step(action)
                except Exception:
                    if self.should_stop():   # the env's wait was cut short by a shutdown: not an error
                        stopped = True
                        break
                    raise
                with self.lock:
                    agent.observe(obs, action, float(reward), next_obs, bool(terminated), bool(truncated))
                    for _ in range(agent.updates_due()):
                        for key, value in agent.update().items():
                            loss_sums[key] = loss_sums.get(key, 0.0) + value
                            loss_counts[key] = loss_counts.get(key, 0) + 1
                obs = next_obs
                ep_return += float(reward)
                length += 1
                for key, value in info.get("reward_terms", {}).items():
                    terms[key] = terms.get(key, 0.0) + float(value)
                if self.on_step is not None:
                    self.on_step(self)
                if (cfg.checkpoint_every and self.checkpoint is not None
                        and agent.env_steps - last_ckpt >= cfg.checkpoint_every):
                    last_ckpt = agent.env_steps
                    self._checkpoint()
                if agent.env_steps >= cfg.total_steps:
                    break
            if length and (terminated or truncated):
                wall = max(time.monotonic() - ep_start, 1e-9)
                self.episodes += 1
                record = EpisodeRecord(
                    episode=self.episodes, episode_return=ep_return, length=length,
                    distance=float(info.get("distance", math.nan)), fell=bool(terminated), wall_time=wall,
                    env_steps_per_s=length / wall, total_env_steps=agent.env_steps, total_updates=agent.updates,
                    reward_terms=terms,
                    losses={k: loss_sums[k] / loss_counts[k] for k in loss_sums})
                self.last_record = record
                for hook in self.on_episode:
                    hook(record)
            if stopped:
                break
        return stopped

    def _checkpoint(self) -> None:
        with self.lock:
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
