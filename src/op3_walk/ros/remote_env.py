"""``RosWalkEnv``: a gymnasium Env whose ``step()`` goes through a controller_node over ROS.

The learner's training loop drives it exactly like the in-process env. Spaces come from the same robot and task
configs as the controller's (``make_spaces``), and every received observation is checked against them.

``step()`` is ``step_async(action)`` (publish) then ``step_wait()`` (wait for the answer), so a learner feeding
several controllers sends all actions before waiting for any.  With a lockstep controller (simulation) the answer
to action (e, k) is state (e, k + 1), exactly; with a real-time controller (``realtime=True``: hardware, or a sim
run at wall-clock rate) the controller keeps ticking, so the answer is the freshest state of episode e after step
k, and the transition spans however many ticks the learner took.
"""
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

import gymnasium
import numpy as np
import rospy

from op3_walk.envs.walk_env import make_spaces
from op3_walk.msg import WalkerAction, WalkerState
from op3_walk.ros.conversions import action_message, observation_from_message
from op3_walk.ros.diagnostics import synchronous_publisher
from op3_walk.srv import ResetEpisode
from op3_walk.training.loop import EnvUnavailable

RESEND_INTERVAL_S = 1.0  # re-send an unanswered action this often (the controller answers repeats idempotently)


class ControllerUnavailable(EnvUnavailable):
    """The controller did not answer in time (not running, crashed, or wrong namespace)."""


class RosWalkEnv(gymnasium.Env):
    """Lockstep client of controller_node. ``should_stop`` (e.g. ``rospy.is_shutdown``) aborts waits early."""

    metadata = {"render_modes": []}

    def __init__(self, robot_cfg: Any, task_cfg: Any, state_topic: str = "walker/state",
                 action_topic: str = "walker/action", reset_service: str = "walker/reset",
                 state_timeout: float = 10.0, connect_timeout: float = 60.0,
                 should_stop: Callable[[], bool] = rospy.is_shutdown, realtime: bool = False):
        self.observation_space, self.action_space = make_spaces(robot_cfg, task_cfg)
        self.obs_size = int(self.observation_space.shape[0])
        self.discrete = isinstance(self.action_space, gymnasium.spaces.Discrete)
        self.act_size = int(self.action_space.n if self.discrete else self.action_space.shape[0])
        self.state_timeout = state_timeout
        self.connect_timeout = connect_timeout
        self.should_stop = should_stop
        self.realtime = realtime
        self.reconnects = 0
        self._pending: Optional[WalkerAction] = None
        self.episode = 0
        self.step_count = 0
        self.resent_actions = 0
        self.ignored_states = 0
        self._cond = threading.Condition()
        self._expect: Optional[Tuple[int, int]] = None
        self._received: Optional[WalkerState] = None
        # synchronous publish (no writer-thread hand-off): the lowest round trip, and the learner waits anyway
        self._pub = synchronous_publisher(action_topic, WalkerAction, tcp_nodelay=True)
        self._sub = rospy.Subscriber(state_topic, WalkerState, self._on_state, queue_size=10, tcp_nodelay=True)
        self._reset_name = rospy.resolve_name(reset_service)
        try:
            rospy.wait_for_service(self._reset_name, timeout=connect_timeout)
        except rospy.ROSException:
            raise ControllerUnavailable("no controller: service %s did not appear within %.0f s (is controller_node "
                                        "running in this namespace?)" % (self._reset_name, connect_timeout))
        self._reset_proxy = rospy.ServiceProxy(self._reset_name, ResetEpisode, persistent=True)
        self._wait_connected(connect_timeout)

    @property
    def action_publisher(self) -> rospy.Publisher:
        return self._pub

    def _wait_connected(self, timeout: float) -> None:
        """Both topic connections must exist before the first exchange, or the first messages are lost."""
        deadline = time.monotonic() + timeout
        while self._pub.get_num_connections() == 0 or self._sub.get_num_connections() == 0:
            if self.should_stop():
                return
            if time.monotonic() > deadline:
                raise ControllerUnavailable("controller found but topics %s / %s did not connect within %.0f s"
                                            % (self._pub.resolved_name, self._sub.resolved_name, timeout))
            time.sleep(0.01)

    def _on_state(self, msg: WalkerState) -> None:
        with self._cond:
            expect = self._expect
            if expect is not None and msg.episode == expect[0] and (
                    msg.step == expect[1] or (self.realtime and msg.step >= expect[1]
                                              and (self._received is None or msg.step > self._received.step))):
                self._received = msg
                self._cond.notify_all()
            else:
                self.ignored_states += 1  # e.g. the reset broadcast, or a repeat we no longer wait for

    def _call_reset(self, seed: int):
        for attempt in range(2):
            try:
                return self._reset_proxy(seed=seed)
            except (rospy.ServiceException, rospy.ROSInterruptException, OSError, AttributeError) as exc:
                # (rospy raises AttributeError from a persistent proxy whose connection was closed under it)
                if attempt == 1 or self.should_stop():
                    raise ControllerUnavailable("reset service %s failed: %s" % (self._reset_name, exc))
                # A persistent proxy dies with its connection (controller restarted): reconnect once.
                rospy.logwarn("learner: reset service %s connection lost (%s); reconnecting", self._reset_name, exc)
                self._reconnect()

    def _reconnect(self) -> None:
        """A new persistent proxy to a (restarted) controller, and its topics connected again."""
        try:
            self._reset_proxy.close()
        except Exception:  # the old connection is already gone
            pass
        try:
            rospy.wait_for_service(self._reset_name, timeout=self.state_timeout)
        except rospy.ROSException:
            raise ControllerUnavailable("service %s did not come back within %.1f s"
                                        % (self._reset_name, self.state_timeout))
        self._reset_proxy = rospy.ServiceProxy(self._reset_name, ResetEpisode, persistent=True)
        self._wait_connected(self.state_timeout)
        self.reconnects += 1

    def _info(self, msg: WalkerState) -> Dict[str, Any]:
        return {"distance": msg.distance, "fell": msg.terminated, "sim_time": msg.sim_time,
                "reward_terms": dict(zip(msg.reward_term_names, msg.reward_terms))}

    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        super().reset(seed=seed)
        resp = self._call_reset(-1 if seed is None else int(seed))
        if not resp.success:
            raise ControllerUnavailable("controller refused to reset: %s" % resp.message)
        self.episode = resp.state.episode
        self.step_count = 0
        return observation_from_message(resp.state, self.obs_size), self._info(resp.state)

    def step(self, action: Any):
        self.step_async(action)
        return self.step_wait()

    def step_async(self, action: Any) -> None:
        """Publish ``action`` for the current step (ValueError for a malformed one, and nothing is sent)."""
        if self.discrete:
            value = np.asarray(action)
            if value.shape != () or value.dtype.kind not in "iu" or not 0 <= int(value) < self.act_size:
                raise ValueError("action must be one integer in [0, %d), got %r" % (self.act_size, action))
            action = np.int64(value)
        else:
            action = np.asarray(action, dtype=np.float32)
            if action.shape != (self.act_size,) or not np.all(np.isfinite(action)):
                raise ValueError("action must be %d finite values, got shape %s%s" % (
                    self.act_size, action.shape, "" if np.all(np.isfinite(action)) else " with NaN/inf"))
        with self._cond:
            self._expect = (self.episode, self.step_count + 1)
            self._received = None
        self._pending = action_message(self.episode, self.step_count, action, rospy.Time.now())
        self._pub.publish(self._pending)

    def step_wait(self):
        """Wait for the controller's answer to the action sent by :meth:`step_async` (re-sending it every
        second: the controller answers a repeat idempotently); ``ControllerUnavailable`` after ``state_timeout``."""
        if self._pending is None:
            raise RuntimeError("step_wait() without step_async()")
        msg, self._pending = self._pending, None
        key = self._expect
        deadline = time.monotonic() + self.state_timeout
        with self._cond:
            while self._received is None:
                now = time.monotonic()
                if self.should_stop():
                    raise ControllerUnavailable("shutting down while waiting for the controller")
                if now >= deadline:
                    self._expect = None
                    raise ControllerUnavailable("no WalkerState for episode %d step %d within %.1f s (controller "
                                                "stopped?)" % (key[0], key[1], self.state_timeout))
                if not self._cond.wait(timeout=min(RESEND_INTERVAL_S, deadline - now)) and self._received is None:
                    self.resent_actions += 1
                    self._pub.publish(msg)
            state = self._received
            self._expect = None
        self.step_count = int(state.step)
        obs = observation_from_message(state, self.obs_size)
        return obs, float(state.reward), bool(state.terminated), bool(state.truncated), self._info(state)

    def close(self) -> None:
        self._sub.unregister()
        self._pub.unregister()
        self._reset_proxy.close()
