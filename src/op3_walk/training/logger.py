"""Episode logging: a CSV file a person (or ``plot_curves``) can read while training runs, and TensorBoard scalars.

TensorBoard is imported only when a :class:`TensorBoardLog` is made (a learner-side dependency: the controller
side never loads it, nor torch).
"""
import csv
import math
import os
from typing import Any, Dict, List, Optional, Sequence

from op3_walk.training.loop import EpisodeRecord

BASE_COLUMNS = ["episode", "total_env_steps", "episode_return", "length", "distance_m", "fell", "wall_time_s",
                "env_steps_per_s", "total_updates", "env_only_steps_per_s", "updates_per_s"]
# Columns filled from the session's timing dict (see TrainingSession.timing); NaN when not given.
TIMING_COLUMNS = ("env_only_steps_per_s", "updates_per_s")

# What each agent's update() reports, in CSV column order (TensorBoard takes whatever keys arrive).
DEFAULT_LOSS_KEYS = ("critic_loss", "actor_loss", "q_mean")
LOSS_KEYS = {
    "td3": DEFAULT_LOSS_KEYS,
    "ddpg": DEFAULT_LOSS_KEYS,
    "sac": ("critic_loss", "actor_loss", "q_mean", "ent_coef", "entropy"),
    "dqn": ("critic_loss", "q_mean"),
}


def loss_columns(agent: Any) -> Sequence[str]:
    """The loss keys an agent reports: its ``loss_keys`` attribute if it has one, else :data:`LOSS_KEYS`."""
    keys = getattr(agent, "loss_keys", None)
    if keys:
        return tuple(keys)
    return LOSS_KEYS.get(getattr(agent, "algo", ""), DEFAULT_LOSS_KEYS)


class EpisodeCsv:
    """Append one row per episode to ``path``; every row is flushed so a crash loses nothing written.

    Reward-term columns are fixed by the first episode (``term_<name>``), loss columns by ``loss_keys``
    (``loss_<name>``); an existing file with the same header is appended to (a resumed run), a different header is
    an error.
    """

    def __init__(self, path: str, loss_keys: Sequence[str] = DEFAULT_LOSS_KEYS):
        self.path = path
        self.loss_keys = tuple(loss_keys)
        self._columns: Optional[List[str]] = None
        self._fh = None
        self._writer = None
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)

    def _open(self, record: EpisodeRecord) -> None:
        columns = (BASE_COLUMNS + ["term_" + k for k in sorted(record.reward_terms)]
                   + ["loss_" + k for k in self.loss_keys])
        exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        if exists:
            with open(self.path, "r", newline="") as fh:
                header = next(csv.reader(fh), None)
            if header != columns:
                raise ValueError("%s exists with other columns (%s); use another out_dir" % (self.path, header))
        self._fh = open(self.path, "a", newline="")
        self._writer = csv.writer(self._fh)
        if not exists:
            self._writer.writerow(columns)
        self._columns = columns

    def __call__(self, record: EpisodeRecord, timing: Optional[Dict[str, float]] = None) -> None:
        if self._writer is None:
            self._open(record)
        timing = timing or {}
        row = [record.episode, record.total_env_steps, "%.6g" % record.episode_return, record.length,
               "%.6g" % record.distance, int(record.fell), "%.4g" % record.wall_time,
               "%.4g" % record.env_steps_per_s, record.total_updates]
        row += ["%.4g" % timing.get(key, math.nan) for key in TIMING_COLUMNS]
        for column in self._columns[len(BASE_COLUMNS):]:
            source = record.reward_terms if column.startswith("term_") else record.losses
            value = source.get(column.split("_", 1)[1], math.nan)
            row.append("%.6g" % value)
        self._writer.writerow(row)
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._writer = None


class TensorBoardLog:
    """TensorBoard scalars per episode, against env steps (``tensorboard --logdir <out_dir>/tb``).

    Tags: ``episode/{return,length,distance_m,fell}``, ``reward_terms/<name>``, ``train/<key>`` (losses, Q values,
    SAC's entropy coefficient and entropy: the episode's mean), ``speed/{env_steps_per_s, env_only_steps_per_s,
    updates_per_s}`` and ``progress/{updates,episode}``.  ``purge_step`` (one past a resumed checkpoint's env step)
    hides points an earlier, killed run wrote after its last checkpoint.
    """

    def __init__(self, log_dir: str, purge_step: Optional[int] = None, flush_secs: int = 10):
        from torch.utils.tensorboard import SummaryWriter  # lazy: pulls in tensorboard (and torch)
        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=log_dir, purge_step=purge_step, flush_secs=flush_secs)

    def __call__(self, record: EpisodeRecord, timing: Optional[Dict[str, float]] = None) -> None:
        step = record.total_env_steps
        scalars = {"episode/return": record.episode_return, "episode/length": record.length,
                   "episode/distance_m": record.distance, "episode/fell": float(record.fell),
                   "speed/env_steps_per_s": record.env_steps_per_s,
                   "progress/updates": record.total_updates, "progress/episode": record.episode}
        for key, value in (timing or {}).items():
            if key in TIMING_COLUMNS:
                scalars["speed/" + key] = value
        for key, value in record.reward_terms.items():
            scalars["reward_terms/" + key] = value
        for key, value in record.losses.items():
            scalars["train/" + key] = value
        for tag, value in scalars.items():
            value = float(value)
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()
