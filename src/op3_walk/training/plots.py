"""Learning-curve plots (matplotlib, no display needed) from episode CSV files.

``plot_curves`` (``scripts/plot_curves``) takes run folders or CSV files, groups them by label (several seeds of one
setting share a label) and draws, per group, the mean of the runs' smoothed curves with a band (±1 std or min–max)
against env steps::

    scripts/plot_curves out/td3_s0 out/td3_s1 out/td3_s2 out/sac_s0 out/sac_s1 -o curves.png
    scripts/plot_curves ours=out/a/episodes.csv ours=out/b sb3=out/c --band minmax

A run's default label is its folder name without a trailing seed suffix (``td3_s1``, ``td3-seed1`` -> ``td3``);
``LABEL=PATH`` sets it explicitly.
"""
import csv
import math
import os
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

CSV_NAME = "episodes.csv"
METRICS = OrderedDict([("episode_return", "episode return"), ("distance_m", "distance walked [m]")])
_SEED_SUFFIX = re.compile(r"[-_.]?(seed|s)[-_]?\d+$", re.IGNORECASE)
LABELS = {"fell": "fall rate (episodes ending in a fall)", "length": "episode length [steps]"}   # other columns
X_AXES = {"env_steps": "env steps", "wall_min": "training wall time [min] (sum of the episodes' wall_time_s)"}


def read_episodes(path: str) -> Dict[str, np.ndarray]:
    """Columns of an episode CSV as float arrays (empty dict for a file with only a header)."""
    with open(path, "r", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}

    def number(text: str) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan
    return {key: np.array([number(r[key]) for r in rows]) for key in rows[0]}


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (same length as ``values``)."""
    if len(values) == 0:
        return values
    cumsum = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - max(int(window), 1), 0)
    return (cumsum[idx] - cumsum[lo]) / (idx - lo)


def csv_of(path: str) -> str:
    """The episode CSV of a run folder, or ``path`` itself when it is a file."""
    return os.path.join(path, CSV_NAME) if os.path.isdir(path) else path


def default_label(path: str) -> str:
    """Run folder name without a trailing seed suffix (``out/td3_s2/episodes.csv`` -> ``td3``)."""
    path = os.path.abspath(path)
    if os.path.isdir(path) or os.path.basename(path) == CSV_NAME:
        name = os.path.basename(path if os.path.isdir(path) else os.path.dirname(path))
    else:
        name = os.path.splitext(os.path.basename(path))[0]
    return _SEED_SUFFIX.sub("", name) or name


def group_runs(specs: Sequence[str]) -> "OrderedDict[str, List[str]]":
    """``{label: [csv, ...]}`` from ``PATH`` or ``LABEL=PATH`` arguments, in order of first appearance."""
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for spec in specs:
        label, path = None, spec
        if "=" in spec and not os.path.exists(spec):
            label, path = spec.split("=", 1)
        csv_path = csv_of(path)
        if not os.path.isfile(csv_path):
            raise ValueError("%s: no episode CSV (give a run folder holding %s, or a CSV file)" % (path, CSV_NAME))
        groups.setdefault(label or default_label(path), []).append(csv_path)
    return groups


def aggregate(runs: Sequence[Tuple[np.ndarray, np.ndarray]], points: int = 200
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Several runs' ``(steps, values)`` curves resampled onto one grid of env steps.

    The grid spans the steps every run covers (so each point averages all runs); runs that do not overlap fall back
    to the union, averaging the runs present at each point.  Returns ``(x, mean, std, min, max, n)``.
    """
    runs = [(np.asarray(s, float), np.asarray(v, float)) for s, v in runs if len(s)]
    if not runs:
        raise ValueError("no data to aggregate")
    lo, hi = max(s[0] for s, _ in runs), min(s[-1] for s, _ in runs)
    if lo >= hi:
        lo, hi = min(s[0] for s, _ in runs), max(s[-1] for s, _ in runs)
    x = np.linspace(lo, hi, points) if hi > lo else np.array([lo], float)
    ys = np.full((len(runs), len(x)), np.nan)
    for i, (s, v) in enumerate(runs):
        inside = (x >= s[0]) & (x <= s[-1])
        ys[i, inside] = np.interp(x[inside], s, v)
    n = np.sum(np.isfinite(ys), axis=0)
    with np.errstate(invalid="ignore"), _quiet_nan_warnings():
        return (x, np.nanmean(ys, axis=0), np.nanstd(ys, axis=0), np.nanmin(ys, axis=0), np.nanmax(ys, axis=0), n)


class _quiet_nan_warnings:
    """Silence numpy's 'Mean of empty slice' warnings (all-NaN columns stay NaN)."""

    def __enter__(self) -> None:
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def plot_groups(groups: "Dict[str, Sequence[str]]", png_path: str, title: str = "", window: int = 10,
                band: str = "std", metrics: Optional[Sequence[str]] = None,
                x: str = "env_steps") -> Dict[str, Dict[str, float]]:
    """Plot each group's curves against env steps (``x="wall_min"``: minutes of training wall time, the running
    sum of the episodes' ``wall_time_s``) and write ``png_path``.

    Per metric (default: episode return, and distance when any run has it) and group: a one-run group is drawn as
    its moving average over ``window`` episodes with the raw points faint; a several-run group as the mean of the
    runs' moving averages with a band of ``band`` (``std``: ±1 std, ``minmax``: min to max, ``none``).  Returns, per
    group, ``runs`` and the mean/std over runs of the last smoothed ``episode_return`` (``final_mean``,
    ``final_std``).
    """
    if band not in ("std", "minmax", "none"):
        raise ValueError("band must be std, minmax or none, got %r" % band)
    if x not in X_AXES:
        raise ValueError("x must be one of %s, got %r" % (", ".join(X_AXES), x))
    x_axis = x      # (``x`` is reused below for the resampled grid)
    column = "total_env_steps" if x_axis == "env_steps" else "wall_time_s"
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = OrderedDict((label, [d for d in (read_episodes(p) for p in paths) if d and column in d])
                       for label, paths in groups.items())
    data = OrderedDict((label, runs) for label, runs in data.items() if runs)
    if not data:
        raise ValueError("no episodes in %s" % ", ".join(p for paths in groups.values() for p in paths))
    if metrics is None:
        metrics = [m for m in METRICS
                   if any(m in d and np.isfinite(d[m]).any() for runs in data.values() for d in runs)]
    metrics = [m for m in metrics if any(m in d for runs in data.values() for d in runs)]
    if not metrics:
        raise ValueError("none of the requested columns is in the CSV files")

    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 3 + 2.5 * len(metrics)), sharex=True, squeeze=False)
    summary: Dict[str, Dict[str, float]] = OrderedDict()
    for label, runs in data.items():
        finals = [moving_average(d["episode_return"], window)[-1] for d in runs if "episode_return" in d]
        summary[label] = {"runs": float(len(runs)),
                          "final_mean": float(np.mean(finals)) if finals else math.nan,
                          "final_std": float(np.std(finals)) if finals else math.nan}
        color = None
        for ax, metric in zip(axes[:, 0], metrics):
            curves = [(x_values(d, x_axis), moving_average(d[metric], window)) for d in runs
                      if metric in d and np.isfinite(d[metric]).all()]
            if not curves:
                continue
            if len(curves) == 1:
                steps, smooth = curves[0]
                line, = ax.plot(steps, smooth, label=label, color=color)
                raw = next(d for d in runs if metric in d and np.isfinite(d[metric]).all())
                ax.plot(steps, raw[metric], ".", alpha=0.25, color=line.get_color(), markersize=3)
            else:
                x, mean, std, lo, hi, _ = aggregate(curves)
                line, = ax.plot(x, mean, label="%s (%d runs)" % (label, len(curves)), color=color)
                if band != "none":
                    low, high = (mean - std, mean + std) if band == "std" else (lo, hi)
                    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
            color = line.get_color()
    for ax, metric in zip(axes[:, 0], metrics):
        ax.set_ylabel(METRICS.get(metric, LABELS.get(metric, metric)))
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel(X_AXES[x_axis])
    axes[0, 0].legend(loc="best", fontsize="small")
    what = {"std": ", band ±1 std over runs", "minmax": ", band min–max over runs", "none": ""}[band]
    axes[0, 0].set_title(title or "moving average over %d episodes%s" % (window, what))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return summary


def x_values(episodes: Dict[str, np.ndarray], x: str) -> np.ndarray:
    """The x coordinate of each episode's end: env steps, or training wall time in minutes."""
    if x == "env_steps":
        return episodes["total_env_steps"]
    return np.cumsum(np.nan_to_num(episodes["wall_time_s"])) / 60.0


def plot_learning_curves(csv_paths: Sequence[str], png_path: str, title: str = "", window: int = 10) -> str:
    """Episode return (and distance, when known) against env steps, one line per CSV (raw points faint, moving
    average solid), labelled by the CSV's folder."""
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for path in csv_paths:
        label = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        while label in groups:
            label += "'"
        groups[label] = [path]
    plot_groups(groups, png_path, title=title, window=window, band="none")
    return png_path


def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(
        description="Plot learning curves (x = env steps) from run folders or episode CSV files; runs with the same "
                    "label (default: folder name without a seed suffix, or LABEL=PATH) are averaged with a band.")
    parser.add_argument("runs", nargs="+", metavar="[LABEL=]RUN", help="run folders (holding episodes.csv) or CSVs")
    parser.add_argument("-o", "--output", default="learning_curves.png", help="PNG to write")
    parser.add_argument("--window", type=int, default=10, help="moving-average window in episodes")
    parser.add_argument("--band", choices=("std", "minmax", "none"), default="std",
                        help="spread over runs of a label: ±1 std (default), min–max, or none")
    parser.add_argument("--metric", action="append", default=None,
                        help="CSV column to plot (repeatable; default episode_return, plus distance_m if present)")
    parser.add_argument("--title", default="", help="plot title")
    parser.add_argument("--x", choices=tuple(X_AXES), default="env_steps",
                        help="x axis: env_steps (default) or wall_min (training wall time, minutes)")
    args = parser.parse_args(argv)
    try:
        groups = group_runs(args.runs)
        summary = plot_groups(groups, args.output, title=args.title, window=args.window, band=args.band,
                              metrics=args.metric, x=args.x)
    except ValueError as exc:
        parser.exit(2, "plot_curves: error: %s\n" % exc)
    for label, s in summary.items():
        print("%-24s %d run(s)  final return (last %d episodes' mean) %.1f ± %.1f"
              % (label, s["runs"], args.window, s["final_mean"], s["final_std"]))
    print(args.output)
    return 0
