"""Learning-curve plots over several runs: grouping by label, resampling onto env steps, mean and spread, the CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest

import op3_walk
from op3_walk.training.plots import (aggregate, default_label, group_runs, main, plot_groups, read_episodes,
                                     x_values)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.dirname(os.path.dirname(os.path.abspath(op3_walk.__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(folder, returns, length=100, distance=True):
    """An episodes.csv like a session writes (only the columns the plots read, plus one with text)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "episodes.csv")
    with open(path, "w") as fh:
        fh.write("episode,total_env_steps,episode_return,length,distance_m,note\n")
        for i, r in enumerate(returns, 1):
            fh.write("%d,%d,%g,%d,%s,x\n" % (i, i * length, r, length, "%g" % (0.1 * i) if distance else "nan"))
    return path


def test_labels_strip_seed_suffixes_and_label_equals_path(tmp_path):
    a = write_run(str(tmp_path / "td3_s0"), [1, 2])
    write_run(str(tmp_path / "td3-seed1"), [1, 2])
    write_run(str(tmp_path / "sac_s0"), [1, 2])
    assert default_label(str(tmp_path / "td3_s0")) == "td3"
    assert default_label(a) == "td3"
    assert default_label(str(tmp_path / "x" / "run3.csv")) == "run3"
    groups = group_runs([str(tmp_path / "td3_s0"), str(tmp_path / "sac_s0"), a,
                         "ours=" + str(tmp_path / "td3-seed1")])
    assert list(groups) == ["td3", "sac", "ours"]
    assert groups["td3"] == [a, a] and groups["ours"] == [str(tmp_path / "td3-seed1" / "episodes.csv")]
    with pytest.raises(ValueError, match="no episode CSV"):
        group_runs([str(tmp_path / "missing")])


def test_aggregate_resamples_onto_the_common_steps():
    run1 = (np.array([0.0, 100.0]), np.array([0.0, 100.0]))
    run2 = (np.array([50.0, 150.0]), np.array([10.0, 10.0]))
    x, mean, std, lo, hi, n = aggregate([run1, run2], points=3)
    assert list(x) == [50.0, 75.0, 100.0]                 # where both runs have data
    assert list(mean) == [30.0, 42.5, 55.0] and list(n) == [2, 2, 2]
    assert list(lo) == [10.0, 10.0, 10.0] and list(hi) == [50.0, 75.0, 100.0]
    assert std[0] == pytest.approx(20.0)
    # Runs that never overlap: the union, each point averaging the runs present there.
    x, mean, _, _, _, n = aggregate([(np.array([0.0, 1.0]), np.array([1.0, 1.0])),
                                     (np.array([2.0, 3.0]), np.array([5.0, 5.0]))], points=4)
    assert list(x) == [0.0, 1.0, 2.0, 3.0] and list(mean) == [1.0, 1.0, 5.0, 5.0] and list(n) == [1, 1, 1, 1]


@pytest.mark.parametrize("band", ["std", "minmax", "none"])
def test_plot_groups_mean_and_band(tmp_path, band):
    groups = {"a": [write_run(str(tmp_path / ("a_s%d" % s)), np.arange(30) + 10 * s) for s in range(3)],
              "b": [write_run(str(tmp_path / "b"), -np.arange(30.0), distance=False)]}
    png = str(tmp_path / "out" / "c.png")
    summary = plot_groups(groups, png, window=5, band=band)
    with open(png, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    assert summary["a"]["runs"] == 3 and summary["a"]["final_mean"] == pytest.approx(27.0 + 10.0)
    assert summary["a"]["final_std"] == pytest.approx(np.std([27.0, 37.0, 47.0]))
    assert summary["b"]["runs"] == 1 and summary["b"]["final_mean"] == pytest.approx(-27.0)


def test_wall_time_axis_is_the_running_sum_of_episode_times(tmp_path):
    path = tmp_path / "run" / "episodes.csv"
    path.parent.mkdir()
    path.write_text("episode,total_env_steps,episode_return,wall_time_s\n1,100,1,30\n2,200,2,60\n3,300,3,90\n")
    np.testing.assert_allclose(x_values(read_episodes(str(path)), "wall_min"), [0.5, 1.5, 3.0])
    np.testing.assert_allclose(x_values(read_episodes(str(path)), "env_steps"), [100, 200, 300])
    png = str(tmp_path / "wall.png")
    assert main([str(path.parent), "-o", png, "--x", "wall_min"]) == 0
    with open(png, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    with pytest.raises(ValueError, match="x must be"):
        plot_groups({"r": [str(path)]}, png, x="hours")
    no_times = write_run(str(tmp_path / "old"), [1, 2])      # a CSV without wall_time_s has no wall-time curve
    with pytest.raises(ValueError, match="no episodes"):
        plot_groups({"old": [no_times]}, png, x="wall_min")


def test_plot_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("episode,total_env_steps,episode_return\n")
    with pytest.raises(ValueError, match="no episodes"):
        plot_groups({"e": [str(empty)]}, str(tmp_path / "x.png"))
    run = write_run(str(tmp_path / "r"), [1, 2, 3])
    with pytest.raises(ValueError, match="none of the requested columns"):
        plot_groups({"r": [run]}, str(tmp_path / "x.png"), metrics=["no_such_column"])
    with pytest.raises(ValueError, match="band"):
        plot_groups({"r": [run]}, str(tmp_path / "x.png"), band="iqr")
    assert np.isnan(read_episodes(run)["note"]).all()       # text columns read as NaN, not an error


def test_cli_groups_runs_and_prints_a_summary(tmp_path, capsys):
    for s in range(2):
        write_run(str(tmp_path / ("td3_s%d" % s)), np.full(20, -150.0 - s))
    png = str(tmp_path / "curves.png")
    assert main([str(tmp_path / "td3_s0"), str(tmp_path / "td3_s1"), "-o", png, "--band", "minmax"]) == 0
    out = capsys.readouterr().out
    assert "td3" in out and "2 run(s)" in out and "-150.5 ± 0.5" in out and png in out
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nothing_here"), "-o", png])
    assert exc.value.code == 2


def test_plot_curves_script_is_a_two_line_entry_point(tmp_path):
    script = os.path.join(ROOT, "scripts", "plot_curves")
    code = [line for line in open(script).read().splitlines() if line and not line.startswith("#")]
    assert len(code) == 2
    run = write_run(str(tmp_path / "r_s0"), [1.0, 2.0, 3.0])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
    png = str(tmp_path / "p.png")
    done = subprocess.run([sys.executable, script, run, "-o", png], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    with open(png, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
