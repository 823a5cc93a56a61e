"""``Op3FrameworkBackend``: the REAL ROBOTIS OP3, driven through the ROBOTIS framework (``op3_manager``).

Nothing of ours runs on the robot's controller: the backend speaks the topics ``op3_manager`` (robotis_controller,
8 ms = 125 Hz cycle) already serves.  Every name is an ``Op3FrameworkParams`` field:

  publishes  /robotis/set_control_mode        std_msgs/String "MotionModuleMode" (once, at start-up)
             /robotis/enable_ctrl_module      std_msgs/String "none": no motion module owns any joint (start-up)
             /robotis/set_joint_states        sensor_msgs/JointState: goal positions of all 20 joints, rad, one
                                              message per ``step`` (NEVER /robotis/direct_control/set_joint_states)
             /robotis/sync_write_item         robotis_controller_msgs/SyncWriteItem "torque_enable" 0/1 (relax/reset)
  subscribes /robotis/present_joint_states    sensor_msgs/JointState, every cycle: the servos' state
             /robotis/goal_joint_states       sensor_msgs/JointState, every cycle: the goals the framework writes
             /robotis/open_cr/imu             sensor_msgs/Imu, every cycle (OpenCR sensor module)
             /robotis/present_joint_ctrl_modules  robotis_controller_msgs/JointCtrlModule: confirms the selection

It was tested over ROS against ``op3_standin`` (a PyBullet node serving exactly these topics, see
``op3_walk.ros.op3_standin``), NOT against the robot.  robotis_controller_msgs is not packaged where this is
developed: its two messages are generated at run time from their published definitions (same type and md5, so they
talk to the real framework).

The framework, as read in its source (public repositories; what could not be confirmed is said so)
-------------------------------------------------------------------------------------------------
* robotis_controller.cpp (ROBOTIS-GIT/ROBOTIS-Framework, robotis_controller/src/robotis_controller/; the same file
  vendored at ROBOTIS-Framework 0.2.9 in andy-Chien/dual_arm_RL_motion, ROBOTIS/ROBOTIS-Framework/...; and its
  ROS 2 port): ``setJointStatesCallback`` takes a ``/robotis/set_joint_states`` position for a joint when the
  controller is in ``DirectControlMode``, OR in ``MotionModuleMode`` (the default) while that joint's module is
  ``"none"``; it stores it as the joint's goal and changes the position sync-write parameter (adding the joint's
  offset).  ``process()`` (every 8 ms, a SCHED_RR timer thread) transmits that position sync write every cycle in
  MotionModuleMode; in DirectControlMode the transmission is commented out in every version read, so goals sent
  there are echoed on goal_joint_states but would NOT reach the servos.  Hence this backend selects
  ``MotionModuleMode`` (``/robotis/set_control_mode`` accepts exactly "DirectControlMode" / "MotionModuleMode";
  anything else, e.g. "direct_control_mode" as in ROBOTIS-OP3 issue #56, is ignored) and the module ``"none"``
  (``/robotis/enable_ctrl_module``: ``setCtrlModuleThread`` stops every running module, waits for it to finish, sets
  every joint to "none" and publishes ``/robotis/present_joint_ctrl_modules``, which the backend waits for).  Each
  goal then reaches the servos at the next framework cycle, unfiltered: a 50 Hz policy runs at its own rate.
  CAVEAT: the ROBOTIS-GIT revision in the searched index (54215488) still has an older callback that returns unless
  in DirectControlMode; with such a build the goals would be ignored.  The backend detects that: after the reset
  ramp it checks that ``/robotis/goal_joint_states`` echoes its goals (``check_goal_echo``) and raises otherwise.
* ``/robotis/direct_control/set_joint_states`` goes to op3_direct_control_module (ROBOTIS-GIT/ROBOTIS-OP3,
  op3_direct_control_module/src/direct_control_module.cpp), which turns every message into a minimum-jerk
  trajectory of at least 0.5 s (longer at 30 deg/s): a policy must never be sent there, and this backend never
  publishes on it (``set_joint_states_topic`` may not name it).
* present_joint_states / goal_joint_states: one message per cycle, stamped ``ros::Time::now()`` at the cycle's
  start, joints in ``std::map`` (alphabetical) order: position = present position in rad (offset removed),
  velocity = present velocity in rad/s, effort = ``present_torque_`` = raw Present Current divided by the device
  file's ``torque_to_current_value_ratio`` (robotis_device dynamixel.cpp ``convertValue2Torque``: N·m by a linear
  current model).  BUT velocity and current are only updated when they are bulk-read items, and the stock
  op3_manager/config/OP3.robot bulk-reads ``present_position, hardware_error_status`` only: with it both read 0.
  So joint velocities are by default the difference of consecutive present positions over their stamps
  (``velocity_source: difference``); efforts are passed through as published (0 with the stock OP3.robot; N·m
  estimated from current if present_current is added to the bulk-read items).
* IMU (ROBOTIS-GIT/ROBOTIS-OP3 open_cr_module/src/open_cr_module.cpp ``fusionIMU``): ``/robotis/open_cr/imu``,
  frame_id ``body_link``, published every cycle; gyro rad/s (x, y negated from the chip to align with the robot),
  linear_acceleration = accelerometer in g (x, y negated) times 9.80665 m/s^2, i.e. the SPECIFIC FORCE (+9.8 on z
  when upright), both low-passed (alpha 0.4 per cycle); orientation = roll and pitch computed from that filtered
  accelerometer, yaw always 0.  Roll = atan2(f_y, f_z) and pitch = atan2(-f_x, |f_yz|) are the REP 103 body-frame
  (x forward, y left, z up) formulas, so the message is used as is: gyro and specific force in the body frame,
  orientation = tilt only.  Not confirmable from code: the physical mounting of the OpenCR board (the signs were
  read, not measured).
* Torque (ROBOTIS-OP3-Demo op3_read_write_demo read_write.cpp ``torqueOff``; robotis_controller
  ``syncWriteItemCallback``): ``/robotis/sync_write_item`` with item_name "torque_enable", the joint names and
  values 0 (off) / 1 (on); it is queued as a direct sync write and sent at the next cycle in either mode.  (op3_manager
  also subscribes ``/robotis/dxl_torque`` (std_msgs/String), which only turns torque back ON after re-initialising
  the servos; it is not used.)  The Dynamixels keep their Goal Position register, which the framework rewrites every
  cycle: turning torque back on drives each joint to its current goal at once, so ``reset`` first sets the goals to
  the present (limp) pose, then turns torque on, then ramps.

What a real robot cannot do, and what this backend therefore returns
---------------------------------------------------------------------
* Real time only.  ``step`` publishes the goals, then waits until one control period of WALL time has passed since
  the previous step's deadline (a fixed-rate clock started by ``reset``) and returns the first
  present_joint_states (and IMU) message that arrived after it.  The robot cannot be paused: the controller must run
  this backend in mode ``realtime``.  A caller slower than the period loses time (counted in ``stats``); a framework
  silent for ``step_timeout_s`` is an ``Op3FrameworkError`` naming the topic, never a hang.
* ``reset`` cannot teleport.  It ramps the goals (minimum-jerk profile) from the goals the framework currently holds
  (goal_joint_states; the present pose if none) to ``joint_positions`` over ``max(reset_duration_s, largest joint
  move / reset_max_speed)`` s, holds them ``reset_hold_s`` s and returns that reading with time 0.
  ``base_position`` / ``base_orientation`` cannot be applied (warned once).  The robot should be standing (or held)
  when it is called.
* Base pose: orientation = the IMU's tilt (yaw 0); x, y = 0 (unknown); z = estimated from the leg kinematics and
  that tilt, assuming the lowest sole corner rests on flat ground at z = 0 (``estimate_height: false`` gives 0, but
  the walking task's fall check reads it); linear velocity = 0 (unknown).  Foot contacts come from the same
  kinematics: a foot touches when its lowest corner is within ``contact_height`` of the lowest corner of both feet
  (so at least one foot always does: a real flight phase or a fall is not detected from contacts; the tilt is).
  ``foot_positions`` / ``foot_orientations`` are in that torso-centred frame; the privileged ``com_*``,
  ``foot_forces`` and ``center_of_pressure`` are None.
* ``relax`` turns torque off on every joint (the robot goes limp and falls if standing); ``close`` does NOT (the
  robot keeps holding its last goals).  ``set_dynamics``, ``push``, ``render_rgb``: NotImplementedError.

Needs ``rospy.init_node`` to have been called.  Never imports torch.
"""
import dataclasses
import math
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rospy
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import String

from op3_walk.backends.base import Backend, RobotState, clamp_targets, quat_to_matrix
from op3_walk.config import doc
from op3_walk.robots.description import RobotConfig
from op3_walk.robots.kinematics import GroundEstimator

DIRECT_CONTROL_TOPIC = "/robotis/direct_control/set_joint_states"  # op3_direct_control_module: never used here
FRAMEWORK_CYCLE_S = 0.008  # robotis_controller's control_cycle in op3_manager/config/OP3.robot

# robotis_controller_msgs definitions as published by ROBOTIS (emanual.robotis.com, robotis_controller_msgs popups).
ROBOTIS_MESSAGES = {
    "robotis_controller_msgs/SyncWriteItem": "string item_name\nstring[] joint_name\nuint32[] value\n",
    "robotis_controller_msgs/JointCtrlModule": "string[] joint_name\nstring[] module_name\n",
}
_ROBOTIS_CLASSES: Dict[str, Any] = {}


def robotis_message_class(type_name: str) -> Any:
    """``robotis_controller_msgs.msg.<Name>`` when installed, else an identical class generated from its definition
    (genpy computes the md5 from the text, so it matches the real message's)."""
    cls = _ROBOTIS_CLASSES.get(type_name)
    if cls is not None:
        return cls
    definition = ROBOTIS_MESSAGES[type_name]
    try:
        import importlib
        module = importlib.import_module("robotis_controller_msgs.msg")
        cls = getattr(module, type_name.split("/")[1])
    except (ImportError, AttributeError):
        import genpy.dynamic
        cls = genpy.dynamic.generate_dynamic(type_name, definition)[type_name]
    _ROBOTIS_CLASSES[type_name] = cls
    return cls


class Op3FrameworkError(RuntimeError):
    """The framework (op3_manager or the stand-in) is missing, refused the mode or stopped answering; the message
    names the topic."""


@dataclasses.dataclass
class Op3FrameworkParams:
    """How to reach op3_manager: the stock ROBOTIS names by default."""

    set_joint_states_topic: str = doc("sensor_msgs/JointState goal positions, applied by robotis_controller at its "
                                      "next cycle for joints whose module is 'none'", "/robotis/set_joint_states")
    present_joint_states_topic: str = doc("sensor_msgs/JointState published every framework cycle: the servos' "
                                          "present state", "/robotis/present_joint_states")
    goal_joint_states_topic: str = doc("sensor_msgs/JointState published every framework cycle: the goals written "
                                       "to the servos", "/robotis/goal_joint_states")
    imu_topic: str = doc("sensor_msgs/Imu of the OpenCR board, body_link frame (gyro rad/s, specific force m/s^2, "
                         "tilt-only orientation)", "/robotis/open_cr/imu")
    control_mode_topic: str = doc("std_msgs/String topic selecting the controller mode", "/robotis/set_control_mode")
    control_mode: str = doc("controller mode sent at start-up (robotis_controller accepts exactly MotionModuleMode "
                            "or DirectControlMode; set_joint_states goals reach the servos only in MotionModuleMode); "
                            "empty = send nothing", "MotionModuleMode")
    enable_ctrl_module_topic: str = doc("std_msgs/String topic giving every joint to one motion module",
                                        "/robotis/enable_ctrl_module")
    ctrl_module: str = doc("module sent at start-up: 'none' = no module writes goals, set_joint_states does",
                           "none")
    present_ctrl_modules_topic: str = doc("robotis_controller_msgs/JointCtrlModule topic on which the framework "
                                          "confirms the module of every joint; empty = do not wait for it",
                                          "/robotis/present_joint_ctrl_modules")
    sync_write_item_topic: str = doc("robotis_controller_msgs/SyncWriteItem topic (torque on/off); empty = relax() "
                                     "is not available", "/robotis/sync_write_item")
    torque_item: str = doc("control-table item switching a servo's torque", "torque_enable")
    velocity_source: str = doc("joint velocities: 'difference' of consecutive present positions (the stock "
                               "OP3.robot does not bulk-read present_velocity, so the framework publishes 0) or "
                               "'framework' (as published)", "difference")
    connect_timeout_s: float = doc("wall time to connect every topic and receive the first readings, s", 10.0)
    mode_timeout_s: float = doc("wall time for the framework to confirm the module selection, s (it first waits "
                                "for running modules, e.g. walking, to finish)", 10.0)
    step_timeout_s: float = doc("wall time a step waits for a fresh reading after its period before the framework "
                                "counts as stopped, s", 0.5)
    reset_duration_s: float = doc("shortest duration of the reset ramp from the current goals to the requested "
                                  "joint positions, s", 2.0)
    reset_max_speed: float = doc("fastest joint speed of the reset ramp, rad/s (a longer move takes longer)", 0.5)
    reset_hold_s: float = doc("time the requested pose is held after the ramp, before the first reading, s", 0.5)
    check_goal_echo: bool = doc("after the reset ramp, check that goal_joint_states shows the requested goals (a "
                                "framework that ignores set_joint_states is an error instead of a silent robot)",
                                True)
    goal_echo_tolerance: float = doc("largest accepted difference between a goal sent and its echo, rad", 0.01)
    estimate_height: bool = doc("base z from leg kinematics and IMU tilt (lowest sole on flat ground at z = 0); "
                                "false = 0 (unknown)", True)
    contact_height: float = doc("a foot is in contact when its lowest sole corner is within this height of the "
                                "lowest corner of both feet, m", 0.01)

    def validate(self) -> None:
        for name in ("set_joint_states_topic", "present_joint_states_topic", "goal_joint_states_topic", "imu_topic",
                     "enable_ctrl_module_topic"):
            if not getattr(self, name):
                raise ValueError("%s must not be empty" % name)
        if self.set_joint_states_topic.rstrip("/").endswith("direct_control/set_joint_states"):
            raise ValueError("set_joint_states_topic %r is op3_direct_control_module's input, which interpolates "
                             "every command over >= 0.5 s: a policy must not be sent there"
                             % self.set_joint_states_topic)
        if self.control_mode not in ("", "MotionModuleMode", "DirectControlMode"):
            raise ValueError("control_mode must be MotionModuleMode, DirectControlMode or empty, got %r"
                             % self.control_mode)
        if self.velocity_source not in ("difference", "framework"):
            raise ValueError("velocity_source must be 'difference' or 'framework', got %r" % self.velocity_source)
        for name in ("connect_timeout_s", "mode_timeout_s", "step_timeout_s", "reset_duration_s", "reset_max_speed"):
            if not getattr(self, name) > 0.0:
                raise ValueError("%s must be positive" % name)
        for name in ("reset_hold_s", "goal_echo_tolerance", "contact_height"):
            if not getattr(self, name) >= 0.0:
                raise ValueError("%s must be >= 0" % name)


@dataclasses.dataclass
class Op3FrameworkStats:
    """What real-time stepping costs, for diagnostics.  Times in s."""

    steps: int = 0
    last_reading_lag_s: float = 0.0   # arrival of the reading used minus the step's deadline (<= one cycle normally)
    mean_reading_lag_s: float = 0.0
    max_reading_lag_s: float = 0.0
    late_steps: int = 0               # steps called more than a period after their deadline (the caller was slow)
    last_message_age_s: float = 0.0   # present_joint_states: arrival (wall) minus its stamp
    max_message_age_s: float = 0.0
    late_messages: int = 0            # present_joint_states older than one framework cycle on arrival
    cycle_gaps: int = 0               # present_joint_states stamps more than 1.5 framework cycles apart
    mean_cycle_s: float = 0.0         # mean interval between present_joint_states stamps
    messages: int = 0                 # present_joint_states received
    goal_echo_error: float = 0.0      # rad: largest |goal sent - goal_joint_states| at the last reset check

    def values(self) -> Dict[str, Any]:
        """Flat ``{label with unit: value}`` for a DiagnosticStatus."""
        return {"steps": self.steps, "reading lag last [ms]": self.last_reading_lag_s * 1e3,
                "reading lag mean [ms]": self.mean_reading_lag_s * 1e3,
                "reading lag max [ms]": self.max_reading_lag_s * 1e3,
                "late steps": self.late_steps,
                "message age last [ms]": self.last_message_age_s * 1e3,
                "message age max [ms]": self.max_message_age_s * 1e3,
                "late messages": self.late_messages, "framework cycle gaps": self.cycle_gaps,
                "framework cycle mean [ms]": self.mean_cycle_s * 1e3,
                "goal echo error [rad]": self.goal_echo_error}


def min_jerk(s: float) -> float:
    """Minimum-jerk blend 0 -> 1 for s in [0, 1] (zero velocity and acceleration at both ends)."""
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (10.0 + s * (-15.0 + 6.0 * s))


class Op3FrameworkBackend(Backend):
    """The real OP3 through op3_manager (or the stand-in), in real time; see the module docstring."""

    def __init__(self, robot: RobotConfig, params: Optional[Op3FrameworkParams] = None):
        if not rospy.core.is_initialized():
            raise Op3FrameworkError("Op3FrameworkBackend needs a ROS node: call rospy.init_node() first")
        self.robot = robot
        self.params = params = params if params is not None else Op3FrameworkParams()
        params.validate()
        self._names = list(robot.joint_names)
        self._lower, self._upper = robot.lower, robot.upper
        self._period = robot.control_period_s
        self._ground = GroundEstimator(robot, params.contact_height)
        self._targets = robot.stance.copy()
        self.stats = Op3FrameworkStats()
        self._closed = False
        self._relaxed = False
        self._pose_warned = False
        self._epoch: Optional[float] = None          # present_joint_states stamp of the reset reading, s
        self._deadline: Optional[float] = None       # monotonic time of the next step's reading
        self._previous: Optional[Tuple[float, np.ndarray]] = None  # (stamp s, q) for difference velocities
        self._cycles = 0                             # goal publications followed by a reading (steps and resets)
        # Latest messages, guarded by _cond; every callback notifies it.
        self._cond = threading.Condition()
        self._present: Optional[JointState] = None
        self._present_wall = -math.inf               # monotonic arrival time of _present
        self._present_stamp: Optional[float] = None
        self._goal: Optional[JointState] = None
        self._imu: Optional[Imu] = None
        self._imu_wall = -math.inf
        self._modules: Optional[Dict[str, str]] = None  # joint -> module, from the last JointCtrlModule message
        self._modules_messages = 0
        self._orders: Dict[Tuple[str, ...], List[int]] = {}
        self._pubs: Dict[str, rospy.Publisher] = {}
        self._subs: List[rospy.Subscriber] = []
        try:
            self._connect(time.monotonic() + params.connect_timeout_s)
            self._select_mode()
        except BaseException:
            self.close()
            raise

    # -- connection ----------------------------------------------------------------------------------------------
    def _connect(self, deadline: float) -> None:
        p = self.params
        # queue_size=None: publish() writes to the socket before it returns (rospy warns about it: intended).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            self._pubs["goal"] = rospy.Publisher(p.set_joint_states_topic, JointState, queue_size=None,
                                                 tcp_nodelay=True)
            self._pubs["module"] = rospy.Publisher(p.enable_ctrl_module_topic, String, queue_size=None)
            if p.control_mode:
                self._pubs["mode"] = rospy.Publisher(p.control_mode_topic, String, queue_size=None)
            if p.sync_write_item_topic:
                self._pubs["sync_write"] = rospy.Publisher(
                    p.sync_write_item_topic, robotis_message_class("robotis_controller_msgs/SyncWriteItem"),
                    queue_size=None)
        self._subs = [rospy.Subscriber(p.present_joint_states_topic, JointState, self._on_present, queue_size=10,
                                       tcp_nodelay=True),
                      rospy.Subscriber(p.goal_joint_states_topic, JointState, self._on_goal, queue_size=10,
                                       tcp_nodelay=True),
                      rospy.Subscriber(p.imu_topic, Imu, self._on_imu, queue_size=10, tcp_nodelay=True)]
        if p.present_ctrl_modules_topic:
            self._subs.append(rospy.Subscriber(
                p.present_ctrl_modules_topic, robotis_message_class("robotis_controller_msgs/JointCtrlModule"),
                self._on_modules, queue_size=10))
        while True:
            missing = ["no subscriber on %s" % pub.resolved_name for pub in self._pubs.values()
                       if pub.get_num_connections() == 0]
            missing += ["no publisher on %s" % sub.resolved_name for sub in self._subs
                        if sub.get_num_connections() == 0]
            if not missing:
                with self._cond:
                    if self._present is None:
                        missing.append("no message yet on %s" % p.present_joint_states_topic)
                    if self._imu is None:
                        missing.append("no message yet on %s" % p.imu_topic)
            if not missing:
                return
            if time.monotonic() > deadline or rospy.is_shutdown():
                shown = "; ".join(missing)
                raise Op3FrameworkError("ROBOTIS framework interfaces incomplete after %.1f s: %s. Is op3_manager "
                                        "(roslaunch op3_manager op3_manager.launch) or the stand-in (roslaunch "
                                        "op3_walk op3_standin.launch) running with these names?"
                                        % (p.connect_timeout_s, shown))
            time.sleep(0.02)

    def _select_mode(self) -> None:
        """Controller mode and module 'none' for every joint; waits for the framework's confirmation."""
        p = self.params
        with self._cond:
            seen = self._modules_messages
        if p.control_mode:
            self._pubs["mode"].publish(String(p.control_mode))
        self._pubs["module"].publish(String(p.ctrl_module))
        if not p.present_ctrl_modules_topic:
            time.sleep(4 * FRAMEWORK_CYCLE_S)  # nothing confirms it: give the framework a few cycles
            return
        deadline = time.monotonic() + p.mode_timeout_s
        with self._cond:
            while True:
                if self._modules_messages > seen and not self._wrong_modules():
                    rospy.loginfo("op3 framework: %s, every joint on module '%s'", p.control_mode or "mode unchanged",
                                  p.ctrl_module)
                    return
                left = deadline - time.monotonic()
                if left <= 0.0 or rospy.is_shutdown():
                    wrong = self._wrong_modules() if self._modules is not None else []
                    raise Op3FrameworkError(
                        "the framework did not confirm module '%s' on %s within %.1f s (%s)"
                        % (p.ctrl_module, p.present_ctrl_modules_topic, p.mode_timeout_s,
                           "no message" if self._modules_messages <= seen else
                           "joints on other modules: " + ", ".join("%s=%s" % jm for jm in wrong[:6])))
                self._cond.wait(min(left, 0.1))

    def _wrong_modules(self) -> List[Tuple[str, str]]:
        """(joint, module) of our joints not on ``ctrl_module`` per the last report.  Call with ``_cond`` held."""
        want = self.params.ctrl_module or "none"
        modules = self._modules or {}
        return [(j, modules.get(j, "absent")) for j in self._names if modules.get(j) != want]

    # -- callbacks (rospy threads) -------------------------------------------------------------------------------
    def _on_present(self, msg: JointState) -> None:
        arrival, wall = time.monotonic(), time.time()
        stamp = msg.header.stamp.to_sec()
        with self._cond:
            s = self.stats
            s.messages += 1
            s.last_message_age_s = wall - stamp
            s.max_message_age_s = max(s.max_message_age_s, s.last_message_age_s)
            if s.last_message_age_s > FRAMEWORK_CYCLE_S:
                s.late_messages += 1
            if self._present_stamp is not None and stamp > self._present_stamp:
                interval = stamp - self._present_stamp
                if interval > 1.5 * FRAMEWORK_CYCLE_S:
                    s.cycle_gaps += 1
                s.mean_cycle_s += (interval - s.mean_cycle_s) / min(s.messages, 1000)
            self._present, self._present_wall, self._present_stamp = msg, arrival, stamp
            self._cond.notify_all()

    def _on_goal(self, msg: JointState) -> None:
        with self._cond:
            self._goal = msg
            self._cond.notify_all()

    def _on_imu(self, msg: Imu) -> None:
        with self._cond:
            self._imu, self._imu_wall = msg, time.monotonic()
            self._cond.notify_all()

    def _on_modules(self, msg: Any) -> None:
        with self._cond:
            self._modules = dict(zip(msg.joint_name, msg.module_name))
            self._modules_messages += 1
            self._cond.notify_all()

    # -- Backend -------------------------------------------------------------------------------------------------
    def reset(self, joint_positions: np.ndarray, base_position: Sequence[float],
              base_orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> RobotState:
        """Ramp the goals to ``joint_positions`` and hold them (see the module docstring); the reading has time 0.
        Re-selects the module if someone changed it, and turns torque back on after ``relax``."""
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
            rospy.logwarn("op3 framework: reset asked for base pose %s %s; a real robot cannot be placed, only its "
                          "joints are ramped (warned once)", np.round(position, 4).tolist(),
                          np.round(orientation, 4).tolist())
        with self._cond:
            reselect = self.params.present_ctrl_modules_topic and self._modules is not None and self._wrong_modules()
        if reselect:
            rospy.logwarn("op3 framework: joints left module '%s' (%s): selecting it again", self.params.ctrl_module,
                          ", ".join("%s=%s" % jm for jm in reselect[:4]))
            self._select_mode()
        self._deadline = None
        if self._relaxed:
            self._torque_on()
        start = self._current_goals()
        move = float(np.max(np.abs(q - start)))
        duration = max(self.params.reset_duration_s, move / self.params.reset_max_speed)
        ramp_steps = max(1, int(math.ceil(duration / self._period)))
        hold_steps = int(math.ceil(self.params.reset_hold_s / self._period))
        reading = None
        for i in range(1, ramp_steps + hold_steps + 1):
            self._targets = start + (q - start) * min_jerk(i / float(ramp_steps))
            reading = self._cycle()
        self._targets = q
        if self.params.check_goal_echo:
            self._check_echo(q)
        self._epoch = reading["stamp"]
        self._previous = None
        return self._state(reading)

    def apply(self, joint_targets: np.ndarray) -> None:
        """Clamp and store the targets; they are published at the start of the next ``step``."""
        self._check_open()
        self._targets = clamp_targets(joint_targets, self._lower, self._upper, self._names)

    def step(self) -> RobotState:
        """Publish the goals, wait one control period of wall time, return the freshest reading."""
        self._check_open()
        if self._epoch is None:
            raise RuntimeError("call reset() before step()")
        reading = self._cycle()
        self.stats.steps += 1
        return self._state(reading)

    def relax(self) -> None:
        """Torque off on every joint through the framework (the robot goes limp: hold it).  Steps still read the
        robot (their goals follow the limp pose); the next ``reset`` turns torque back on."""
        self._check_open()
        if "sync_write" not in self._pubs:
            raise NotImplementedError("relax needs sync_write_item_topic (robotis_controller's /robotis/"
                                      "sync_write_item); it is empty")
        self._torque(0)
        self._relaxed = True
        rospy.logwarn("op3 framework: torque OFF on all %d joints", len(self._names))

    @property
    def relaxed(self) -> bool:
        """True between ``relax`` and the next ``reset``."""
        return self._relaxed

    @property
    def joint_targets(self) -> np.ndarray:
        """The goal positions being commanded (rad, after clamping)."""
        return self._targets.copy()

    def close(self) -> None:
        """Stop talking to the framework; the robot keeps holding its last goals (torque is not switched off)."""
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            sub.unregister()
        for pub in self._pubs.values():
            pub.unregister()
        self._subs, self._pubs = [], {}

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Op3FrameworkBackend is closed")

    # -- stepping ------------------------------------------------------------------------------------------------
    def _publish_goals(self, goals: np.ndarray) -> None:
        msg = JointState()
        msg.header.stamp = rospy.Time.from_sec(time.time())
        msg.name = self._names
        msg.position = [float(v) for v in goals]
        self._pubs["goal"].publish(msg)

    def _cycle(self) -> Dict[str, Any]:
        """Publish the goals, wait for the deadline (one period after the previous one), then for a present
        reading (and an IMU message) that arrived after it."""
        p = self.params
        if self._relaxed:
            with self._cond:
                limp = self._order_positions(self._present)
            self._publish_goals(limp)  # torque off: goals follow the pose, so torque-on will not jump
        else:
            self._publish_goals(self._targets)
        now = time.monotonic()
        if self._deadline is None:
            deadline = now + self._period
        else:
            deadline = self._deadline
            if now > deadline + self._period:
                self.stats.late_steps += 1
                deadline = now
        delay = deadline - time.monotonic()
        if delay > 0.0:
            time.sleep(delay)
        limit = deadline + p.step_timeout_s
        with self._cond:
            while self._present_wall < deadline or self._imu_wall < deadline:
                left = limit - time.monotonic()
                if left <= 0.0 or rospy.is_shutdown():
                    now = time.monotonic()
                    stale = [(topic, now - wall) for topic, wall in
                             ((p.present_joint_states_topic, self._present_wall), (p.imu_topic, self._imu_wall))
                             if wall < deadline]
                    raise Op3FrameworkError("the framework stopped publishing: nothing new on %s for %.2f s "
                                            "after the step's period (newest %s)"
                                            % (", ".join(t for t, _ in stale), p.step_timeout_s,
                                               ", ".join("%.0f ms old" % (1e3 * age) for _, age in stale)))
                self._cond.wait(min(left, 0.05))
            reading = {"present": self._present, "stamp": self._present_stamp, "imu": self._imu,
                       "lag": self._present_wall - deadline}
        self._deadline = deadline + self._period
        s = self.stats
        self._cycles += 1
        s.last_reading_lag_s = reading["lag"]
        s.mean_reading_lag_s += (reading["lag"] - s.mean_reading_lag_s) / min(self._cycles, 1000)
        s.max_reading_lag_s = max(s.max_reading_lag_s, reading["lag"])
        return reading

    def _current_goals(self) -> np.ndarray:
        """The goals the framework holds now (goal_joint_states), else the present pose, in robot order."""
        with self._cond:
            msg = self._goal if self._goal is not None else self._present
            return self._order_positions(msg)

    def _torque(self, value: int) -> None:
        msg = robotis_message_class("robotis_controller_msgs/SyncWriteItem")()
        msg.item_name = self.params.torque_item
        msg.joint_name = list(self._names)
        msg.value = [int(value)] * len(self._names)
        self._pubs["sync_write"].publish(msg)

    def _torque_on(self) -> None:
        """Goals to the present (limp) pose first, so the servos do not jump when their torque comes back."""
        for _ in range(2):
            self._cycle()  # _relaxed: publishes the present pose as goals
        self._torque(1)
        self._relaxed = False
        with self._cond:
            self._targets = self._order_positions(self._present)
        for _ in range(2):
            self._cycle()
        rospy.loginfo("op3 framework: torque ON on all %d joints", len(self._names))

    def _check_echo(self, q: np.ndarray) -> None:
        """goal_joint_states must show ``q``: else the framework is ignoring set_joint_states."""
        p = self.params
        with self._cond:
            goal = self._goal
        if goal is None:
            raise Op3FrameworkError("no message on %s: cannot check that the goals reach the servos (set "
                                    "check_goal_echo: false to skip)" % p.goal_joint_states_topic)
        echo = self._order_positions(goal)
        error = float(np.max(np.abs(echo - q)))
        self.stats.goal_echo_error = error
        if error > p.goal_echo_tolerance:
            worst = self._names[int(np.argmax(np.abs(echo - q)))]
            raise Op3FrameworkError(
                "the framework is not applying %s: %s shows goals up to %.3f rad away from those sent (%s). Are the "
                "joints on module 'none' in MotionModuleMode (check %s), and is robotis_controller recent enough to "
                "accept set_joint_states outside DirectControlMode?"
                % (p.set_joint_states_topic, p.goal_joint_states_topic, error, worst,
                   p.present_ctrl_modules_topic or "/robotis/present_joint_ctrl_modules"))

    # -- reading -> RobotState -----------------------------------------------------------------------------------
    def _order(self, msg: JointState) -> List[int]:
        key = tuple(msg.name)
        order = self._orders.get(key)
        if order is None:
            index = {name: i for i, name in enumerate(msg.name)}
            absent = [n for n in self._names if n not in index]
            if absent:
                raise Op3FrameworkError("a framework JointState lacks joint(s): %s (it has: %s)"
                                        % (", ".join(absent), ", ".join(msg.name)))
            order = self._orders[key] = [index[n] for n in self._names]
        return order

    def _order_positions(self, msg: JointState) -> np.ndarray:
        return np.array([msg.position[i] for i in self._order(msg)], dtype=np.float64)

    def _state(self, reading: Dict[str, Any]) -> RobotState:
        present: JointState = reading["present"]
        order = self._order(present)
        n = len(present.name)

        def pick(values: Sequence[float]) -> np.ndarray:
            return np.array([values[i] for i in order], dtype=np.float64) if len(values) == n \
                else np.zeros(len(order))

        q = pick(present.position)
        stamp = reading["stamp"]
        if self.params.velocity_source == "framework":
            velocities = pick(present.velocity)
        elif self._previous is not None and stamp > self._previous[0]:
            velocities = (q - self._previous[1]) / (stamp - self._previous[0])
        else:
            velocities = np.zeros(len(q))
        self._previous = (stamp, q)
        imu: Imu = reading["imu"]
        orientation = np.array([imu.orientation.x, imu.orientation.y, imu.orientation.z, imu.orientation.w])
        norm = float(np.linalg.norm(orientation))
        if not (np.isfinite(norm) and norm > 0.0):
            raise Op3FrameworkError("%s sent an invalid orientation %s" % (self.params.imu_topic,
                                                                         orientation.tolist()))
        orientation = orientation / norm
        rotation = quat_to_matrix(orientation)
        gyro = np.array([imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z])
        specific_force = np.array([imu.linear_acceleration.x, imu.linear_acceleration.y, imu.linear_acceleration.z])
        # Feet in a frame at the torso's x, y, gravity-aligned by the IMU tilt; the lowest sole corner is the ground.
        ground = self._ground.estimate(q, rotation)
        base_position = np.array([0.0, 0.0, ground.height if self.params.estimate_height else 0.0])
        epoch = self._epoch if self._epoch is not None else stamp
        return RobotState(
            time=stamp - epoch,
            joint_positions=q,
            joint_velocities=velocities,
            joint_efforts=pick(present.effort),
            base_position=base_position,
            base_orientation=orientation,
            base_linear_velocity=np.zeros(3),
            base_angular_velocity=gyro,
            linear_acceleration=specific_force,
            foot_contacts=ground.contacts,
            foot_positions=ground.foot_positions - (0.0, 0.0, ground.height) + base_position,
            foot_orientations=ground.foot_orientations,
        )
