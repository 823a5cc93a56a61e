"""tools/soak.py's analysis (no ROS, no processes): RSS slope after the replay memory fills, the leak verdicts on
descriptors and threads, the "nothing lost" checks, and the section it rewrites in docs/benchmarks.md."""
import importlib.util
import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def soak():
    """tools/ is not a package: load tools/soak.py by path (it imports bench_agents from its own folder)."""
    spec = importlib.util.spec_from_file_location("soak_tool", os.path.join(ROOT, "tools", "soak.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("soak_tool", None)


def series(proc, times, rss, fds, threads, pid=100, cpu_per_s=0.5):
    return [{"t_s": t, "proc": proc, "pid": pid, "rss_mb": r, "fds": f, "threads": n, "cpu_s": cpu_per_s * t}
            for t, r, f, n in zip(times, rss, fds, threads)]


def test_slope_is_per_hour_and_robust_to_noise(soak):
    rng = np.random.default_rng(3)
    for seed_slope in (0.0, 12.0, -30.0):
        t = np.arange(0, 3600, 60.0)
        y = 300 + seed_slope * t / 3600 + rng.normal(0, 0.5, t.size)
        assert soak.slope_per_hour(list(t), list(y)) == pytest.approx(seed_slope, abs=1.0)
    assert math.isnan(soak.slope_per_hour([10.0], [1.0]))
    assert math.isnan(soak.slope_per_hour([10.0, 10.0], [1.0, 2.0]))


def test_fill_time_is_the_first_sample_with_a_full_memory(soak):
    progress = [{"t_s": 0.0, "replay_memory": None}, {"t_s": 60.0, "replay_memory": 900},
                {"t_s": 120.0, "replay_memory": 1000}, {"t_s": 180.0, "replay_memory": 1000}]
    assert soak.fill_time(progress, 1000) == 120.0
    assert soak.fill_time(progress, 1001) is None
    start, label = soak.steady_window(600.0, 120.0)
    assert start == 120.0 and "filled" in label
    start, label = soak.steady_window(600.0, None)
    assert start == 300.0 and "never filled" in label


def test_growth_while_the_memory_fills_is_not_a_leak_but_growth_after_it_is(soak):
    t = [60.0 * i for i in range(61)]
    fill = 900.0
    # learner: grows 200 MB while the replay memory fills, flat after (with allocator noise); a leaky node: +30 MB/h
    rng = np.random.default_rng(0)
    learner_rss = [300 + 200 * min(x, fill) / fill + rng.normal(0, 0.3) for x in t]
    leaky_rss = [90 + 30 * x / 3600 for x in t]
    samples = (series("/train/learner", t, learner_rss, [21] * 61, [12] * 61)
               + series("/deploy/controller", t, leaky_rss, [23] * 61, [14] * 61))
    stats = soak.analyse(samples, fill)
    learner, leaky = stats["/train/learner"], stats["/deploy/controller"]
    assert learner["rss_start"] == pytest.approx(300, abs=1) and learner["rss_fill"] == pytest.approx(500, abs=1)
    assert abs(learner["rss_slope"]) < 2.0 and leaky["rss_slope"] == pytest.approx(30, abs=0.5)
    assert learner["window_samples"] == 46 and learner["cpu_pct"] == pytest.approx(50.0)
    lines = dict((text.split(":")[0] + ("/rss" if "RSS" in text else "/fds" if "descriptors" in text else "/thr"), ok)
                 for ok, text in soak.verdicts(stats, 10.0))
    assert lines["/train/learner/rss"] and not lines["/deploy/controller/rss"]
    assert all(lines["%s/%s" % (p, q)] for p in stats for q in ("fds", "thr"))
    # the whole-run slope of the learner would have failed: the window is what makes it flat
    whole = soak.analyse(samples, 0.0)["/train/learner"]["rss_slope"]
    assert whole > 10.0


def test_a_steep_slope_over_a_short_window_is_too_short_to_tell_not_flat_or_growing(soak):
    t = [20.0 * i for i in range(12)]                       # 4 min: +20 MB/h is 1.2 MB, under the 2 MB floor
    short = soak.analyse(series("/m", t, [33.0 + 20.0 * x / 3600 for x in t], [20] * 12, [15] * 12), 0.0)
    (ok, text), = [line for line in soak.verdicts(short, 10.0, 2.0) if "RSS" in line[1]]
    assert ok and "too short to tell" in text and "+20.0 MB/h" in text
    t = [60.0 * i for i in range(60)]                       # the same slope over an hour: 20 MB, a leak
    long = soak.analyse(series("/m", t, [33.0 + 20.0 * x / 3600 for x in t], [20] * 60, [15] * 60), 0.0)
    (ok, text), = [line for line in soak.verdicts(long, 10.0, 2.0) if "RSS" in line[1]]
    assert not ok and "GROWS" in text


def test_descriptor_leaks_raise_the_floor_transients_do_not(soak):
    t = [60.0 * i for i in range(30)]
    leak = [20 + i // 3 for i in range(30)]                  # one more descriptor every 3 minutes
    transient = [20] * 30
    transient[25] = 21                                        # a checkpoint file open during one sample
    threads_leak = [10 + i for i in range(30)]
    samples = (series("/a", t, [100.0] * 30, leak, [10] * 30)
               + series("/b", t, [100.0] * 30, transient, [10] * 30)
               + series("/c", t, [100.0] * 30, [20] * 30, threads_leak))
    stats = soak.analyse(samples, 0.0)
    assert stats["/a"]["fds_rising"] and not stats["/b"]["fds_rising"] and not stats["/c"]["fds_rising"]
    assert stats["/c"]["threads_rising"] and not stats["/a"]["threads_rising"]
    failed = [text for ok, text in soak.verdicts(stats, 10.0) if not ok]
    assert len(failed) == 2
    assert any(text.startswith("/a: open file descriptors") and "RISES" in text for text in failed)
    assert any(text.startswith("/c: threads") and "RISES" in text for text in failed)
    assert any("constant (20)" in text for ok, text in soak.verdicts(stats, 10.0) if text.startswith("/c: open"))


def test_a_restarted_process_or_too_few_samples_gets_no_pass(soak):
    t = [0.0, 60.0, 120.0, 180.0]
    samples = series("/x", t[:2], [50.0, 50.0], [5, 5], [3, 3], pid=1) + \
        series("/x", t[2:], [50.0, 50.0], [5, 5], [3, 3], pid=2)
    lines = soak.verdicts(soak.analyse(samples, 0.0), 10.0)
    assert any(not ok and "restarted" in text for ok, text in lines)
    lines = soak.verdicts(soak.analyse(series("/y", t, [1.0] * 4, [1] * 4, [1] * 4), 150.0), 10.0)
    assert lines == [(False, lines[0][1])] and "1 sample(s) in the steady window" in lines[0][1]


def test_contiguity_names_gaps_repeats_and_restarts(soak):
    assert soak.contiguity_problem([1, 2, 3], "x") is None
    assert "none" in soak.contiguity_problem([], "x")
    assert "missing 3" in soak.contiguity_problem([1, 2, 4], "x")
    # a fresh run appended to an old one's CSV (issue 14, defect 1): 490, 491, 1, 2 ...
    problem = soak.contiguity_problem([1, 2, 3, 1, 2], "episodes.csv")
    assert problem.startswith("episodes.csv:") and "repeated 1, 2" in problem
    assert "starts at 2" in soak.contiguity_problem([2, 3], "x")


def test_deploy_checks_compare_topic_log_and_controller(soak):
    log = "... [INFO] policy: 3 episode(s); return mean 1.0 ...\n"
    ok = soak.deploy_checks(log, [1, 2, 3], 4, {"time limit": 3})
    assert all(passed for passed, _ in ok), ok
    bad = soak.deploy_checks(log, [1, 2, 4], 6, {"time limit": 3})
    failed = [text for passed, text in bad if not passed]
    assert len(failed) == 2 and "missing 3" in failed[0] and "6 episodes, 3 finished" in failed[1]
    assert not soak.deploy_checks("no summary", [1], 1, {})[1][0]


def test_train_checks_read_the_final_checkpoint_and_csv(soak, tmp_path):
    torch = pytest.importorskip("torch")
    from op3_walk.training.checkpoint import save_checkpoint
    run = tmp_path / "train"
    run.mkdir()
    (run / "episodes.csv").write_text("episode,total_env_steps\n1,10\n2,25\n3,40\n")
    (run / "session_status").write_text("stopped\n")
    save_checkpoint(str(run / "checkpoint.pt"), {"agent": {"w": torch.zeros(2)}, "trainer": {"episodes": 3}},
                    {"robot": "plen", "task": "walk", "algo": "td3", "obs_dim": 1, "act_dim": 1, "env_steps": 47,
                     "episodes": 3})
    checks = soak.train_checks(str(run), 47, 3, [1, 2, 3])
    assert all(ok for ok, _ in checks), checks
    checks = soak.train_checks(str(run), 52, 3, [1, 2, 3])       # diagnostics saw more steps than were saved
    assert [ok for ok, text in checks if "final checkpoint" in text] == [False]
    checks = soak.train_checks(str(run), 47, 3, [1, 3])          # an EpisodeStats lost on the topic
    assert [ok for ok, text in checks if "walker/episode" in text] == [False]


META = {"command": "python tools/soak.py --minutes 60", "cpu": "Some CPU", "cores": 2, "load": "1.00 1.00 1.00",
        "kernel": "6.0", "python": "3.8.10", "date": "2026-01-01 00:00", "minutes": 60.0, "startup_s": 20.0,
        "sample_s": 60.0, "robot": "plen", "task": "walk", "buffer_size": 30000, "learning_starts": 5000,
        "checkpoint_every": 15000, "record": False, "plot_ref": "img/soak.png"}


def test_section_replaces_only_itself_in_benchmarks_md(soak, tmp_path):
    from bench_agents import write_section     # the writer every benchmark tool uses (tools/ is on sys.path now)
    t = [60.0 * i for i in range(10)]
    stats = soak.analyse(series("/train/learner", t, [300.0] * 10, [21] * 10, [12] * 10), 120.0)
    lines = soak.verdicts(stats, 10.0)
    checks = [(True, "no process left behind (9 tracked)"), (False, "train: session_status 'completed'")]
    text = soak.render_section(META, stats, "after the replay memory filled (2.0 min)", lines, checks, "Progress: x.")
    assert text.startswith(soak.SECTION + "\n") and "`python tools/soak.py --minutes 60`" in text
    assert "| /train/learner | 300.0 / 300.0 / 300.0 | +0.0 | 21 / 21 (21 / 21) | 12 / 12 (12 / 12) | 50.0 |" in text
    assert "Verdicts (computed from the samples; all pass)" in text and "Nothing lost (SOME FAIL)" in text
    assert "- **FAIL** train: session_status 'completed'" in text

    path = tmp_path / "benchmarks.md"
    before = "# Benchmarks\n\n## Agents (make bench-agents)\n\nagents\n\n"
    after = "## Reading the soak (written by hand)\n\nkept\n"
    path.write_text(before + soak.SECTION + "\n\nold numbers\n\n" + after)
    write_section(str(path), soak.SECTION, text)
    new = path.read_text()
    assert new.startswith(before) and new.endswith(after) and "old numbers" not in new
    assert new.count(soak.SECTION) == 1 and text in new
    write_section(str(path), soak.SECTION, text.replace("Progress: x.", "Progress: y."))
    again = path.read_text()
    assert again.count(soak.SECTION) == 1 and "Progress: y." in again and "Progress: x." not in again
    assert again.startswith(before) and again.endswith(after)
