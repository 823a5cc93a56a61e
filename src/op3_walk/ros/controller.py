"""controller_node: owns the robot (a backend under the walking task) and steps it for a learner or a policy.

Two modes:

- ``lockstep`` (simulation; the default for ``pybullet`` and ``gazebo``): the controller publishes WalkerState
  (episode e, step k); the learner answers with WalkerAction (e, k); only then does the controller advance exactly
  one control period and publish (e, k+1).  Deterministic: a seeded run reproduces the in-process run.  An action
  for any other (episode, step) is dropped and counted; a repeat of the action just applied makes the controller
  re-send its current state (so a lost state message costs a resend, not a hang).
- ``realtime`` (hardware; or a sim run at wall-clock rate): a fixed-rate loop at the robot's control rate.  Every
  tick applies the freshest action of the current episode (answering step k, k <= now); without one it repeats
  the last action for up to ``watchdog_timeout_s``; after that the watchdog trips: the episode ends (truncated,
  end_reason "watchdog") and the robot holds still (``watchdog_action``) until the next reset.  Late actions
  (older than the one applied) and actions of another episode are dropped and counted.

Episodes start through the ``walker/reset`` service.  Never imports torch: this node is what runs on a robot's
small computer.

Who drives an episode (both modes): the node that called ``walker/reset`` owns the episode it started; actions from
any other publisher on walker/action (told apart by the caller id of the publisher's connection) are not applied,
whatever their (episode, step), and are counted ("foreign actions" on /diagnostics, with a throttled warning).  When
the resetting node publishes no walker/action (e.g. ``rosservice call`` with a policy_node that has
``start_episodes: false``), the first node that sends an action for the new episode becomes its owner.  While an
episode runs, ``walker/reset`` from a node other than its owner (or the node that reset it) is refused
(``success`` false, a message naming the owner and its episode; "resets refused (foreign)" on /diagnostics), unless
the owner no longer answers (it exited or died: a new learner may take over at once).  Actions outside the action
space's bounds are clipped by the env and counted ("clipped actions", with a throttled warning).

``backend: hardware`` drives the real robot named by ``robot``: PLEN through its PCA9685 / ADS1115 / BNO055 chips
(``op3_walk.backends.plen_hardware``; ``hardware/i2c: sim`` puts a simulated PLEN on a simulated I2C bus behind the
real drivers, for a desk dry run), the OP3 through the ROBOTIS framework topics (``op3_walk.ros.op3_bridge``).
Either way the backend is wrapped in the safety layer (``op3_walk.hardware.safety.SafeBackend``: joint-limit clamp,
slew limit, watchdog, latched e-stop, fall detection, safe start and shutdown, shadow mode), whose interventions are
logged, counted on /diagnostics, and controlled through the safety/* topic and services below.  On hardware:

- once an episode has ended (the watchdog above included) the controller commands nothing until the next reset; it
  keeps reading the robot.  So a policy that stops is handed to the safety layer's own watchdog: it holds the last
  targets after ``watchdog_hold_s`` and relaxes the robot ``watchdog_relax_s`` later (config/hardware/safety.yaml):
  limp within watchdog_timeout_s + watchdog_hold_s + watchdog_relax_s (0.1 + 0.1 + 2.0 s by default) of the
  policy's last action.  ``watchdog_action: stance`` is refused there (the safety layer decides what a stopped
  robot does);
- an e-stop, a fall latched by the safety layer, or a relax by its watchdog (a stalled control loop) ends the
  running episode at the next tick: its last state is truncated (terminated for a fall) with end_reason "e-stop",
  "safety fall" or "safety relax", and /diagnostics counts the episode ends by reason;
- while an e-stop or fall is latched, walker/reset is refused with ``retry`` true (policy_node keeps retrying, so a
  deploy session continues after safety/reset_estop);
- with ``hardware/i2c: sim`` (the simulated PLEN, not a robot) the topic sim/torso_orientation tilts the simulated
  IMU, to try the safety layer's tilt checks (a reset_estop refused while tilted) at a desk.

Topics (relative, so the node can live in a namespace):
  publishes  walker/state (op3_walk/WalkerState), joint_states (sensor_msgs/JointState),
             imu/data (sensor_msgs/Imu, frame = the robot's torso link), /diagnostics (diagnostic_msgs),
             odom (nav_msgs/Odometry: pose of base_link in odom, twist in base_link; when publish_odom),
             /tf (odom -> base_link, when publish_tf)

TF frames (REP 105): odom -> base_link (the URDF's root link; robot_state_publisher adds base_link -> torso ->
... -> feet from joint_states).  In a namespace every frame the controller names (odom, base_link, the IMU's torso
link) carries a TF prefix, resolved as robot_state_publisher resolves its own: the ``tf_prefix`` parameter searched
from the node's private namespace upwards (~tf_prefix, then <ns>/tf_prefix, ...); when none is set, the node's
namespace (``actor_0/odom`` for /actor_0/controller, plain ``odom`` at the root).  view.launch ns:=actor_0 gives its
robot_state_publisher the same prefix, so the tree is one: actor_0/odom -> actor_0/base_link -> ... -> feet.
  subscribes walker/action (op3_walk/WalkerAction)
             cmd_vel (geometry_msgs/Twist, REP 103 base frame: linear.x forward m/s, linear.y left m/s, angular.z
             yaw rate rad/s; other fields ignored): steers a policy whose task has a velocity command in its
             observation. Clamped to the task's command ranges for the robot (what the policy was trained on); once
             one has arrived it replaces the task's drawn command, and falls back to zero (stand still) when none came
             for cmd_vel_timeout_s. A task without a command ignores cmd_vel (one warning)
             safety/estop (std_msgs/Bool; hardware: true latches the e-stop, false does nothing)
             sim/torso_orientation (geometry_msgs/Quaternion; hardware/i2c sim only: the simulated PLEN's torso
             orientation in odom, x y z w, at rest; the BNO055 model reads it through its mounting)
  services   walker/reset (op3_walk/ResetEpisode)
             safety/trigger_estop, safety/reset_estop (std_srvs/Trigger; hardware only: the e-stop stays latched
             until reset_estop succeeds, which it refuses while the robot is not upright)
"""
import collections
import dataclasses
import os
import threading
import time
import xmlrpc.client
from typing import Any, Deque, Dict, List, Optional

import numpy as np
import rosgraph
import rospy
from sensor_msgs.msg import Imu, JointState
from geometry_msgs.msg import Twist
from std_msgs.msg import Bool
from std_srvs.srv import Trigger, TriggerResponse

from op3_walk.config import ConfigError, doc, from_dict
from op3_walk.envs.command import ExternalCommand, describe_ranges
from op3_walk.envs.walk_env import WalkEnv, load_task
from op3_walk.msg import WalkerAction, WalkerState
from op3_walk.robots import load_robot
from op3_walk.robots.urdf_writer import root_link
from op3_walk.ros.conversions import (END_ESTOP, END_FELL, END_SAFETY_FALL, END_SAFETY_RELAX, END_TIME_LIMIT,
                                      END_WATCHDOG, WORLD_FRAME, action_from_message, imu_message, joint_state_message,
                                      odometry_message, prefixed_frame, state_message)
from op3_walk.ros.diagnostics import DiagnosticsPublisher, percentiles_ms, status, synchronous_publisher
from op3_walk.ros.master_watch import SERVER_GRACE_S, MasterWatch
from op3_walk.ros.params import load_private_params, parse_node_args, run_node
from op3_walk.srv import ResetEpisode, ResetEpisodeResponse

BACKENDS = ("pybullet", "gazebo", "hardware")
MODES = ("lockstep", "realtime")
WATCHDOG_ACTIONS = ("hold", "stance")
I2C_BUSES = ("board", "sim")
SAFETY_POLL_S = 0.05    # s between the supervisor's safety-layer watchdog checks (catches a stalled control loop)
OWNER_PING_TIMEOUT_S = 1.0   # s given to the owner of a running episode to answer a ping (a foreign reset's check)


def caller_id(msg: Any) -> str:
    """The caller id (node name) of the node that sent ``msg`` (a message or a service request; "" if unknown)."""
    header = getattr(msg, "_connection_header", None) or {}
    return str(header.get("callerid", ""))


class _TimeoutTransport(xmlrpc.client.Transport):
    """XML-RPC over HTTP with a socket timeout (a node on a host that dropped off the network must not block)."""

    def __init__(self, timeout: float):
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> Any:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def node_answers(name: str, timeout: float = OWNER_PING_TIMEOUT_S) -> bool:
    """Is node ``name`` alive: known to the master and answering its XML-RPC API (what ``rosnode ping`` does)?  A
    node that exited is unknown to the master; one that was killed refuses the connection."""
    try:
        uri = rosgraph.Master(rospy.get_name()).lookupNode(name)
        code, _, _ = xmlrpc.client.ServerProxy(uri, transport=_TimeoutTransport(timeout)).getPid(rospy.get_name())
        return code == 1
    except Exception:   # MasterError (unknown node), a refused or timed-out connection, a garbled answer
        return False


@dataclasses.dataclass
class HardwareParams:
    """controller_node ``hardware`` parameters (backend hardware)."""

    plen_config: str = doc("PLEN: chip map and calibration (PlenHardwareConfig): a name in config/hardware/ or a "
                           "YAML path", "plen")
    i2c: str = doc("PLEN: the I2C bus. board = the Raspberry Pi's bus through Adafruit Blinka (board.I2C()); "
                   "sim = op3_walk.hardware.simbus: the real drivers on a register-level simulated bus with a "
                   "simulated PLEN behind it (a desk dry run of the whole stack, NOT the robot)", "board")
    safety_config: str = doc("safety layer settings (SafetyConfig, per robot): a path relative to config/ or "
                             "absolute", "hardware/safety.yaml")
    safety: Dict[str, Any] = doc("overrides of the robot's SafetyConfig keys, e.g. {start_ramp_s: 3.0}",
                                 default_factory=dict)
    op3_framework: Dict[str, Any] = doc("OP3: ROBOTIS framework bridge settings (Op3FrameworkParams: topics, "
                                        "control mode, timeouts)", default_factory=dict)

    def validate(self) -> None:
        if self.i2c not in I2C_BUSES:
            raise ValueError("i2c must be board or sim, got %r" % self.i2c)
LATENCY_WINDOW = 2000   # state->action latencies (and step times) kept for the diagnostics percentiles


@dataclasses.dataclass
class ControllerParams:
    """controller_node private parameters."""

    robot: str = doc("robot config: a name in config/robots/ or a YAML path", "plen")
    task: str = doc("walking task config: a name in config/tasks/ or a YAML path", "walk")
    backend: str = doc("what is driven: pybullet (simulation in this process), gazebo (a Gazebo world through the "
                       "stock op3_gazebo topics and services; see the gazebo parameters), hardware (the real robot "
                       "behind the safety layer; see the hardware parameters)",
                       "pybullet")
    mode: str = doc("lockstep (one control period per action: deterministic simulation) or realtime (fixed-rate "
                    "loop, freshest action, watchdog); empty = lockstep for pybullet and gazebo, realtime for "
                    "hardware", "")
    gui: bool = doc("pybullet: open the PyBullet GUI (needs a display); false = headless DIRECT mode", False)
    gazebo: Dict[str, Any] = doc("gazebo backend settings (GazeboBridgeParams: namespace, topics, timeouts)",
                                 default_factory=dict)
    hardware: Dict[str, Any] = doc("hardware backend settings (HardwareParams: PLEN chip config and bus, safety "
                                   "layer, OP3 framework topics)", default_factory=dict)
    shadow: bool = doc("hardware: shadow mode: the policy runs on the real sensors, the motors only hold the stance, "
                       "and what the policy would have commanded is logged (overrides the safety config)", False)
    watchdog_timeout_s: float = doc("realtime: s without a fresh action before the watchdog ends the episode and "
                                    "holds the robot (the last action is repeated until then); backend hardware: "
                                    "then the safety layer holds and relaxes it (its watchdog_hold_s, "
                                    "watchdog_relax_s)", 0.1)
    watchdog_action: str = doc("realtime: what the robot does once the watchdog trips or an episode has ended: "
                               "hold (keep the joints where they are) or stance (go to the robot's stance); backend "
                               "hardware: hold only (the controller stops commanding, the safety layer holds, then "
                               "relaxes)", "hold")
    publish_joint_states: bool = doc("publish sensor_msgs/JointState on joint_states every tick", True)
    publish_imu: bool = doc("publish sensor_msgs/Imu on imu/data every tick", True)
    publish_tf: bool = doc("publish the odom -> base_link transform on /tf every tick (for RViz with view.launch)",
                           True)
    publish_odom: bool = doc("publish nav_msgs/Odometry on odom every tick: pose of base_link in odom, twist in "
                             "base_link", True)
    tf_prefix: str = doc("prefix of the TF frames (odom, base_link, IMU frame), e.g. actor_0. Unset: the tf_prefix "
                         "parameter of an enclosing namespace (as robot_state_publisher finds it), else the node's "
                         "namespace (none at the root); set it to \"\" for no prefix in a namespace", "")
    diagnostics_rate_hz: float = doc("Hz of /diagnostics messages; 0 = none", 1.0)
    cmd_vel_timeout_s: float = doc("s without a cmd_vel message before the velocity command falls back to zero "
                                   "(stand still); tasks with a command only", 0.5)

    def validate(self) -> None:
        if not self.cmd_vel_timeout_s > 0:
            raise ValueError("cmd_vel_timeout_s must be > 0")
        if self.backend not in BACKENDS:
            raise ValueError("backend must be one of %s, got %r" % (", ".join(BACKENDS), self.backend))
        if self.mode not in MODES + ("",):
            raise ValueError("mode must be lockstep, realtime or empty (the backend's default), got %r" % self.mode)
        if self.watchdog_action not in WATCHDOG_ACTIONS:
            raise ValueError("watchdog_action must be hold or stance, got %r" % self.watchdog_action)
        if self.backend == "hardware" and self.watchdog_action != "hold":
            raise ValueError("watchdog_action %s is for the simulated backends: on hardware the controller stops "
                             "commanding once an episode ends and the safety layer holds, then relaxes the robot "
                             "(watchdog_hold_s, watchdog_relax_s in config/hardware/safety.yaml)"
                             % self.watchdog_action)
        if not self.watchdog_timeout_s > 0:
            raise ValueError("watchdog_timeout_s must be > 0")
        if self.diagnostics_rate_hz < 0:
            raise ValueError("diagnostics_rate_hz must be >= 0")

    @property
    def effective_mode(self) -> str:
        return self.mode or ("realtime" if self.backend == "hardware" else "lockstep")


def make_backend(params: ControllerParams, robot: Any) -> Any:
    """The backend named by ``params.backend`` for ``robot`` (ConfigError when it cannot be built here)."""
    if params.backend == "pybullet":
        from op3_walk.backends.pybullet_backend import PyBulletBackend
        return PyBulletBackend(robot, gui=params.gui)
    if params.backend == "gazebo":
        from op3_walk.ros.gazebo_bridge import GazeboBridgeBackend, GazeboBridgeParams
        return GazeboBridgeBackend(robot, from_dict(GazeboBridgeParams, params.gazebo,
                                                    where="%s private parameter gazebo" % rospy.get_name()))
    return make_hardware_backend(params, robot)


def make_hardware_backend(params: ControllerParams, robot: Any) -> Any:
    """The real robot's backend inside the safety layer (ConfigError for a robot without hardware support)."""
    from op3_walk.hardware.safety import SafeBackend, load_safety_config
    hw = from_dict(HardwareParams, params.hardware, where="%s private parameter hardware" % rospy.get_name())
    overrides = dict(hw.safety)
    if params.shadow:
        overrides["shadow"] = True
    if overrides.get("shadow") and not overrides.get("shadow_csv"):   # where a user finds what it would have done
        folder = os.path.join(os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "op3_walk")
        os.makedirs(folder, exist_ok=True)
        overrides["shadow_csv"] = os.path.join(folder, time.strftime("shadow_%Y%m%d_%H%M%S.csv"))
        rospy.loginfo("controller: shadow mode: the policy's commands are logged to %s, the motors hold the stance",
                      overrides["shadow_csv"])
    safety = load_safety_config(robot, hw.safety_config, overrides)
    if robot.name == "plen":
        from op3_walk.backends.plen_hardware import open_plen_backend
        inner = open_plen_backend(robot, hw.plen_config, hw.i2c)
    elif robot.name == "op3":
        from op3_walk.ros.op3_bridge import Op3FrameworkBackend, Op3FrameworkParams
        inner = Op3FrameworkBackend(robot, from_dict(Op3FrameworkParams, hw.op3_framework,
                                                     where="%s private parameter hardware/op3_framework"
                                                     % rospy.get_name()))
    else:
        raise ConfigError("backend hardware drives the robots plen and op3, not %r" % robot.name)
    try:
        return SafeBackend(inner, robot, safety)
    except Exception:
        inner.close()
        raise


def resolve_tf_prefix() -> str:
    """The controller's TF prefix (no slashes around it; "" for none): ``~tf_prefix`` or the nearest ``tf_prefix`` of
    an enclosing namespace (robot_state_publisher's search), else the node's namespace."""
    key = rospy.search_param("tf_prefix")   # starts at ~tf_prefix, then <ns>/tf_prefix, ..., /tf_prefix
    if key:
        return str(rospy.get_param(key)).strip("/")
    return rospy.get_namespace().strip("/")


class ControllerNode:
    """Serves one walking env over ROS, in lockstep or in real time (see module docstring)."""

    def __init__(self, params: ControllerParams):
        self.params = params
        self.mode = params.effective_mode
        robot = load_robot(params.robot)
        backend = make_backend(params, robot)
        try:
            self.env = WalkEnv(robot=robot, task=load_task(params.task), backend=backend)
        except Exception:
            backend.close()
            raise
        self.backend = backend
        self.robot = self.env.robot
        self.layout = self.env.layout
        self.period_s = self.robot.control_period_s
        self.tf_prefix = resolve_tf_prefix()
        self.odom_frame = prefixed_frame(self.tf_prefix, WORLD_FRAME)
        self.base_frame = prefixed_frame(self.tf_prefix, root_link(self.robot.urdf_path))   # base_link (REP 105)
        self.imu_frame = prefixed_frame(self.tf_prefix, self.robot.torso_link)
        self.lock = threading.Lock()
        self.episode = 0
        self.episode_over = True
        self.last_state: Optional[WalkerState] = None   # the WalkerState published last (re-sent on a repeat)
        self.dropped_actions = 0          # actions for another (episode, step), or late ones
        self.rejected_actions = 0         # malformed actions (wrong size, NaN)
        self.repeated_actions = 0         # lockstep: repeats of the action just applied (answered with a resend)
        self.watchdog_trips = 0
        self.step_failures = 0
        self.steps_done = 0
        self.overruns = 0                 # realtime: ticks that started late by more than a period
        self._published_at: Dict[int, float] = {}       # step -> monotonic time its state was published
        self.latencies: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.step_times: Deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        # realtime: the freshest valid action not applied yet, and the last one applied
        self._fresh: Optional[Any] = None
        self._fresh_step = -1
        self._applied_step = -1
        self._last_action: Optional[Any] = None
        self._last_action_time = 0.0
        self._hold_targets: Optional[np.ndarray] = None
        self.watchdog_active = False
        self.episode_ends: Dict[str, int] = collections.Counter()   # end_reason -> episodes ended so far
        self.last_end = ""                                           # "<end_reason> (<detail>)" of the last one
        self.refused_resets = 0           # walker/reset refused while an e-stop or fall is latched
        self.owner = ""                   # caller id of the node whose episode this is (it reset it, or claimed it)
        self.owner_claimable = False      # its resetter publishes no actions: the first node acting for it owns it
        self.resetter = ""                # caller id of the node that reset it (may reset it again, as the owner)
        self.foreign_actions = 0          # actions from a node other than the episode's owner (not applied)
        self.clipped_actions = 0          # applied actions with values outside the action space (clipped)
        self.foreign_resets = 0           # walker/reset refused: another node's episode was running
        self._inbox_lock = threading.Lock()   # realtime: actions received since the last tick, with arrival times
        self._inbox: Deque[Any] = collections.deque(maxlen=64)
        # Lockstep: publish synchronously in the action callback (no hand-off to a writer thread: ~2x lower round
        # trip). Realtime: queued, so a slow subscriber can never stall the control loop.
        self.state_pub = (synchronous_publisher("walker/state", WalkerState, tcp_nodelay=True)
                          if self.mode == "lockstep" else
                          rospy.Publisher("walker/state", WalkerState, queue_size=10, tcp_nodelay=True))
        self.joint_pub = (rospy.Publisher("joint_states", JointState, queue_size=10, tcp_nodelay=True)
                          if params.publish_joint_states else None)
        self.imu_pub = (rospy.Publisher("imu/data", Imu, queue_size=10, tcp_nodelay=True)
                        if params.publish_imu else None)
        self.tf_pub = self._tf_publisher() if params.publish_tf else None
        self.odom_pub = self._odom_publisher() if params.publish_odom else None
        self.reset_srv = rospy.Service("walker/reset", ResetEpisode, self._on_reset)
        self.action_sub = rospy.Subscriber("walker/action", WalkerAction, self._on_action, queue_size=10,
                                           tcp_nodelay=True)
        # cmd_vel: the command is part of the observation, which this node builds (op3_walk.envs.command)
        self.takes_command = any(name == "command" for name, _ in self.layout)
        self.cmd_vel = ExternalCommand(self.env.command_config, params.cmd_vel_timeout_s)
        self._cmd_vel_warned = False
        self._cmd_lock = threading.Lock()   # cmd_vel callback vs. the step that reads it (never the control lock)
        self.cmd_vel_ignored = 0          # cmd_vel messages for a task without a command
        self.cmd_vel_sub = rospy.Subscriber("cmd_vel", Twist, self._on_cmd_vel, queue_size=10)
        if self.takes_command:
            rospy.loginfo("controller: task %s takes a velocity command: cmd_vel steers it, clamped to %s; zero after "
                          "%.2f s without one", params.task, describe_ranges(self.env.command_config),
                          params.cmd_vel_timeout_s)
        self._stop = threading.Event()
        self.safety = backend if hasattr(backend, "reset_estop") else None   # the SafeBackend of backend hardware
        self.interventions = 0
        if self.safety is not None:
            self.safety.on_intervention.append(self._on_intervention)
            self.estop_sub = rospy.Subscriber("safety/estop", Bool, self._on_estop_topic, queue_size=10)
            self.estop_srv = rospy.Service("safety/trigger_estop", Trigger, self._on_trigger_estop)
            self.reset_estop_srv = rospy.Service("safety/reset_estop", Trigger, self._on_reset_estop)
            self.sim_plant = getattr(self.safety.inner, "plant", None)   # the SimulatedPlen of hardware/i2c: sim
            if self.sim_plant is not None:
                from geometry_msgs.msg import Quaternion
                self.tilt_sub = rospy.Subscriber("sim/torso_orientation", Quaternion, self._on_sim_orientation,
                                                 queue_size=10)
            threading.Thread(target=self._supervise, name="safety_supervisor", daemon=True).start()
        self.diagnostics = DiagnosticsPublisher(params.diagnostics_rate_hz, self._diagnostics)
        self._loop_thread: Optional[threading.Thread] = None
        if self.mode == "realtime":
            self._loop_thread = threading.Thread(target=self._realtime_loop, name="controller_loop", daemon=True)
            self._loop_thread.start()
        rospy.loginfo("controller: robot %s (%d joints, %.0f Hz control) on %s, %s mode, task %s, observation %d, "
                      "action %s; waiting for walker/reset", self.robot.name, self.robot.n_joints,
                      self.robot.control_rate_hz, params.backend, self.mode, params.task,
                      self.env.observation_space.shape[0], self.env.action_space)

    @property
    def step(self) -> int:
        """Control steps of the current episode (the env counts them)."""
        return self.env.step_count

    # -- ROS callbacks ------------------------------------------------------------------------------------------
    def _on_cmd_vel(self, msg: Twist) -> None:
        if not self.takes_command:
            self.cmd_vel_ignored += 1
            if not self._cmd_vel_warned:
                self._cmd_vel_warned = True
                rospy.logwarn("controller: cmd_vel ignored: task %s has no velocity command in its observation "
                              "(this policy cannot be steered; this warning is not repeated)", self.params.task)
            return
        raw = (msg.linear.x, msg.linear.y, msg.angular.z)
        first = not self.cmd_vel.active
        with self._cmd_lock:
            before = self.cmd_vel.clamped
            value = self.cmd_vel.receive(raw, time.monotonic())
            clamped = self.cmd_vel.clamped > before
        if value is None:
            rospy.logwarn_throttle(5.0, "controller: cmd_vel with a non-finite value ignored: %s; %d so far", raw,
                                   self.cmd_vel.rejected)
            return
        if first:
            rospy.loginfo("controller: cmd_vel received: it now replaces the task's drawn command")
        if clamped:
            rospy.logwarn_throttle(5.0, "controller: cmd_vel (%.3g, %.3g, %.3g) outside the trained ranges (%s): "
                                   "clamped to (%.3g, %.3g, %.3g); %d clamped so far", raw[0], raw[1], raw[2],
                                   describe_ranges(self.env.command_config), value[0], value[1], value[2],
                                   self.cmd_vel.clamped)

    def _apply_cmd_vel(self) -> None:
        """Give the env the cmd_vel command for its next observation (None: the task's own command stands)."""
        if self.takes_command:
            with self._cmd_lock:
                self.env.command_override = self.cmd_vel.value(time.monotonic())

    def _on_reset(self, req) -> ResetEpisodeResponse:
        caller = caller_id(req)
        refusal = self._foreign_reset(caller)
        if refusal is not None:
            return ResetEpisodeResponse(success=False, message=refusal, retry=False)
        with self.lock:
            if self.safety is not None and self.safety.latched:
                self.refused_resets += 1
                why = "%s latched (%s): call safety/reset_estop (refused while the robot is not upright), then " \
                      "reset again" % ("fall" if self.safety.state == "fallen" else "e-stop",
                                       self.safety.stats().get("latch_reason", ""))
                rospy.logwarn_throttle(5.0, "controller: reset refused: %s", why)
                return ResetEpisodeResponse(success=False, message=why, retry=True)
            try:
                self._apply_cmd_vel()
                obs, info = self.env.reset(seed=None if req.seed < 0 else int(req.seed))
            except Exception as exc:  # a backend failure must reach the caller, not kill the service thread
                rospy.logerr("controller: reset failed: %s", exc)
                return ResetEpisodeResponse(success=False, message="reset failed: %s" % exc)
            self.episode += 1
            self.episode_over = False
            self._fresh, self._fresh_step, self._applied_step = None, -1, -1
            self._last_action = None
            self._last_action_time = time.monotonic()   # the watchdog counts from the reset
            self._hold_targets = None
            self.watchdog_active = False
            self._take_ownership(caller)    # before the first state goes out: its answer must find the owner set
            msg = self._publish(obs, 0.0, False, False, info)
        return ResetEpisodeResponse(success=True, message="", state=msg)

    # -- who drives the episode -----------------------------------------------------------------------------------
    def _foreign_reset(self, caller: str) -> Optional[str]:
        """Why a reset from ``caller`` is refused (another node's episode is running and that node answers), or
        None.  The ping runs outside ``self.lock``: a reset storm must not stall the running episode."""
        owner, episode, running = self.owner, self.episode, not self.episode_over
        if not running or not owner or not caller or caller in (owner, self.resetter):
            return None
        if not node_answers(owner):
            rospy.logwarn("controller: walker/reset by %s: %s's episode %d was running, but %s no longer answers; "
                          "reset accepted", caller, owner, episode, owner)
            return None
        with self.lock:
            self.foreign_resets += 1
            count, step = self.foreign_resets, self.step
        why = ("walker/reset called by %s while %s's episode %d was running (step %d): refused; only %s may reset "
               "this controller until its episode ends or it exits" % (caller, owner, episode, step, owner))
        rospy.logwarn_throttle(5.0, "controller: %s (%d foreign resets refused so far)", why, count)
        return why

    def _take_ownership(self, caller: str) -> None:
        """``caller`` reset the episode: it owns it, or (publishing no actions itself) the first node to act does."""
        try:
            publishers = {str((getattr(c, "header", None) or {}).get("callerid", ""))
                          for c in list(self.action_sub.impl.connections)}
        except Exception:   # rospy internals; without them the resetter owns the episode
            publishers = {caller}
        self.owner = self.resetter = caller
        self.owner_claimable = caller not in publishers

    def _from_owner(self, msg: WalkerAction) -> bool:
        """Is ``msg`` from the node driving the current episode?  Counts and warns about the others (call with
        ``self.lock`` held).  Before the first reset every action is left to the (episode, step) check."""
        sender = caller_id(msg)
        if self.episode == 0 or sender == self.owner:
            return True
        if self.owner_claimable and not self.episode_over and msg.episode == self.episode:
            rospy.loginfo("controller: episode %d (reset by %s, which publishes no walker/action) is driven by %s",
                          self.episode, self.owner or "an unknown node", sender)
            self.owner, self.owner_claimable = sender, False
            return True
        self.foreign_actions += 1
        rospy.logwarn_throttle(5.0, "controller: ignored an action from %s for episode %d step %d: episode %d "
                               "belongs to %s; %d foreign actions so far", sender or "an unknown node", msg.episode,
                               msg.step, self.episode, self.owner, self.foreign_actions)
        return False

    def _on_action(self, msg: WalkerAction) -> None:
        if self.mode == "realtime":
            # Never wait for the control loop (it holds self.lock through the robot's I/O): the loop takes the
            # inbox at the start of its next tick.
            with self._inbox_lock:
                self._inbox.append((msg, time.monotonic()))
            return
        with self.lock:
            if not self._from_owner(msg):
                return
            if msg.episode == self.episode and msg.step + 1 == self.step and self.last_state is not None:
                self.repeated_actions += 1
                self.state_pub.publish(self.last_state)       # repeat: the learner missed our answer
                return
            if self.episode_over or msg.episode != self.episode or msg.step != self.step:
                self._drop(msg)
                return
            action = self._decode(msg)
            if action is None:
                return
            self._note_latency(msg.step)
            self._advance(action, self._safety_end())

    # -- safety (backend hardware) --------------------------------------------------------------------------------
    def _on_intervention(self, kind: str, detail: str) -> None:
        self.interventions += 1
        if kind in ("estop", "fall", "watchdog_relax", "estop_reset_refused"):
            rospy.logerr("controller: safety %s: %s", kind, detail)
        elif kind in ("clamp", "slew", "reject"):
            rospy.logwarn_throttle(5.0, "controller: safety %s: %s", kind, detail)
        else:
            rospy.loginfo("controller: safety %s: %s", kind, detail)

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self.safety.estop("safety/estop topic")

    def _on_trigger_estop(self, _req: Any) -> TriggerResponse:
        self.safety.estop("safety/trigger_estop service")
        return TriggerResponse(success=True, message="e-stop latched; call safety/reset_estop to clear it")

    def _on_reset_estop(self, _req: Any) -> TriggerResponse:
        ok, message = self.safety.reset_estop()
        return TriggerResponse(success=bool(ok), message=message)

    def _on_sim_orientation(self, msg: Any) -> None:
        q = np.array([msg.x, msg.y, msg.z, msg.w], dtype=float)
        if not np.all(np.isfinite(q)) or not np.linalg.norm(q) > 1e-6:
            rospy.logwarn("controller: sim/torso_orientation: not a rotation: %s", q.tolist())
            return
        self.sim_plant.set_imu(q / np.linalg.norm(q))
        rospy.loginfo("controller: simulated PLEN: torso orientation set to %s (tilt %.2f rad)",
                      np.round(q / np.linalg.norm(q), 4).tolist(),
                      2.0 * float(np.arccos(np.clip(np.hypot(q[2], q[3]) / np.linalg.norm(q), -1.0, 1.0))))

    def _safety_end(self) -> Optional[Any]:
        """Why the safety layer ends the running episode now: (end_reason, detail, terminated), or None."""
        if self.safety is None:
            return None
        state = self.safety.state
        if state not in ("estopped", "fallen", "relaxed"):
            return None
        stats = self.safety.stats()
        if state == "estopped":
            return END_ESTOP, stats.get("latch_reason", ""), False
        if state == "fallen":
            return END_SAFETY_FALL, stats.get("latch_reason", ""), True
        return END_SAFETY_RELAX, stats.get("last_intervention_detail", ""), False

    def _supervise(self) -> None:
        """The safety layer's watchdog also runs from here, so a stalled control loop still holds, then relaxes."""
        while not self._stop.wait(SAFETY_POLL_S):
            try:
                self.safety.poll()
            except Exception as exc:  # a closed backend at shutdown, or a bus error already reported by the loop
                if self._stop.is_set():
                    return
                rospy.logerr_throttle(5.0, "controller: safety supervisor: %s", exc)

    # -- realtime -----------------------------------------------------------------------------------------------
    def _take_realtime_action(self, msg: WalkerAction, received: Optional[float] = None) -> None:
        """Keep ``msg`` as the freshest action if it answers a step of this episode not older than the one
        applied last; otherwise drop and count it.  ``received``: monotonic arrival time (for the latency)."""
        if not self._from_owner(msg):
            return
        if (self.episode_over or msg.episode != self.episode or msg.step > self.step
                or msg.step <= max(self._applied_step, self._fresh_step)):
            self._drop(msg)
            return
        action = self._decode(msg)
        if action is None:
            return
        self._note_latency(msg.step, received)
        if self._fresh is not None:
            self.dropped_actions += 1      # superseded before it was applied
        self._fresh, self._fresh_step = action, int(msg.step)

    def _realtime_loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set() and not rospy.is_shutdown():
            next_tick += self.period_s
            with self.lock:
                try:
                    self._realtime_tick()
                except Exception as exc:  # a backend failure: end the episode, keep the loop (and watchdog) alive
                    self.step_failures += 1
                    self.episode_over = True
                    rospy.logerr_throttle(5.0, "controller: tick failed: %s", exc)
            delay = next_tick - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif -delay > self.period_s:   # more than a whole period late: start afresh, count it
                self.overruns += 1
                next_tick = time.monotonic()

    def _realtime_tick(self) -> None:
        with self._inbox_lock:
            inbox = list(self._inbox)
            self._inbox.clear()
        for msg, received in inbox:
            self._take_realtime_action(msg, received)
        now = time.monotonic()
        if self.episode == 0:
            return                       # nothing reset yet: the robot is as the backend started it
        if not self.episode_over:
            ended = self._safety_end()           # an e-stop, a latched fall or a safety relax ends the episode
            if self._fresh is not None:
                action, self._applied_step = self._fresh, self._fresh_step
                self._fresh = None
                self._last_action, self._last_action_time = action, now
                self._advance(action, ended)
                return
            if self._last_action is not None and now - self._last_action_time <= self.params.watchdog_timeout_s:
                self._advance(self._last_action, ended)   # zero-order hold of the last action
                return
            if ended is not None:                # no action to step with: end on the present state
                self._end_episode(ended)
                return
            if now - self._last_action_time > self.params.watchdog_timeout_s:
                self._trip_watchdog(now)
                return
            return                           # just reset: waiting for the first action, within the timeout
        self._hold()

    def _trip_watchdog(self, now: float) -> None:
        self.watchdog_trips += 1
        self.watchdog_active = True
        if self.safety is not None:
            cfg = self.safety.config
            robot = "handed to the safety layer (holds after %.2f s, relaxes %.2f s later)" % (
                cfg.watchdog_hold_s, cfg.watchdog_relax_s)
        else:
            robot = "holding" if self.params.watchdog_action == "hold" else "going to its stance"
        rospy.logwarn("controller: watchdog: no action for %.0f ms at episode %d step %d; episode ended, robot %s",
                      1e3 * (now - self._last_action_time), self.episode, self.step, robot)
        self._end_episode((END_WATCHDOG, "no action for %.0f ms" % (1e3 * (now - self._last_action_time)), False))

    def _end_episode(self, ended: Any) -> None:
        """End the running episode on its present state (no step): re-publish it as terminal, ``ended`` =
        (end_reason, detail, terminated)."""
        reason, detail, terminated = ended
        self.episode_over = True
        self._apply_cmd_vel()
        obs, info = self.env.current_observation()
        self._note_end(reason, detail)
        self._publish(obs, 0.0, bool(terminated), not terminated, info, reason)
        self._hold()

    def _note_end(self, reason: str, detail: str = "") -> None:
        self.episode_ends[reason] += 1
        self.last_end = "%s (%s)" % (reason, detail) if detail else reason
        if reason in (END_ESTOP, END_SAFETY_FALL, END_SAFETY_RELAX):
            rospy.logwarn("controller: episode %d ended at step %d by the safety layer: %s", self.episode,
                          self.step, self.last_end)

    def _hold(self) -> None:
        """Between episodes (or after the watchdog): keep time going and the sensors published.  Simulated backends:
        keep the robot still (``watchdog_action``).  Backend hardware: command nothing, so that the safety layer's
        watchdog holds the last targets, then relaxes the robot (a stopped policy must not keep it powered)."""
        if self.safety is not None:
            state = self.backend.step()
            self._publish_sensors(state, rospy.Time.now())
            return
        if self._hold_targets is None:
            self._hold_targets = (np.asarray(self.robot.stance, dtype=float)
                                  if self.params.watchdog_action == "stance"
                                  else np.asarray(self.env.state.joint_positions, dtype=float).copy())
        self.backend.apply(self._hold_targets)
        state = self.backend.step()
        self._publish_sensors(state, rospy.Time.now())

    # -- helpers ------------------------------------------------------------------------------------------------
    def _drop(self, msg: WalkerAction) -> None:
        self.dropped_actions += 1
        rospy.logwarn_throttle(5.0, "controller: dropped action for episode %d step %d (now at episode %d step %d%s); "
                               "%d dropped so far", msg.episode, msg.step, self.episode, self.step,
                               ", episode over" if self.episode_over else "", self.dropped_actions)

    def _decode(self, msg: WalkerAction) -> Optional[Any]:
        try:
            action = action_from_message(msg, self.env.action_space)
        except ValueError as exc:
            self.rejected_actions += 1
            rospy.logerr_throttle(5.0, "controller: rejected action (episode %d step %d): %s; %d rejected so far",
                                  msg.episode, msg.step, exc, self.rejected_actions)
            return None
        low, high = getattr(self.env.action_space, "low", None), getattr(self.env.action_space, "high", None)
        if low is not None and (np.any(action < low) or np.any(action > high)):
            self.clipped_actions += 1      # the env clips it to the space; the sender should know
            rospy.logwarn_throttle(5.0, "controller: action for episode %d step %d outside [%g, %g] (min %.3g, "
                                   "max %.3g): clipped; %d clipped so far", msg.episode, msg.step, float(np.min(low)),
                                   float(np.max(high)), float(np.min(action)), float(np.max(action)),
                                   self.clipped_actions)
        return action

    def _note_latency(self, step: int, received: Optional[float] = None) -> None:
        sent = self._published_at.get(int(step))
        if sent is not None:
            self.latencies.append((time.monotonic() if received is None else received) - sent)

    def _advance(self, action: Any, ended: Optional[Any] = None) -> None:
        """Step the env with ``action`` and publish the state; ``ended`` (end_reason, detail, terminated): the
        safety layer ends the episode with this state."""
        start = time.perf_counter()
        self._apply_cmd_vel()
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as exc:  # a backend failure ends the episode; the learner's next reset starts afresh
            self.episode_over = True
            self.step_failures += 1
            rospy.logerr("controller: step failed at episode %d step %d, episode abandoned: %s",
                         self.episode, self.step, exc)
            return
        self.step_times.append(time.perf_counter() - start)
        self.steps_done += 1
        reason = ""
        if ended is not None:
            reason, detail, by_fall = ended
            terminated = bool(terminated or by_fall)
            truncated = not terminated
            self._note_end(reason, detail)
        elif terminated or truncated:
            self._note_end(END_FELL if terminated else END_TIME_LIMIT)
        self.episode_over = bool(terminated or truncated)
        self._publish(obs, reward, terminated, truncated, info, reason)

    def _publish(self, obs, reward, terminated, truncated, info, end_reason: str = "") -> WalkerState:
        stamp = rospy.Time.now()
        msg = state_message(self.robot, self.layout, self.episode, self.step, obs, reward, terminated, truncated,
                            info, stamp, self.odom_frame, end_reason=end_reason)
        self.last_state = msg
        if len(self._published_at) > 4 * LATENCY_WINDOW:
            self._published_at.clear()
        self._published_at[self.step] = time.monotonic()
        if self.step == 0:
            self._published_at = {0: self._published_at[0]}
        self.state_pub.publish(msg)
        self._publish_sensors(info["state"], stamp)
        return msg

    def _publish_sensors(self, state: Any, stamp: rospy.Time) -> None:
        if self.joint_pub is not None:
            self.joint_pub.publish(joint_state_message(self.robot, state, stamp))
        if self.imu_pub is not None:
            self.imu_pub.publish(imu_message(state, self.imu_frame, stamp))
        if self.odom_pub is not None:
            self.odom_pub.publish(odometry_message(state, self.odom_frame, self.base_frame, stamp,
                                                   ground_truth=self.params.backend != "hardware"))
        if self.tf_pub is not None:
            self.tf_pub.publish(self._tf_message(state, stamp))

    def _tf_publisher(self) -> Optional[rospy.Publisher]:
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            rospy.logwarn("controller: tf2_msgs is not installed: no odom -> base_link transform on /tf")
            return None
        self._tf_type = TFMessage
        rospy.loginfo("controller: TF %s -> %s on /tf", self.odom_frame, self.base_frame)
        return rospy.Publisher("/tf", TFMessage, queue_size=10)

    def _odom_publisher(self) -> Optional[rospy.Publisher]:
        try:
            from nav_msgs.msg import Odometry
        except ImportError:
            rospy.logwarn("controller: nav_msgs is not installed: no odometry on odom")
            return None
        return rospy.Publisher("odom", Odometry, queue_size=10, tcp_nodelay=True)

    def _tf_message(self, state: Any, stamp: rospy.Time) -> Any:
        from geometry_msgs.msg import TransformStamped
        t = TransformStamped()
        t.header.stamp = stamp
        t.header.frame_id = self.odom_frame
        t.child_frame_id = self.base_frame
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (
            float(v) for v in state.base_position)
        q = t.transform.rotation
        q.x, q.y, q.z, q.w = (float(v) for v in state.base_orientation)
        return self._tf_type(transforms=[t])

    def _diagnostics(self, window_s: float, previous: Dict[str, float]) -> List[Any]:
        with self.lock:
            steps = self.steps_done
            latencies = list(self.latencies)
            step_times = list(self.step_times)
            values = {
                "backend": self.params.backend, "mode": self.mode, "robot": self.robot.name,
                "episode": self.episode, "step": self.step, "episode running": not self.episode_over,
                "dropped actions": self.dropped_actions, "rejected actions": self.rejected_actions,
                "repeated actions": self.repeated_actions, "foreign actions": self.foreign_actions,
                "clipped actions": self.clipped_actions, "resets refused (foreign)": self.foreign_resets,
                "episode owner": self.owner, "step failures": self.step_failures,
                "watchdog trips": self.watchdog_trips, "watchdog active": self.watchdog_active,
                "last episode end": self.last_end,
            }
            for reason, count in sorted(self.episode_ends.items()):
                values["episodes ended: %s" % reason] = count
            if self.takes_command:
                with self._cmd_lock:
                    command = self.cmd_vel.value(time.monotonic())
                    values["cmd_vel received"] = self.cmd_vel.received
                    values["cmd_vel clamped"] = self.cmd_vel.clamped
                values["velocity command"] = ("task's own" if command is None else
                                              "cmd_vel (%.3f, %.3f, %.3f)" % tuple(command))
            elif self.cmd_vel_ignored:
                values["cmd_vel ignored (no command in the task)"] = self.cmd_vel_ignored
            if self.safety is not None:
                values["resets refused (latched)"] = self.refused_resets
            if self.mode == "realtime":
                values["loop overruns"] = self.overruns
                values["watchdog timeout [s]"] = self.params.watchdog_timeout_s
        rate = (steps - previous.get("steps", steps)) / window_s if window_s > 0 else 0.0
        previous["steps"] = steps
        values["control steps/s"] = "%.1f" % rate
        if self.mode == "realtime":
            values["control rate target [Hz]"] = "%.1f" % self.robot.control_rate_hz
        values.update(percentiles_ms("state->action latency", latencies))
        values.update(percentiles_ms("step compute", step_times))
        inner = self.safety.inner if self.safety is not None else self.backend
        bridge_stats = getattr(inner, "stats", None)   # Gazebo / OP3 framework bridges: lag, late messages
        if bridge_stats is not None and callable(getattr(bridge_stats, "values", None)):
            values.update(bridge_stats.values())
        level, message = 0, "running" if values["episode running"] else "idle (waiting for walker/reset)"
        if self.watchdog_active:
            level, message = 1, ("watchdog tripped: no fresh actions, robot held" if self.safety is None else
                                 "watchdog tripped: no fresh actions, robot left to the safety layer (hold, relax)")
        if self.step_failures:
            level, message = 2 if not values["episode running"] else 1, "backend step failures: %d" % self.step_failures
        name = rospy.get_namespace().rstrip("/") or "/"
        statuses = [status("op3_walk controller %s" % name, level, message, rospy.get_name(), values)]
        if self.safety is not None:
            statuses.append(self._safety_status(name))
        return statuses

    def _safety_status(self, name: str) -> Any:
        stats = self.safety.stats()
        state = stats.get("state", "")
        if stats.get("latched"):
            level, message = 2, "%s: %s (call safety/reset_estop)" % (state, stats.get("latch_reason", ""))
        elif state in ("holding", "relaxed"):
            level, message = 1, "%s (%s)" % (state, stats.get("last_intervention_detail") or "no commands")
        else:
            level, message = 0, state + (" (shadow mode: motors hold the stance)" if stats.get("shadow") else "")
        return status("op3_walk safety %s" % name, level, message, rospy.get_name(), stats)

    def close(self) -> None:
        self._stop.set()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=2.0)
        self.diagnostics.stop()
        with self.lock:
            self.env.close()
            self.backend.close()
        rospy.loginfo("controller: shut down after %d episodes (%d actions dropped, %d rejected, %d watchdog trips)",
                      self.episode, self.dropped_actions, self.rejected_actions, self.watchdog_trips)


def main() -> None:
    parse_node_args("controller_node", ControllerParams, __doc__)   # --help without a master
    def body() -> None:
        node = ControllerNode(load_private_params(ControllerParams))
        rospy.on_shutdown(node.close)
        with MasterWatch(shutdown_after_s=SERVER_GRACE_S):   # master_watch.py: ends on a roscore restart
            rospy.spin()
    run_node("controller", body)
