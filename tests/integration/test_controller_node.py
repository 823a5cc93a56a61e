"""controller_node alone, driven from this test process: lockstep, readable state, bad actions, no torch."""
import math

import numpy as np
import pytest

from ros_harness import wait_until


@pytest.fixture
def controller(spawn, rospy_node):
    proc = spawn(["rosrun", "op3_walk", "controller_node"], name="controller")
    try:
        rospy_node.wait_for_service("/walker/reset", timeout=60)
    except rospy_node.ROSException:
        raise AssertionError("controller_node did not start:\n" + proc.log()[-4000:])
    proc.track()
    yield proc
    assert proc.interrupt(timeout=30) == 0
    assert not proc.orphans()


class Client:
    """A minimal lockstep client: remembers every WalkerState it receives."""

    def __init__(self, rospy):
        from op3_walk.msg import WalkerAction, WalkerState
        from op3_walk.srv import ResetEpisode
        from sensor_msgs.msg import Imu, JointState
        self.rospy = rospy
        self.states, self.joints, self.imus = [], [], []
        self.subs = [rospy.Subscriber("/walker/state", WalkerState, self.states.append, tcp_nodelay=True),
                     rospy.Subscriber("/joint_states", JointState, self.joints.append),
                     rospy.Subscriber("/imu/data", Imu, self.imus.append)]
        self.pub = rospy.Publisher("/walker/action", WalkerAction, queue_size=10, tcp_nodelay=True)
        self.reset = rospy.ServiceProxy("/walker/reset", ResetEpisode, persistent=True)
        self.Action = WalkerAction
        wait_until(lambda: self.pub.get_num_connections() > 0 and all(s.get_num_connections() for s in self.subs),
                   30, what="topic connections")

    def send(self, episode, step, action, discrete=-1):
        msg = self.Action(episode=episode, step=step, action=list(action), discrete_action=discrete)
        self.pub.publish(msg)

    def close(self):
        for sub in self.subs:
            sub.unregister()
        self.pub.unregister()
        self.reset.close()


def test_lockstep_exchange_readable_state_and_bad_actions(controller, rospy_node):
    client = Client(rospy_node)
    try:
        first = client.reset(seed=3).state
        assert first.step == 0 and first.episode >= 1
        n_obs = sum(first.observation_sizes)
        assert len(first.observation) == n_obs and len(first.observation_names) == len(first.observation_sizes)
        assert len(first.joint_names) == 18 and len(first.joint_positions) == 18
        assert first.foot_names and len(first.foot_contacts) == len(first.foot_names)
        assert 0.1 < first.torso_pose.position.z < 0.25
        assert not first.terminated and not first.truncated

        zero = np.zeros(18)
        client.send(first.episode, 0, zero)
        wait_until(lambda: any(s.step == 1 for s in client.states), 10, what="state of step 1")
        step1 = [s for s in client.states if s.step == 1][-1]
        assert dict(zip(step1.reward_term_names, step1.reward_terms)) and math.isfinite(step1.reward)
        assert abs(sum(step1.reward_terms) - step1.reward) < 1e-9

        # A stale step, a NaN action, a wrong-size action and a discrete action: none advances the episode.
        client.send(first.episode, 0 + 7, zero)
        client.send(first.episode, 1, [float("nan")] * 18)
        client.send(first.episode, 1, np.zeros(5))
        client.send(first.episode, 1, [], discrete=2)
        rospy_node.sleep(1.0)
        assert not any(s.step == 2 for s in client.states)
        # ... and the controller still answers the right action.
        client.send(first.episode, 1, zero)
        wait_until(lambda: any(s.step == 2 for s in client.states), 10, what="state of step 2")

        # A repeated action re-sends the current state instead of stepping twice.
        before = sum(1 for s in client.states if s.step == 2)
        client.send(first.episode, 1, zero)
        wait_until(lambda: sum(1 for s in client.states if s.step == 2) > before, 10, what="re-sent state")
        assert not any(s.step == 3 for s in client.states)

        # Same seed, same actions -> the same states (deterministic lockstep).
        again = client.reset(seed=3).state
        assert list(again.observation) == list(first.observation)

        assert client.joints and list(client.joints[-1].name) == list(first.joint_names)
        imu = client.imus[-1]
        acc = imu.linear_acceleration
        assert imu.header.frame_id and 5.0 < math.sqrt(acc.x ** 2 + acc.y ** 2 + acc.z ** 2) < 15.0  # ~g
    finally:
        client.close()


def test_controller_process_never_loads_torch(controller):
    with open("/proc/%d/maps" % controller.popen.pid) as fh:
        maps = fh.read()
    # rosrun execs the script; the mapped libraries are those of the node's python.
    assert "libtorch" not in maps and "pybullet" in maps
