"""The normal end of a session node (learner_node, policy_node): end the launch without a "died" banner.

train.launch, actors.launch and deploy.launch mark the learner / policy node ``required``, so that any exit of it, a
crash included, takes the whole launch down.  But roslaunch's process monitor prints its red "REQUIRED process [...]
has died!" banner for every exit of a required node, status 0 included, and roslaunch itself exits 0 in both cases.
So, at its normal end, a session node calls ``end_session``, which:

1. writes ``out_dir/session_status`` (``completed``: the node did all it was asked; ``stopped``: a shutdown request
   ended it early), and the same word to the file named by the environment variable ``OP3_WALK_SESSION_STATUS``
   when set: the ``session`` wrapper (launch_session.py; roslaunch passes its environment to the nodes) exits
   non-zero unless it says ``completed``, and a crash writes nothing;
2. asks the roslaunch that started it to shut down, as Ctrl-C does (SIGINT to its parent process, once
   ``/proc/<ppid>/cmdline`` shows that it is a roslaunch parent: nodes run as direct children of roslaunch, and the
   catkin relay scripts run the node in their own process), then waits until roslaunch stops it.  roslaunch's
   process monitor is shut down before the node exits, so nothing is reported as a death; roslaunch exits 0.

A node started some other way (rosrun, a roslaunch child on a remote machine, a launch-prefix that does not exec) or
already shutting down just returns: it exits as before.
"""
import os
import signal
import time
from typing import Optional

import rospy

STATUS_FILE = "session_status"
STATUS_ENV = "OP3_WALK_SESSION_STATUS"   # a file path set by the session wrapper (launch_session.py)
COMPLETED = "completed"
STOPPED = "stopped"


def write_status(out_dir: str, status: str) -> str:
    """Write ``status`` (one word) to ``out_dir/session_status`` atomically; returns the path."""
    folder = os.path.expanduser(out_dir)
    os.makedirs(folder, exist_ok=True)
    return write_status_file(os.path.join(folder, STATUS_FILE), status)


def write_status_file(path: str, status: str) -> str:
    """Write ``status`` (one word) to the file ``path`` atomically; returns the path."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(status + "\n")
    os.replace(tmp, path)
    return path


def launching_roslaunch(ppid: Optional[int] = None) -> Optional[int]:
    """The pid of the roslaunch (parent mode) that started this process as its direct child, else None."""
    ppid = os.getppid() if ppid is None else ppid
    if ppid <= 1:
        return None
    try:
        with open("/proc/%d/cmdline" % ppid, "rb") as fh:
            argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:         # no /proc (not Linux) or the parent is gone
        return None
    # `roslaunch ...` runs as `python3 /opt/ros/<distro>/bin/roslaunch ...` or as the script itself
    if not any(os.path.basename(a) == "roslaunch" for a in argv[:3]):
        return None
    if any(a in ("-c", "--child") or a.startswith("--child=") for a in argv):
        return None         # a child on a remote machine: stopping it would not end the launch
    return ppid


def end_session(out_dir: Optional[str] = None, completed: bool = True, wait_s: float = 60.0) -> None:
    """The node's work is done (outputs written): record it and end the launch quietly (see the module doc).

    ``completed``: the node did all it was asked; recorded as ``stopped`` when false or when a shutdown is already
    under way (then the node was stopped from outside, not done).

    Returns when roslaunch has stopped this node (its SIGINT is absorbed), after ``wait_s`` without that, at once when
    the node was not started by a local roslaunch or is already shutting down.
    """
    # A node already being shut down (Ctrl-C, a required node's death, rosnode kill) did not end by itself, whatever
    # its loop concluded (the policy node's loop just ends on shutdown).
    word = COMPLETED if completed and not rospy.is_shutdown() else STOPPED
    if out_dir:
        write_status(out_dir, word)
    wrapper_file = os.environ.get(STATUS_ENV, "")
    if wrapper_file:
        try:
            write_status_file(wrapper_file, word)
        except OSError as exc:   # the wrapper then reports a failure: say why
            rospy.logerr("%s: could not write the session status to %s=%s: %s", rospy.get_name(), STATUS_ENV,
                         wrapper_file, exc)
    if rospy.is_shutdown():
        return              # already being stopped (Ctrl-C, rosnode kill): nothing to ask
    pid = launching_roslaunch()
    if pid is None:
        return
    rospy.loginfo("%s: done; asking roslaunch (pid %d) to end the launch", rospy.get_name(), pid)
    try:
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + wait_s
        while not rospy.is_shutdown() and time.monotonic() < deadline and os.getppid() == pid:
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass                # roslaunch's SIGINT, should a handler other than rospy's raise it
    except OSError as exc:  # the parent went away meanwhile
        rospy.logwarn("%s: could not ask roslaunch to end the launch: %s", rospy.get_name(), exc)
