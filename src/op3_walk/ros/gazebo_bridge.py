"""``GazeboBridgeBackend``: a robot simulated in Gazebo classic, driven through op3_gazebo's STOCK ROS interfaces.

Nothing of ours runs inside Gazebo; the bridge uses what ``roslaunch op3_gazebo robotis_world.launch`` already
offers (gazebo_ros + gazebo_ros_control + one ``effort_controllers/JointPositionController`` per joint):

  publishes  <namespace>/<joint>_position/command  std_msgs/Float64, rad: the position target of each joint
  subscribes <namespace>/joint_states              sensor_msgs/JointState (joint_state_controller)
             <namespace>/imu                       sensor_msgs/Imu (optional, ``imu_topic: ""`` = not used)
             /gazebo/model_states                  gazebo_msgs/ModelStates: the base (root link) pose and twist
             /clock                                rosgraph_msgs/Clock: Gazebo's simulation time
  calls      /gazebo/pause_physics, /gazebo/unpause_physics, /gazebo/reset_world   (std_srvs/Empty)

Every name is a ``GazeboBridgeParams`` field.  The bridge was tested over ROS against ``gazebo_standin`` (a
PyBullet node serving exactly these interfaces, see ``op3_walk.ros.gazebo_standin``), NOT against Gazebo itself,
which cannot be installed where this package is developed.

What the stock interface can and cannot do
------------------------------------------
* It cannot put the base at an arbitrary pose or the joints at arbitrary angles: ``gazebo_msgs/SetModelState`` and
  ``SetModelConfiguration`` would, but they are avoided so the bridge needs nothing beyond std_srvs.  ``reset``
  calls ``/gazebo/reset_world``, which puts the model back where it was spawned (op3_gazebo: ``-z 0.285``, all
  joints at 0 rad, upright, at the world origin; the stand-in: the robot's stance at ``spawn_height``), then
  commands ``joint_positions`` as targets and lets the controllers hold them for ``reset_settle_s`` of simulated
  time.  ``base_position`` and ``base_orientation`` are therefore NOT applied (a warning is logged once when they
  differ from an upright pose at the origin).  Gazebo's controllers keep their last command across
  ``reset_world``; the bridge sends fresh targets right after it anyway.
* It has no contact sensors: ``foot_contacts`` is computed from kinematics: the joint angles and the base pose give
  each foot's collision shapes (corners of the boxes in the robot's URDF) in the world, and a foot is in contact
  when its lowest corner is below ``contact_height`` (m) above the ground plane z = 0.  This assumes flat ground
  at z = 0 and that the URDF's sole boxes match the simulated feet (op3_gazebo's model has mesh feet, so the
  threshold absorbs a few mm of mismatch).
* Privileged quantities it cannot give are ``None`` in the ``RobotState``: ``com_position``, ``com_velocity``,
  ``foot_forces``, ``center_of_pressure``.  ``foot_positions`` / ``foot_orientations`` come from the same
  kinematics.  So reward terms needing the centre of pressure or of mass (``zmp_tracking``) do not work here.
* ``set_dynamics``, ``push`` and ``render_rgb`` are not offered (NotImplementedError, like a real robot).

Stepping, and why it overshoots
-------------------------------
``step()`` publishes every joint command, unpauses physics, waits until ``/clock`` has advanced by at least one
control period AND a joint_states (and IMU) message stamped at or after that time AND a model_states message
received after it have arrived, then pauses physics.  Pausing is a service call made after the bridge sees the
clock pass the target, so the simulation always runs on a little: real Gazebo overshoots by a variable amount
(the round trip plus whatever it simulates meanwhile; this is openai_ros's well-known non-determinism).  The bridge
does not hide it: it measures it every step (``stats``: the simulated time actually advanced minus the period, and
the wall time of a step) so the controller can publish it in its diagnostics, and ``RobotState.time`` is the real
simulated time of the reading.  The commands are published before the unpause (synchronously, on TCP_NODELAY
connections), so they normally reach the controllers while the world is paused and act from the step's start;
the stock interface gives no acknowledgement, so a command arriving late acts one physics step (1 ms) later.

With op3_gazebo's stock settings ``joint_state_controller`` publishes at 50 Hz: waiting for a joint_states
message stamped after the target then costs up to ~21 ms of extra simulated time per step.  Raise its
``publish_rate`` to 1000 (see the README) to keep the overshoot near one physics step plus the round trip.

After the pause, the bridge waits until no message has arrived for ``settle_s`` (wall time) so the reading is
built from the freshest messages: joint positions, velocities and efforts from joint_states; base pose and linear
velocity (world) from model_states; angular velocity and specific force (body frame) from the IMU, or, with
``imu_topic: ""``, from model_states' angular velocity and the change of its linear velocity.

Needs ``rospy.init_node`` to have been called.  Never imports torch.
"""
import dataclasses
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rospy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64
from std_srvs.srv import Empty

from op3_walk.backends.base import (STANDARD_GRAVITY, Backend, RobotState, clamp_targets, matrix_to_quaternion,
                                    quat_to_matrix)
from op3_walk.config import doc
from op3_walk.robots.description import RobotConfig
from op3_walk.robots.kinematics import BipedKinematics, sole_corners

NS_PER_S = 1000000000

# gazebo_msgs/ModelStates, as in gazebo_ros_pkgs (Noetic).  gazebo_msgs is not packaged on Debian, so when it cannot
# be imported the class is generated at run time from this definition; the md5 below is the real message's, so the
# generated class talks to a real Gazebo (checked when the class is built).
MODEL_STATES_TYPE = "gazebo_msgs/ModelStates"
MODEL_STATES_MD5 = "48c080191eb15c41858319b4d8a609c2"
MODEL_STATES_DEFINITION = """\
# broadcast all model states in world frame
string[] name                 # model names
geometry_msgs/Pose[] pose     # desired pose in world frame
geometry_msgs/Twist[] twist   # desired twist in world frame
"""
_MODEL_STATES_CLASS = None


def model_states_class() -> Any:
    """``gazebo_msgs.msg.ModelStates``, or an identical class (same type and md5) generated at run time."""
    global _MODEL_STATES_CLASS
    if _MODEL_STATES_CLASS is not None:
        return _MODEL_STATES_CLASS
    try:
        from gazebo_msgs.msg import ModelStates  # Noetic with gazebo_ros_pkgs
        cls = ModelStates
    except ImportError:
        import genpy.dynamic
        from geometry_msgs.msg import Pose, Twist
        separator = "\n" + "=" * 80 + "\n"
        full_text = (MODEL_STATES_DEFINITION + separator + "MSG: geometry_msgs/Pose\n" + Pose._full_text
                     + separator + "MSG: geometry_msgs/Twist\n" + Twist._full_text)
        cls = genpy.dynamic.generate_dynamic(MODEL_STATES_TYPE, full_text)[MODEL_STATES_TYPE]
    if cls._type != MODEL_STATES_TYPE or cls._md5sum != MODEL_STATES_MD5:
        raise RuntimeError("%s class has md5 %s, expected %s: it would not talk to Gazebo"
                           % (cls._type, cls._md5sum, MODEL_STATES_MD5))
    _MODEL_STATES_CLASS = cls
    return cls


class GazeboBridgeError(RuntimeError):
    """Gazebo (or the stand-in) is missing, incomplete or stopped answering; the message names the topic/service."""


@dataclasses.dataclass
class GazeboBridgeParams:
    """How to reach a robot in Gazebo: stock op3_gazebo names by default.  ``{namespace}`` in a topic is replaced by
    ``namespace`` and ``{joint}`` by each joint name."""

    namespace: str = doc("namespace of the robot's controllers (op3_gazebo: /robotis_op3)", "/robotis_op3")
    model_name: str = doc("the robot's model name in /gazebo/model_states (op3_gazebo spawns 'robotis_op3')",
                          "robotis_op3")
    command_topic: str = doc("position command topic of one joint (std_msgs/Float64, rad)",
                             "{namespace}/{joint}_position/command")
    joint_states_topic: str = doc("sensor_msgs/JointState topic (joint_state_controller)",
                                  "{namespace}/joint_states")
    imu_topic: str = doc("sensor_msgs/Imu topic of a torso-aligned IMU; empty = no IMU: angular velocity and "
                         "specific force are derived from model_states", "{namespace}/imu")
    model_states_topic: str = doc("gazebo_msgs/ModelStates topic (base pose and twist)", "/gazebo/model_states")
    clock_topic: str = doc("rosgraph_msgs/Clock topic of the simulation time", "/clock")
    pause_service: str = doc("std_srvs/Empty service that pauses physics", "/gazebo/pause_physics")
    unpause_service: str = doc("std_srvs/Empty service that unpauses physics", "/gazebo/unpause_physics")
    reset_world_service: str = doc("std_srvs/Empty service that puts every model back at its spawn pose",
                                   "/gazebo/reset_world")
    connect_timeout_s: float = doc("wall time to find the services and connect every topic, s", 30.0)
    step_timeout_s: float = doc("wall time one step may take before Gazebo counts as stalled, s", 10.0)
    settle_s: float = doc("after pausing, wall time without any new message before the reading is taken, s "
                          "(lets the last messages published before the pause arrive)", 0.002)
    reset_settle_s: float = doc("simulated time the reset targets are held before the first reading, s (Gazebo "
                                "publishes nothing while paused, and reset_world puts the joints at their spawn "
                                "angles, not at the requested ones)", 0.2)
    contact_height: float = doc("a foot is in contact when the lowest corner of its collision boxes is below this "
                                "height above the ground plane z = 0, m", 0.01)

    def validate(self) -> None:
        if "{joint}" not in self.command_topic:
            raise ValueError("command_topic must contain {joint}, got %r" % self.command_topic)
        for name in ("connect_timeout_s", "step_timeout_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError("%s must be positive" % name)
        if not self.reset_settle_s > 0.0:  # a reading needs simulated time to pass (nothing is published paused)
            raise ValueError("reset_settle_s must be positive")
        for name in ("settle_s", "contact_height"):
            if not getattr(self, name) >= 0.0:
                raise ValueError("%s must be >= 0" % name)

    def topic(self, pattern: str, joint: str = "") -> str:
        """``pattern`` with ``{namespace}`` and ``{joint}`` filled in."""
        return pattern.format(namespace=self.namespace.rstrip("/"), joint=joint)


@dataclasses.dataclass
class GazeboBridgeStats:
    """What the stepping cost, for diagnostics.  Times in s; "overshoot" = simulated time advanced minus the period."""

    steps: int = 0
    last_overshoot_s: float = 0.0
    mean_overshoot_s: float = 0.0
    max_overshoot_s: float = 0.0
    last_advanced_s: float = 0.0      # simulated time the last step advanced
    last_reading_lag_s: float = 0.0   # where the simulation stopped minus the reading's joint_states stamp
    last_step_wall_s: float = 0.0     # wall time of the last step
    mean_step_wall_s: float = 0.0
    settle_messages: int = 0          # messages that arrived after a pause (what settle_s waits for), in total

    def values(self) -> Dict[str, Any]:
        """Flat ``{label with unit: value}`` for a DiagnosticStatus."""
        return {"steps": self.steps, "overshoot last [ms]": self.last_overshoot_s * 1e3,
                "overshoot mean [ms]": self.mean_overshoot_s * 1e3, "overshoot max [ms]": self.max_overshoot_s * 1e3,
                "sim time per step last [ms]": self.last_advanced_s * 1e3,
                "reading lag last [ms]": self.last_reading_lag_s * 1e3,
                "step wall time last [ms]": self.last_step_wall_s * 1e3,
                "step wall time mean [ms]": self.mean_step_wall_s * 1e3,
                "messages after pause": self.settle_messages}




class GazeboBridgeBackend(Backend):
    """``robot`` in Gazebo (or the stand-in), stepped one control period at a time; see the module docstring."""

    def __init__(self, robot: RobotConfig, params: Optional[GazeboBridgeParams] = None):
        if not rospy.core.is_initialized():
            raise GazeboBridgeError("GazeboBridgeBackend needs a ROS node: call rospy.init_node() first")
        self.robot = robot
        self.params = params = params if params is not None else GazeboBridgeParams()
        params.validate()
        self._names = robot.joint_names
        self._lower, self._upper = robot.lower, robot.upper
        self._period_ns = int(round(robot.control_period_s * NS_PER_S))
        self._kinematics = BipedKinematics(robot)
        self._soles = [sole_corners(self._kinematics.urdf, foot) for foot in robot.foot_links]
        self._targets = robot.stance.copy()
        self.stats = GazeboBridgeStats()
        self._closed = False
        self._epoch_ns: Optional[int] = None   # joint_states stamp of the reset reading (RobotState.time = 0)
        self._pose_warned = False
        self._slow_warned = False
        self._previous_velocity: Optional[Tuple[int, np.ndarray]] = None  # (stamp ns, world m/s) without an IMU
        # Latest messages, guarded by _cond; every callback notifies it.
        self._cond = threading.Condition()
        self._clock_ns: Optional[int] = None
        self._joint_msg: Optional[JointState] = None
        self._joint_ns = -1
        self._imu_msg: Optional[Imu] = None
        self._imu_ns = -1
        self._model: Optional[Tuple[Any, Any]] = None  # (pose, twist) of model_name
        self._model_clock_ns = -1                       # the clock when that model_states message arrived
        self._models_seen: Tuple[str, ...] = ()
        self._messages = 0
        self._last_message_wall = 0.0
        self._joint_order: Dict[Tuple[str, ...], List[int]] = {}
        self._services: Dict[str, Any] = {}
        self._pubs: List[rospy.Publisher] = []
        self._subs: List[rospy.Subscriber] = []
        self._use_imu = bool(params.imu_topic)
        self._topics = {"joint_states": params.topic(params.joint_states_topic),
                        "imu": params.topic(params.imu_topic) if self._use_imu else "",
                        "model_states": params.topic(params.model_states_topic),
                        "clock": params.topic(params.clock_topic)}
        try:
            self._connect(time.monotonic() + params.connect_timeout_s)
        except BaseException:
            self.close()
            raise

    # -- connection ----------------------------------------------------------------------------------------------
    def _connect(self, deadline: float) -> None:
        p = self.params
        for key, name in (("pause", p.pause_service), ("unpause", p.unpause_service),
                          ("reset_world", p.reset_world_service)):
            self._services[key] = self._proxy(name, deadline)
        # queue_size=None: rospy then writes each message to the socket before publish() returns, so every command
        # is on the wire before the unpause request is sent (rospy warns about a missing queue_size: intended).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            self._pubs = [rospy.Publisher(p.topic(p.command_topic, joint), Float64, queue_size=None, tcp_nodelay=True)
                          for joint in self._names]
        model_states = model_states_class()
        self._subs = [rospy.Subscriber(self._topics["clock"], Clock, self._on_clock, queue_size=10, tcp_nodelay=True),
                      rospy.Subscriber(self._topics["joint_states"], JointState, self._on_joints, queue_size=10,
                                       tcp_nodelay=True),
                      rospy.Subscriber(self._topics["model_states"], model_states, self._on_models, queue_size=10,
                                       tcp_nodelay=True)]
        if self._use_imu:
            self._subs.append(rospy.Subscriber(self._topics["imu"], Imu, self._on_imu, queue_size=10,
                                               tcp_nodelay=True))
        while True:
            missing = ["no subscriber on %s (controller not spawned?)" % pub.resolved_name
                       for pub in self._pubs if pub.get_num_connections() == 0]
            missing += ["no publisher on %s" % sub.resolved_name for sub in self._subs
                        if sub.get_num_connections() == 0]
            if not missing:
                return
            if time.monotonic() > deadline or rospy.is_shutdown():
                shown = "; ".join(missing[:4]) + ("; and %d more" % (len(missing) - 4) if len(missing) > 4 else "")
                raise GazeboBridgeError("Gazebo interfaces incomplete after %.1f s: %s. Is op3_gazebo (or "
                                        "gazebo_standin) running with these names?" % (p.connect_timeout_s, shown))
            time.sleep(0.02)

    def _proxy(self, name: str, deadline: float) -> rospy.ServiceProxy:
        try:
            rospy.wait_for_service(name, timeout=max(0.1, deadline - time.monotonic()))
        except rospy.ROSException as exc:  # ROSInterruptException is one too
            raise GazeboBridgeError("no service %s after %.1f s: is Gazebo (roslaunch op3_gazebo robotis_world.launch)"
                                    " or the stand-in (roslaunch op3_walk gazebo_standin.launch) running? (%s)"
                                    % (name, self.params.connect_timeout_s, exc)) from None
        return rospy.ServiceProxy(name, Empty, persistent=True)

    def _call(self, key: str) -> None:
        """Call a std_srvs/Empty service; on a broken persistent connection reconnect once (Gazebo restarted)."""
        proxy = self._services[key]
        try:
            proxy()
            return
        except (rospy.ServiceException, rospy.ROSException, OSError):
            proxy.close()
        name = proxy.resolved_name
        self._services[key] = proxy = self._proxy(name, time.monotonic() + self.params.connect_timeout_s)
        try:
            proxy()
        except (rospy.ServiceException, rospy.ROSException, OSError) as exc:
            raise GazeboBridgeError("service %s failed: %s" % (name, exc)) from exc

    # -- callbacks (rospy threads) -------------------------------------------------------------------------------
    def _received(self) -> None:
        self._messages += 1
        self._last_message_wall = time.monotonic()
        self._cond.notify_all()

    def _on_clock(self, msg: Clock) -> None:
        ns = msg.clock.to_nsec()
        with self._cond:
            if self._clock_ns is not None and ns < self._clock_ns:  # reset_simulation: time restarted
                self._joint_ns = self._imu_ns = self._model_clock_ns = -1
            self._clock_ns = ns
            self._received()

    def _on_joints(self, msg: JointState) -> None:
        with self._cond:
            self._joint_msg, self._joint_ns = msg, msg.header.stamp.to_nsec()
            self._received()

    def _on_imu(self, msg: Imu) -> None:
        with self._cond:
            self._imu_msg, self._imu_ns = msg, msg.header.stamp.to_nsec()
            self._received()

    def _on_models(self, msg: Any) -> None:
        with self._cond:
            self._models_seen = tuple(msg.name)
            try:
                i = msg.name.index(self.params.model_name)
            except ValueError:
                self._received()
                return
            self._model = (msg.pose[i], msg.twist[i])
            self._model_clock_ns = self._clock_ns if self._clock_ns is not None else -1
            self._received()

    # -- Backend -------------------------------------------------------------------------------------------------
    def reset(self, joint_positions: np.ndarray, base_position: Sequence[float],
              base_orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> RobotState:
        """reset_world (the model returns to its SPAWN pose: op3_gazebo spawns it upright at (0, 0, 0.285) m with
        every joint at 0 rad), then hold ``joint_positions`` as targets for ``reset_settle_s`` of simulated time
        and return that reading; its ``time`` is 0.  ``base_position`` / ``base_orientation`` cannot be applied
        through the stock interface (a warning is logged once when they ask for more than an upright robot at the
        origin)."""
        self._check_open()
        q = clamp_targets(joint_positions, self._lower, self._upper, self._names)
        position = np.asarray(base_position, dtype=np.float64)
        orientation = np.asarray(base_orientation, dtype=np.float64)
        if position.shape != (3,) or orientation.shape != (4,):
            raise ValueError("base_position needs 3 values and base_orientation 4 (x, y, z, w)")
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(orientation)) and np.any(orientation != 0.0)):
            raise ValueError("base pose must be finite with a non-zero quaternion")
        tilted = abs(abs(orientation[3]) / np.linalg.norm(orientation) - 1.0) > 1e-6
        if not self._pose_warned and (tilted or np.any(np.abs(position[:2]) > 1e-6)):
            self._pose_warned = True
            rospy.logwarn("gazebo bridge: reset asked for base pose %s %s; the stock Gazebo interface can only reset "
                          "to the spawn pose (reset_world), so the robot starts there (warned once)",
                          np.round(position, 4).tolist(), np.round(orientation, 4).tolist())
        self._call("pause")
        self._call("reset_world")
        self._targets = q
        self._previous_velocity = None
        reading = self._advance(int(round(self.params.reset_settle_s * NS_PER_S)))
        self._epoch_ns = reading["joint_ns"]
        return self._state(reading)

    def apply(self, joint_targets: np.ndarray) -> None:
        """Clamp and store the targets; they are published at the start of the next ``step`` (or ``reset``)."""
        self._check_open()
        self._targets = clamp_targets(joint_targets, self._lower, self._upper, self._names)

    def step(self) -> RobotState:
        """Advance one control period (and the overshoot, measured in ``stats``) and return the freshest reading."""
        self._check_open()
        if self._epoch_ns is None:
            raise RuntimeError("call reset() before step()")
        wall = time.perf_counter()
        reading = self._advance(self._period_ns)
        state = self._state(reading)
        s = self.stats
        overshoot = (reading["advanced_ns"] - self._period_ns) / NS_PER_S
        s.steps += 1
        s.last_overshoot_s = overshoot
        s.mean_overshoot_s += (overshoot - s.mean_overshoot_s) / s.steps
        s.max_overshoot_s = max(s.max_overshoot_s, overshoot) if s.steps > 1 else overshoot
        s.last_advanced_s = reading["advanced_ns"] / NS_PER_S
        s.last_reading_lag_s = (reading["end_ns"] - reading["joint_ns"]) / NS_PER_S
        s.last_step_wall_s = time.perf_counter() - wall
        s.mean_step_wall_s += (s.last_step_wall_s - s.mean_step_wall_s) / s.steps
        if s.steps >= 20 and not self._slow_warned and s.mean_overshoot_s > 0.5 * self.robot.control_period_s:
            self._slow_warned = True
            rospy.logwarn("gazebo bridge: each step overshoots by %.1f ms on average (period %.1f ms): the "
                          "simulation runs on while the pause request travels, and until joint_states%s stamped "
                          "after the period arrive; publish them at the physics rate (joint_state_controller "
                          "publish_rate: 1000) or slow the simulation (real-time factor) (warned once)",
                          s.mean_overshoot_s * 1e3, self.robot.control_period_s * 1e3,
                          " and the IMU" if self._use_imu else "")
        return state

    @property
    def last_overshoot_s(self) -> float:
        """Simulated time the last step ran beyond one control period, s."""
        return self.stats.last_overshoot_s

    @property
    def joint_targets(self) -> np.ndarray:
        """The position targets being commanded (rad, after clamping)."""
        return self._targets.copy()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            sub.unregister()
        for pub in self._pubs:
            pub.unregister()
        for proxy in self._services.values():
            proxy.close()
        self._subs, self._pubs, self._services = [], [], {}

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("GazeboBridgeBackend is closed")

    # -- stepping ------------------------------------------------------------------------------------------------
    def _missing(self, target_ns: Optional[int]) -> Optional[str]:
        """What the reading at ``target_ns`` still waits for (None: complete).  Call with ``_cond`` held."""
        if target_ns is None or self._clock_ns is None or self._clock_ns < target_ns:
            return "the clock (%s) to reach %s (now %s)" % (
                self._topics["clock"], "its first value + the period" if target_ns is None else
                "%.4f s" % (target_ns / NS_PER_S),
                "no message" if self._clock_ns is None else "%.4f s" % (self._clock_ns / NS_PER_S))
        if self._joint_ns < target_ns:
            return "%s stamped at or after %.4f s (newest: %s)" % (
                self._topics["joint_states"], target_ns / NS_PER_S,
                "none" if self._joint_msg is None else "%.4f s" % (self._joint_ns / NS_PER_S))
        if self._use_imu and self._imu_ns < target_ns:
            return "%s stamped at or after %.4f s (newest: %s)" % (
                self._topics["imu"], target_ns / NS_PER_S,
                "none" if self._imu_msg is None else "%.4f s" % (self._imu_ns / NS_PER_S))
        if self._model_clock_ns < target_ns:
            return "%s with model '%s' after the clock reached %.4f s (models seen: %s)" % (
                self._topics["model_states"], self.params.model_name, target_ns / NS_PER_S,
                ", ".join(self._models_seen) or "none")
        return None

    def _advance(self, duration_ns: int) -> Dict[str, Any]:
        """Publish the targets, run the simulation for at least ``duration_ns``, pause, settle; the reading."""
        p = self.params
        with self._cond:
            start_ns = self._clock_ns  # None: Gazebo has not published its clock yet (paused since start-up)
        for pub, value in zip(self._pubs, self._targets):
            pub.publish(Float64(float(value)))
        self._call("unpause")
        try:
            deadline = time.monotonic() + p.step_timeout_s
            with self._cond:
                while True:
                    if start_ns is None and self._clock_ns is not None:
                        start_ns = self._clock_ns
                    target = None if start_ns is None else start_ns + duration_ns
                    missing = self._missing(target)
                    if missing is None:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0.0 or rospy.is_shutdown():
                        raise GazeboBridgeError("simulation stalled: waited %.1f s for %s" % (p.step_timeout_s,
                                                                                         missing))
                    self._cond.wait(min(left, 0.5))
        finally:
            self._call("pause")  # leave Gazebo paused, also after a failure
        # The pause stops publishing; messages sent just before it may still be in flight: wait for a quiet spell.
        with self._cond:
            messages = self._messages
            limit = time.monotonic() + 0.1 + 10.0 * p.settle_s  # bounded, in case someone else unpaused Gazebo
            while True:
                now = time.monotonic()
                quiet = now - self._last_message_wall
                if quiet >= p.settle_s or now >= limit:
                    break
                self._cond.wait(min(p.settle_s - quiet, limit - now))
            self.stats.settle_messages += self._messages - messages
            end_ns = max(self._clock_ns, self._joint_ns, self._imu_ns)
            return {"joint": self._joint_msg, "joint_ns": self._joint_ns, "imu": self._imu_msg if self._use_imu
                    else None, "model": self._model, "end_ns": end_ns, "advanced_ns": end_ns - start_ns}

    # -- reading -> RobotState -----------------------------------------------------------------------------------
    def _state(self, reading: Dict[str, Any]) -> RobotState:
        joints: JointState = reading["joint"]
        key = tuple(joints.name)
        order = self._joint_order.get(key)
        if order is None:
            index = {name: i for i, name in enumerate(joints.name)}
            absent = [n for n in self._names if n not in index]
            if absent:
                raise GazeboBridgeError("%s lacks joint(s): %s" % (self._topics["joint_states"], ", ".join(absent)))
            order = self._joint_order[key] = [index[n] for n in self._names]

        def pick(values: Sequence[float]) -> np.ndarray:
            return np.array([values[i] for i in order], dtype=np.float64) if len(values) == len(key) \
                else np.zeros(len(order))

        q = pick(joints.position)
        pose, twist = reading["model"]
        position = np.array([pose.position.x, pose.position.y, pose.position.z])
        orientation = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
        orientation = orientation / np.linalg.norm(orientation)
        rotation = quat_to_matrix(orientation)
        velocity = np.array([twist.linear.x, twist.linear.y, twist.linear.z])
        imu: Optional[Imu] = reading["imu"]
        if imu is not None:
            gyro = np.array([imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z])
            specific_force = np.array([imu.linear_acceleration.x, imu.linear_acceleration.y,
                                       imu.linear_acceleration.z])
        else:
            gyro = rotation.T.dot([twist.angular.x, twist.angular.y, twist.angular.z])
            accel = np.zeros(3)
            if self._previous_velocity is not None and reading["joint_ns"] > self._previous_velocity[0]:
                accel = (velocity - self._previous_velocity[1]) / (
                    (reading["joint_ns"] - self._previous_velocity[0]) / NS_PER_S)
            specific_force = rotation.T.dot(accel + (0.0, 0.0, STANDARD_GRAVITY))
            self._previous_velocity = (reading["joint_ns"], velocity)
        foot_positions, foot_orientations, contacts = [], [], []
        for (foot_position, foot_rotation), corners in zip(self._kinematics.foot_poses(q), self._soles):
            world_rotation = rotation.dot(foot_rotation)
            world_position = position + rotation.dot(foot_position)
            lowest = float(np.min(world_position[2] + corners.dot(world_rotation[2])))
            foot_positions.append(world_position)
            foot_orientations.append(matrix_to_quaternion(world_rotation))
            contacts.append(lowest < self.params.contact_height)
        epoch = self._epoch_ns if self._epoch_ns is not None else reading["joint_ns"]
        return RobotState(
            time=(reading["joint_ns"] - epoch) / NS_PER_S,
            joint_positions=q,
            joint_velocities=pick(joints.velocity),
            joint_efforts=pick(joints.effort),
            base_position=position,
            base_orientation=orientation,
            base_linear_velocity=velocity,
            base_angular_velocity=gyro,
            linear_acceleration=specific_force,
            foot_contacts=np.array(contacts, dtype=bool),
            foot_positions=np.array(foot_positions),
            foot_orientations=np.array(foot_orientations),
        )
