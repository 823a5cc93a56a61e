"""learner_node: trains an agent online against one or several controller_nodes, through ROS.

It drives ``RosWalkEnv``s (one per controller namespace in ``actor_namespaces``; by default the controller in its
own namespace) with the same ``TrainingSession`` the in-process ``train`` command uses, publishes one EpisodeStats
per episode, and writes ``episodes.csv``, ``checkpoint.pt`` (periodic, on request, at the end and on shutdown) and
``learning_curve.png`` into ``out_dir``. When its step budget is spent it exits; ``train.launch`` marks it required,
so the whole session (controller, recorder) then shuts down.

A controller that dies is waited for (``reconnect_timeout``): its episode in progress is abandoned and training
goes on once it is back (or with the other actors meanwhile).  A learner that dies is restarted with
``resume: auto`` and continues from ``out_dir/checkpoint.pt``.

Topics: publishes <ns>/walker/action (op3_walk/WalkerAction), walker/episode (op3_walk/EpisodeStats),
        /diagnostics (diagnostic_msgs/DiagnosticArray); subscribes <ns>/walker/state (op3_walk/WalkerState).
Services served: learner/pause, learner/resume (std_srvs/Trigger), learner/save_checkpoint (op3_walk/SaveCheckpoint),
        learner/load_policy (op3_walk/LoadPolicy), learner/set_exploration (op3_walk/SetExploration).
Services called: <ns>/walker/reset (op3_walk/ResetEpisode, persistent proxies).
"""
import dataclasses
import math
import os
import time
from typing import Any, Dict, List

import rospy
from std_srvs.srv import Trigger, TriggerResponse

from op3_walk.config import doc
from op3_walk.envs.walk_env import load_task
from op3_walk.msg import EpisodeStats
from op3_walk.ros.conversions import episode_stats_message
from op3_walk.robots import load_robot
from op3_walk.ros.diagnostics import DiagnosticsPublisher, status
from op3_walk.ros.params import load_private_params, run_node
from op3_walk.ros.remote_env import RosWalkEnv
from op3_walk.srv import (LoadPolicy, LoadPolicyResponse, SaveCheckpoint, SaveCheckpointResponse, SetExploration,
                          SetExplorationResponse)
from op3_walk.training.checkpoint import load_checkpoint, read_meta
from op3_walk.training.loop import EpisodeRecord, TrainConfig
from op3_walk.training.session import CHECKPOINT_NAME, TrainingSession, build_agent


@dataclasses.dataclass
class LearnerParams:
    """learner_node private parameters."""

    robot: str = doc("robot config (must match the controller's): a name in config/robots/ or a YAML path", "plen")
    task: str = doc("task config (must match the controller's): a name in config/tasks/ or a YAML path", "walk")
    algo: str = doc("learning algorithm: td3, ddpg, sac or dqn (dqn needs a discrete-action task)", "td3")
    agent_config: str = doc("agent YAML; empty = config/agents/<algo>.yaml", "")
    steps: int = doc("env steps to train for, over all actors (the node exits after them)", 20000)
    seed: int = doc("seed of the agent and of the first episode (actor i's first episode: seed + i)", 0)
    out_dir: str = doc("folder for episodes.csv, checkpoint.pt, learning_curve.png (created)", "op3_walk_train")
    checkpoint_every: int = doc("env steps between periodic checkpoints; 0 = only at the end", 5000)
    resume: str = doc("checkpoint to resume from (same robot, task, algo); 'auto' = out_dir/checkpoint.pt when it "
                      "exists (restarting a learner that died); empty = start fresh", "")
    actor_namespaces: List[str] = doc("namespaces of the controllers to train with (one actor each, e.g. "
                                      "[actor_0, actor_1]); empty = the controller in this node's namespace",
                                      default_factory=list)
    realtime: bool = doc("the controllers run in realtime mode (hardware): accept the freshest state instead of "
                         "exactly the next one", False)
    state_timeout: float = doc("s to wait for the controller's answer to one action before it counts as lost", 10.0)
    connect_timeout: float = doc("s to wait for the controllers to appear at start-up", 60.0)
    reconnect_timeout: float = doc("s to keep waiting for a lost controller (restarting) before giving up", 60.0)
    start_paused: bool = doc("start paused (call learner/resume to begin)", False)
    overlap_updates: bool = doc("train on step t while the controller computes step t+1 (the policy acts one "
                                "step's updates behind); false = strict act, step, update order", True)
    progress: bool = doc("show a progress bar on the console", True)
    tensorboard: bool = doc("write TensorBoard scalars to out_dir/tb", True)
    wait_for_recorder: bool = doc("wait (up to connect_timeout) for a recorder subscribed to walker/action and "
                                  "walker/episode before the first reset, so a bag misses nothing", False)
    diagnostics_rate_hz: float = doc("Hz of /diagnostics messages; 0 = none", 1.0)

    def validate(self) -> None:
        for name in ("state_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError("%s must be > 0" % name)
        if self.reconnect_timeout < 0 or self.diagnostics_rate_hz < 0:
            raise ValueError("reconnect_timeout and diagnostics_rate_hz must be >= 0")
        if len(set(self.actor_namespaces)) != len(self.actor_namespaces):
            raise ValueError("actor_namespaces has duplicates: %s" % self.actor_namespaces)


def resolve_resume(resume: str, out_dir: str) -> str:
    """The checkpoint to resume from: ``auto`` means ``out_dir/checkpoint.pt`` if present (else a fresh start)."""
    if resume != "auto":
        return os.path.expanduser(resume)
    path = os.path.join(os.path.expanduser(out_dir), CHECKPOINT_NAME)
    return path if os.path.exists(path) else ""


class LearnerNode:
    def __init__(self, params: LearnerParams):
        self.params = params
        robot = load_robot(params.robot)
        task = load_task(params.task)
        self.expect = {"robot": robot.name, "task": params.task, "algo": params.algo}
        resume = resolve_resume(params.resume, params.out_dir)
        if resume:  # refuse a bad checkpoint now, not after waiting for the controller
            read_meta(resume, expect=self.expect)
        self.stats_pub = rospy.Publisher("walker/episode", EpisodeStats, queue_size=100)
        namespaces = params.actor_namespaces or [""]
        self.namespaces = namespaces
        self.envs = [RosWalkEnv(robot, task, state_topic=rospy.names.ns_join(ns, "walker/state") if ns else
                                "walker/state",
                                action_topic=rospy.names.ns_join(ns, "walker/action") if ns else "walker/action",
                                reset_service=rospy.names.ns_join(ns, "walker/reset") if ns else "walker/reset",
                                state_timeout=params.state_timeout, connect_timeout=params.connect_timeout,
                                realtime=params.realtime)
                     for ns in namespaces]
        env0 = self.envs[0]
        agent = build_agent(params.algo, env0.obs_size, env0.act_size, params.agent_config, params.seed)
        self.agent = agent
        out_dir = os.path.expanduser(params.out_dir)
        self.session = TrainingSession(
            agent, self.envs if len(self.envs) > 1 else env0,
            TrainConfig(total_steps=params.steps, seed=params.seed, checkpoint_every=params.checkpoint_every,
                        reconnect_timeout_s=params.reconnect_timeout, overlap_updates=params.overlap_updates),
            out_dir, meta={"robot": robot.name, "task": params.task}, resume=resume,
            on_episode=[self._publish_stats], should_stop=rospy.is_shutdown, progress=params.progress,
            tensorboard=params.tensorboard, log=self._log)
        self.trainer = self.session.trainer
        if params.start_paused:
            self.trainer.paused.set()
        self.services = [
            rospy.Service("learner/save_checkpoint", SaveCheckpoint, self._on_save),
            rospy.Service("learner/pause", Trigger, self._on_pause),
            rospy.Service("learner/resume", Trigger, self._on_resume),
            rospy.Service("learner/load_policy", LoadPolicy, self._on_load_policy),
            rospy.Service("learner/set_exploration", SetExploration, self._on_set_exploration),
        ]
        self.diagnostics = DiagnosticsPublisher(params.diagnostics_rate_hz, self._diagnostics)
        if params.wait_for_recorder:
            self._wait_for_recorder(params.connect_timeout)
        rospy.loginfo("learner: %s on %s with %d actor(s) %s, %d steps, outputs in %s", params.algo, robot.name,
                      len(self.envs), namespaces if params.actor_namespaces else "(this namespace)", params.steps,
                      self.session.out_dir)

    def _log(self, message: str) -> None:
        rospy.loginfo("learner: %s", message)

    def _wait_for_recorder(self, timeout: float) -> None:
        """A recorder subscribes to all its topics at once: once it is connected to both of ours (the action
        topic then has the controller and the recorder), its state subscription is registered too.  Wall-clock
        time: with /use_sim_time and a paused simulator, ROS time would stand still."""
        deadline = time.monotonic() + timeout
        action_pub = self.envs[0].action_publisher
        while action_pub.get_num_connections() < 2 or self.stats_pub.get_num_connections() < 1:
            if rospy.is_shutdown():
                return
            if time.monotonic() > deadline:
                rospy.logwarn("learner: no recorder connected within %.0f s; training without waiting", timeout)
                return
            time.sleep(0.05)

    def _publish_stats(self, record: EpisodeRecord) -> None:
        self.stats_pub.publish(episode_stats_message(
            record.episode, record.episode_return, record.length, record.distance, record.fell, record.wall_time,
            record.total_env_steps, record.total_updates, record.reward_terms, rospy.Time.now(),
            actor=self.namespaces[record.actor]))

    # -- services -----------------------------------------------------------------------------------------------
    def _on_save(self, req) -> SaveCheckpointResponse:
        try:
            path = self.session.save(os.path.expanduser(req.path) if req.path else "")
        except Exception as exc:  # report to the caller; training goes on
            return SaveCheckpointResponse(success=False, message=str(exc), path=req.path)
        rospy.loginfo("learner: checkpoint saved to %s (on request)", path)
        return SaveCheckpointResponse(success=True, message="", path=path)

    def _on_pause(self, req) -> TriggerResponse:
        was = self.trainer.paused.is_set()
        self.trainer.paused.set()
        rospy.loginfo("learner: paused at env step %d", self.agent.env_steps)
        return TriggerResponse(success=True, message="already paused" if was else
                               "paused at env step %d (after the step in progress)" % self.agent.env_steps)

    def _on_resume(self, req) -> TriggerResponse:
        was = self.trainer.paused.is_set()
        self.trainer.paused.clear()
        rospy.loginfo("learner: resumed at env step %d", self.agent.env_steps)
        return TriggerResponse(success=True, message="resumed" if was else "was not paused")

    def _on_load_policy(self, req) -> LoadPolicyResponse:
        path = os.path.expanduser(req.path)
        try:
            payload, meta = load_checkpoint(path, expect=self.expect)
            with self.trainer.lock:
                self.agent.load_weights(payload["agent"])
        except Exception as exc:  # a bad file changes nothing and is reported
            return LoadPolicyResponse(success=False, message=str(exc))
        rospy.loginfo("learner: networks loaded from %s (trained %s env steps); replay memory and counters kept",
                      path, meta.get("env_steps", "?"))
        return LoadPolicyResponse(success=True, message="loaded networks of %s (env step %s of that run)"
                                  % (path, meta.get("env_steps", "?")))

    def _on_set_exploration(self, req) -> SetExplorationResponse:
        value = None if req.value < 0 else req.value
        try:
            with self.trainer.lock:
                self.agent.set_exploration(value)
                now = float(self.agent.exploration)
        except ValueError as exc:
            return SetExplorationResponse(success=False, message=str(exc), value=float(self.agent.exploration))
        rospy.loginfo("learner: exploration %s (%.4g)", "reset to the configuration" if value is None else "set",
                      now)
        return SetExplorationResponse(success=True, message="", value=now)

    # -- diagnostics --------------------------------------------------------------------------------------------
    def _diagnostics(self, window_s: float, memory: Dict[str, float]) -> List[Any]:
        agent, trainer = self.agent, self.trainer
        steps, updates = agent.env_steps, agent.updates
        values: Dict[str, Any] = {
            "algo": self.params.algo, "env steps": steps, "updates": updates, "episodes": trainer.episodes,
            "budget": self.params.steps, "paused": trainer.paused.is_set(),
            "exploration": float(agent.exploration), "replay memory": len(agent.memory),
            "actors": len(self.envs), "lost episodes": trainer.lost_episodes,
            "resent actions": sum(env.resent_actions for env in self.envs),
            "controller reconnects": sum(env.reconnects for env in self.envs),
        }
        for key, count in (("env steps/s", steps), ("updates/s", updates)):
            last = memory.get(key, count)
            values[key] = "%.1f" % ((count - last) / window_s if window_s > 0 else 0.0)
            memory[key] = count
        record = trainer.last_record
        if record is not None:
            values["last episode return"] = record.episode_return
            if math.isfinite(record.distance):
                values["last episode distance [m]"] = record.distance
        level, message = 0, "training"
        if trainer.paused.is_set():
            level, message = 0, "paused"
        lost = [self.namespaces[i] or "/" for i in sorted(trainer.lost_envs)]
        if lost:
            level, message = 1, "controllers lost: %s" % ", ".join(lost)
        return [status("op3_walk learner %s" % (rospy.get_namespace().rstrip("/") or "/"), level, message,
                       rospy.get_name(), values)]

    def run(self) -> None:
        try:
            summary = self.session.run()
        finally:
            self.diagnostics.stop()
        rospy.loginfo("learner: %s", self.session.describe(summary))
        if summary.lost_episodes:
            rospy.logwarn("learner: %d episodes were abandoned because a controller stopped answering",
                          summary.lost_episodes)


def main() -> None:
    run_node("learner", lambda: LearnerNode(load_private_params(LearnerParams)).run())
