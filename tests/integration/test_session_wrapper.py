"""Sessions that fail exit non-zero: `rosrun op3_walk session LAUNCH ARGS...` (launch_session.py) runs roslaunch and
exits 0 only when the session node reported that it completed, although roslaunch itself exits 0 on every failure.
Also: a fresh launch into a folder that holds a run is refused at once and leaves that run byte for byte as it was
(its bag included); every numeric argument and the algorithm's fit to the task are checked at start, before the
learner waits for its controller."""
import hashlib
import signal
import time

import pytest

from ros_harness import wait_until

SESSION = ["rosrun", "op3_walk", "session"]
LAUNCH_TIMEOUT = 240.0
REFUSED = "already holds a training run"


def train(out, agent_config, *args):
    return SESSION + ["train.launch", "headless:=true", "progress:=false", "tensorboard:=false", "out_dir:=%s" % out,
                      "agent_config:=%s" % agent_config] + list(args)


def digests(folder, names):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


def test_exit_status_rules():
    from op3_walk.ros.launch_session import exit_status, roslaunch_command
    assert exit_status("completed", 0, None) == 0
    assert exit_status("completed", 0, signal.SIGINT) == 0        # finished before the Ctrl-C got through
    assert exit_status("", 0, None) == 1                          # a node failed: roslaunch still exits 0
    assert exit_status("stopped", 0, None) == 1                   # stopped from outside (a required node died)
    assert exit_status("stopped", 0, signal.SIGINT) == 130
    assert exit_status("", 0, signal.SIGTERM) == 143
    assert exit_status("", 1, None) == 1 and exit_status("", 2, None) == 2   # roslaunch's own failure
    assert exit_status("", -9, None) == 137
    assert roslaunch_command("train.launch", ["a:=1"]) == ["roslaunch", "op3_walk", "train.launch", "a:=1"]
    assert roslaunch_command("other_pkg", ["x.launch"]) == ["roslaunch", "other_pkg", "x.launch"]
    assert roslaunch_command("/abs/x.launch", []) == ["roslaunch", "/abs/x.launch"]


@pytest.mark.parametrize("node, values, message", [
    ("learner", {"steps": 0}, "steps must be >= 1"),
    ("learner", {"checkpoint_every": -1}, "checkpoint_every must be >= 0"),
    ("learner", {"seed": -1}, "seed must be >= 0"),
    ("learner", {"state_timeout": 0.0}, "state_timeout must be > 0"),
    ("learner", {"reconnect_timeout": -1.0}, "reconnect_timeout must be >= 0"),
    ("learner", {"diagnostics_rate_hz": -1.0}, "diagnostics_rate_hz must be >= 0"),
    ("learner", {"algo": "dqm"}, "algo: unknown algorithm 'dqm'"),
    ("policy", {"policy": "p.npz", "seed": -2}, "seed must be >= 0, or -1"),
    ("policy", {"policy": "p.npz", "episodes": -1}, "episodes must be >= 0"),
    ("controller", {"diagnostics_rate_hz": -1.0}, "diagnostics_rate_hz must be >= 0"),
    ("controller", {"watchdog_timeout_s": 0.0}, "watchdog_timeout_s must be > 0"),
    ("learner", {"steps": float("nan")}, "expected"),      # the config loader: NaN is no number of steps
])
def test_node_parameters_out_of_range_are_refused(node, values, message):
    from op3_walk.config import ConfigError, from_dict
    from op3_walk.ros.controller import ControllerParams
    from op3_walk.ros.learner import LearnerParams
    from op3_walk.ros.policy_node import PolicyParams
    cls = {"learner": LearnerParams, "policy": PolicyParams, "controller": ControllerParams}[node]
    with pytest.raises(ConfigError, match=message.replace("(", "\\(")):
        from_dict(cls, values, where=node)
    defaults = {"policy": {"policy": "p.npz"}}.get(node, {})
    from_dict(cls, defaults, where=node)   # the defaults pass


def test_a_second_plain_launch_is_refused_fast_and_the_first_run_stays(spawn, tmp_path, small_agent_config):
    out = tmp_path / "run"
    first = spawn(train(out, small_agent_config, "steps:=300", "record:=true", "checkpoint_every:=0"), name="first")
    assert first.wait(timeout=LAUNCH_TIMEOUT) == 0, first.log()[-4000:]   # a good session exits 0
    assert "session: completed" in first.log()
    kept = ("checkpoint.pt", "episodes.csv", "session.bag")
    before = digests(out, kept)

    started = time.monotonic()
    second = spawn(train(out, small_agent_config, "steps:=300", "record:=true"), name="second")
    rc = second.wait(timeout=120)
    elapsed = time.monotonic() - started
    log = second.log()
    assert rc == 1, log[-4000:]
    assert REFUSED in log and "resume:=auto" in log and "out_dir:=" in log, log[-4000:]
    assert "session: FAILED" in log and "Traceback" not in log, log[-4000:]
    # refused before connecting: the learner never announced its session, nor reset the controller
    assert "outputs in" not in log, log[-4000:]
    assert digests(out, kept) == before
    assert sorted(p.name for p in out.glob("session*.bag*")) == ["session.bag"]
    assert not second.orphans(), "processes left behind: %s" % second.orphans()
    print("second launch refused after %.1f s" % elapsed)


def run_learner(spawn, tmp_path, name, *params, timeout=40):
    """learner_node alone (no controller: it would wait connect_timeout = 60 s for one): a refusal must come first."""
    proc = spawn(["rosrun", "op3_walk", "learner_node", "__name:=%s" % name, "_connect_timeout:=60.0",
                  "_progress:=false", "_tensorboard:=false"] + list(params), name=name)
    started = time.monotonic()
    rc = proc.wait(timeout=timeout)
    return rc, proc.log(), time.monotonic() - started


def test_learner_refuses_an_occupied_folder_before_waiting_for_a_controller(spawn, tmp_path):
    out = tmp_path / "occupied"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"an earlier run's checkpoint")
    rc, log, elapsed = run_learner(spawn, tmp_path, "occupied_learner", "_out_dir:=%s" % out)
    assert rc == 1 and REFUSED in log and "resume:=auto" in log and "Traceback" not in log, log
    assert "no controller" not in log
    assert (out / "checkpoint.pt").read_bytes() == b"an earlier run's checkpoint"


def test_a_bag_of_an_earlier_recorded_session_counts_as_a_run_when_recording(spawn, tmp_path):
    """A fresh start with record:=true (wait_for_recorder) into a folder holding session.bag: the recorder would
    refuse to overwrite it, so the learner refuses too instead of waiting for a recorder that never comes."""
    out = tmp_path / "bag_only"
    out.mkdir()
    (out / "session.bag").write_bytes(b"an earlier bag")
    rc, log, _ = run_learner(spawn, tmp_path, "bag_learner", "_out_dir:=%s" % out, "_wait_for_recorder:=true")
    assert rc == 1 and REFUSED in log and "session.bag" in log, log


def test_dqn_on_a_continuous_task_is_refused_at_start(spawn, tmp_path):
    rc, log, _ = run_learner(spawn, tmp_path, "dqn_learner", "_out_dir:=%s" % (tmp_path / "dqn"), "_algo:=dqn",
                             "_task:=walk")
    assert rc == 1, log
    assert "algo dqn does not fit task walk: dqn needs a Discrete action space; the task has Box" in log and "Traceback" not in log, log
    assert "no controller" not in log


@pytest.mark.parametrize("arg, message", [("steps:=-5", "steps must be >= 1, got -5"),
                                          ("checkpoint_every:=-1", "checkpoint_every must be >= 0")])
def test_out_of_range_arguments_fail_at_start_with_a_non_zero_exit(spawn, tmp_path, small_agent_config, arg,
                                                                   message):
    out = tmp_path / "range"
    proc = spawn(train(out, small_agent_config, arg), name="range")
    rc = proc.wait(timeout=120)
    log = proc.log()
    assert rc == 1, log[-4000:]
    assert message in log and "session: FAILED" in log and "Traceback" not in log, log[-4000:]
    assert not (out / "episodes.csv").exists() and not (out / "checkpoint.pt").exists()
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()


def test_deploy_exits_0_when_done_non_zero_without_its_policy_and_never_overwrites_a_bag(spawn, tmp_path):
    out = tmp_path / "deploy"
    good = spawn(SESSION + ["deploy.launch", "episodes:=1", "record:=true", "out_dir:=%s" % out], name="deploy")
    assert good.wait(timeout=LAUNCH_TIMEOUT) == 0, good.log()[-4000:]
    bag = digests(out, ["session.bag"])

    missing = tmp_path / "no_such_policy.npz"
    bad = spawn(SESSION + ["deploy.launch", "policy:=%s" % missing, "record:=true", "out_dir:=%s" % out],
                name="deploy_missing")
    rc = bad.wait(timeout=120)
    log = bad.log()
    assert rc == 1, log[-4000:]
    assert "no_such_policy.npz" in log and "session: FAILED" in log, log[-4000:]
    assert digests(out, ["session.bag"]) == bag               # its recorder wrote beside it, never over it
    assert not bad.orphans(), "processes left behind: %s" % bad.orphans()


def test_ctrl_c_is_forwarded_and_reported(spawn, tmp_path, rospy_node):
    """SIGINT to the wrapper (as Ctrl-C in its terminal) reaches roslaunch once; the interrupted session is not a
    completed one: exit status 130, nothing left running."""
    proc = spawn(SESSION + ["deploy.launch", "episodes:=0"], name="deploy_forever")
    from op3_walk.msg import EpisodeStats
    try:
        rospy_node.wait_for_message("/walker/episode", EpisodeStats, timeout=120)
    except rospy_node.ROSException:
        raise AssertionError("no episode ended:\n" + proc.log()[-4000:])
    wait_until(lambda: proc.track(), 10, what="the launch's processes")
    assert proc.interrupt(timeout=60) == 130, proc.log()[-4000:]
    assert "interrupted by SIGINT" in proc.log()
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
