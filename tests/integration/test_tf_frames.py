"""TF, odometry and namespaces (REP 103/105): the controller's odom -> base_link and robot_state_publisher's
base_link -> ... -> feet (view.launch) form one tree, at the root and under a namespace's TF prefix; nav_msgs/Odometry
carries the pose in odom and the twist in base_link; robot_state_publisher does not warn about the URDF's root."""
import math
import os

import numpy as np
import pytest

from ros_harness import wait_until

FOOT = "l_foot"   # a PLEN foot link


@pytest.fixture(scope="module")
def tf_buffer(rospy_node):
    import tf2_ros
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer)
    yield buffer
    listener.unregister()


def _frame(prefix, name):
    return "%s/%s" % (prefix, name) if prefix else name


def test_odometry_and_walker_state_twist_are_in_base_link():
    """Pure conversion (no master): a robot yawed 90 deg moving along odom +x moves along its own -y."""
    import rospy
    from op3_walk.backends import RobotState
    from op3_walk.ros.conversions import odometry_message, prefixed_frame, state_message
    from op3_walk.robots import load_robot
    robot = load_robot("plen")
    q = (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))
    n = robot.n_joints
    state = RobotState(0.0, np.zeros(n), np.zeros(n), np.zeros(n), np.array([1.0, 2.0, 0.15]), np.array(q),
                       np.array([0.3, 0.0, 0.0]), np.array([0.0, 0.0, 0.5]), np.zeros(3), np.zeros(2, dtype=bool))
    odom = odometry_message(state, prefixed_frame("/actor_0/", "odom"), prefixed_frame("actor_0", "base_link"),
                            rospy.Time(1))
    assert (odom.header.frame_id, odom.child_frame_id) == ("actor_0/odom", "actor_0/base_link")
    p = odom.pose.pose.position
    assert (p.x, p.y, p.z) == (1.0, 2.0, 0.15)
    v = odom.twist.twist.linear
    assert np.allclose((v.x, v.y, v.z), (0.0, -0.3, 0.0), atol=1e-12)
    w = odom.twist.twist.angular
    assert (w.x, w.y, w.z) == (0.0, 0.0, 0.5)
    msg = state_message(robot, [("x", 1)], 1, 0, np.zeros(1), 0.0, False, False, {"state": state}, rospy.Time(1),
                        "actor_0/odom")
    assert msg.header.frame_id == "actor_0/odom"
    t = msg.torso_twist
    assert np.allclose((t.linear.x, t.linear.y, t.linear.z), (v.x, v.y, v.z), atol=1e-12)
    assert (t.angular.x, t.angular.y, t.angular.z) == (w.x, w.y, w.z)
    assert prefixed_frame("", "odom") == "odom"


# (namespace of the controller, tf_prefix parameter of that namespace or None, view.launch tf_prefix arg or None)
CASES = [
    ("", None, None),                       # train.launch / deploy.launch: plain odom -> base_link
    ("actor_0", None, None),                # a namespace: the frames take its name, in both nodes
    ("actor_1", "walker_b", "walker_b"),    # a tf_prefix parameter in the namespace (what actor_chain.launch sets)
]


@pytest.mark.parametrize("ns, ns_prefix, view_prefix", CASES, ids=["root", "namespace", "tf_prefix_param"])
def test_one_tree_from_odom_to_the_feet(spawn, rospy_node, tf_buffer, ns, ns_prefix, view_prefix):
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Imu
    from op3_walk.srv import ResetEpisode
    prefix = ns_prefix if ns_prefix is not None else ns
    base = "/%s/" % ns if ns else "/"
    if ns_prefix is not None:
        rospy_node.set_param(base + "tf_prefix", ns_prefix)
    odoms, imus = [], []
    subs = [rospy_node.Subscriber(base + "odom", Odometry, odoms.append),
            rospy_node.Subscriber(base + "imu/data", Imu, imus.append)]
    args = ["rosrun", "op3_walk", "controller_node", "__name:=controller"] + (["__ns:=" + ns] if ns else [])
    controller = spawn(args, name="controller")
    view_args = ["roslaunch", "op3_walk", "view.launch", "rviz:=false"] + (["ns:=" + ns] if ns else [])
    view = spawn(view_args + (["tf_prefix:=" + view_prefix] if view_prefix else []), name="view")
    odom_frame, base_frame, foot = (_frame(prefix, f) for f in ("odom", "base_link", FOOT))
    try:
        try:
            rospy_node.wait_for_service(base + "walker/reset", timeout=60)
        except rospy_node.ROSException:
            raise AssertionError("controller did not start:\n" + controller.log()[-4000:])
        reset = rospy_node.ServiceProxy(base + "walker/reset", ResetEpisode)

        def connected():
            state = reset(seed=0).state   # each reset publishes TF, odometry and joint_states again
            return state if tf_buffer.can_transform(odom_frame, foot, rospy_node.Time(0),
                                                    rospy_node.Duration(0.5)) else None
        state = wait_until(connected, 60, interval=0.2, what="TF %s -> %s (frames: %s)"
                           % (odom_frame, foot, tf_buffer.all_frames_as_string()))
        assert state.header.frame_id == odom_frame
        t_base = tf_buffer.lookup_transform(odom_frame, base_frame, rospy_node.Time(0)).transform
        t_foot = tf_buffer.lookup_transform(odom_frame, foot, rospy_node.Time(0)).transform
        pose = state.torso_pose
        assert np.allclose([t_base.translation.x, t_base.translation.y, t_base.translation.z],
                           [pose.position.x, pose.position.y, pose.position.z], atol=1e-9)
        assert 0.1 < t_base.translation.z < 0.25                      # the PLEN standing at its spawn height
        assert t_foot.translation.z < t_base.translation.z - 0.05     # the foot hangs below the body
        # the tree is the URDF's: base_link -> torso is the fixed identity joint
        t_torso = tf_buffer.lookup_transform(base_frame, _frame(prefix, "torso"), rospy_node.Time(0)).transform
        assert np.allclose([t_torso.translation.x, t_torso.translation.y, t_torso.translation.z], 0.0)
        wait_until(lambda: odoms and imus, 10, what="nav_msgs/Odometry on %sodom and imu/data" % base)
        odom = odoms[-1]
        assert (odom.header.frame_id, odom.child_frame_id) == (odom_frame, base_frame)
        assert odom.pose.pose.position.z == pytest.approx(t_base.translation.z, abs=1e-9)
        assert imus[-1].header.frame_id == _frame(prefix, "torso")   # a URDF link, in the same tree
        assert tf_buffer.can_transform(odom_frame, imus[-1].header.frame_id, rospy_node.Time(0))
    finally:
        for sub in subs:
            sub.unregister()
        if ns_prefix is not None:
            rospy_node.delete_param(base + "tf_prefix")
    view.track()
    assert view.interrupt() == 0 and not view.orphans()
    assert controller.interrupt() == 0
    # robot_state_publisher's warnings reach the launch's console (stderr stays on screen with output="log"); a
    # root link with an inertia gives "[ WARN] ...: The root link torso has an inertia specified in the URDF, but
    # KDL does not support a root link with an inertia."
    assert "robot_state_publisher" in view.log()
    assert "has an inertia specified" not in view.log()


@pytest.mark.parametrize("args, prefix", [([], ""), (["ns:=actor_0"], "actor_0"),
                                          (["ns:=/actor_1/", "tf_prefix:=walker_b"], "walker_b")])
def test_view_launch_starts_rviz_on_the_prefixed_frames(tmp_path, args, prefix):
    """RViz has no command-line TF prefix: view.launch rviz:=true writes a config copy with the robot model's TF
    prefix and the fixed frame, then starts RViz on it (run here with `echo` in place of RViz, which tools/setup.sh
    does not install)."""
    import shlex
    import subprocess
    import roslaunch.config
    import roslaunch.xmlloader
    from ros_harness import ROOT
    config = roslaunch.config.ROSLaunchConfig()
    roslaunch.xmlloader.XmlLoader().load(os.path.join(ROOT, "launch", "view.launch"), config,
                                         argv=["roslaunch"] + args + ["rviz:=true"], verbose=False)
    rviz = [n for n in config.nodes if n.package == "rviz"]
    rsp = [n for n in config.nodes if n.package == "robot_state_publisher"]
    assert len(rviz) == 1 and len(rsp) == 1
    assert config.params[rsp[0].namespace + "robot_state_publisher/tf_prefix"].value == prefix
    env = dict(os.environ, ROS_HOME=str(tmp_path))
    out = subprocess.run(shlex.split(rviz[0].launch_prefix) + ["echo"], env=env, stdout=subprocess.PIPE,
                         universal_newlines=True, timeout=30, check=True).stdout.split()
    assert out[0] == "-d" and out[1].startswith(str(tmp_path))
    text = open(out[1]).read()
    assert 'TF Prefix: "%s"' % prefix in text
    assert "Fixed Frame: %s" % ("%s/odom" % prefix if prefix else "odom") in text
    assert "Robot Description: robot_description" in text   # the rest of the config is kept
