"""policy_node: drives a controller_node with an exported policy (``.npz``), numpy only: deployment.

It answers every non-terminal WalkerState (episode e, step k) with a WalkerAction (e, k) from a
``op3_walk.policy.NumpyPolicy``.  It never imports torch, so it runs next to the controller on the robot's small
computer; the policy file comes from ``export_policy``.

Episodes: with ``start_episodes`` (the default; in lockstep simulation nobody else resets) the node calls
``walker/reset`` itself, runs ``episodes`` episodes (0 = until shut down) and exits, which ends ``deploy.launch``.
Without it, it acts on whatever episodes another node starts.  It publishes one EpisodeStats per episode it ran from
its first state, and logs a summary (returns, distances, falls, inference time per action) when it stops.

Episode ends: each EpisodeStats carries why its episode ended (``end_reason``: fell, time limit, watchdog, e-stop,
safety fall, safety relax: the last WalkerState's).  A reset refused while an e-stop or fall is latched on the robot
(the controller answers ``retry``) is retried every RESET_RETRY_S, with a warning naming why, until someone calls
safety/reset_estop: the session then continues with its next episode, without a relaunch.

Robustness: a state it has already answered (a re-send) is not answered twice; if no new state follows an action
within 1 s, the action is re-sent (the lockstep controller answers a repeat by re-sending its state, so a message
lost either way costs a resend, not a hang).  Every state's observation layout is checked against the policy's.

Topics (relative): publishes walker/action (op3_walk/WalkerAction), walker/episode (op3_walk/EpisodeStats);
                   subscribes walker/state (op3_walk/WalkerState).
Steering: a policy whose task has a velocity command in its observation is steered by ``cmd_vel``
(geometry_msgs/Twist) on the controller, which builds the observations: the command reaches this node inside
walker/state, already clamped to the task's ranges and timed out to zero (controller_node's ``cmd_vel_timeout_s``).
This node does not subscribe to cmd_vel itself; at start-up it logs whether its policy can be steered, and the ranges.
Services: serves policy/load (op3_walk/LoadPolicy); calls walker/reset (op3_walk/ResetEpisode, persistent proxy).
"""
import collections
import dataclasses
import os
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

import numpy as np
import rospy

from op3_walk.config import doc
from op3_walk.msg import EpisodeStats, WalkerAction, WalkerState
from op3_walk.policy.runtime import NumpyPolicy, PolicyInterface, expected_interface
from op3_walk.ros.conversions import action_message, end_reason_of, episode_stats_message, observation_from_message
from op3_walk.ros.master_watch import MasterWatch
from op3_walk.ros.params import load_private_params, parse_node_args, run_node
from op3_walk.ros.session_end import end_session
from op3_walk.srv import LoadPolicy, LoadPolicyResponse, ResetEpisode

RESEND_INTERVAL_S = 1.0    # re-send an unanswered action this often
RESET_RETRY_S = 0.5        # retry a reset refused while an e-stop is latched this often
RESET_RETRY_LOG_S = 10.0   # ... repeating the warning this often (and whenever the controller's reason changes)
ACT_TIME_WINDOW = 10000    # inference times kept for the summary's percentiles
PUBLISH_QUEUE = 1000       # messages queued per subscriber connection (about 2 s of lockstep actions)


@dataclasses.dataclass
class PolicyParams:
    """policy_node private parameters."""

    policy: str = doc("exported policy file (.npz from export_policy); required. A relative path is relative to the "
                      "node's working directory ($ROS_HOME under roslaunch): prefer absolute paths", "")
    robot: str = doc("robot config the controller runs (a name in config/robots/ or a YAML path); the policy must "
                     "fit it. Empty = the robot the policy was trained for", "")
    task: str = doc("task config the controller runs (a name in config/tasks/ or a YAML path); the policy must fit "
                    "it. Empty = the task the policy was trained on", "")
    episodes: int = doc("episodes to run, then exit; 0 = run until shut down", 0)
    seed: int = doc("start_episodes: seed of the first reset (later episodes continue the controller's RNG stream); "
                    "-1 = never re-seed", 0)
    start_episodes: bool = doc("call walker/reset to start each episode (lockstep simulation: nobody else does); "
                               "false = act on the episodes another node starts", True)
    state_timeout: float = doc("s without a new state after an action before giving up (start_episodes: the node "
                               "exits with an error) or warning (otherwise)", 10.0)
    connect_timeout: float = doc("s to wait for the controller's walker/reset and topics at start-up "
                                 "(start_episodes)", 60.0)
    wait_for_recorder: bool = doc("start_episodes: wait (up to connect_timeout) for a recorder subscribed to "
                                  "walker/action and walker/episode before the first reset, so a bag misses nothing",
                                  False)

    def validate(self) -> None:
        if not self.policy:
            raise ValueError("parameter ~policy (the exported .npz to run) is required")
        if self.episodes < 0:
            raise ValueError("episodes must be >= 0 (0 = run until shut down), got %d" % self.episodes)
        if self.seed < -1:
            raise ValueError("seed must be >= 0, or -1 (never re-seed), got %d" % self.seed)
        for name in ("state_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError("%s must be > 0 s, got %r" % (name, getattr(self, name)))


@dataclasses.dataclass
class _Episode:
    """An episode this node is running: counted from its reset state (step 0)."""

    controller_episode: int
    started: float                 # monotonic s at its first state
    steps: int = 0
    episode_return: float = 0.0
    reward_terms: Dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Finished:
    episode_return: float
    length: int
    distance: float
    fell: bool
    end_reason: str = ""


class PolicyNode:
    """Answers WalkerStates with a NumpyPolicy's actions; optionally starts the episodes (see module docstring)."""

    def __init__(self, params: PolicyParams):
        params.validate()
        self.params = params
        policy = NumpyPolicy(os.path.expanduser(params.policy))
        robot = params.robot or policy.robot
        task = params.task or policy.task
        if not robot:
            raise ValueError("policy %s was trained on gymnasium env %r; policy_node drives walking robots"
                             % (policy.path, policy.env))
        self.expected: PolicyInterface = expected_interface(robot, task)
        self.where = "robot %s, task %s" % (self.expected.robot, task)
        policy.check_interface(self.expected, what="this node's " + self.where)
        self.policy = policy
        self.policy_loads = 0
        self._log_steering(task)

        self._cond = threading.Condition()
        self._layout_ok: Optional[Tuple[Tuple[str, ...], Tuple[int, ...]]] = None
        self._last_key: Optional[Tuple[int, int]] = None      # (episode, step) of the last state handled
        self._reset_key: Optional[Tuple[int, int]] = None     # the state a reset returned (also sent on the topic)
        self._last_action: Optional[WalkerAction] = None      # the answer to the last state (re-sent if unanswered)
        self._awaiting = False                                  # the last state was non-terminal: more must come
        self._last_progress = time.monotonic()                  # when a new state last arrived
        self._current: Optional[_Episode] = None
        self._done_episodes: Set[int] = set()                   # controller episode numbers finished (ran by us)
        self._error: Optional[str] = None                       # fatal: reported by the main thread
        self._last_problem = ""                                 # latest bad state, for the timeout message
        self.finished: List[_Finished] = []
        self.total_steps = 0
        self.actions = 0
        self.duplicate_states = 0
        self.resent_actions = 0
        self.bad_states = 0
        self.partial_episodes = 0
        self.refused_resets = 0                                 # reset attempts refused while an e-stop was latched
        self.act_times: Deque[float] = collections.deque(maxlen=ACT_TIME_WINDOW)
        self.act_time_max = 0.0
        self.act_time_sum = 0.0

        # rospy keeps one queue per subscriber and silently drops the oldest message when it is full: a deep queue
        # lets a recorder starved of CPU for a moment (lockstep runs at hundreds of actions/s) catch up losslessly.
        self.action_pub = rospy.Publisher("walker/action", WalkerAction, queue_size=PUBLISH_QUEUE, tcp_nodelay=True)
        self.stats_pub = rospy.Publisher("walker/episode", EpisodeStats, queue_size=PUBLISH_QUEUE)
        self.state_sub = rospy.Subscriber("walker/state", WalkerState, self._on_state, queue_size=10,
                                          tcp_nodelay=True)
        self.load_srv = rospy.Service("policy/load", LoadPolicy, self._on_load)
        self._reset_proxy: Optional[rospy.ServiceProxy] = None
        self._reset_name = rospy.resolve_name("walker/reset")
        rospy.loginfo("policy: %s; driving %s, %s", policy.describe(), self.where,
                      "starting %s" % ("episodes until shut down" if not params.episodes
                                       else "%d episode(s)" % params.episodes)
                      if params.start_episodes else "acting on episodes started by others")

    def _log_steering(self, task: str) -> None:
        """Say whether cmd_vel (on the controller) steers this policy, and within which ranges."""
        from op3_walk.envs.command import describe_ranges
        from op3_walk.envs.task import load_task
        try:
            cfg = load_task(task)
        except Exception:   # the interface check above already loaded it; never fail on a log line
            return
        if cfg.observation.command:
            rospy.loginfo("policy: takes a velocity command: steer it with cmd_vel (geometry_msgs/Twist) on the "
                          "controller, within %s", describe_ranges(cfg.command.for_robot(self.expected.robot)))
        else:
            rospy.loginfo("policy: task %s has no velocity command: cmd_vel does not steer it", task)

    # -- ROS callbacks ------------------------------------------------------------------------------------------
    def _on_state(self, msg: WalkerState, from_reset: bool = False) -> None:
        with self._cond:
            last = self._last_key
            # A realtime controller's watchdog ends an episode by re-publishing the current step as truncated: that
            # is the episode's end, not a re-send.
            ended_here = (last is not None and (msg.episode, msg.step) == last and self._awaiting
                          and (msg.terminated or msg.truncated))
            if last is not None and msg.episode == last[0] and msg.step <= last[1] and not ended_here:
                if not from_reset and (msg.episode, msg.step) != self._reset_key:
                    self.duplicate_states += 1    # a re-send of a state already answered (or an older one)
                return
            policy = self.policy
            layout = (tuple(msg.observation_names), tuple(msg.observation_sizes))
            if layout != self._layout_ok:
                try:
                    policy.check_layout(layout[0], layout[1],
                                        what="the controller's WalkerState (another robot or task?)")
                except ValueError as exc:
                    self._error = str(exc)
                    self._cond.notify_all()
                    return
                self._layout_ok = layout
            self._last_key = (msg.episode, msg.step)
            self._last_progress = time.monotonic()
            self._track(msg)
            self._awaiting = not (msg.terminated or msg.truncated)
            if not self._awaiting:
                self._last_action = None
                self._cond.notify_all()
                return
            try:
                obs = observation_from_message(msg, policy.obs_dim)
            except ValueError as exc:
                self.bad_states += 1
                self._last_problem = str(exc)
                rospy.logerr_throttle(5.0, "policy: not acting on %s; %d bad states so far", exc, self.bad_states)
                return
            start = time.perf_counter()
            action = policy.act(obs)
            elapsed = time.perf_counter() - start
            self._last_action = action_message(msg.episode, msg.step, action, rospy.Time.now())
            self.action_pub.publish(self._last_action)
            self.actions += 1
            self.act_times.append(elapsed)
            self.act_time_sum += elapsed
            self.act_time_max = max(self.act_time_max, elapsed)

    def _track(self, msg: WalkerState) -> None:
        """Episode bookkeeping for a new state (called with the lock held)."""
        now = time.monotonic()
        current = self._current
        if msg.step == 0 or current is None or current.controller_episode != msg.episode:
            if current is not None and current.steps >= 0:
                rospy.logwarn("policy: episode %d ended without a terminal state (reset by someone else?); not "
                              "reported", current.controller_episode)
        if msg.step == 0:
            self._current = _Episode(controller_episode=msg.episode, started=now)
            return
        if current is None or current.controller_episode != msg.episode:
            self.partial_episodes += 1
            rospy.logwarn("policy: joined episode %d at step %d: acting, but not reporting it", msg.episode,
                          msg.step)
            self._current = _Episode(controller_episode=msg.episode, started=now, steps=-1)   # -1: partial
            return
        if current.steps < 0:          # partial episode: act, do not report
            if msg.terminated or msg.truncated:
                self._current = None
            return
        current.steps = int(msg.step)
        current.episode_return += float(msg.reward)
        for name, value in zip(msg.reward_term_names, msg.reward_terms):
            current.reward_terms[name] = current.reward_terms.get(name, 0.0) + float(value)
        self.total_steps += 1
        if msg.terminated or msg.truncated:
            self._finish(current, msg, now)
            self._current = None

    def _finish(self, episode: _Episode, msg: WalkerState, now: float) -> None:
        record = _Finished(episode.episode_return, episode.steps, float(msg.distance), bool(msg.terminated),
                           end_reason_of(msg))
        self.finished.append(record)
        self._done_episodes.add(episode.controller_episode)
        number = len(self.finished)
        self.stats_pub.publish(episode_stats_message(
            number, record.episode_return, record.length, record.distance, record.fell, now - episode.started,
            self.total_steps, 0, episode.reward_terms, rospy.Time.now(), end_reason=record.end_reason))
        log = rospy.loginfo if record.end_reason in ("fell", "time limit") else rospy.logwarn
        log("policy: episode %d: return %.3f, %d steps, %.3f m, %s", number, record.episode_return,
            record.length, record.distance, record.end_reason)

    def _on_load(self, req) -> LoadPolicyResponse:
        if not req.path:
            return LoadPolicyResponse(success=False, message="path is empty: give the exported policy (.npz) to load")
        path = os.path.abspath(os.path.expanduser(req.path))
        try:
            new = NumpyPolicy(path)
            new.check_interface(self.expected, what="this node's " + self.where)
        except ValueError as exc:
            rospy.logwarn("policy: refused to load %s: %s", path, exc)
            return LoadPolicyResponse(success=False, message=str(exc))
        with self._cond:       # between two actions: the next state is answered by the new policy
            old, self.policy = self.policy, new
            self._layout_ok = None
            self.policy_loads += 1
        rospy.loginfo("policy: now running %s (was %s)", new.describe(), old.path)
        return LoadPolicyResponse(success=True, message="loaded %s" % new.describe())

    # -- episodes -----------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        """Reset service and both topic connections, before the first reset (or its first messages are lost)."""
        timeout = self.params.connect_timeout
        try:
            rospy.wait_for_service(self._reset_name, timeout=timeout)
        except rospy.ROSException:
            raise RuntimeError("no controller: service %s did not appear within %.0f s (is controller_node running "
                               "in this namespace?)" % (self._reset_name, timeout)) from None
        self._reset_proxy = rospy.ServiceProxy(self._reset_name, ResetEpisode, persistent=True)
        deadline = time.monotonic() + timeout
        while self.action_pub.get_num_connections() == 0 or self.state_sub.get_num_connections() == 0:
            if rospy.is_shutdown():
                return
            if time.monotonic() > deadline:
                raise RuntimeError("controller found but topics %s / %s did not connect within %.0f s"
                                   % (self.action_pub.resolved_name, self.state_sub.resolved_name, timeout))
            time.sleep(0.01)
        if self.params.wait_for_recorder:
            # a recorder subscribes to all its topics at once: connected to both of ours, it has the rest too
            while self.action_pub.get_num_connections() < 2 or self.stats_pub.get_num_connections() < 1:
                if rospy.is_shutdown():
                    return
                if time.monotonic() > deadline:
                    rospy.logwarn("policy: no recorder connected within %.0f s; running without waiting", timeout)
                    return
                time.sleep(0.05)

    def _call_reset(self, seed: int) -> Any:
        for attempt in range(2):
            try:
                return self._reset_proxy(seed=seed)
            except (rospy.ServiceException, rospy.ROSInterruptException, OSError) as exc:
                if attempt == 1 or rospy.is_shutdown():
                    raise RuntimeError("reset service %s failed: %s" % (self._reset_name, exc)) from None
                # a persistent proxy dies with its connection (controller restarted): reconnect once
                rospy.logwarn("policy: reset service connection lost (%s); reconnecting", exc)
                rospy.wait_for_service(self._reset_name, timeout=self.params.connect_timeout)
                self._reset_proxy = rospy.ServiceProxy(self._reset_name, ResetEpisode, persistent=True)

    def _start_episode(self, seed: int) -> Optional[int]:
        """Reset the controller (retrying while it says ``retry``: an e-stop is latched); the episode's number, or
        None on shutdown."""
        waiting_since, logged_at, logged_why = None, 0.0, ""
        while True:
            resp = self._call_reset(seed)
            if resp.success:
                break
            if not resp.retry:
                raise RuntimeError("controller refused to reset: %s" % resp.message)
            now = time.monotonic()
            if waiting_since is None:
                waiting_since = now
            if resp.message != logged_why or now - logged_at >= RESET_RETRY_LOG_S:
                rospy.logwarn("policy: controller refused to reset: %s; waiting %.0f s so far, retrying every %.1f s",
                              resp.message, now - waiting_since, RESET_RETRY_S)
                logged_at, logged_why = now, resp.message
            self.refused_resets += 1
            deadline = now + RESET_RETRY_S
            while time.monotonic() < deadline:
                if rospy.is_shutdown():
                    return None
                time.sleep(0.05)
        if waiting_since is not None:
            rospy.loginfo("policy: reset accepted after %.1f s of waiting; continuing",
                          time.monotonic() - waiting_since)
        # The reset state also comes on walker/state; whichever copy arrives first is answered, the other ignored.
        self._reset_key = (int(resp.state.episode), int(resp.state.step))
        self._on_state(resp.state, from_reset=True)
        return int(resp.state.episode)

    def _wait(self, episode: Optional[int], fatal_timeout: bool) -> bool:
        """Wait until ``episode`` (a controller episode number; None: any) has finished; re-send an unanswered
        action every RESEND_INTERVAL_S.  Returns False on shutdown; RuntimeError on a fatal problem."""
        last_resend = time.monotonic()
        warned = False
        with self._cond:
            while True:
                if self._error:
                    raise RuntimeError(self._error)
                if rospy.is_shutdown():
                    return False
                if episode is None:
                    if self.params.episodes and len(self.finished) >= self.params.episodes:
                        return True
                elif episode in self._done_episodes:
                    return True
                now = time.monotonic()
                if self._awaiting:
                    stalled = now - self._last_progress
                    if stalled > self.params.state_timeout:
                        problem = "no new walker/state within %.1f s (state_timeout) after episode %d step %d " \
                                  "(controller stopped?)" % ((self.params.state_timeout,) + self._last_key)
                        if self._last_problem:
                            problem += "; last problem: " + self._last_problem
                        if fatal_timeout:
                            raise RuntimeError(problem)
                        if not warned:
                            rospy.logwarn("policy: %s", problem)
                            warned = True
                    elif (stalled > RESEND_INTERVAL_S and now - last_resend > RESEND_INTERVAL_S
                          and self._last_action is not None
                          and (self._last_action.episode, self._last_action.step) == self._last_key):
                        self.resent_actions += 1
                        last_resend = now
                        self.action_pub.publish(self._last_action)
                else:
                    warned = False
                self._cond.wait(timeout=0.1)

    def run(self) -> None:
        try:
            if not self.params.start_episodes:
                self._wait(None, fatal_timeout=False)
                return
            self._connect()
            seed = self.params.seed
            while not rospy.is_shutdown() and (not self.params.episodes or len(self.finished) < self.params.episodes):
                episode = self._start_episode(seed)
                if episode is None:
                    return
                seed = -1
                if not self._wait(episode, fatal_timeout=True):
                    return
        finally:
            rospy.loginfo("policy: %s", self.summary())

    def summary(self) -> str:
        """One line: episodes and their outcomes, inference time, message bookkeeping."""
        with self._cond:
            finished = list(self.finished)
            times = np.array(self.act_times, dtype=float)
            parts = ["%d episode(s)" % len(finished)]
            if finished:
                returns = np.array([f.episode_return for f in finished])
                parts.append("return mean %.3f (min %.3f, max %.3f)" % (returns.mean(), returns.min(), returns.max()))
                parts.append("length mean %.1f steps" % np.mean([f.length for f in finished]))
                parts.append("distance mean %.3f m" % np.mean([f.distance for f in finished]))
                parts.append("fell %d/%d" % (sum(f.fell for f in finished), len(finished)))
                others = collections.Counter(f.end_reason for f in finished
                                             if f.end_reason not in ("fell", "time limit"))
                parts += ["%s %d" % kv for kv in sorted(others.items())]
            if self.actions:
                parts.append("%d actions, inference mean %.1f us, p99 %.1f us, max %.1f us" % (
                    self.actions, 1e6 * self.act_time_sum / self.actions, 1e6 * np.percentile(times, 99),
                    1e6 * self.act_time_max))
            extras = [(self.duplicate_states, "re-sent states ignored"), (self.resent_actions, "actions re-sent"),
                      (self.bad_states, "bad states"), (self.partial_episodes, "partial episodes not reported"),
                      (self.policy_loads, "policy loads"), (self.refused_resets, "resets refused (e-stop latched)")]
            parts += ["%d %s" % (n, what) for n, what in extras if n]
            parts.append("policy %s" % self.policy.path)
        return "; ".join(parts)

    def close(self) -> None:
        self.state_sub.unregister()
        self.load_srv.shutdown()
        if self._reset_proxy is not None:
            self._reset_proxy.close()


def main() -> None:
    parse_node_args("policy_node", PolicyParams, __doc__)   # --help without a master
    def body() -> None:
        node = PolicyNode(load_private_params(PolicyParams))
        try:
            with MasterWatch(shutdown_after_s=0.0):   # master_watch.py: a roscore restart ends the session
                node.run()
        finally:
            node.close()
        end_session()   # session_end.py: end the launch without a "REQUIRED process has died" banner
    run_node("policy", body)
