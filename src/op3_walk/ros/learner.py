"""learner_node: trains an agent online against a controller_node, through ROS.

It drives a ``RosWalkEnv`` with the same ``TrainingSession`` the in-process ``train`` command uses, publishes one
EpisodeStats per episode, and writes ``episodes.csv``, ``checkpoint.pt`` (periodic, on request, at the end and on
shutdown) and ``learning_curve.png`` into ``out_dir``. When its step budget is spent it exits; ``train.launch``
marks it required, so the whole session (controller, recorder) then shuts down.

Topics: publishes walker/action (op3_walk/WalkerAction), walker/episode (op3_walk/EpisodeStats);
        subscribes walker/state (op3_walk/WalkerState).
Services: serves learner/save_checkpoint (op3_walk/SaveCheckpoint); calls walker/reset (op3_walk/ResetEpisode).
"""
import dataclasses
import os

import rospy

from op3_walk.config import doc
from op3_walk.envs.walk_env import load_task
from op3_walk.msg import EpisodeStats
from op3_walk.robots import load_robot
from op3_walk.ros.params import load_private_params, run_node
from op3_walk.ros.remote_env import RosWalkEnv
from op3_walk.srv import SaveCheckpoint, SaveCheckpointResponse
from op3_walk.training.checkpoint import read_meta
from op3_walk.training.loop import EpisodeRecord, TrainConfig
from op3_walk.training.session import TrainingSession, build_agent


@dataclasses.dataclass
class LearnerParams:
    """learner_node private parameters."""

    robot: str = doc("robot config (must match the controller's): a name in config/robots/ or a YAML path", "plen")
    task: str = doc("task config (must match the controller's): a name in config/tasks/ or a YAML path", "walk")
    algo: str = doc("learning algorithm: td3", "td3")
    agent_config: str = doc("agent YAML; empty = config/agents/<algo>.yaml", "")
    steps: int = doc("env steps to train for (the node exits after them)", 20000)
    seed: int = doc("seed of the agent and of the first episode", 0)
    out_dir: str = doc("folder for episodes.csv, checkpoint.pt, learning_curve.png (created)", "op3_walk_train")
    checkpoint_every: int = doc("env steps between periodic checkpoints; 0 = only at the end", 5000)
    resume: str = doc("checkpoint to resume from (same robot, task, algo); empty = start fresh", "")
    state_timeout: float = doc("s to wait for the controller's answer to one action before giving up", 10.0)
    connect_timeout: float = doc("s to wait for the controller to appear at start-up", 60.0)
    progress: bool = doc("show a progress bar on the console", True)
    tensorboard: bool = doc("write TensorBoard scalars to out_dir/tb", True)
    wait_for_recorder: bool = doc("wait (up to connect_timeout) for a recorder subscribed to walker/action and "
                                  "walker/episode before the first reset, so a bag misses nothing", False)


class LearnerNode:
    def __init__(self, params: LearnerParams):
        self.params = params
        robot = load_robot(params.robot)
        task = load_task(params.task)
        if params.resume:  # refuse a bad checkpoint now, not after waiting for the controller
            read_meta(os.path.expanduser(params.resume),
                      expect={"robot": robot.name, "task": params.task, "algo": params.algo})
        self.stats_pub = rospy.Publisher("walker/episode", EpisodeStats, queue_size=100)
        self.env = RosWalkEnv(robot, task, state_timeout=params.state_timeout,
                              connect_timeout=params.connect_timeout)
        agent = build_agent(params.algo, self.env.obs_size, self.env.act_size, params.agent_config, params.seed)
        out_dir = os.path.expanduser(params.out_dir)
        self.session = TrainingSession(
            agent, self.env, TrainConfig(total_steps=params.steps, seed=params.seed,
                                         checkpoint_every=params.checkpoint_every),
            out_dir, meta={"robot": robot.name, "task": params.task}, resume=os.path.expanduser(params.resume),
            on_episode=[self._publish_stats], should_stop=rospy.is_shutdown, progress=params.progress,
            tensorboard=params.tensorboard)
        self.save_srv = rospy.Service("learner/save_checkpoint", SaveCheckpoint, self._on_save)
        if params.wait_for_recorder:
            self._wait_for_recorder(params.connect_timeout)
        rospy.loginfo("learner: %s on %s, %d steps, outputs in %s", params.algo, robot.name, params.steps,
                      self.session.out_dir)

    def _wait_for_recorder(self, timeout: float) -> None:
        """A recorder subscribes to all its topics at once: once it is connected to both of ours (the action
        topic then has the controller and the recorder), its state subscription is registered too."""
        deadline = rospy.get_time() + timeout
        action_pub = self.env.action_publisher
        while action_pub.get_num_connections() < 2 or self.stats_pub.get_num_connections() < 1:
            if rospy.is_shutdown():
                return
            if rospy.get_time() > deadline:
                rospy.logwarn("learner: no recorder connected within %.0f s; training without waiting", timeout)
                return
            rospy.sleep(0.05)

    def _publish_stats(self, record: EpisodeRecord) -> None:
        msg = EpisodeStats()
        msg.header.stamp = rospy.Time.now()
        msg.episode = record.episode
        msg.episode_return = record.episode_return
        msg.length = record.length
        msg.distance = record.distance
        msg.fell = record.fell
        msg.wall_time = record.wall_time
        msg.env_steps_per_s = record.env_steps_per_s
        msg.total_env_steps = record.total_env_steps
        msg.total_updates = record.total_updates
        msg.reward_term_names = list(record.reward_terms)
        msg.reward_term_sums = [float(v) for v in record.reward_terms.values()]
        self.stats_pub.publish(msg)

    def _on_save(self, req) -> SaveCheckpointResponse:
        try:
            path = self.session.save(os.path.expanduser(req.path) if req.path else "")
        except Exception as exc:  # report to the caller; training goes on
            return SaveCheckpointResponse(success=False, message=str(exc), path=req.path)
        rospy.loginfo("learner: checkpoint saved to %s (on request)", path)
        return SaveCheckpointResponse(success=True, message="", path=path)

    def run(self) -> None:
        summary = self.session.run()
        rospy.loginfo("learner: %s", self.session.describe(summary))


def main() -> None:
    run_node("learner", lambda: LearnerNode(load_private_params(LearnerParams)).run())
