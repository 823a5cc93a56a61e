"""Op3FrameworkBackend over real ROS against op3_standin (a PyBullet stand-in for op3_manager, NOT the robot).

The stand-in is started once for this module with ``roslaunch op3_walk op3_standin.launch`` and serves the ROBOTIS
framework topics at 125 Hz in wall time; the backend runs in this test process (a rospy node).  Behaviour only: no
assertions on timing.  The relax test runs last (the robot falls when its torque goes off).
"""
import dataclasses
import os
import threading
import time

import numpy as np
import pytest

from ros_harness import Proc, wait_until

PRESENT = "/robotis/present_joint_states"
DIRECT = "/robotis/direct_control/set_joint_states"


class Watch:
    """Records what the stand-in and the backend say on the framework topics, independently of the backend."""

    def __init__(self, rospy):
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from op3_walk.ros.op3_bridge import robotis_message_class
        self.lock = threading.Lock()
        self.present = self.goal = None
        self.modules, self.modes, self.sync_writes = [], [], []
        self.direct = 0
        self.subs = [
            rospy.Subscriber(PRESENT, JointState, self._set("present"), tcp_nodelay=True),
            rospy.Subscriber("/robotis/goal_joint_states", JointState, self._set("goal"), tcp_nodelay=True),
            rospy.Subscriber("/robotis/present_joint_ctrl_modules",
                             robotis_message_class("robotis_controller_msgs/JointCtrlModule"), self._add("modules")),
            rospy.Subscriber("/robotis/set_control_mode", String, self._add("modes")),
            rospy.Subscriber("/robotis/sync_write_item",
                             robotis_message_class("robotis_controller_msgs/SyncWriteItem"), self._add("sync_writes")),
            rospy.Subscriber(DIRECT, JointState, self._on_direct)]
        wait_until(lambda: all(s.get_num_connections() for s in self.subs[:3]), 30, what="watch connections")

    def _set(self, name):
        def callback(msg):
            with self.lock:
                setattr(self, name, msg)
        return callback

    def _add(self, name):
        def callback(msg):
            with self.lock:
                getattr(self, name).append(msg)
        return callback

    def _on_direct(self, _msg):
        with self.lock:
            self.direct += 1

    def position(self, which, joint):
        with self.lock:
            msg = getattr(self, which)
        return msg.position[list(msg.name).index(joint)]

    def close(self):
        for sub in self.subs:
            sub.unregister()


@pytest.fixture(scope="module")
def standin(ros_master, rospy_node, tmp_path_factory):
    log = tmp_path_factory.mktemp("op3_standin") / "op3_standin.log"
    proc = Proc(["roslaunch", "op3_walk", "op3_standin.launch"], str(log), dict(os.environ))
    from sensor_msgs.msg import JointState
    seen = []
    # Kept subscribed for the whole module: unregistering the topic's last subscriber makes rospy tear the topic
    # down, and a Subscriber created for it meanwhile (Watch, below) can end up never connecting.
    sub = rospy_node.Subscriber(PRESENT, JointState, lambda msg: seen.append(1) if not seen else None)
    try:
        wait_until(lambda: seen, 60, what="the stand-in's first %s" % PRESENT)
    except AssertionError:
        sub.unregister()
        proc.kill()
        raise AssertionError("op3_standin did not start:\n" + proc.log()[-4000:])
    proc.track()
    yield proc
    sub.unregister()
    code = proc.interrupt(timeout=30)
    orphans = proc.orphans()
    log_text = proc.log()
    proc.kill()
    assert code == 0, log_text[-4000:]
    assert not orphans
    assert "NOT the robot" in log_text


@pytest.fixture(scope="module")
def robot():
    from op3_walk.robots.description import load_robot
    return load_robot("op3")


@pytest.fixture(scope="module")
def watch(standin, rospy_node):
    w = Watch(rospy_node)
    yield w
    w.close()


@pytest.fixture(scope="module")
def backend(standin, watch, robot):
    from op3_walk.ros.op3_bridge import Op3FrameworkBackend, Op3FrameworkParams
    b = Op3FrameworkBackend(robot, Op3FrameworkParams(connect_timeout_s=30.0))
    yield b
    b.close()
    b.close()  # idempotent


def test_params_are_strict_and_documented():
    from op3_walk.config import ConfigError, describe, from_dict
    from op3_walk.ros.op3_bridge import Op3FrameworkParams
    params = from_dict(Op3FrameworkParams, {"reset_duration_s": 1.0})
    assert params.set_joint_states_topic == "/robotis/set_joint_states" and params.ctrl_module == "none"
    with pytest.raises(ConfigError, match="bogus"):
        from_dict(Op3FrameworkParams, {"bogus": 1})
    with pytest.raises(ConfigError, match="direct_control"):
        from_dict(Op3FrameworkParams, {"set_joint_states_topic": DIRECT})
    with pytest.raises(ConfigError, match="control_mode"):
        from_dict(Op3FrameworkParams, {"control_mode": "direct_control_mode"})
    assert all(f.metadata.get("doc") for f in dataclasses.fields(Op3FrameworkParams))
    assert "present_joint_states_topic" in describe(Op3FrameworkParams)


def test_missing_framework_is_a_clear_error_within_the_timeout(rospy_node, robot):
    from op3_walk.ros.op3_bridge import Op3FrameworkBackend, Op3FrameworkError, Op3FrameworkParams
    params = Op3FrameworkParams(present_joint_states_topic="/no_framework_here/present_joint_states",
                                connect_timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(Op3FrameworkError, match="/no_framework_here/present_joint_states") as err:
        Op3FrameworkBackend(robot, params)
    assert time.monotonic() - start < 15.0
    assert isinstance(err.value, RuntimeError)  # run_node reports it in one line


def test_set_joint_states_is_ignored_while_a_module_owns_the_joints(standin, watch, rospy_node):
    """The stand-in applies goals only where the framework does: not while base_module owns the joints."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    module_pub = rospy_node.Publisher("/robotis/enable_ctrl_module", String, queue_size=1)
    goal_pub = rospy_node.Publisher("/robotis/set_joint_states", JointState, queue_size=1)
    try:
        wait_until(lambda: module_pub.get_num_connections() and goal_pub.get_num_connections(), 30,
                   what="connections to the stand-in")
        seen = len(watch.modules)
        module_pub.publish(String("base_module"))
        wait_until(lambda: len(watch.modules) > seen, 10, what="module confirmation")
        assert set(watch.modules[-1].module_name) == {"base_module"}
        held_goal, held = watch.position("goal", "head_pan"), watch.position("present", "head_pan")
        for _ in range(15):
            goal_pub.publish(JointState(name=["head_pan"], position=[held_goal + 0.5]))
            time.sleep(0.02)
        time.sleep(0.2)
        assert watch.position("goal", "head_pan") == pytest.approx(held_goal, abs=1e-9)
        assert abs(watch.position("present", "head_pan") - held) < 0.02
    finally:
        module_pub.unregister()
        goal_pub.unregister()


def test_the_backend_selects_motion_module_mode_and_module_none(backend, watch, robot):
    assert "MotionModuleMode" in [m.data for m in watch.modes]
    last = watch.modules[-1]
    assert sorted(last.joint_name) == sorted(robot.joint_names)
    assert set(last.module_name) == {"none"}


def test_reset_ramps_to_the_pose_and_reads_rep103(backend, robot, watch):
    state = backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    assert state.time == 0.0
    assert np.allclose(state.joint_positions, robot.stance, atol=0.05)
    # goal_joint_states echoes exactly what was sent (the backend checks it too)
    assert watch.position("goal", "l_knee") == pytest.approx(robot.stance[robot.joint_index("l_knee")], abs=1e-9)
    assert backend.stats.goal_echo_error < 1e-6
    # REP 103, body frame: an upright robot feels gravity's reaction along +z, tilt ~ 0
    assert state.tilt() < 0.05
    assert state.linear_acceleration[2] == pytest.approx(9.81, abs=1.0)
    assert np.all(np.abs(state.linear_acceleration[:2]) < 1.0)
    assert np.allclose(state.gravity_body(), (0.0, 0.0, -1.0), atol=0.05)
    assert np.all(np.abs(state.base_angular_velocity) < 0.5)
    # base: x, y unknown (0), z from the legs; both feet down; nothing privileged
    assert np.allclose(state.base_position[:2], 0.0) and np.allclose(state.base_linear_velocity, 0.0)
    assert abs(state.base_position[2] - robot.spawn_height) < 0.03
    assert state.foot_contacts.tolist() == [True, True]
    assert state.foot_positions.shape == (2, 3) and state.foot_orientations.shape == (2, 4)
    assert state.com_position is None and state.foot_forces is None and state.center_of_pressure is None


def test_targets_reach_the_joints(backend, robot, watch):
    backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    offsets = {"head_pan": 0.4, "head_tilt": 0.2, "l_sho_pitch": -0.3, "r_sho_pitch": 0.3, "l_el": 0.3}
    targets = robot.stance.copy()
    for name, offset in offsets.items():
        targets[robot.joint_index(name)] += offset
    backend.apply(targets)
    previous = 0.0
    for _ in range(40):  # 0.8 s
        state = backend.step()
        assert state.time > previous
        previous = state.time
    for name in offsets:
        i = robot.joint_index(name)
        assert abs(state.joint_positions[i] - targets[i]) < 0.05, name
        assert watch.position("goal", name) == pytest.approx(targets[i], abs=1e-9)
    assert state.foot_contacts.all() and state.tilt() < 0.1
    assert np.all(np.isfinite(state.joint_velocities)) and np.all(np.isfinite(state.joint_efforts))
    values = backend.stats.values()
    assert backend.stats.steps >= 40 and "reading lag mean [ms]" in values and "late messages" in values
    too_far = targets.copy()
    too_far[robot.joint_index("head_pan")] = 5.0
    backend.apply(too_far)
    assert backend.joint_targets[robot.joint_index("head_pan")] == robot.upper[robot.joint_index("head_pan")]
    with pytest.raises(ValueError):
        backend.apply(np.full(robot.n_joints, np.nan))
    with pytest.raises(ValueError):
        backend.apply(np.zeros(3))
    for _ in range(30):  # the joints move towards the clamped target
        state = backend.step()
    assert state.joint_positions[robot.joint_index("head_pan")] > targets[robot.joint_index("head_pan")] + 0.2


def test_commands_never_go_to_the_direct_control_module(backend, watch, rospy_node):
    import rosgraph
    from op3_walk.ros.op3_bridge import Op3FrameworkParams
    backend.step()
    assert watch.direct == 0
    publishers, _, _ = rosgraph.Master(rospy_node.get_name()).getSystemState()
    direct = [nodes for topic, nodes in publishers if topic == DIRECT]
    assert not direct or rospy_node.get_name() not in direct[0]
    assert Op3FrameworkParams().set_joint_states_topic != DIRECT


def test_walk_env_runs_through_the_backend(backend):
    from op3_walk.envs.walk_env import WalkEnv
    env = WalkEnv(robot="op3", task="walk", backend=backend)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["state"].time == 0.0
    for _ in range(10):
        obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert np.all(np.isfinite(obs)) and np.isfinite(reward)
        assert not terminated and not truncated
    env.close()
    backend.step()  # the env did not own the backend: it is still open


def test_a_stalled_framework_is_a_clear_error_within_the_timeout(standin, robot, rospy_node):
    """present_joint_states from a fake that sends one message and goes quiet: the step fails, naming it."""
    from sensor_msgs.msg import JointState
    from op3_walk.ros.op3_bridge import Op3FrameworkBackend, Op3FrameworkError, Op3FrameworkParams
    topic = "/stalled_framework/present_joint_states"
    fake = rospy_node.Publisher(topic, JointState, queue_size=1, latch=True)
    fake.publish(JointState(name=list(robot.joint_names), position=list(robot.stance)))
    stalled = Op3FrameworkBackend(robot, Op3FrameworkParams(present_joint_states_topic=topic,
                                                            present_ctrl_modules_topic="", step_timeout_s=0.5,
                                                            connect_timeout_s=30.0))
    try:
        start = time.monotonic()
        with pytest.raises(Op3FrameworkError, match=topic):
            stalled.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
        assert time.monotonic() - start < 15.0
    finally:
        stalled.close()
        fake.unregister()


def test_relax_turns_torque_off_and_reset_turns_it_back_on(backend, robot, watch):
    """Last: the robot falls once limp."""
    backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    backend.relax()
    assert backend.relaxed
    wait_until(lambda: watch.sync_writes, 5, what="a sync_write_item message")
    off = watch.sync_writes[-1]
    assert off.item_name == "torque_enable" and set(off.value) == {0}
    assert sorted(off.joint_name) == sorted(robot.joint_names)
    start = backend.step().joint_positions
    for _ in range(50):  # 1 s limp: gravity moves the joints
        state = backend.step()
    assert np.max(np.abs(state.joint_positions - start)) > 0.1
    # while limp the goals follow the pose, so torque-on does not make the servos jump
    assert np.allclose(watch.position("goal", "l_knee"), state.joint_positions[robot.joint_index("l_knee")],
                       atol=0.1)
    state = backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    assert not backend.relaxed
    on = watch.sync_writes[-1]
    assert on.item_name == "torque_enable" and set(on.value) == {1}
    head = robot.joint_index("head_pan")
    assert abs(state.joint_positions[head] - robot.stance[head]) < 0.05  # under torque again
