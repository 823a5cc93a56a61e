"""``RosWalkEnv``: a gymnasium Env whose ``step()`` goes through a controller_node over ROS.

The learner's training loop drives it exactly like the in-process env. Spaces come from the same robot and task
configs as the controller's (``make_spaces``), and every received observation is checked against them.

``step()`` is ``step_async(action)`` (publish) then ``step_wait()`` (wait for the answer); ``step_poll()`` is the
non-blocking wait, so a learner feeding several controllers handles each answer as it comes and sends that
controller its next action at once, whatever the others do.  With a lockstep controller (simulation) the answer
to action (e, k) is state (e, k + 1), exactly; with a real-time controller (``realtime=True``: hardware, or a sim
run at wall-clock rate) the controller keeps ticking, so the answer is the freshest state of episode e after step
k, and the transition spans however many ticks the learner took.

A controller that stops answering (its process died, or its host dropped off the network) makes ``step_wait`` or
``reset`` raise ``ControllerUnavailable`` after ``state_timeout``; the env is then *lost*: its service connection
is dropped and a background thread probes the reset service (a TCP connect with a short timeout) until it answers
again.  ``available()`` says, without blocking, whether a probe has succeeded; only then does ``reset`` try again
(on a fresh connection).  Every service call runs with a deadline (``state_timeout``): rospy's own calls have none,
and a call on the TCP connection to a host whose link is down would block for many minutes.

The controller refuses ``walker/reset`` from other nodes while this env's episode runs; should another node's reset
end it all the same (the controller took this learner for gone), the states of the controller's next episode make
``step_poll`` raise ``ControllerUnavailable`` at once, naming that cause (the env is not lost: the next ``reset``
starts afresh).
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
PROBE_INTERVAL_S = 0.5   # a lost controller's reset service is probed this often ...
PROBE_TIMEOUT_S = 1.0    # ... each probe (master lookup + TCP connect) given this long


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
        self._superseded = 0                 # the controller's episode after another node reset ours (0: not so)
        self.superseded_episodes = 0         # episodes of ours ended by someone else's walker/reset
        self.last_heard = time.monotonic()   # when the controller last answered (a state or a reset)
        self.lost = False                    # it stopped answering; see available()
        self._reachable = threading.Event()  # set by the probe thread once the lost controller answers a probe
        self._probe_thread: Optional[threading.Thread] = None
        self._closed = False
        self._deadline = self._next_resend = 0.0
        self.on_answer: Optional[Callable[[], None]] = None   # called when an awaited state arrives (Trainer)
        # synchronous publish (no writer-thread hand-off): the lowest round trip, and the learner waits anyway
        self._pub = synchronous_publisher(action_topic, WalkerAction, tcp_nodelay=True)
        self._sub = rospy.Subscriber(state_topic, WalkerState, self._on_state, queue_size=10, tcp_nodelay=True)
        self._reset_name = rospy.resolve_name(reset_service)
        try:
            rospy.wait_for_service(self._reset_name, timeout=connect_timeout)
        except rospy.ROSInterruptException:   # (a ROSException too) the node is shutting down: no timeout to blame
            raise ControllerUnavailable("shut down while waiting for the controller's service %s"
                                        % self._reset_name) from None
        except rospy.ROSException:
            raise ControllerUnavailable("no controller: service %s did not appear within %.0f s (is controller_node "
                                        "running in this namespace? did it fail to start: see its log)"
                                        % (self._reset_name, connect_timeout)) from None
        self._reset_proxy = rospy.ServiceProxy(self._reset_name, ResetEpisode, persistent=True)
        self._wait_connected(connect_timeout)

    @property
    def action_publisher(self) -> rospy.Publisher:
        return self._pub

    @property
    def state_topic(self) -> str:
        return self._sub.resolved_name

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
        self.last_heard = time.monotonic()
        with self._cond:
            expect = self._expect
            if expect is not None and msg.episode == expect[0] and (
                    msg.step == expect[1] or (self.realtime and msg.step >= expect[1]
                                              and (self._received is None or msg.step > self._received.step))):
                self._received = msg
                self._cond.notify_all()
                if self.on_answer is not None:
                    self.on_answer()
            else:
                self.ignored_states += 1  # e.g. the reset broadcast, or a repeat we no longer wait for
                if expect is not None and msg.episode > expect[0] and not self._superseded:
                    # a later episode of the same controller: someone else reset it under us; no state of ours
                    # will come (say so now, rather than blame the controller after state_timeout)
                    self._superseded = int(msg.episode)
                    self._cond.notify_all()
                    if self.on_answer is not None:
                        self.on_answer()

    # -- losing a controller and taking it back ------------------------------------------------------------------
    def available(self) -> bool:
        """Non-blocking: is a ``reset`` worth trying?  Always true unless the controller is lost and no probe of its
        reset service has succeeded since."""
        return not self.lost or self._reachable.is_set()

    def _mark_lost(self) -> None:
        """Stop using the controller's connections and probe its reset service in the background."""
        self.lost = True
        self._reachable.clear()
        try:
            self._reset_proxy.close()   # shuts the socket down (a call blocked on it returns with an error)
        except Exception:
            pass
        if self._probe_thread is None or not self._probe_thread.is_alive():
            self._probe_thread = threading.Thread(target=self._probe_loop, daemon=True,
                                                  name="probe %s" % self._reset_name)
            self._probe_thread.start()

    def _probe_loop(self) -> None:
        while self.lost and not self._closed and not self.should_stop():
            try:
                rospy.wait_for_service(self._reset_name, timeout=PROBE_TIMEOUT_S)
            except Exception:   # ROSException (timeout), or an error while shutting down
                time.sleep(PROBE_INTERVAL_S)
                continue
            self._reachable.set()
            return

    def _call_with_deadline(self, proxy: rospy.ServiceProxy, seed: int, timeout: float):
        """``proxy(seed=seed)`` in a worker thread, given ``timeout`` s: then the proxy is closed (which wakes the
        worker) and ``ControllerUnavailable`` is raised."""
        result: Dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                result["response"] = proxy(seed=seed)
            except BaseException as exc:   # handed to the caller
                result["error"] = exc
            finally:
                done.set()

        threading.Thread(target=call, daemon=True, name="reset %s" % self._reset_name).start()
        deadline = time.monotonic() + timeout
        while not done.wait(timeout=0.05):
            if self.should_stop() or time.monotonic() > deadline:
                try:
                    proxy.close()
                except Exception:
                    pass
                if self.should_stop():
                    raise ControllerUnavailable("shutting down while resetting %s" % self._reset_name)
                raise ControllerUnavailable("reset service %s did not answer within %.1f s (controller or its host "
                                            "unreachable?)" % (self._reset_name, timeout))
        if "error" in result:
            raise result["error"]
        return result["response"]

    def _call_reset(self, seed: int):
        if self.lost:
            if not self._reachable.is_set():
                raise ControllerUnavailable("controller %s not reachable yet" % self._reset_name)
            try:
                self._reconnect()
            except ControllerUnavailable:
                self._mark_lost()
                raise
        for attempt in range(2):
            try:
                return self._call_with_deadline(self._reset_proxy, seed, self.state_timeout)
            except ControllerUnavailable:
                self._mark_lost()
                raise
            except (rospy.ServiceException, rospy.ROSInterruptException, OSError, AttributeError) as exc:
                # (rospy raises AttributeError from a persistent proxy whose connection was closed under it)
                if attempt == 1 or self.should_stop():
                    self._mark_lost()
                    raise ControllerUnavailable("reset service %s failed: %s" % (self._reset_name, exc))
                # A persistent proxy dies with its connection (controller restarted): reconnect once.
                rospy.logwarn("learner: reset service %s connection lost (%s); reconnecting", self._reset_name, exc)
                try:
                    self._reconnect()
                except ControllerUnavailable:
                    self._mark_lost()
                    raise

    def _reconnect(self) -> None:
        """A new persistent proxy to a (restarted or reachable again) controller, and its topics connected again."""
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
        self.lost = False
        self.last_heard = time.monotonic()
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
            self._superseded = 0
        now = time.monotonic()
        self._deadline = now + self.state_timeout
        self._next_resend = now + RESEND_INTERVAL_S
        self._pending = action_message(self.episode, self.step_count, action, rospy.Time.now())
        self._pub.publish(self._pending)

    def step_poll(self):
        """Non-blocking :meth:`step_wait`: None while the answer to the action sent by :meth:`step_async` is
        outstanding (re-sending the action every second: the controller answers a repeat idempotently), the step
        result once it is in; ``ControllerUnavailable`` once ``state_timeout`` has passed (the env is then lost).
        ``on_answer`` (if set) is called from the subscriber thread when an answer arrives."""
        if self._pending is None:
            raise RuntimeError("step_poll() / step_wait() without step_async()")
        now = time.monotonic()
        with self._cond:
            state = self._received
            if state is None:
                if self.should_stop():
                    raise ControllerUnavailable("shutting down while waiting for the controller")
                if self._superseded:   # not a lost controller: no probing, the next reset starts afresh
                    key, self._expect, self._pending = self._expect, None, None
                    self.superseded_episodes += 1
                    raise ControllerUnavailable(
                        "episode %d was ended at step %d by another node's call of %s: the controller went on to "
                        "episode %d (not a controller failure; the controller's log names the caller)"
                        % (key[0], key[1] - 1, self._reset_name, self._superseded))
                if now >= self._deadline:
                    key, self._expect, self._pending = self._expect, None, None
                    self._mark_lost()
                    raise ControllerUnavailable("no WalkerState for episode %d step %d within %.1f s (controller "
                                                "stopped or its host unreachable?)" % (key[0], key[1],
                                                                                       self.state_timeout))
            else:
                self._expect = None
        if state is None:
            if now >= self._next_resend:
                self._next_resend = now + RESEND_INTERVAL_S
                self.resent_actions += 1
                self._pub.publish(self._pending)
            return None
        self._pending = None
        self.step_count = int(state.step)
        obs = observation_from_message(state, self.obs_size)
        return obs, float(state.reward), bool(state.terminated), bool(state.truncated), self._info(state)

    def step_wait(self):
        """Wait for the controller's answer to the action sent by :meth:`step_async` (see :meth:`step_poll`)."""
        while True:
            result = self.step_poll()
            if result is not None:
                return result
            with self._cond:
                if self._received is None and not self._superseded:
                    self._cond.wait(timeout=max(0.0, min(self._next_resend, self._deadline) - time.monotonic()))

    def close(self) -> None:
        self._closed = True
        self._sub.unregister()
        self._pub.unregister()
        self._reset_proxy.close()
