"""op3_standin: a PyBullet STAND-IN for the ROBOTIS framework (op3_manager) on a real OP3 -- NOT the robot.

No OP3 is available where this package is developed, yet ``Op3FrameworkBackend`` must be tested over real ROS.  This
node serves the framework topics the backend uses, at the framework's 8 ms (125 Hz) cycle in WALL time, with
``PyBulletBackend`` (the OP3 model) behind it:

  subscribes /robotis/set_control_mode          std_msgs/String: "MotionModuleMode" / "DirectControlMode" (exact)
             /robotis/enable_ctrl_module        std_msgs/String: a module name for every joint, or "none"
             /robotis/set_joint_states          sensor_msgs/JointState: goal positions (rules below)
             /robotis/sync_write_item           robotis_controller_msgs/SyncWriteItem: "torque_enable" 0/1 per joint
             /robotis/dxl_torque                std_msgs/String: torque back on for every joint (as op3_manager)
             /robotis/direct_control/set_joint_states   counted and ignored (its module is not emulated)
  publishes  /robotis/present_joint_states      sensor_msgs/JointState every cycle, joints in alphabetical order
             /robotis/goal_joint_states         sensor_msgs/JointState every cycle
             /robotis/open_cr/imu               sensor_msgs/Imu every cycle, frame body_link
             /robotis/present_joint_ctrl_modules  robotis_controller_msgs/JointCtrlModule after every module change

Behaviour copied from robotis_controller / op3_manager (sources cited in ``op3_walk.ros.op3_bridge``):
* at start-up every joint is owned by ``initial_module`` (op3_manager sends "ini_pose" to base_module), which holds
  the spawn pose; the controller is in MotionModuleMode;
* a set_joint_states position is taken for a joint only in DirectControlMode, or in MotionModuleMode when the joint's
  module is "none"; otherwise it is ignored (and counted).  Goals taken in DirectControlMode show on
  goal_joint_states but are not written to the servos until MotionModuleMode is back (the framework transmits its
  position sync write only in MotionModuleMode);
* enable_ctrl_module takes effect after ``module_switch_s`` (the framework first waits for running modules to stop)
  and is confirmed on present_joint_ctrl_modules, also when nothing changed; an unknown module changes nothing;
* present velocity and effort are 0, like the stock OP3.robot which bulk-reads present_position only
  (``report_velocity_effort: true`` publishes the simulated ones instead: rad/s and N·m);
* the IMU is built like the OpenCR module's: gyro and specific force low-passed (alpha ``imu_filter_alpha``), roll and
  pitch computed from the filtered specific force, yaw 0;
* torque off makes a joint's motor limp (only a little friction); torque on drives it to its current goal.
What differs: the physics is PyBullet's with the robot config's position gains (not the Dynamixels' PID), the
motion modules are not run (a joint they own simply holds its goal; every module is taken to own all 20 joints),
servo offsets, limits and the direct_control module are not emulated, and messages are stamped with the wall time
of publication.  Each cycle publishes the current state, then applies the goals and simulates one cycle: the
physics is stepped in real time, 8 ms of simulation per 8 ms of wall time (cycles that start late are counted).
"""
import dataclasses
import math
import threading
import time
import warnings
from typing import Any, List

import numpy as np
import rospy
from geometry_msgs.msg import Quaternion, Vector3
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import String

from op3_walk.backends.pybullet_backend import PyBulletBackend
from op3_walk.config import doc
from op3_walk.robots.description import load_robot
from op3_walk.robots.kinematics import rpy_matrix
from op3_walk.backends.base import matrix_to_quaternion
from op3_walk.ros.op3_bridge import FRAMEWORK_CYCLE_S, robotis_message_class
from op3_walk.ros.params import load_private_params, parse_node_args, run_node

LABEL = "op3_standin (PyBullet stand-in for the ROBOTIS framework, NOT the robot)"
MOTION_MODULE_MODE, DIRECT_CONTROL_MODE = "MotionModuleMode", "DirectControlMode"
G_ACC = 9.80665              # OpenCR module's gravity constant
LIMP_FRICTION = 0.03         # N·m: what is left of a servo with its torque off


@dataclasses.dataclass
class Op3StandinParams:
    """op3_standin private parameters."""

    robot: str = doc("robot config: a name in config/robots/ or a YAML path (OP3 joint names expected)", "op3")
    cycle_s: float = doc("framework control cycle, s (op3_manager: 0.008)", FRAMEWORK_CYCLE_S)
    physics_step_s: float = doc("physics step, s; must divide cycle_s", 0.002)
    initial_module: str = doc("module owning every joint at start-up (op3_manager: base_module, after ini_pose)",
                              "base_module")
    modules: List[str] = doc("motion modules op3_manager knows (enable_ctrl_module accepts these and 'none')",
                             default_factory=lambda: ["action_module", "base_module", "head_control_module",
                                                      "walking_module", "direct_control_module",
                                                      "online_walking_module", "tuning_module"])
    module_switch_s: float = doc("delay before an enable_ctrl_module request takes effect, s", 0.016)
    report_velocity_effort: bool = doc("publish simulated velocities and efforts (false: 0, like the stock "
                                       "OP3.robot, which bulk-reads present_position only)", False)
    imu_filter_alpha: float = doc("low-pass factor of gyro and accelerometer per cycle (OpenCR module: 0.4; "
                                  "1 = unfiltered)", 0.4)
    gui: bool = doc("open the PyBullet GUI (needs a display)", False)

    def validate(self) -> None:
        if not self.cycle_s > 0.0 or not self.physics_step_s > 0.0:
            raise ValueError("cycle_s and physics_step_s must be positive")
        ratio = self.cycle_s / self.physics_step_s
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError("physics_step_s (%g) must divide cycle_s (%g)" % (self.physics_step_s, self.cycle_s))
        if not 0.0 < self.imu_filter_alpha <= 1.0:
            raise ValueError("imu_filter_alpha must be in (0, 1]")
        if not self.module_switch_s >= 0.0:
            raise ValueError("module_switch_s must be >= 0")
        if self.initial_module not in self.modules and self.initial_module not in ("", "none"):
            raise ValueError("initial_module %r is not in modules" % self.initial_module)


def _quaternion_rpy(roll: float, pitch: float, yaw: float) -> Quaternion:
    return Quaternion(*map(float, matrix_to_quaternion(rpy_matrix(roll, pitch, yaw))))


class Op3Standin:
    """The node: one PyBullet world advanced one framework cycle per wall-clock cycle by ``spin()``."""

    def __init__(self, params: Op3StandinParams):
        self.params = params
        base = load_robot(params.robot)
        self.robot = load_robot(base, {"physics_rate_hz": 1.0 / params.physics_step_s,
                                       "control_rate_hz": 1.0 / params.cycle_s})
        self.backend = PyBulletBackend(self.robot, gui=params.gui)
        self.state = self.backend.reset(self.robot.stance, (0.0, 0.0, self.robot.spawn_height))
        names = list(self.robot.joint_names)
        self.names = names
        self.sorted_names = sorted(names)               # std::map order, as robotis_controller publishes
        self.sorted_index = [names.index(n) for n in self.sorted_names]
        self.index = {n: i for i, n in enumerate(names)}
        self.lock = threading.Lock()                    # guards everything below (callbacks vs the cycle)
        self.mode = MOTION_MODULE_MODE
        self.modules = [params.initial_module or "none"] * len(names)
        self.goal = self.robot.stance.copy()            # goal_position_ of every joint (what goal_joint_states shows)
        self.written = self.goal.copy()                 # what the position sync write last sent to the servos
        self.torque = np.ones(len(names), dtype=bool)
        self.pending_module = None                      # (module, due monotonic time)
        self.counts = {"applied": 0, "ignored": 0, "direct_control": 0, "unknown_items": 0, "overruns": 0,
                       "cycles": 0}
        self._direct_warned = False
        self._gyro = np.zeros(3)
        self._acc = np.array([0.0, 0.0, 1.0])           # g, filtered
        module_cls = robotis_message_class("robotis_controller_msgs/JointCtrlModule")
        sync_cls = robotis_message_class("robotis_controller_msgs/SyncWriteItem")
        self._module_cls = module_cls
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            self.present_pub = rospy.Publisher("/robotis/present_joint_states", JointState, queue_size=None,
                                               tcp_nodelay=True)
            self.goal_pub = rospy.Publisher("/robotis/goal_joint_states", JointState, queue_size=None,
                                            tcp_nodelay=True)
            self.imu_pub = rospy.Publisher("/robotis/open_cr/imu", Imu, queue_size=None, tcp_nodelay=True)
        self.modules_pub = rospy.Publisher("/robotis/present_joint_ctrl_modules", module_cls, queue_size=10)
        self.subs = [
            rospy.Subscriber("/robotis/set_control_mode", String, self._on_control_mode, queue_size=10),
            rospy.Subscriber("/robotis/enable_ctrl_module", String, self._on_enable_module, queue_size=10),
            rospy.Subscriber("/robotis/set_joint_states", JointState, self._on_set_joint_states, queue_size=10,
                             tcp_nodelay=True),
            rospy.Subscriber("/robotis/sync_write_item", sync_cls, self._on_sync_write, queue_size=10),
            rospy.Subscriber("/robotis/dxl_torque", String, self._on_dxl_torque, queue_size=10),
            rospy.Subscriber("/robotis/direct_control/set_joint_states", JointState, self._on_direct_control,
                             queue_size=10)]
        rospy.loginfo("%s: robot %s (%d joints), %.3g ms cycle in wall time, %.3g ms physics step, joints on "
                      "module '%s', %s", LABEL, self.robot.name, len(names), params.cycle_s * 1e3,
                      params.physics_step_s * 1e3, self.modules[0], self.mode)

    # -- ROS callbacks --------------------------------------------------------------------------------------------
    def _on_control_mode(self, msg: String) -> None:
        with self.lock:
            if msg.data in (MOTION_MODULE_MODE, DIRECT_CONTROL_MODE):  # anything else: ignored, as the framework
                self.mode = msg.data
            else:
                rospy.logwarn("%s: ignored control mode %r (robotis_controller accepts %s or %s)", LABEL, msg.data,
                              MOTION_MODULE_MODE, DIRECT_CONTROL_MODE)

    def _on_enable_module(self, msg: String) -> None:
        with self.lock:
            self.pending_module = (msg.data, time.monotonic() + self.params.module_switch_s)

    def _on_set_joint_states(self, msg: JointState) -> None:
        with self.lock:
            taken = 0
            for name, position in zip(msg.name, msg.position):
                i = self.index.get(name)
                if i is None or not math.isfinite(position):
                    continue
                if self.mode == DIRECT_CONTROL_MODE or self.modules[i] == "none":
                    self.goal[i] = position
                    taken += 1
            self.counts["applied" if taken else "ignored"] += 1
            ignored = self.counts["ignored"]
        if not taken:
            rospy.logwarn_throttle(5.0, "%s: ignored /robotis/set_joint_states: its joints are owned by module "
                                   "'%s' (%d ignored so far)", LABEL, self.modules[0], ignored)

    def _on_sync_write(self, msg: Any) -> None:
        with self.lock:
            if msg.item_name != "torque_enable":
                self.counts["unknown_items"] += 1
                return
            for name, value in zip(msg.joint_name, msg.value):
                i = self.index.get(name)
                if i is not None:
                    self.torque[i] = value != 0
            off = int(np.count_nonzero(~self.torque))
        rospy.loginfo("%s: torque_enable written: %d joint(s) limp", LABEL, off)

    def _on_dxl_torque(self, _msg: String) -> None:
        with self.lock:
            self.torque[:] = True

    def _on_direct_control(self, _msg: JointState) -> None:
        with self.lock:
            self.counts["direct_control"] += 1
        if not self._direct_warned:
            self._direct_warned = True
            rospy.logwarn("%s: a message on /robotis/direct_control/set_joint_states: op3_direct_control_module is "
                          "not emulated (the real one interpolates each command over >= 0.5 s); ignored", LABEL)

    # -- the cycle ------------------------------------------------------------------------------------------------
    def _switch_module(self, module: str) -> None:
        """Like setCtrlModuleThread: 'none' or a known module for every joint, then confirm on the topic."""
        if module in ("", "none"):
            self.modules = ["none"] * len(self.names)
        elif module in self.params.modules:
            self.modules = [module] * len(self.names)
        else:
            rospy.logwarn("%s: unknown module %r: nothing changed", LABEL, module)
        msg = self._module_cls()
        msg.joint_name = list(self.sorted_names)
        msg.module_name = [self.modules[i] for i in self.sorted_index]
        self.modules_pub.publish(msg)

    def _publish(self) -> None:
        state = self.state
        stamp = rospy.Time.from_sec(time.time())
        alpha = self.params.imu_filter_alpha
        self._gyro = alpha * state.base_angular_velocity + (1.0 - alpha) * self._gyro
        self._acc = alpha * (state.linear_acceleration / G_ACC) + (1.0 - alpha) * self._acc
        ax, ay, az = self._acc
        roll = math.atan2(ay, math.copysign(1.0, az) * math.sqrt(az * az + 0.01 * ax * ax))
        pitch = math.atan2(-ax, math.sqrt(ay * ay + az * az))
        imu = Imu()
        imu.header.stamp = stamp
        imu.header.frame_id = "body_link"
        imu.orientation = _quaternion_rpy(roll, pitch, 0.0)
        imu.angular_velocity = Vector3(*map(float, self._gyro))
        imu.linear_acceleration = Vector3(*map(float, self._acc * G_ACC))
        self.imu_pub.publish(imu)
        present, goal = JointState(), JointState()
        present.header.stamp = goal.header.stamp = stamp
        present.name = goal.name = list(self.sorted_names)
        order = self.sorted_index
        present.position = [float(state.joint_positions[i]) for i in order]
        zeros = [0.0] * len(order)
        if self.params.report_velocity_effort:
            present.velocity = [float(state.joint_velocities[i]) for i in order]
            present.effort = [float(state.joint_efforts[i]) for i in order]
        else:
            present.velocity, present.effort = zeros, list(zeros)
        goal.position = [float(self.goal[i]) for i in order]
        goal.velocity, goal.effort = list(zeros), list(zeros)
        self.present_pub.publish(present)
        self.goal_pub.publish(goal)

    def _limp(self, joints: np.ndarray) -> None:
        """Torque off: no position control on these joints, only a little friction."""
        self.backend.relax(joints, friction_torque=LIMP_FRICTION)

    def cycle(self) -> None:
        """Publish the present state, then (like process()) write the goals and simulate one cycle."""
        with self.lock:
            if self.pending_module is not None and time.monotonic() >= self.pending_module[1]:
                module, self.pending_module = self.pending_module[0], None
                self._switch_module(module)
            self._publish()
            if self.mode == MOTION_MODULE_MODE:
                self.written = self.goal.copy()
            self.backend.apply(self.written)   # clamped to the joint limits
            limp = ~self.torque
            if limp.any():
                self._limp(limp)   # torque back on: the servo drives to the goal written last, as a Dynamixel
            self.counts["cycles"] += 1
        self.state = self.backend.step()

    def spin(self) -> None:
        """One cycle per ``cycle_s`` of wall time until shutdown; a cycle starting a whole period late is counted
        and the schedule restarts (no burst of catch-up cycles)."""
        period = self.params.cycle_s
        next_cycle = time.monotonic()
        while not rospy.is_shutdown():
            self.cycle()
            next_cycle += period
            delay = next_cycle - time.monotonic()
            if delay > 0.0:
                time.sleep(delay)
            elif -delay > period:
                self.counts["overruns"] += 1
                next_cycle = time.monotonic()

    def close(self) -> None:
        with self.lock:
            self.backend.close()
            counts = dict(self.counts)
        rospy.loginfo("%s: shut down after %d cycles (%d started late); set_joint_states: %d applied, %d ignored; "
                      "direct_control messages: %d", LABEL, counts["cycles"], counts["overruns"], counts["applied"],
                      counts["ignored"], counts["direct_control"])


def main() -> None:
    parse_node_args("op3_standin", Op3StandinParams, __doc__)   # --help without a master
    def body() -> None:
        node = Op3Standin(load_private_params(Op3StandinParams))
        try:
            node.spin()
        finally:
            node.close()
    run_node("op3_standin", body)
