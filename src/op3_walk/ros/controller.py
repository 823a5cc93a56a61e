"""controller_node: owns the robot (here the PyBullet walking env) and steps it in lockstep with the learner.

Lockstep protocol (simulation): the controller publishes WalkerState (episode e, step k); the learner answers with
WalkerAction (e, k); only then does the controller advance exactly one control period and publish (e, k+1). An
action for any other (episode, step) is dropped and counted; a repeat of the action just applied makes the
controller re-send its current state (so a lost state message costs a resend, not a hang). Episodes start through
the ``walker/reset`` service. Never imports torch: this node is what runs on a robot's small computer.

Topics (relative, so the node can live in a namespace):
  publishes  walker/state (op3_walk/WalkerState), joint_states (sensor_msgs/JointState),
             imu/data (sensor_msgs/Imu, frame = the robot's torso link)
  subscribes walker/action (op3_walk/WalkerAction)
  services   walker/reset (op3_walk/ResetEpisode)
"""
import dataclasses
import threading

import rospy
from sensor_msgs.msg import Imu, JointState

from op3_walk.config import doc
from op3_walk.envs.walk_env import WalkEnv
from op3_walk.msg import WalkerAction, WalkerState
from op3_walk.ros.conversions import (action_from_message, imu_message, joint_state_message, state_message)
from op3_walk.ros.params import load_private_params, run_node
from op3_walk.srv import ResetEpisode, ResetEpisodeResponse


@dataclasses.dataclass
class ControllerParams:
    """controller_node private parameters."""

    robot: str = doc("robot config: a name in config/robots/ or a YAML path", "plen")
    task: str = doc("walking task config: a name in config/tasks/ or a YAML path", "walk")
    gui: bool = doc("open the PyBullet GUI (needs a display); false = headless DIRECT mode", False)
    publish_joint_states: bool = doc("publish sensor_msgs/JointState on joint_states every tick", True)
    publish_imu: bool = doc("publish sensor_msgs/Imu on imu/data every tick", True)


class ControllerNode:
    """Serves one walking env over ROS in lockstep (see module docstring)."""

    def __init__(self, params: ControllerParams):
        self.params = params
        self.env = WalkEnv(robot=params.robot, task=params.task, gui=params.gui)
        self.robot = self.env.robot
        self.layout = self.env.layout
        self.lock = threading.Lock()
        self.episode = 0
        self.episode_over = True
        self.last_state = None          # the WalkerState published last (re-sent on a repeated action)
        self.dropped_actions = 0         # actions for another (episode, step)
        self.rejected_actions = 0        # malformed actions (wrong size, NaN)
        self.state_pub = rospy.Publisher("walker/state", WalkerState, queue_size=10, tcp_nodelay=True)
        self.joint_pub = (rospy.Publisher("joint_states", JointState, queue_size=10, tcp_nodelay=True)
                          if params.publish_joint_states else None)
        self.imu_pub = (rospy.Publisher("imu/data", Imu, queue_size=10, tcp_nodelay=True)
                        if params.publish_imu else None)
        self.reset_srv = rospy.Service("walker/reset", ResetEpisode, self._on_reset)
        self.action_sub = rospy.Subscriber("walker/action", WalkerAction, self._on_action, queue_size=10,
                                           tcp_nodelay=True)
        rospy.loginfo("controller: robot %s (%d joints, %.0f Hz control), task %s, observation %d, action %s; "
                      "waiting for walker/reset", self.robot.name, self.robot.n_joints, self.robot.control_rate_hz,
                      params.task, self.env.observation_space.shape[0], self.env.action_space)

    @property
    def step(self) -> int:
        """Control steps of the current episode (the env counts them)."""
        return self.env.step_count

    # -- ROS callbacks ------------------------------------------------------------------------------------------
    def _on_reset(self, req) -> ResetEpisodeResponse:
        with self.lock:
            try:
                obs, info = self.env.reset(seed=None if req.seed < 0 else int(req.seed))
            except Exception as exc:  # a backend failure must reach the caller, not kill the service thread
                rospy.logerr("controller: reset failed: %s", exc)
                return ResetEpisodeResponse(success=False, message="reset failed: %s" % exc)
            self.episode += 1
            self.episode_over = False
            msg = self._publish(obs, 0.0, False, False, info)
        return ResetEpisodeResponse(success=True, message="", state=msg)

    def _on_action(self, msg: WalkerAction) -> None:
        with self.lock:
            if msg.episode == self.episode and msg.step + 1 == self.step and self.last_state is not None:
                self.state_pub.publish(self.last_state)       # repeat: the learner missed our answer
                return
            if self.episode_over or msg.episode != self.episode or msg.step != self.step:
                self.dropped_actions += 1
                rospy.logwarn_throttle(5.0, "controller: dropped action for episode %d step %d (now at episode %d "
                                       "step %d%s); %d dropped so far", msg.episode, msg.step, self.episode,
                                       self.step, ", episode over" if self.episode_over else "",
                                       self.dropped_actions)
                return
            try:
                action = action_from_message(msg, self.env.action_space)
            except ValueError as exc:
                self.rejected_actions += 1
                rospy.logerr_throttle(5.0, "controller: rejected action (episode %d step %d): %s; %d rejected so far",
                                      msg.episode, msg.step, exc, self.rejected_actions)
                return
            try:
                obs, reward, terminated, truncated, info = self.env.step(action)
            except Exception as exc:  # a backend failure ends the episode; the learner's next reset starts afresh
                self.episode_over = True
                rospy.logerr("controller: step failed at episode %d step %d, episode abandoned: %s",
                             self.episode, self.step, exc)
                return
            self.episode_over = bool(terminated or truncated)
            self._publish(obs, reward, terminated, truncated, info)

    # -- helpers ------------------------------------------------------------------------------------------------
    def _publish(self, obs, reward, terminated, truncated, info) -> WalkerState:
        stamp = rospy.Time.now()
        msg = state_message(self.robot, self.layout, self.episode, self.step, obs, reward, terminated, truncated,
                            info, stamp)
        self.last_state = msg
        self.state_pub.publish(msg)
        state = info["state"]
        if self.joint_pub is not None:
            self.joint_pub.publish(joint_state_message(self.robot, state, stamp))
        if self.imu_pub is not None:
            self.imu_pub.publish(imu_message(state, self.robot.torso_link, stamp))
        return msg

    def close(self) -> None:
        with self.lock:
            self.env.close()
        rospy.loginfo("controller: shut down after %d episodes (%d actions dropped, %d rejected)",
                      self.episode, self.dropped_actions, self.rejected_actions)


def main() -> None:
    def body() -> None:
        node = ControllerNode(load_private_params(ControllerParams))
        rospy.on_shutdown(node.close)
        rospy.spin()
    run_node("controller", body)
