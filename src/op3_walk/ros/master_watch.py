"""Notice a restart of the ROS master (roscore) under a running node, and end the node cleanly.

rospy (1.15) registers a node's topics and services with the master once, at start-up (and each new one as it is
created); it never registers them again with a master that was restarted.  After a roscore restart the nodes go on
talking over the connections they already have (training continues), but the new master knows none of them: no
nodes, topics, services or /diagnostics publisher on it, and none of the launch's parameters.  Measured: our rospy
nodes could be registered again by hand (rospy internals), but roscpp nodes of the same launch (rosbag record) are
not, and the parameters stay lost, so such a session would be half visible.  The sessions end instead, cleanly:

``MasterWatch`` polls the master (``POLL_PERIOD_S``) from a daemon thread.  The master restarted when its
``/run_id`` parameter changed (roscore sets a fresh one at each start; roslaunch never changes an existing one), or,
with no ``/run_id`` to compare, when this node's ``~get_loggers`` service (which rospy registers for every node) is
no longer registered.  A master that cannot be reached is only reported (the node goes on: a network cut to a remote
master's host is not a restart); what counts is what answers once it is back.

On a restart the watch logs it once, sets ``restarted`` and, with ``shutdown_after_s``, shuts rospy down that many
seconds later.  The node then calls :meth:`MasterWatch.finish` (or leaves ``with watch:``), which raises
:class:`MasterRestarted` (a ``RuntimeError``: ``run_node`` turns it into a FATAL line and exit status 1) and, given
``out_dir`` (a session node), writes ``session_status`` ``master_restarted`` there (and to the session wrapper's
status file).  learner_node stops training at the next step, saves its checkpoint and ends so (``resume:=auto``
continues from that checkpoint); policy_node ends at once; controller_node ends ``SERVER_GRACE_S`` later, so that a
learner in its launch ends (and saves) first.
"""
import http.client
import os
import threading
import xmlrpc.client
from typing import Callable, List, Optional, Union

import rosgraph
import rospy

from op3_walk.ros.session_end import STATUS_ENV, write_status, write_status_file

POLL_PERIOD_S = 1.0
SERVER_GRACE_S = 30.0   # a controller ends this long after the restart: a learner of its launch ends (and saves) first
MASTER_RESTARTED = "master_restarted"   # out_dir/session_status of a session ended by a master restart

_UNREACHABLE = (OSError, xmlrpc.client.Error, http.client.HTTPException)


class MasterRestarted(RuntimeError):
    """The ROS master restarted under this node: the node is unknown to it and ends."""


class MasterWatch:
    """Polls the ROS master every ``period_s`` (daemon thread, started by :meth:`start`) for a restart.

    ``on_restart(reason)`` callables run in the watch thread once a restart is seen; ``shutdown_after_s`` (None: no)
    shuts rospy down that many seconds after it.  ``master`` (tests) replaces the ``rosgraph.Master`` proxy.
    """

    def __init__(self, period_s: float = POLL_PERIOD_S, shutdown_after_s: Optional[float] = None,
                 on_restart: Optional[List[Callable[[str], None]]] = None, master: Optional[object] = None):
        self.period_s = period_s
        self.shutdown_after_s = shutdown_after_s
        self.on_restart = list(on_restart or [])
        self._master = master
        self.run_id: Optional[str] = None         # the master's /run_id when first seen
        self.master_uri = ""
        self._service = ""                        # this node's ~get_loggers service
        self._seen_registered = False
        self._unreachable = False
        self._reason: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def restarted(self) -> Optional[str]:
        """None, or why this node counts its master as restarted (one line)."""
        return self._reason

    def start(self) -> "MasterWatch":
        """Poll from a daemon thread until a restart, :meth:`stop` or rospy's shutdown."""
        self._thread = threading.Thread(target=self._run, name="master_watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and not rospy.is_shutdown():
            if self.poll() is not None:
                break
            self._stop.wait(self.period_s)

    def poll(self) -> Optional[str]:
        """One look at the master; returns ``restarted``."""
        if self._reason is not None or rospy.is_shutdown():
            return self._reason
        if self._master is None:
            self._master = rosgraph.Master(rospy.get_name())
        if not self._service:
            self.master_uri = getattr(self._master, "master_uri", "") or ""
            self._service = rospy.names.ns_join(rospy.get_name(), "get_loggers")
        try:
            run_id = self._param("/run_id")
            registered = self._registered()
        except _UNREACHABLE as exc:
            if not self._unreachable:
                self._unreachable = True
                rospy.logwarn("%s: the ROS master %s does not answer (%s); going on with the connections this node "
                              "has", rospy.get_name(), self.master_uri, exc)
            return None
        if self._unreachable:
            self._unreachable = False
            rospy.loginfo("%s: the ROS master %s answers again", rospy.get_name(), self.master_uri)
        if self.run_id is None and not self._seen_registered:
            self.run_id = run_id
        reason = None
        if self.run_id is not None and run_id is not None and run_id != self.run_id:
            reason = "the ROS master restarted (run_id %s -> %s)" % (self.run_id, run_id)
        elif registered:
            self._seen_registered = True
        elif self._seen_registered:
            reason = "the ROS master %s restarted (it no longer knows this node)" % self.master_uri
        if reason is not None:
            self._restarted(reason)
        return self._reason

    def _param(self, key: str) -> Optional[str]:
        try:
            return str(self._master.getParam(key))
        except rosgraph.MasterError:      # not set (a master started without roscore)
            return None

    def _registered(self) -> bool:
        try:
            self._master.lookupService(self._service)
            return True
        except rosgraph.MasterError:      # no provider: the master does not know this node's services
            return False

    def _restarted(self, reason: str) -> None:
        self._reason = reason
        rospy.logerr("%s: %s; this node is not registered with the new master (its topics, services and "
                     "/diagnostics are invisible there) and ends%s", rospy.get_name(), reason,
                     "" if not self.shutdown_after_s else " in %.0f s" % self.shutdown_after_s)
        for callback in self.on_restart:
            callback(reason)
        if self.shutdown_after_s is not None:
            self._stop.wait(self.shutdown_after_s)
            if not rospy.is_shutdown():
                rospy.signal_shutdown(reason)

    def stop(self) -> None:
        self._stop.set()

    def finish(self, out_dir: Optional[str] = None,
               what_next: Union[str, Callable[[], str]] = "relaunch it against the new master") -> None:
        """Stop watching; when the master restarted, write ``session_status`` ``master_restarted`` in ``out_dir``
        (if given) and raise :class:`MasterRestarted` saying ``what_next`` (a string, or a callable giving it)."""
        self.stop()
        if self._reason is None:
            return
        if out_dir:   # a session node: tell tools/demo.sh and the session wrapper (launch_session.py) too
            write_status(out_dir, MASTER_RESTARTED)
            if os.environ.get(STATUS_ENV):
                write_status_file(os.environ[STATUS_ENV], MASTER_RESTARTED)
        raise MasterRestarted("%s: this node was invisible on the new master and ended; %s"
                              % (self._reason, what_next() if callable(what_next) else what_next))

    def __enter__(self) -> "MasterWatch":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc_info) -> None:
        self.finish()


def resume_advice(out_dir: str) -> str:
    """What to do after a learner ended on a master restart: the checkpoint it saved and how to continue from it."""
    from op3_walk.training.checkpoint import read_meta      # learner side only (torch)
    from op3_walk.training.session import CHECKPOINT_NAME
    path = os.path.join(os.path.expanduser(out_dir), CHECKPOINT_NAME)
    try:
        steps = read_meta(path).get("env_steps", "?")
    except Exception as exc:   # noqa: BLE001  (reported, not raised: the restart is the error to report)
        return "no checkpoint could be read in %s (%s); relaunch with another out_dir" % (out_dir, exc)
    return ("relaunch with resume:=auto (same out_dir) to continue from the checkpoint %s (env step %s)"
            % (path, steps))
