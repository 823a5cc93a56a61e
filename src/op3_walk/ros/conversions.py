"""numpy / RobotState <-> ROS messages. Pure functions; no node state.

Frames (REP 103 / 105): ``odom`` is the world frame of the simulation (or the robot's start pose); ``base_link`` is the
URDF's root link, rigidly on the torso link with an identity transform, so the backend's body frame (torso link) and
``base_link`` are the same frame.  Under a TF prefix both become ``<prefix>/odom`` and ``<prefix>/base_link``.
"""
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import rospy
from gymnasium import spaces
from geometry_msgs.msg import Point, Quaternion, Vector3
from sensor_msgs.msg import Imu, JointState

from op3_walk.backends.base import quat_to_matrix
from op3_walk.msg import EpisodeStats, WalkerAction, WalkerState

WORLD_FRAME = "odom"
BASE_FRAME = "base_link"
UNKNOWN_VARIANCE = 1e6   # Odometry covariance of a quantity the backend does not measure (hardware: x, y, yaw)


def prefixed_frame(prefix: str, frame: str) -> str:
    """``frame`` under a TF prefix, as robot_state_publisher writes it: ``actor_0`` + ``odom`` -> ``actor_0/odom``
    (slashes around the prefix are dropped; no prefix -> the frame itself; tf2 frame ids never start with ``/``)."""
    prefix = prefix.strip("/")
    return "%s/%s" % (prefix, frame) if prefix else frame


def body_linear_velocity(state) -> np.ndarray:
    """The base's linear velocity (m/s) in the body frame (base_link = torso link); RobotState has it in odom."""
    rotation = quat_to_matrix(np.asarray(state.base_orientation, dtype=float))
    return rotation.T.dot(np.asarray(state.base_linear_velocity, dtype=float))


def state_message(robot, layout: Sequence[Tuple[str, int]], episode: int, step: int, obs: np.ndarray,
                  reward: float, terminated: bool, truncated: bool, info: Dict, stamp: rospy.Time,
                  world_frame: str = WORLD_FRAME, end_reason: str = "") -> WalkerState:
    """A WalkerState for one tick. ``info`` is the env's info dict (``state``, ``reward_terms``, ``distance``);
    ``world_frame``: the (prefixed) odom frame, the frame of ``torso_pose``.  ``torso_twist`` is in the body frame
    (base_link = torso link), linear and angular alike, as in nav_msgs/Odometry.  ``end_reason`` (one of
    ``END_REASONS``) for a terminal state; empty: derived from ``terminated`` / ``truncated`` (``end_reason_of``)."""
    state = info["state"]
    msg = WalkerState()
    msg.header.stamp = stamp
    msg.header.frame_id = world_frame
    msg.episode = episode
    msg.step = step
    msg.sim_time = float(state.time)
    msg.observation = np.asarray(obs, dtype=np.float32).tolist()
    msg.observation_names = [name for name, _ in layout]
    msg.observation_sizes = [int(size) for _, size in layout]
    msg.reward = float(reward)
    msg.terminated = bool(terminated)
    msg.truncated = bool(truncated)
    msg.end_reason = str(end_reason) or end_reason_of(msg)
    terms = info.get("reward_terms", {})
    msg.reward_term_names = list(terms.keys())
    msg.reward_terms = [float(v) for v in terms.values()]
    msg.joint_names = list(robot.joint_names)
    msg.joint_positions = np.asarray(state.joint_positions, dtype=float).tolist()
    msg.joint_velocities = np.asarray(state.joint_velocities, dtype=float).tolist()
    msg.torso_pose.position = Point(*map(float, state.base_position))
    msg.torso_pose.orientation = Quaternion(*map(float, state.base_orientation))
    msg.torso_twist.linear = Vector3(*map(float, body_linear_velocity(state)))
    msg.torso_twist.angular = Vector3(*map(float, state.base_angular_velocity))
    msg.foot_names = list(robot.foot_links)
    msg.foot_contacts = [bool(c) for c in state.foot_contacts]
    msg.distance = float(info.get("distance", 0.0))
    return msg


def joint_state_message(robot, state, stamp: rospy.Time) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(robot.joint_names)
    msg.position = np.asarray(state.joint_positions, dtype=float).tolist()
    msg.velocity = np.asarray(state.joint_velocities, dtype=float).tolist()
    msg.effort = np.asarray(state.joint_efforts, dtype=float).tolist()
    return msg


def imu_message(state, frame_id: str, stamp: rospy.Time) -> Imu:
    """sensor_msgs/Imu in the torso frame: orientation (body->odom), gyro rad/s, specific force m/s^2."""
    msg = Imu()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.orientation = Quaternion(*map(float, state.base_orientation))
    msg.angular_velocity = Vector3(*map(float, state.base_angular_velocity))
    msg.linear_acceleration = Vector3(*map(float, state.linear_acceleration))
    # Simulated sensors: exact values; covariance left unknown-but-small rather than "unknown" (-1).
    msg.orientation_covariance = [1e-6, 0, 0, 0, 1e-6, 0, 0, 0, 1e-6]
    msg.angular_velocity_covariance = [1e-6, 0, 0, 0, 1e-6, 0, 0, 0, 1e-6]
    msg.linear_acceleration_covariance = [1e-4, 0, 0, 0, 1e-4, 0, 0, 0, 1e-4]
    return msg


def odometry_message(state, odom_frame: str, base_frame: str, stamp: rospy.Time, ground_truth: bool = True):
    """nav_msgs/Odometry of the base: pose of ``base_frame`` in ``odom_frame``, twist in ``base_frame`` (REP 105:
    the twist is in ``child_frame_id``).

    ``ground_truth`` (simulation): every value is exact; variances 1e-6 (known, small).  Otherwise (hardware) x, y
    and yaw and the linear velocity are not estimated by the backend (they read 0): their variances are
    ``UNKNOWN_VARIANCE``; height, roll and pitch (leg kinematics, IMU) and the gyro keep 1e-6.
    """
    from nav_msgs.msg import Odometry
    msg = Odometry()
    msg.header.stamp = stamp
    msg.header.frame_id = odom_frame
    msg.child_frame_id = base_frame
    msg.pose.pose.position = Point(*map(float, state.base_position))
    msg.pose.pose.orientation = Quaternion(*map(float, state.base_orientation))
    msg.twist.twist.linear = Vector3(*map(float, body_linear_velocity(state)))
    msg.twist.twist.angular = Vector3(*map(float, state.base_angular_velocity))
    # 6x6 row-major, order x, y, z, roll, pitch, yaw (pose) / vx, vy, vz, wx, wy, wz (twist)
    known = 1e-6
    pose_var = [known] * 6 if ground_truth else [UNKNOWN_VARIANCE, UNKNOWN_VARIANCE, known, known, known,
                                                 UNKNOWN_VARIANCE]
    twist_var = [known] * 6 if ground_truth else [UNKNOWN_VARIANCE] * 3 + [known] * 3
    msg.pose.covariance = np.diag(pose_var).ravel().tolist()
    msg.twist.covariance = np.diag(twist_var).ravel().tolist()
    return msg


def action_message(episode: int, step: int, action: Any, stamp: rospy.Time) -> WalkerAction:
    """A WalkerAction answering (episode, step): an integer action goes in ``discrete_action``, a vector in ``action``."""
    msg = WalkerAction()
    msg.header.stamp = stamp
    msg.episode = episode
    msg.step = step
    value = np.asarray(action)
    if value.ndim == 0 and value.dtype.kind in "iu":
        msg.action = []
        msg.discrete_action = int(value)
    else:
        msg.action = value.astype(np.float32).tolist()
        msg.discrete_action = -1
    return msg


def observation_from_message(msg: WalkerState, expected_size: int) -> np.ndarray:
    """The observation vector of ``msg``, checked: wrong size or non-finite values raise ValueError."""
    obs = np.asarray(msg.observation, dtype=np.float32)
    if obs.shape != (expected_size,):
        raise ValueError("WalkerState episode %d step %d: observation has %d values, expected %d (robot or task "
                         "of the controller differs from the learner's?)" % (msg.episode, msg.step, obs.size,
                                                                            expected_size))
    if not np.all(np.isfinite(obs)):
        bad: List[int] = np.flatnonzero(~np.isfinite(obs)).tolist()
        raise ValueError("WalkerState episode %d step %d: non-finite observation at indices %s"
                         % (msg.episode, msg.step, bad[:10]))
    return obs


def action_from_message(msg: WalkerAction, action_space: Any) -> Any:
    """The action of ``msg`` for ``action_space`` (Box or Discrete), checked: ValueError on a malformed one."""
    if isinstance(action_space, spaces.Discrete):
        if msg.discrete_action < 0 or msg.action:
            raise ValueError("expected a discrete action (discrete_action >= 0, empty action), got discrete_action %d "
                             "and %d values" % (msg.discrete_action, len(msg.action)))
        if msg.discrete_action >= action_space.n:
            raise ValueError("discrete action %d outside [0, %d)" % (msg.discrete_action, action_space.n))
        return int(msg.discrete_action)
    if msg.discrete_action >= 0:
        raise ValueError("discrete action %d sent to a continuous-action controller" % msg.discrete_action)
    expected_size = int(action_space.shape[0])
    action = np.asarray(msg.action, dtype=np.float32)
    if action.shape != (expected_size,):
        raise ValueError("action has %d values, expected %d" % (action.size, expected_size))
    if not np.all(np.isfinite(action)):
        raise ValueError("action has non-finite values at indices %s"
                         % np.flatnonzero(~np.isfinite(action)).tolist()[:10])
    return action


def episode_stats_message(episode: int, episode_return: float, length: int, distance: float, fell: bool,
                          wall_time: float, total_env_steps: int, total_updates: int,
                          reward_terms: Dict[str, float], stamp: rospy.Time, actor: str = "",
                          end_reason: str = "") -> EpisodeStats:
    """An EpisodeStats for one finished episode; ``env_steps_per_s`` is ``length / wall_time`` (0 for no time);
    ``actor`` is the namespace of the controller that ran it; ``end_reason``: its last WalkerState's (``""``: not
    reported)."""
    msg = EpisodeStats()
    msg.header.stamp = stamp
    msg.episode = int(episode)
    msg.actor = actor
    msg.episode_return = float(episode_return)
    msg.length = int(length)
    msg.distance = float(distance)
    msg.fell = bool(fell)
    msg.wall_time = float(wall_time)
    msg.env_steps_per_s = float(length) / wall_time if wall_time > 0 else 0.0
    msg.total_env_steps = int(total_env_steps)
    msg.total_updates = int(total_updates)
    msg.reward_term_names = list(reward_terms)
    msg.reward_term_sums = [float(v) for v in reward_terms.values()]
    msg.end_reason = str(end_reason)
    return msg


# Why an episode ended (WalkerState.end_reason, EpisodeStats.end_reason).
END_FELL = "fell"                  # the task: the robot fell (terminated)
END_TIME_LIMIT = "time limit"      # the task's max_episode_steps (truncated)
END_WATCHDOG = "watchdog"          # realtime controller: no fresh action for watchdog_timeout_s (the policy stopped)
END_ESTOP = "e-stop"               # backend hardware: an e-stop latched in the safety layer
END_SAFETY_FALL = "safety fall"    # backend hardware: the safety layer's fall check latched (terminated)
END_SAFETY_RELAX = "safety relax"  # backend hardware: the safety layer's watchdog relaxed the robot (loop stalled)
END_REASONS = (END_FELL, END_TIME_LIMIT, END_WATCHDOG, END_ESTOP, END_SAFETY_FALL, END_SAFETY_RELAX)


def end_reason_of(msg: WalkerState) -> str:
    """Why the episode of ``msg`` ended: its ``end_reason``, else (a sender that does not set it) "fell" for a
    terminated state, "time limit" for a truncated one; "" while the episode runs."""
    if getattr(msg, "end_reason", ""):
        return msg.end_reason
    if msg.terminated:
        return END_FELL
    return END_TIME_LIMIT if msg.truncated else ""
