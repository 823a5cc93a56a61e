"""GazeboBridgeBackend over real ROS against gazebo_standin (the PyBullet stand-in for op3_gazebo, NOT Gazebo).

The stand-in is started once for this module with ``roslaunch op3_walk gazebo_standin.launch`` and serves the stock
op3_gazebo interfaces; the bridge runs in this test process (a rospy node).  Behaviour only: no assertions on speed.
"""
import os
import threading
import time

import numpy as np
import pytest

from ros_harness import Proc, wait_until


@pytest.fixture(scope="module")
def standin(ros_master, rospy_node, tmp_path_factory):
    rospy = rospy_node
    had_sim_time = rospy.has_param("/use_sim_time")
    log = tmp_path_factory.mktemp("gazebo_standin") / "gazebo_standin.log"
    proc = Proc(["roslaunch", "op3_walk", "gazebo_standin.launch"], str(log), dict(os.environ))
    try:
        rospy.wait_for_service("/gazebo/reset_world", timeout=60)
    except rospy.ROSException:
        proc.kill()
        raise AssertionError("gazebo_standin did not start:\n" + proc.log()[-4000:])
    proc.track()
    yield proc
    code = proc.interrupt(timeout=30)
    orphans = proc.orphans()
    log_text = proc.log()
    proc.kill()
    if not had_sim_time:  # the launch file set it; later test modules start nodes that must use wall time
        rospy.delete_param("/use_sim_time")
    assert code == 0, log_text[-4000:]
    assert not orphans
    assert "NOT Gazebo" in log_text


@pytest.fixture(scope="module")
def robot():
    from op3_walk.robots.description import load_robot
    return load_robot("op3")


@pytest.fixture(scope="module")
def bridge(standin, robot):
    from op3_walk.ros.gazebo_bridge import GazeboBridgeBackend, GazeboBridgeParams
    backend = GazeboBridgeBackend(robot, GazeboBridgeParams(connect_timeout_s=30.0))
    yield backend
    backend.close()
    backend.close()  # idempotent


class Watch:
    """Counts and remembers what the stand-in publishes, independently of the bridge."""

    def __init__(self, rospy):
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import JointState
        self.lock = threading.Lock()
        self.clock_ns, self.clocks, self.joint_states = None, 0, 0
        self.wall = time.monotonic()
        self.subs = [rospy.Subscriber("/clock", Clock, self._on_clock, tcp_nodelay=True),
                     rospy.Subscriber("/robotis_op3/joint_states", JointState, self._on_joints, tcp_nodelay=True)]
        wait_until(lambda: all(s.get_num_connections() for s in self.subs), 30, what="watch connections")

    def _on_clock(self, msg):
        with self.lock:
            self.clock_ns, self.clocks, self.wall = msg.clock.to_nsec(), self.clocks + 1, time.monotonic()

    def _on_joints(self, _msg):
        with self.lock:
            self.joint_states, self.wall = self.joint_states + 1, time.monotonic()

    def quiet(self, seconds=0.2):
        """Wait until nothing has arrived for ``seconds``; return (clock ns, /clock count, joint_states count)."""
        wait_until(lambda: time.monotonic() - self.wall > seconds, 10, interval=0.02, what="a quiet spell")
        with self.lock:
            return self.clock_ns, self.clocks, self.joint_states

    def close(self):
        for sub in self.subs:
            sub.unregister()


@pytest.fixture
def watch(standin, rospy_node):
    w = Watch(rospy_node)
    yield w
    w.close()


def test_model_states_class_matches_gazebo_msgs(rospy_node):
    from geometry_msgs.msg import Point, Pose, Quaternion, Twist
    from io import BytesIO
    from op3_walk.ros.gazebo_bridge import MODEL_STATES_MD5, model_states_class
    cls = model_states_class()
    assert cls._type == "gazebo_msgs/ModelStates" and cls._md5sum == MODEL_STATES_MD5
    msg = cls(name=["ground_plane", "robotis_op3"],
              pose=[Pose(), Pose(position=Point(1.0, 2.0, 3.0), orientation=Quaternion(0.0, 0.0, 0.0, 1.0))],
              twist=[Twist(), Twist()])
    buffer = BytesIO()
    msg.serialize(buffer)
    back = cls().deserialize(buffer.getvalue())
    assert back.name == ["ground_plane", "robotis_op3"] and back.pose[1].position.z == 3.0


def test_params_are_strict_and_documented():
    from op3_walk.config import ConfigError, describe, from_dict
    from op3_walk.ros.gazebo_bridge import GazeboBridgeParams
    params = from_dict(GazeboBridgeParams, {"namespace": "/robotis_op3", "settle_s": 0.001})
    assert params.topic(params.command_topic, "l_knee") == "/robotis_op3/l_knee_position/command"
    with pytest.raises(ConfigError, match="bogus"):
        from_dict(GazeboBridgeParams, {"bogus": 1})
    with pytest.raises(ConfigError, match="joint"):
        from_dict(GazeboBridgeParams, {"command_topic": "/x/command"})
    import dataclasses
    assert all(f.metadata.get("doc") for f in dataclasses.fields(GazeboBridgeParams))
    assert "command_topic" in describe(GazeboBridgeParams)


def test_missing_gazebo_is_a_clear_error_within_the_timeout(rospy_node, robot):
    from op3_walk.ros.gazebo_bridge import GazeboBridgeBackend, GazeboBridgeError, GazeboBridgeParams
    params = GazeboBridgeParams(pause_service="/no_gazebo_here/pause_physics", connect_timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(GazeboBridgeError, match="/no_gazebo_here/pause_physics") as err:
        GazeboBridgeBackend(robot, params)
    assert time.monotonic() - start < 15.0
    assert isinstance(err.value, RuntimeError)  # run_node reports it in one line


def test_missing_controllers_are_named(standin, rospy_node, robot):
    from op3_walk.ros.gazebo_bridge import GazeboBridgeBackend, GazeboBridgeError, GazeboBridgeParams
    with pytest.raises(GazeboBridgeError, match="/nobody/head_pan_position/command"):
        GazeboBridgeBackend(robot, GazeboBridgeParams(namespace="/nobody", connect_timeout_s=1.0))


def test_reset_then_each_step_advances_at_least_one_period(bridge, robot, watch):
    period = robot.control_period_s
    state = bridge.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    assert state.time == 0.0
    assert np.allclose(state.joint_positions, robot.stance, atol=0.02)
    assert np.allclose(state.base_position[:2], 0.0, atol=0.01)
    assert abs(state.base_position[2] - robot.spawn_height) < 0.02 and state.tilt() < 0.05
    assert state.foot_contacts.tolist() == [True, True]
    assert state.foot_positions.shape == (2, 3) and state.foot_orientations.shape == (2, 4)
    clock_at_reset, _, _ = watch.quiet()
    advanced = 0.0
    previous = state.time
    for _ in range(10):
        state = bridge.step()
        stats = bridge.stats
        assert state.time - previous >= period - 1e-9
        assert stats.last_advanced_s >= period - 1e-9
        assert bridge.last_overshoot_s == pytest.approx(stats.last_advanced_s - period, abs=1e-9)
        assert bridge.last_overshoot_s >= 0.0
        advanced += stats.last_advanced_s
        previous = state.time
    clock_now, _, _ = watch.quiet()
    # The bridge's measurement of the simulated time agrees with the clock this test watched on its own.
    assert (clock_now - clock_at_reset) / 1e9 == pytest.approx(advanced, abs=1e-6)
    assert state.time <= advanced + 1e-9
    assert bridge.stats.steps >= 10 and bridge.stats.max_overshoot_s >= bridge.stats.mean_overshoot_s >= 0.0
    values = bridge.stats.values()
    assert "overshoot mean [ms]" in values and "step wall time mean [ms]" in values
    assert np.all(np.isfinite(state.joint_velocities)) and np.all(np.isfinite(state.linear_acceleration))
    assert state.linear_acceleration[2] == pytest.approx(9.81, abs=2.0)  # standing: the IMU reads +g


def test_pause_really_holds_time(bridge, robot, watch):
    bridge.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    bridge.step()
    clock, clocks, joint_states = watch.quiet()
    time.sleep(0.5)
    assert watch.quiet(0.05) == (clock, clocks, joint_states)  # nothing moved, nothing published
    bridge.step()
    later, _, _ = watch.quiet()
    assert later - clock >= int(round(robot.control_period_s * 1e9))


def test_joint_targets_are_reached_and_clamped(bridge, robot):
    bridge.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    offsets = {"head_pan": 0.4, "head_tilt": 0.2, "l_sho_pitch": -0.3, "r_sho_pitch": 0.3, "l_el": 0.3}
    targets = robot.stance.copy()
    for name, offset in offsets.items():
        targets[robot.joint_index(name)] += offset
    bridge.apply(targets)
    for _ in range(25):  # 0.5 s
        state = bridge.step()
    for name in offsets:
        i = robot.joint_index(name)
        assert abs(state.joint_positions[i] - targets[i]) < 0.03, name
    assert state.foot_contacts.all() and state.tilt() < 0.1
    too_far = targets.copy()
    too_far[robot.joint_index("head_pan")] = 5.0
    bridge.apply(too_far)
    assert bridge.joint_targets[robot.joint_index("head_pan")] == robot.upper[robot.joint_index("head_pan")]
    with pytest.raises(ValueError):
        bridge.apply(np.full(robot.n_joints, np.nan))
    with pytest.raises(ValueError):
        bridge.apply(np.zeros(3))


def test_reset_returns_to_the_spawn_pose(bridge, robot):
    bridge.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    bent = robot.stance.copy()
    bent[robot.joint_index("head_pan")] = 1.0
    bent[robot.joint_index("l_sho_roll")] = 1.4
    bridge.apply(bent)
    for _ in range(10):
        bridge.step()
    # A pose the stock interface cannot set: the robot comes back at its spawn pose (and a warning is logged).
    state = bridge.reset(robot.stance, (0.5, 0.2, 0.3))
    assert state.time == 0.0
    assert np.allclose(state.base_position[:2], 0.0, atol=0.01)
    assert np.allclose(state.joint_positions, robot.stance, atol=0.02)


def test_walk_env_runs_an_episode_through_the_bridge(bridge):
    from op3_walk.envs.walk_env import WalkEnv
    env = WalkEnv(robot="op3", task="walk", backend=bridge)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["state"].time == 0.0
    times = []
    for _ in range(8):
        obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert np.all(np.isfinite(obs)) and np.isfinite(reward)
        assert not terminated and not truncated
        times.append(info["state"].time)
    assert all(b - a >= env.robot.control_period_s - 1e-9 for a, b in zip(times, times[1:]))
    env.close()
    bridge.step()  # the env did not own the backend: it is still open


def test_without_an_imu_gyro_and_specific_force_come_from_model_states(standin, robot):
    from op3_walk.ros.gazebo_bridge import GazeboBridgeBackend, GazeboBridgeParams
    backend = GazeboBridgeBackend(robot, GazeboBridgeParams(imu_topic=""))
    try:
        backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
        for _ in range(3):
            state = backend.step()
        assert np.all(np.abs(state.base_angular_velocity) < 0.5)
        assert state.linear_acceleration[2] == pytest.approx(9.81, abs=2.0)
    finally:
        backend.close()


def test_a_stalled_reading_is_a_clear_error_and_leaves_physics_paused(standin, robot, watch):
    from op3_walk.ros.gazebo_bridge import GazeboBridgeBackend, GazeboBridgeError, GazeboBridgeParams
    backend = GazeboBridgeBackend(robot, GazeboBridgeParams(model_name="no_such_model", step_timeout_s=1.0))
    try:
        with pytest.raises(GazeboBridgeError, match="no_such_model.*ground_plane"):
            backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
        clock, clocks, _ = watch.quiet()
        time.sleep(0.3)
        assert watch.quiet(0.05)[:2] == (clock, clocks)
    finally:
        backend.close()
