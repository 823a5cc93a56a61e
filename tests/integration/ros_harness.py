"""Integration helpers and fixtures: a real roscore on a free port, real nodes started with roslaunch / rosrun.

roslaunch starts every node in its own session (setsid), so "no orphans" is checked by collecting the whole process
tree of a launch from /proc while it runs and verifying that every one of those processes is gone afterwards.
"""
import os
import signal
import socket
import subprocess
import time
from typing import Dict, List, Optional, Set

import pytest

from op3_walk.proctree import alive, children_of   # noqa: F401  (children_of: also used through this module)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

if "ROS_PACKAGE_PATH" not in os.environ or not os.path.isdir(os.path.join(ROOT, ".ws", "devel")):
    pytest.exit("integration tests need the built workspace: run them with `make test` (or source env.sh)",
                returncode=2)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


class Proc:
    """A process under test whose whole tree is tracked, so shutdown can be checked for orphans."""

    def __init__(self, args: List[str], log_path: str, env: Dict[str, str]):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True, cwd=ROOT)
        self.tree: Set[int] = set()

    def track(self) -> Set[int]:
        """Remember the current descendants (call while it runs)."""
        self.tree |= children_of(self.popen.pid)
        return self.tree

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path) as fh:
            return fh.read()

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.popen.poll() is None:
            self.track()
            if time.monotonic() > deadline:
                raise AssertionError("%s still running after %.0f s; log:\n%s" % (self.args[:3], timeout,
                                                                                   self.log()[-4000:]))
            time.sleep(0.2)
        return self.popen.returncode

    def interrupt(self, timeout: float = 40.0) -> int:
        """SIGINT (what Ctrl-C sends) and wait for a clean exit."""
        self.track()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def orphans(self, grace: float = 10.0) -> Set[int]:
        """Tracked processes still alive after the root exited (waits up to ``grace`` s for them to go)."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            left = {pid for pid in self.tree if alive(pid)}
            if not left:
                return set()
            time.sleep(0.2)
        return left

    def kill(self) -> None:
        for pid in list(self.tree) + [self.popen.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.popen.wait()
        self._log.close()


@pytest.fixture(scope="session")
def ros_master(tmp_path_factory):
    """A private roscore on a free port; ROS_MASTER_URI points at it for this process and its children."""
    home = tmp_path_factory.mktemp("ros_home")
    port = free_port()
    uri = "http://127.0.0.1:%d" % port
    os.environ["ROS_MASTER_URI"] = uri
    os.environ["ROS_HOME"] = str(home)
    os.environ["ROS_IP"] = "127.0.0.1"
    core = Proc(["roscore", "-p", str(port)], str(home / "roscore.log"), dict(os.environ))
    import rosgraph
    try:
        wait_until(lambda: rosgraph.is_master_online(uri), 30, what="roscore on port %d" % port)
    except AssertionError:
        core.kill()
        raise AssertionError("roscore did not start:\n" + core.log())
    yield uri
    core.interrupt(timeout=30)
    core.kill()


@pytest.fixture(scope="session")
def rospy_node(ros_master):
    """This test process as a ROS node (rospy allows one init per process)."""
    import rospy
    rospy.init_node("op3_walk_integration_test", anonymous=True, disable_signals=True)
    yield rospy
    rospy.signal_shutdown("tests done")


@pytest.fixture
def spawn(ros_master, tmp_path):
    """Start processes against the test master; everything still running at the end is killed."""
    procs: List[Proc] = []

    def _spawn(args: List[str], name: Optional[str] = None) -> Proc:
        proc = Proc(args, str(tmp_path / ("%s.log" % (name or os.path.basename(args[0])))), dict(os.environ))
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        if proc.popen.poll() is None:
            proc.interrupt(timeout=30)
        proc.kill()


@pytest.fixture
def small_agent_config(tmp_path):
    """A TD3 config small enough that learning starts within a few hundred steps of a test run."""
    path = tmp_path / "td3_small.yaml"
    path.write_text("hidden_sizes: [64, 64]\nbatch_size: 64\nbuffer_size: 20000\nlearning_starts: 150\n")
    return str(path)


@pytest.fixture
def torch_blocked(tmp_path, monkeypatch):
    """Processes spawned while this is active cannot import torch: the import raises."""
    folder = tmp_path / "no_torch"
    (folder / "torch").mkdir(parents=True)
    (folder / "torch" / "__init__.py").write_text(
        'raise ImportError("torch is blocked in this test: the robot side must not import it")\n')
    monkeypatch.setenv("PYTHONPATH", "%s:%s" % (folder, os.environ.get("PYTHONPATH", "")))
    return folder
