"""gazebo_standin: a PyBullet STAND-IN for op3_gazebo, serving the same ROS interfaces as Gazebo (NOT Gazebo).

Gazebo cannot be installed where this package is developed (Debian 12), yet ``GazeboBridgeBackend`` must be tested
over real ROS.  This node serves exactly the stock interfaces the bridge uses, backed by ``PyBulletBackend``:

  services   /gazebo/pause_physics, /gazebo/unpause_physics, /gazebo/reset_world, /gazebo/reset_simulation
             (std_srvs/Empty)
  subscribes <namespace>/<joint>_position/command   std_msgs/Float64, rad: the last value is the joint's target
  publishes  /clock                                 rosgraph_msgs/Clock, every physics tick
             <namespace>/joint_states               sensor_msgs/JointState (rad, rad/s, N·m)
             <namespace>/imu                        sensor_msgs/Imu, torso frame (orientation, gyro, specific force)
             /gazebo/model_states                   gazebo_msgs/ModelStates: 'ground_plane' and the robot's base
                                                    (its torso link frame: pose and twist in the world frame)
             the last three every ``publish_every_ticks`` ticks, all stamped with the simulated time they describe.

Behaviour copied from Gazebo + gazebo_ros + gazebo_ros_control: it starts paused (op3_gazebo's robotis_world.launch
does too), publishes nothing while paused, ``reset_world`` puts the robot back at its spawn pose at rest without
touching the clock, ``reset_simulation`` does that and restarts the clock at 0, the joint controllers keep their
last command across resets (before any command a joint holds its spawn angle), and ``/use_sim_time`` is set to true
unless it is already set.  What differs: the physics is PyBullet's, not ODE's, the spawn pose is the robot's stance
at its ``spawn_height`` (Gazebo spawns op3 with straight legs at 0.285 m), the joint motors are PyBullet's position
motors with the robot config's gains (not op3_gazebo's PID effort controllers), and the messages of a tick are
stamped with the time after the tick (Gazebo publishes at the start of a world update).  It exercises the
interface, not Gazebo's dynamics.

Physics tick: ``physics_step_s`` (default 1 ms, Gazebo's world step in op3_gazebo).  The robot config is loaded
with its physics and control rates both set to the tick rate, so one ``PyBulletBackend.step()`` is exactly one
tick and commands can change and pauses can land between any two ticks.  PyBullet's position gains act per physics
step, so at 1 ms the joints track their targets faster (in seconds) than in the 200 Hz in-process simulation;
``physics_step_s: 0`` uses the robot's own physics step instead (op3: 5 ms, the rate its gains were tuned at).

``real_time_factor``: 0 runs as fast as the CPU allows; 1 paces the ticks at wall-clock rate (like Gazebo's
default), 0.5 at half speed, and so on.
"""
import contextlib
import dataclasses
import threading
import time
import warnings
from typing import Iterator

import numpy as np
import rospy
from geometry_msgs.msg import Point, Pose, Quaternion, Twist, Vector3
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64
from std_srvs.srv import Empty, EmptyResponse

from op3_walk.backends.pybullet_backend import PyBulletBackend
from op3_walk.config import doc
from op3_walk.robots.description import load_robot
from op3_walk.ros.conversions import imu_message, joint_state_message
from op3_walk.ros.gazebo_bridge import NS_PER_S, model_states_class
from op3_walk.ros.params import load_private_params, parse_node_args, run_node

LABEL = "gazebo_standin (PyBullet stand-in for Gazebo, NOT Gazebo)"


@dataclasses.dataclass
class GazeboStandinParams:
    """gazebo_standin private parameters."""

    robot: str = doc("robot config: a name in config/robots/ or a YAML path", "op3")
    namespace: str = doc("namespace of the joint controllers and sensors (op3_gazebo: /robotis_op3)", "/robotis_op3")
    model_name: str = doc("the robot's name in /gazebo/model_states", "robotis_op3")
    physics_step_s: float = doc("physics tick, s (Gazebo's world step: 0.001); 0 = the robot config's own "
                                "physics step", 0.001)
    real_time_factor: float = doc("simulated s per wall s; 0 = as fast as possible", 0.0)
    publish_every_ticks: int = doc("publish joint_states, imu and model_states every this many ticks (/clock is "
                                   "published every tick)", 1)
    paused: bool = doc("start with physics paused (as op3_gazebo's robotis_world.launch does)", True)
    gui: bool = doc("open the PyBullet GUI (needs a display)", False)

    def validate(self) -> None:
        if not self.physics_step_s >= 0.0:
            raise ValueError("physics_step_s must be >= 0")
        if not self.real_time_factor >= 0.0:
            raise ValueError("real_time_factor must be >= 0")
        if self.publish_every_ticks < 1:
            raise ValueError("publish_every_ticks must be >= 1")


class GazeboStandin:
    """The node: one PyBullet world, stepped tick by tick by ``spin()`` while unpaused (see the module docstring)."""

    def __init__(self, params: GazeboStandinParams):
        self.params = params
        base = load_robot(params.robot)
        step_s = params.physics_step_s or base.physics_period_s
        rate_hz = 1.0 / step_s
        self.robot = load_robot(base, {"physics_rate_hz": rate_hz, "control_rate_hz": rate_hz})
        self.tick_ns = int(round(step_s * NS_PER_S))
        self.backend = PyBulletBackend(self.robot, gui=params.gui)
        self.spawn_position = (0.0, 0.0, self.robot.spawn_height)
        self.ticks = 0
        n = self.robot.n_joints
        self._commands = self.robot.stance.copy()    # last command per joint (spawn angle until one arrives)
        self._commands_changed = False
        self._command_lock = threading.Lock()
        self._non_finite_commands = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # guards the world; spin() holds it during a tick
        self._waiters = 0                             # service handlers waiting for the world (they go first)
        self._waiters_lock = threading.Lock()
        self._paused = params.paused
        self._pace_wall = time.monotonic()
        self._pace_tick = 0
        self.state = self.backend.reset(self.robot.stance, self.spawn_position)
        self._model_states = model_states_class()
        ns = params.namespace.rstrip("/")
        self.robot_frame = self.robot.torso_link
        # queue_size=None: publish() writes to the sockets before it returns, so everything of a tick is sent before
        # a pause request is answered (rospy warns about a missing queue_size: intended).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            self.clock_pub = rospy.Publisher("/clock", Clock, queue_size=None, tcp_nodelay=True)
            self.joint_pub = rospy.Publisher(ns + "/joint_states", JointState, queue_size=None, tcp_nodelay=True)
            self.imu_pub = rospy.Publisher(ns + "/imu", Imu, queue_size=None, tcp_nodelay=True)
            self.model_pub = rospy.Publisher("/gazebo/model_states", self._model_states, queue_size=None,
                                             tcp_nodelay=True)
        self.command_subs = [rospy.Subscriber("%s/%s_position/command" % (ns, joint), Float64, self._on_command,
                                              callback_args=i, queue_size=10, tcp_nodelay=True)
                             for i, joint in zip(range(n), self.robot.joint_names)]
        self.services = [rospy.Service("/gazebo/pause_physics", Empty, self._on_pause),
                         rospy.Service("/gazebo/unpause_physics", Empty, self._on_unpause),
                         rospy.Service("/gazebo/reset_world", Empty, self._on_reset_world),
                         rospy.Service("/gazebo/reset_simulation", Empty, self._on_reset_simulation)]
        if not rospy.has_param("/use_sim_time"):  # gazebo_ros does the same
            rospy.set_param("/use_sim_time", True)
        rospy.loginfo("%s: robot %s (%d joints), %.3g ms ticks, real-time factor %s, %s; commands on "
                      "%s/<joint>_position/command", LABEL, self.robot.name, n, step_s * 1e3,
                      params.real_time_factor or "unlimited", "paused" if self._paused else "running", ns)

    # -- ROS callbacks --------------------------------------------------------------------------------------------
    def _on_command(self, msg: Float64, index: int) -> None:
        value = float(msg.data)
        if not np.isfinite(value):
            self._non_finite_commands += 1
            rospy.logwarn_throttle(5.0, "%s: ignored a non-finite command for %s (%d so far)", LABEL,
                                   self.robot.joint_names[index], self._non_finite_commands)
            return
        with self._command_lock:
            self._commands[index] = value
            self._commands_changed = True

    @contextlib.contextmanager
    def _world(self) -> Iterator[None]:
        """Exclusive access for a service handler, granted at the next tick boundary (ahead of the tick loop:
        Python locks are not fair, and a pause must not wait for an arbitrary number of ticks)."""
        with self._waiters_lock:
            self._waiters += 1
        self._lock.acquire()
        try:
            yield
        finally:
            with self._waiters_lock:
                self._waiters -= 1
            self._cond.notify_all()
            self._lock.release()

    def _on_pause(self, _req) -> EmptyResponse:
        with self._world():
            self._paused = True
        return EmptyResponse()

    def _on_unpause(self, _req) -> EmptyResponse:
        with self._world():
            self._paused = False
            self._pace_wall, self._pace_tick = time.monotonic(), self.ticks
        return EmptyResponse()

    def _on_reset_world(self, _req) -> EmptyResponse:
        with self._world():
            self._reset_world()
        return EmptyResponse()

    def _on_reset_simulation(self, _req) -> EmptyResponse:
        with self._world():
            self._reset_world()
            self.ticks = 0
            self._pace_wall, self._pace_tick = time.monotonic(), 0
        return EmptyResponse()

    # -- the world ------------------------------------------------------------------------------------------------
    def _reset_world(self) -> None:
        """Back to the spawn pose at rest; the joint controllers keep their last commands (as in Gazebo)."""
        self.state = self.backend.reset(self.robot.stance, self.spawn_position)
        with self._command_lock:
            self._commands_changed = True

    def _tick(self) -> None:
        """One physics step with the latest commands, then /clock (and, every N ticks, the sensors)."""
        if self._commands_changed:
            with self._command_lock:
                commands = self._commands.copy()
                self._commands_changed = False
            self.backend.apply(commands)  # clamped to the joint limits, as JointPositionController does
        self.state = self.backend.step()
        self.ticks += 1
        ns = self.ticks * self.tick_ns
        stamp = rospy.Time(ns // NS_PER_S, ns % NS_PER_S)
        self.clock_pub.publish(Clock(clock=stamp))  # first, as gazebo_ros does at the start of a world update
        if self.ticks % self.params.publish_every_ticks == 0:
            state = self.state
            self.joint_pub.publish(joint_state_message(self.robot, state, stamp))
            self.imu_pub.publish(imu_message(state, self.robot_frame, stamp))
            msg = self._model_states()
            msg.name = ["ground_plane", self.params.model_name]
            angular_world = state.rotation().dot(state.base_angular_velocity)
            msg.pose = [Pose(orientation=Quaternion(0.0, 0.0, 0.0, 1.0)),
                        Pose(position=Point(*map(float, state.base_position)),
                             orientation=Quaternion(*map(float, state.base_orientation)))]
            msg.twist = [Twist(), Twist(linear=Vector3(*map(float, state.base_linear_velocity)),
                                        angular=Vector3(*map(float, angular_world)))]
            self.model_pub.publish(msg)

    def spin(self) -> None:
        """Tick while unpaused until shutdown; service handlers get the world between ticks."""
        factor = self.params.real_time_factor
        tick_s = self.tick_ns / NS_PER_S
        while not rospy.is_shutdown():
            with self._cond:
                while (self._paused or self._waiters) and not rospy.is_shutdown():
                    self._cond.wait(0.1)  # polls shutdown: a hook taking this lock could deadlock the main thread
                if rospy.is_shutdown():
                    break
                self._tick()
                due = self._pace_wall + (self.ticks - self._pace_tick) * tick_s / factor if factor > 0.0 else 0.0
            if factor > 0.0:
                delay = due - time.monotonic()
                if delay > 0.0:
                    time.sleep(delay)

    def close(self) -> None:
        with self._lock:
            self.backend.close()
        rospy.loginfo("%s: shut down at %.3f s simulated time", LABEL, self.ticks * self.tick_ns / NS_PER_S)


def main() -> None:
    parse_node_args("gazebo_standin", GazeboStandinParams, __doc__)   # --help without a master
    def body() -> None:
        node = GazeboStandin(load_private_params(GazeboStandinParams))
        try:
            node.spin()
        finally:
            node.close()
    run_node("gazebo_standin", body)
