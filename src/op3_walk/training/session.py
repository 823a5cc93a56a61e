"""A training session: agent + env + output folder (CSV, checkpoints, learning curve), shared by every entry point.

``scripts/train`` (in-process) and ``learner_node`` (through ROS) both build a ``TrainingSession`` and call
``run()``; they differ only in the env they pass.
"""
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from op3_walk.agents import AGENTS, agent_classes
from op3_walk.config import ConfigError, load
from op3_walk.training.checkpoint import load_checkpoint, save_checkpoint
from op3_walk.training.logger import EpisodeCsv
from op3_walk.training.loop import EpisodeRecord, Trainer, TrainConfig, TrainSummary
from op3_walk.training.plots import plot_learning_curves

ALGOS = tuple(sorted(AGENTS))
CHECKPOINT_NAME = "checkpoint.pt"
CSV_NAME = "episodes.csv"
CURVE_NAME = "learning_curve.png"


def build_agent(algo: str, obs_dim: int, act_dim: int, agent_config: str = "", seed: int = 0) -> Any:
    """The agent for ``algo`` configured from ``agent_config`` (default ``config/agents/<algo>.yaml``)."""
    try:
        agent_cls, config_cls = agent_classes(algo)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return agent_cls(obs_dim, act_dim, load(config_cls, agent_config or "agents/%s.yaml" % algo), seed=seed)


class TrainingSession:
    """Train ``agent`` on ``env`` and keep everything in ``out_dir``.

    ``out_dir`` receives ``episodes.csv`` (one row per episode, flushed), ``checkpoint.pt`` (atomic, periodic and
    final) and ``learning_curve.png`` (at the end). ``meta`` (robot, task, algo, ...) is stored in the checkpoint and
    checked on ``resume``: a checkpoint of another robot, algorithm or observation size is refused.
    """

    def __init__(self, agent: Any, env: Any, config: TrainConfig, out_dir: str, meta: Dict[str, Any],
                 resume: str = "", on_episode: Optional[List[Callable[[EpisodeRecord], None]]] = None,
                 should_stop: Optional[Callable[[], bool]] = None, progress: bool = False):
        self.agent = agent
        self.env = env
        self.config = config
        self.out_dir = os.path.abspath(out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        self.meta = dict(meta, algo=agent.algo, obs_dim=agent.obs_dim, act_dim=agent.act_dim)
        self.checkpoint_path = os.path.join(self.out_dir, CHECKPOINT_NAME)
        self.csv_path = os.path.join(self.out_dir, CSV_NAME)
        self.curve_path = os.path.join(self.out_dir, CURVE_NAME)
        episodes_done = 0
        if resume:
            payload, _ = load_checkpoint(resume, expect={k: self.meta[k] for k in
                                                         ("robot", "task", "algo", "obs_dim", "act_dim")
                                                         if k in self.meta})
            agent.load_state_dict(payload["agent"])
            episodes_done = int(payload.get("trainer", {}).get("episodes", 0))
        self.csv = EpisodeCsv(self.csv_path)
        self._bar = None
        if progress:
            from tqdm import tqdm
            self._bar = tqdm(total=config.total_steps, initial=agent.env_steps, unit="step", dynamic_ncols=True,
                             file=sys.stdout, mininterval=0.5, smoothing=0.05)
        self.trainer = Trainer(agent, env, config, on_episode=[self.csv, self._show] + list(on_episode or []),
                               checkpoint=lambda trainer: self.save(), should_stop=should_stop,
                               on_step=self._tick if self._bar is not None else None,
                               episodes_done=episodes_done)

    def _tick(self, trainer: Trainer) -> None:
        self._bar.update(trainer.agent.env_steps - self._bar.n)

    def _show(self, record: EpisodeRecord) -> None:
        if self._bar is not None:
            self._bar.set_postfix(ep=record.episode, ret="%.1f" % record.episode_return,
                                  dist="%.2fm" % record.distance, sps="%.0f" % record.env_steps_per_s,
                                  refresh=False)

    def save(self, path: str = "") -> str:
        """Write a checkpoint (atomically) now; safe to call from another thread."""
        with self.trainer.lock:
            meta = dict(self.meta, env_steps=self.agent.env_steps, updates=self.agent.updates,
                        episodes=self.trainer.episodes)
            payload = {"agent": self.agent.state_dict(), "trainer": {"episodes": self.trainer.episodes}}
            return save_checkpoint(path or self.checkpoint_path, payload, meta)

    def run(self) -> TrainSummary:
        """Train to ``config.total_steps`` (or until ``should_stop``), save, plot; returns the summary."""
        try:
            summary = self.trainer.run()
        finally:
            self.csv.close()
            if self._bar is not None:
                self._bar.close()
        if self.trainer.episodes > 0:
            plot_learning_curves([self.csv_path], self.curve_path,
                                 title="%s %s on %s" % (self.meta.get("algo", ""), self.meta.get("robot", ""),
                                                        time.strftime("%Y-%m-%d %H:%M")))
        return summary

    def describe(self, summary: TrainSummary) -> str:
        sps = summary.new_env_steps / summary.wall_time if summary.wall_time > 0 else 0.0
        return ("%d episodes, %d env steps, %d updates in %.1f s (%.0f env steps/s overall)%s; outputs in %s"
                % (summary.episodes, summary.env_steps, summary.updates, summary.wall_time, sps,
                   " [stopped early]" if summary.stopped_early else "", self.out_dir))

