"""cmd_vel (geometry_msgs/Twist) steers a deployed policy: deploy.launch in PyBullet, a `rostopic pub`-like publisher.

No command-following policy is trained yet, so what is tested is what cmd_vel does to the policy's input: the command
block of the observation the controller publishes on walker/state (what policy_node feeds its policy) takes the
Twist's linear.x, linear.y and angular.z, clamped to the task's ranges for the robot, and falls back to zero when the
publisher stops.  A task without a command (the shipped policies') ignores cmd_vel with one warning.
"""
import threading
import time

import numpy as np
import pytest

from ros_harness import wait_until

STARTUP_TIMEOUT = 120.0   # s for deploy.launch to bring up both nodes and publish states on a loaded machine
TIMEOUT_S = 0.5           # the controller's cmd_vel_timeout_s (config/ros/controller.yaml)


@pytest.fixture(scope="module")
def command_policy(tmp_path_factory):
    """An untrained, tiny exported policy for PLEN on velocity_tracking (a task with a command in its observation),
    made the way a user makes one: agent -> checkpoint -> export_policy."""
    from op3_walk.agents import AGENTS
    from op3_walk.policy.export import export_policy
    from op3_walk.policy.runtime import expected_interface
    from op3_walk.training.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("cmd_policies")
    iface = expected_interface("plen", "velocity_tracking")
    assert "command" in iface.observation_names
    agent_cls, config_cls = AGENTS["td3"]
    agent = agent_cls(iface.obs_dim, iface.action_size, config_cls(hidden_sizes=[16, 16], batch_size=32,
                                                                  buffer_size=64), seed=5)
    checkpoint = save_checkpoint(str(folder / "velocity.pt"), {"agent": agent.state_dict(), "trainer": {}},
                                 {"robot": "plen", "task": "velocity_tracking", "algo": "td3",
                                  "obs_dim": agent.obs_dim, "act_dim": agent.act_dim, "env_steps": 0, "episodes": 0})
    return export_policy(checkpoint, str(folder / "velocity.npz"))[0].path


class LatestState:
    """The newest walker/state and the blocks of its observation."""

    def __init__(self, rospy):
        from op3_walk.msg import WalkerState
        self._lock = threading.Lock()
        self.msg = None
        self.count = 0
        self.sub = rospy.Subscriber("/walker/state", WalkerState, self._on, queue_size=1)

    def _on(self, msg):
        with self._lock:
            self.msg = msg
            self.count += 1

    def blocks(self):
        with self._lock:
            msg = self.msg
        if msg is None:
            return None
        out, start = {}, 0
        for name, size in zip(msg.observation_names, msg.observation_sizes):
            out[name] = np.asarray(msg.observation[start:start + size], dtype=float)
            start += size
        return out

    def command(self):
        blocks = self.blocks()
        return None if blocks is None else blocks.get("command")


class TwistPublisher:
    """`rostopic pub -r RATE /cmd_vel geometry_msgs/Twist ...` in a thread; ``set(None)`` stops publishing."""

    def __init__(self, rospy, rate_hz=20.0):
        from geometry_msgs.msg import Twist
        self._twist = Twist
        self.pub = rospy.Publisher("/cmd_vel", Twist, queue_size=10)
        self._value = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(1.0 / rate_hz,), daemon=True)
        self._thread.start()

    def set(self, value):
        self._value = value

    def _run(self, period):
        while not self._stop.is_set():
            value = self._value
            if value is not None:
                msg = self._twist()
                msg.linear.x, msg.linear.y, msg.angular.z = value
                self.pub.publish(msg)
            time.sleep(period)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.pub.unregister()


def _near(actual, expected, atol=1e-5):
    return actual is not None and np.allclose(actual, expected, atol=atol)


def test_cmd_vel_reaches_the_policys_observation_clamped_and_times_out_to_zero(spawn, rospy_node, command_policy):
    from op3_walk.envs import load_task
    from op3_walk.envs.command import command_bounds
    low, high = command_bounds(load_task("velocity_tracking").command.for_robot("plen"))
    inside = tuple(0.5 * (low + high) + 0.25 * (high - low))     # within PLEN's ranges, not zero
    state = LatestState(rospy_node)
    twist = TwistPublisher(rospy_node)
    proc = spawn(["roslaunch", "op3_walk", "deploy.launch", "robot:=plen", "task:=velocity_tracking",
                  "policy:=%s" % command_policy, "episodes:=0", "seed:=3"], name="deploy_cmd_vel")
    try:
        wait_until(lambda: state.command() is not None, STARTUP_TIMEOUT, what="walker/state with a command block")
        drawn = state.command()             # the task's own command before any cmd_vel: within the ranges
        assert np.all(drawn >= low - 1e-6) and np.all(drawn <= high + 1e-6), drawn

        twist.set(inside)
        wait_until(lambda: _near(state.command(), inside), 30, what="the cmd_vel command in the observation")

        twist.set((5.0, -5.0, 9.0))         # far outside: clamped to what the policy was trained on
        wait_until(lambda: _near(state.command(), (high[0], low[1], high[2])), 30, what="the clamped command")

        twist.set(None)                     # the publisher stops: back to zero (stand still), not the drawn one
        stopped = time.monotonic()
        wait_until(lambda: _near(state.command(), (0.0, 0.0, 0.0)), 30, what="the command timing out to zero")
        assert time.monotonic() - stopped >= TIMEOUT_S - 0.05     # not before the timeout
        count = state.count
        wait_until(lambda: state.count > count + 50, 30, what="more states")
        assert _near(state.command(), (0.0, 0.0, 0.0))          # and it stays zero across steps and episodes

        twist.set(inside)                   # a new cmd_vel steers again
        wait_until(lambda: _near(state.command(), inside), 30, what="the command after a new cmd_vel")
        assert proc.popen.poll() is None, proc.log()[-4000:]
        log = proc.log()      # before Ctrl-C (whose shutdown is not what this test is about)
    finally:
        twist.close()
        state.sub.unregister()
    assert proc.interrupt(timeout=40) == 0, proc.log()[-4000:]
    assert "takes a velocity command" in log and "cmd_vel received" in log and "clamped to" in log, log[-4000:]
    assert "Traceback" not in log, log[-4000:]


def test_a_task_without_a_command_ignores_cmd_vel_with_one_warning(spawn, rospy_node):
    """The shipped PLEN policy on its own task (no command in its observation): cmd_vel changes nothing."""
    state = LatestState(rospy_node)
    twist = TwistPublisher(rospy_node)
    proc = spawn(["roslaunch", "op3_walk", "deploy.launch", "robot:=plen", "episodes:=0"], name="deploy_no_cmd")
    try:
        wait_until(lambda: state.blocks() is not None, STARTUP_TIMEOUT, what="walker/state")
        assert "command" not in state.blocks()
        twist.set((0.1, 0.0, 0.3))
        wait_until(lambda: "cmd_vel ignored" in proc.log(), 30, what="the warning")
        count = state.count
        wait_until(lambda: state.count > count + 100, 30, what="states while cmd_vel is published")
        assert "command" not in state.blocks()
        assert proc.popen.poll() is None, proc.log()[-4000:]
        log = proc.log()      # before Ctrl-C (whose shutdown is not what this test is about)
    finally:
        twist.close()
        state.sub.unregister()
    assert proc.interrupt(timeout=40) == 0, proc.log()[-4000:]
    assert log.count("cmd_vel ignored") == 1, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
