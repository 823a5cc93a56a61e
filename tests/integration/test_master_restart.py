"""A roscore restart under a running session (issue 14, defect 11).

rospy never registers a node again with a restarted master: the session went on training, invisible on the new
master (no nodes, services, /diagnostics), and nothing said so.  Now the nodes notice (master_watch.py): the learner
stops, saves its checkpoint, writes session_status ``master_restarted`` and ends the launch with a FATAL line naming
the two run_ids and ``resume:=auto``; relaunched so, the session continues from that checkpoint on the new master.

These tests run their own roscore (they kill it), not the session's.
"""
import csv
import os
import xmlrpc.client

import pytest

import rosgraph

from ros_harness import Proc, free_port, wait_until

CHECKPOINT_EVERY = 200


class _Master:
    """A private roscore on a fixed port that can be killed and started again."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.uri = "http://127.0.0.1:%d" % self.port
        self.home = tmp_path / "ros_home"
        self.home.mkdir()
        self.env = dict(os.environ, ROS_MASTER_URI=self.uri, ROS_HOME=str(self.home), ROS_IP="127.0.0.1")
        self.tmp = tmp_path
        self.core = None
        self.starts = 0

    def start(self) -> str:
        self.starts += 1
        self.core = Proc(["roscore", "-p", str(self.port)], str(self.tmp / ("roscore_%d.log" % self.starts)),
                         self.env)
        return str(wait_until(self._run_id, 60, what="roscore on port %d with its /run_id" % self.port))

    def _run_id(self):
        try:
            return self.api().getParam("/run_id")   # set by roscore just after the master comes up
        except (rosgraph.MasterError, OSError, xmlrpc.client.Error):
            return None

    def stop(self) -> None:
        if self.core is not None:
            self.core.interrupt(timeout=30)
            self.core.kill()
            self.core = None
        wait_until(lambda: not rosgraph.is_master_online(self.uri), 30, what="roscore gone")

    def api(self) -> rosgraph.Master:
        return rosgraph.Master("/master_restart_test", master_uri=self.uri)

    def knows(self, node: str) -> bool:
        try:
            self.api().lookupNode(node)
            return True
        except (rosgraph.MasterError, OSError, xmlrpc.client.Error):
            return False


@pytest.fixture
def master(tmp_path):
    m = _Master(tmp_path)
    procs = []
    m.procs = procs
    yield m
    for proc in procs:
        if proc.popen.poll() is None:
            proc.interrupt(timeout=30)
        proc.kill()
    if m.core is not None:
        m.core.interrupt(timeout=30)
        m.core.kill()


def train(master, out, agent_config, name, **extra):
    args = ["roslaunch", "op3_walk", "train.launch", "headless:=true", "progress:=false", "tensorboard:=false",
            "out_dir:=%s" % out, "agent_config:=%s" % agent_config, "checkpoint_every:=%d" % CHECKPOINT_EVERY]
    args += ["%s:=%s" % kv for kv in extra.items()]
    proc = Proc(args, str(master.tmp / ("%s.log" % name)), master.env)
    master.procs.append(proc)
    return proc


def csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_roscore_restart_ends_training_with_a_checkpoint_and_resume_auto_continues_on_the_new_master(
        master, tmp_path, small_agent_config):
    from op3_walk.training.checkpoint import read_meta
    out = tmp_path / "run"
    checkpoint = out / "checkpoint.pt"
    first_id = master.start()
    proc = train(master, out, small_agent_config, "train_1", steps=10 ** 6)

    def steps_saved():
        try:
            return read_meta(str(checkpoint))["env_steps"]
        except Exception:   # not written yet
            return 0
    wait_until(lambda: steps_saved() >= 2 * CHECKPOINT_EVERY or proc.popen.poll() is not None, 300,
               interval=0.5, what="two periodic checkpoints")
    assert proc.popen.poll() is None, proc.log()[-4000:]
    assert master.knows("/learner") and master.knows("/controller")
    proc.track()
    logged = max(int(r["total_env_steps"]) for r in csv_rows(out / "episodes.csv"))

    master.stop()                                 # roscore killed mid-training ...
    second_id = master.start()                    # ... and started again on the same port
    assert second_id != first_id
    proc.wait(timeout=120)                        # the session ends by itself
    log = proc.log()
    assert "the ROS master restarted (run_id %s -> %s)" % (first_id, second_id) in log, log[-4000:]
    assert "resume:=auto" in log and str(checkpoint) in log, log[-4000:]
    assert "REQUIRED process [learner" in log and "exit code 1" in log, log[-4000:]   # a failure, not a success
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
    assert (out / "session_status").read_text().strip() == "master_restarted"

    # the checkpoint holds every step taken: nothing logged is lost (not even the interval since the last periodic
    # checkpoint: it was saved when the restart was noticed)
    saved = read_meta(str(checkpoint))
    rows = csv_rows(out / "episodes.csv")
    assert saved["env_steps"] >= max(int(r["total_env_steps"]) for r in rows) >= logged
    assert saved["episodes"] == len(rows)

    # relaunched with resume:=auto against the new master: continues from that checkpoint, visible there
    more = 300
    proc2 = train(master, out, small_agent_config, "train_2", steps=saved["env_steps"] + more, resume="auto")
    wait_until(lambda: master.knows("/learner") or proc2.popen.poll() is not None, 120, what="the learner")
    assert master.knows("/learner"), proc2.log()[-4000:]
    assert proc2.wait(timeout=300) == 0, proc2.log()[-4000:]
    log2 = proc2.log()
    assert "resumed from %s at env step %d, episode %d" % (checkpoint, saved["env_steps"], saved["episodes"]) \
        in log2, log2[-4000:]
    assert "CSV rows logged after that checkpoint" not in log2   # no episode logged after it had to be dropped
    assert read_meta(str(checkpoint))["env_steps"] == saved["env_steps"] + more
    assert (out / "session_status").read_text().strip() == "completed"
    episodes = [int(r["episode"]) for r in csv_rows(out / "episodes.csv")]
    assert episodes == list(range(1, len(episodes) + 1)) and len(episodes) > saved["episodes"]


def test_a_roscore_restart_ends_a_deploy_session_with_a_clear_failure(master):
    """deploy.launch (the shipped PLEN policy, endless episodes) under a roscore restart: the policy node, the
    session node, ends the launch with status 1 and says why, instead of driving the robot unseen."""
    first_id = master.start()
    proc = Proc(["roslaunch", "op3_walk", "deploy.launch", "robot:=plen", "backend:=pybullet", "episodes:=0"],
                str(master.tmp / "deploy.log"), master.env)
    master.procs.append(proc)
    wait_until(lambda: "policy: episode 1:" in proc.log() or proc.popen.poll() is not None, 180,
               what="a first episode")
    assert proc.popen.poll() is None and master.knows("/policy"), proc.log()[-4000:]
    proc.track()
    master.stop()
    second_id = master.start()
    proc.wait(timeout=60)
    log = proc.log()
    assert "/policy: the ROS master restarted (run_id %s -> %s)" % (first_id, second_id) in log, log[-4000:]
    assert "REQUIRED process [policy" in log and "exit code 1" in log, log[-4000:]
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()


class _FakeMaster:
    """The two master calls the watch makes, with what a real master answers: the /run_id parameter, and the
    provider of a service (rosgraph raises MasterError for no provider; OSError while the master is down)."""

    def __init__(self, run_id):
        self.run_id, self.services, self.down = run_id, set(), False

    def _check(self):
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")

    def getParam(self, key):
        self._check()
        if key != "/run_id" or self.run_id is None:
            raise rosgraph.MasterError("Parameter [%s] is not set" % key)
        return self.run_id

    def lookupService(self, service):
        self._check()
        if service not in self.services:
            raise rosgraph.MasterError("no provider")
        return "rosrpc://127.0.0.1:1"


def test_the_watch_tells_a_restart_from_an_outage_of_the_same_master(tmp_path):
    """A master that is unreachable for a while (a network cut to its host) and answers again with the same run_id
    is no restart; a new run_id is; without a run_id, a master that no longer knows this node's services is."""
    from op3_walk.ros.master_watch import MasterRestarted, MasterWatch
    import rospy
    own = rospy.names.ns_join(rospy.get_name(), "get_loggers")

    fake = _FakeMaster("A")
    watch = MasterWatch(master=fake)   # not started: polled by hand
    assert watch.poll() is None        # not registered yet (rospy registers in the background): no verdict
    fake.services.add(own)
    assert watch.poll() is None
    fake.down = True
    assert watch.poll() is None and watch.poll() is None   # an outage: going on
    fake.down = False
    assert watch.poll() is None                            # the same master is back
    watch.finish(str(tmp_path / "same"))                   # nothing to report
    assert not (tmp_path / "same").exists()
    fake.run_id, fake.services = "B", set()                # roscore restarted
    assert watch.poll() == "the ROS master restarted (run_id A -> B)"
    with pytest.raises(MasterRestarted, match=r"run_id A -> B.*relaunch with x"):
        watch.finish(str(tmp_path / "run"), lambda: "relaunch with x")
    assert (tmp_path / "run" / "session_status").read_text().strip() == "master_restarted"

    bare = _FakeMaster(None)           # a master started without roscore: no /run_id to compare
    bare.services.add(own)
    watch = MasterWatch(master=bare)
    assert watch.poll() is None
    bare.services = {"/other/get_loggers"}     # a new master: other nodes, not this one
    assert "no longer knows this node" in (watch.poll() or "")

    # the restart is told once, to each on_restart callable, however often polled
    calls = []
    fake = _FakeMaster("A")
    fake.services.add(own)
    watch = MasterWatch(master=fake, on_restart=[calls.append])
    assert watch.poll() is None
    fake.run_id = "C"
    watch.poll()
    watch.poll()
    assert calls == ["the ROS master restarted (run_id A -> C)"]
