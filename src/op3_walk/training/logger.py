"""Episode logging: a CSV file a person (or ``plot_curves``) can read while training runs."""
import csv
import math
import os
from typing import List, Optional

from op3_walk.training.loop import EpisodeRecord

BASE_COLUMNS = ["episode", "total_env_steps", "episode_return", "length", "distance_m", "fell", "wall_time_s",
                "env_steps_per_s", "total_updates"]


class EpisodeCsv:
    """Append one row per episode to ``path``; every row is flushed so a crash loses nothing written.

    Reward-term and loss columns are fixed by the first episode (``term_<name>``, ``loss_<name>``); an existing
    file with the same header is appended to (a resumed run), a different header is an error.
    """

    def __init__(self, path: str):
        self.path = path
        self._columns: Optional[List[str]] = None
        self._fh = None
        self._writer = None
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)

    def _open(self, record: EpisodeRecord) -> None:
        columns = (BASE_COLUMNS + ["term_" + k for k in sorted(record.reward_terms)]
                   + ["loss_" + k for k in ("critic_loss", "actor_loss", "q_mean")])
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

    def __call__(self, record: EpisodeRecord) -> None:
        if self._writer is None:
            self._open(record)
        row = [record.episode, record.total_env_steps, "%.6g" % record.episode_return, record.length,
               "%.6g" % record.distance, int(record.fell), "%.4g" % record.wall_time,
               "%.4g" % record.env_steps_per_s, record.total_updates]
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
