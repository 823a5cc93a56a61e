"""How a session ends: a learner that spends its budget ends train.launch quietly (exit 0, no "REQUIRED process has
died" banner) and `make demo`'s script exits 0; a learner that fails still takes the launch down, and the script
turns that into a non-zero exit although roslaunch itself exits 0."""
import os
import subprocess
import sys

from ros_harness import ROOT

DEMO = os.path.join(ROOT, "tools", "demo.sh")
BANNER = ("REQUIRED process", "has died")


def demo(spawn, out, *launch_args, name="demo"):
    return spawn(["bash", DEMO, "--steps", "400", "--out", str(out), "progress:=false", "tensorboard:=false"]
                 + list(launch_args), name=name)


def test_demo_ends_its_session_quietly_and_exits_0(spawn, tmp_path, small_agent_config):
    out = tmp_path / "demo"
    proc = demo(spawn, out, "agent_config:=%s" % small_agent_config)
    rc = proc.wait(timeout=300)
    log = proc.log()
    assert rc == 0, log[-4000:]
    assert not any(b in log for b in BANNER), log[-4000:]
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
    assert (out / "session_status").read_text().strip() == "completed"
    for name in ("checkpoint.pt", "episodes.csv", "learning_curve.png", "session.bag"):
        assert "demo: wrote %s" % (out / name) in log, log[-4000:]
    assert "asking roslaunch" in log and "Traceback" not in log


def test_a_failing_learner_ends_the_launch_and_demo_exits_non_zero(spawn, tmp_path):
    """The learner fails after the controller started (its agent config does not exist): the launch must end (the
    learner is required) and the script must say so with a non-zero status, although roslaunch exits 0."""
    out = tmp_path / "demo_fail"
    proc = demo(spawn, out, "agent_config:=%s" % (tmp_path / "no_such_agent.yaml"), name="demo_fail")
    rc = proc.wait(timeout=180)
    log = proc.log()
    assert rc == 1, log[-4000:]
    assert "REQUIRED process [learner" in log and "exit code 1" in log, log[-4000:]   # the crash ended the launch
    assert "demo: FAILED" in log and "none written" in log, log[-4000:]
    assert not (out / "session_status").exists()
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()


def test_only_a_local_roslaunch_parent_is_asked_to_end_the_launch(tmp_path):
    """end_session signals its parent only when that is a roslaunch in parent mode: never a shell (rosrun) nor a
    remote roslaunch child (stopping it would not end the launch)."""
    from op3_walk.ros.session_end import launching_roslaunch
    fake = tmp_path / "roslaunch"
    fake.write_text("import time\ntime.sleep(60)\n")
    procs = {args: subprocess.Popen([sys.executable, str(fake)] + list(args))
             for args in [("op3_walk", "train.launch"), ("-c", "machine_1", "-u", "http://h:1/"),
                          ("--child=machine_1",)]}
    shell = subprocess.Popen(["sleep", "60"])
    try:
        assert launching_roslaunch(procs[("op3_walk", "train.launch")].pid) == procs[("op3_walk", "train.launch")].pid
        assert launching_roslaunch(procs[("-c", "machine_1", "-u", "http://h:1/")].pid) is None
        assert launching_roslaunch(procs[("--child=machine_1",)].pid) is None
        assert launching_roslaunch(shell.pid) is None
        assert launching_roslaunch(os.getppid()) is None      # whatever started pytest is no roslaunch
        assert launching_roslaunch(1) is None
    finally:
        for p in list(procs.values()) + [shell]:
            p.kill()
            p.wait()
