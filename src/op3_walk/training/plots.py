"""Learning-curve plots (matplotlib, no display needed) from episode CSV files."""
import csv
import os
from typing import Dict, List, Sequence

import numpy as np


def read_episodes(path: str) -> Dict[str, np.ndarray]:
    """Columns of an episode CSV as float arrays (empty arrays for a file with only a header)."""
    with open(path, "r", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (same length as ``values``)."""
    if len(values) == 0:
        return values
    cumsum = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[lo]) / (idx - lo)


def plot_learning_curves(csv_paths: Sequence[str], png_path: str, title: str = "", window: int = 10) -> str:
    """Episode return and distance against env steps, one line per CSV (raw points faint, moving average solid)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    plotted = 0
    for path in csv_paths:
        data = read_episodes(path)
        if not data:
            continue
        plotted += 1
        label = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        steps = data["total_env_steps"]
        for ax, key, ylabel in ((axes[0], "episode_return", "episode return"),
                                (axes[1], "distance_m", "distance walked [m]")):
            line, = ax.plot(steps, moving_average(data[key], window), label=label)
            ax.plot(steps, data[key], ".", alpha=0.25, color=line.get_color(), markersize=3)
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
    if plotted == 0:
        plt.close(fig)
        raise ValueError("no episodes in %s" % ", ".join(csv_paths))
    axes[1].set_xlabel("env steps")
    axes[0].legend(loc="best", fontsize="small")
    axes[0].set_title(title or "learning curve (moving average over %d episodes)" % window)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def main(argv: List[str] = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="Plot learning curves from episode CSV files (episodes.csv).")
    parser.add_argument("csv", nargs="+", help="episode CSV files (one line each)")
    parser.add_argument("-o", "--output", default="learning_curve.png", help="PNG to write")
    parser.add_argument("--window", type=int, default=10, help="moving-average window in episodes")
    args = parser.parse_args(argv)
    print(plot_learning_curves(args.csv, args.output, window=args.window))
    return 0
