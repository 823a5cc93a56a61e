"""learner_node: trains an agent online against one or several controller_nodes, through ROS.

It drives ``RosWalkEnv``s (one per controller namespace in ``actor_namespaces``; by default the controller in its
own namespace) with the same ``TrainingSession`` the in-process ``train`` command uses, publishes one EpisodeStats
per episode, and writes ``episodes.csv``, ``checkpoint.pt`` (periodic, on request, at the end and on shutdown) and
``learning_curve.png`` into ``out_dir``. When its step budget is spent it exits; ``train.launch`` marks it required,
so the whole session (controller, recorder) then shuts down.

A controller that stops answering for ``state_timeout`` (its process died, or its host dropped off the network) is
marked lost: its episode in progress is abandoned (the transitions it already stored stay in the replay memory),
training goes on with the other actors, and it is taken back with a fresh episode as soon as its reset service
answers again.  The node gives up only when no actor has answered for ``reconnect_timeout``.  /diagnostics carries
one status per actor ("op3_walk actor <namespace>": OK, STALE while an answer is late, ERROR while lost, with the
seconds since its last state and the transitions it stored).  A learner that dies is restarted with
``resume: auto`` and continues from ``out_dir/checkpoint.pt``.

At start, before it waits for any controller, the node refuses (one FATAL line, exit status 1) out-of-range
parameters, an algorithm that does not fit the task's action space, a bad ``resume`` checkpoint, and a fresh start
into an ``out_dir`` that holds a run (with ``wait_for_recorder``, an earlier ``session*.bag`` counts too: the
recorder of train.launch refuses to overwrite it).

Topics: publishes <ns>/walker/action (op3_walk/WalkerAction), walker/episode (op3_walk/EpisodeStats),
        /diagnostics (diagnostic_msgs/DiagnosticArray); subscribes <ns>/walker/state (op3_walk/WalkerState).
Services served: learner/pause, learner/resume (std_srvs/Trigger), learner/save_checkpoint (op3_walk/SaveCheckpoint),
        learner/load_policy (op3_walk/LoadPolicy), learner/set_exploration (op3_walk/SetExploration).
Services called: <ns>/walker/reset (op3_walk/ResetEpisode, persistent proxies).
"""
import dataclasses
import glob
import math
import os
import time
from types import SimpleNamespace
from typing import Any, Dict, List

import gymnasium
import rospy
from diagnostic_msgs.msg import DiagnosticStatus
from std_srvs.srv import Trigger, TriggerResponse

from op3_walk.config import ConfigError, doc
from op3_walk.envs.walk_env import load_task, make_spaces
from op3_walk.msg import EpisodeStats
from op3_walk.ros.conversions import episode_stats_message
from op3_walk.robots import load_robot
from op3_walk.ros.diagnostics import DiagnosticsPublisher, status
from op3_walk.ros.master_watch import MasterWatch, resume_advice
from op3_walk.ros.params import load_private_params, parse_node_args, run_node
from op3_walk.ros.remote_env import RosWalkEnv
from op3_walk.ros.session_end import end_session
from op3_walk.srv import (LoadPolicy, LoadPolicyResponse, SaveCheckpoint, SaveCheckpointResponse, SetExploration,
                          SetExplorationResponse)
from op3_walk.training.checkpoint import load_checkpoint, read_meta
from op3_walk.training.loop import EpisodeRecord, TrainConfig
from op3_walk.training.session import (CHECKPOINT_NAME, TrainingSession, build_agent_for_env, refuse_existing_run,
                                       wants_discrete)


@dataclasses.dataclass
class LearnerParams:
    """learner_node private parameters."""

    robot: str = doc("robot config (must match the controller's): a name in config/robots/ or a YAML path", "plen")
    task: str = doc("task config (must match the controller's): a name in config/tasks/ or a YAML path", "walk")
    algo: str = doc("learning algorithm: td3, ddpg, sac or dqn (dqn needs a discrete-action task)", "td3")
    agent_config: str = doc("agent YAML; empty = config/agents/<algo>.yaml", "")
    steps: int = doc("env steps to train for, over all actors (the node exits after them)", 20000)
    seed: int = doc("seed of the agent and of the first episode (actor i's first episode: seed + i)", 0)
    out_dir: str = doc("folder for episodes.csv, checkpoint.pt, learning_curve.png (created); a fresh start "
                       "refuses one that holds a run (resume it, or give another folder)", "op3_walk_train")
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
    reconnect_timeout: float = doc("s to keep waiting when every controller is lost (restarting, host cut off) "
                                   "before giving up; a lost actor is retried as long as others train", 60.0)
    start_paused: bool = doc("start paused (call learner/resume to begin)", False)
    overlap_updates: bool = doc("train on step t while the controller computes step t+1 (the policy acts one "
                                "step's updates behind); false = strict act, step, update order", True)
    progress: bool = doc("show a progress bar on the console", True)
    tensorboard: bool = doc("write TensorBoard scalars to out_dir/tb", True)
    wait_for_recorder: bool = doc("wait (up to connect_timeout) for a recorder subscribed to walker/action and "
                                  "walker/episode before the first reset, so a bag misses nothing", False)
    diagnostics_rate_hz: float = doc("Hz of /diagnostics messages; 0 = none", 1.0)

    def validate(self) -> None:
        """Every numeric parameter in range, checked at start (before waiting for anything)."""
        if self.steps < 1:
            raise ValueError("steps must be >= 1, got %d" % self.steps)
        if self.checkpoint_every < 0:
            raise ValueError("checkpoint_every must be >= 0 (0 = only at the end), got %d" % self.checkpoint_every)
        if self.seed < 0:
            raise ValueError("seed must be >= 0, got %d" % self.seed)
        for name in ("state_timeout", "connect_timeout"):   # (the config loader refuses NaN and inf)
            if not getattr(self, name) > 0:
                raise ValueError("%s must be > 0 s, got %r" % (name, getattr(self, name)))
        for name in ("reconnect_timeout", "diagnostics_rate_hz"):
            if not getattr(self, name) >= 0:
                raise ValueError("%s must be >= 0, got %r" % (name, getattr(self, name)))
        try:
            wants_discrete(self.algo)
        except ValueError as exc:
            raise ValueError("algo: %s" % exc) from None
        if len(set(self.actor_namespaces)) != len(self.actor_namespaces):
            raise ValueError("actor_namespaces has duplicates: %s" % self.actor_namespaces)


def recorded_bags(out_dir: str) -> List[str]:
    """The bags train.launch's recorder (record:=true) left in ``out_dir``: session.bag, its split parts
    session_0.bag, ... and those of resumed sessions (session_<date>.bag).  Unfinished ``.active`` files are not
    listed: the recorder of this very launch may have created one already."""
    return sorted(glob.glob(os.path.join(glob.escape(out_dir), "session*.bag")))


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
        out_dir = os.path.expanduser(params.out_dir)
        resume = resolve_resume(params.resume, params.out_dir)
        # Everything that can be refused is refused now, before waiting for the controllers (up to connect_timeout)
        # and before a recorder could write anything: a bad checkpoint, a run a fresh start would overwrite (a
        # learner restarted with resume: auto that finds no checkpoint takes over its own unsaved folder), an
        # algorithm that does not fit the task's action space.
        if resume:
            read_meta(resume, expect=self.expect)
        else:
            refuse_existing_run(out_dir, discard_unsaved=params.resume == "auto",
                                also=recorded_bags(out_dir) if params.wait_for_recorder and not params.resume else ())
        observation_space, action_space = make_spaces(robot, task)
        if wants_discrete(params.algo) != isinstance(action_space, gymnasium.spaces.Discrete):
            raise ConfigError("algo %s does not fit task %s: %s needs a %s action space; the task has %s"
                              % (params.algo, params.task, params.algo, "Discrete" if wants_discrete(params.algo)
                                 else "Box (continuous)", action_space))
        agent = build_agent_for_env(params.algo, SimpleNamespace(observation_space=observation_space,
                                                                 action_space=action_space),
                                    params.agent_config, params.seed)
        self.agent = agent
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
        self.master_watch = MasterWatch().start()   # master_watch.py: a roscore restart ends the session cleanly
        self.session = TrainingSession(
            agent, self.envs if len(self.envs) > 1 else env0,
            TrainConfig(total_steps=params.steps, seed=params.seed, checkpoint_every=params.checkpoint_every,
                        reconnect_timeout_s=params.reconnect_timeout, overlap_updates=params.overlap_updates),
            out_dir, meta={"robot": robot.name, "task": params.task}, resume=resume,
            on_episode=[self._publish_stats], should_stop=self._should_stop, progress=params.progress,
            tensorboard=params.tensorboard, log=self._log, discard_unsaved=params.resume == "auto")
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

    def _should_stop(self) -> bool:
        return rospy.is_shutdown() or self.master_watch.restarted is not None

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
                       rospy.get_name(), values)] + [self._actor_status(i) for i in range(len(self.envs))]

    def _actor_status(self, index: int) -> DiagnosticStatus:
        """One actor: OK while it answers, STALE once an answer is more than half of state_timeout late, ERROR
        while it is lost (no answer within state_timeout; retried in the background)."""
        env, trainer = self.envs[index], self.trainer
        name = self.namespaces[index] or "/"
        age = time.monotonic() - env.last_heard
        values = {"transitions": trainer.actor_steps[index], "episodes": trainer.actor_episodes[index],
                  "last state age [s]": "%.2f" % age, "state topic": env.state_topic,
                  "resent actions": env.resent_actions, "reconnects": env.reconnects}
        if index in trainer.lost_envs or env.lost:
            out = status("op3_walk actor %s" % name, 2, "lost: no answer for %.1f s; retrying" % age, name, values)
        elif trainer.paused.is_set():
            out = status("op3_walk actor %s" % name, 0, "paused", name, values)
        elif age > 0.5 * self.params.state_timeout:
            out = status("op3_walk actor %s" % name, 0, "no state for %.1f s" % age, name, values)
            out.level = DiagnosticStatus.STALE
        else:
            out = status("op3_walk actor %s" % name, 0, "training", name, values)
        return out

    def run(self) -> None:
        try:
            summary = self.session.run()
        finally:
            self.diagnostics.stop()
            self.master_watch.finish(self.session.out_dir, lambda: resume_advice(self.session.out_dir))
        rospy.loginfo("learner: %s", self.session.describe(summary))
        if summary.lost_episodes:
            rospy.logwarn("learner: %d episodes were abandoned because a controller stopped answering",
                          summary.lost_episodes)
        end_session(self.session.out_dir, completed=not summary.stopped_early)   # session_end.py: a quiet end


def main() -> None:
    parse_node_args("learner_node", LearnerParams, __doc__)   # --help without a master
    run_node("learner", lambda: LearnerNode(load_private_params(LearnerParams)).run())
