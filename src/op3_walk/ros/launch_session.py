"""``session``: run an op3_walk launch file with roslaunch and exit with the session's real status.

roslaunch itself exits 0 whether its session completed or failed (a bad parameter, a missing policy file, a crashed
node, a full disk), so a script or CI job cannot tell them apart.  This wrapper runs ``roslaunch`` with the
environment variable ``OP3_WALK_SESSION_STATUS`` naming a private file; the session node (learner_node of
train.launch / actors.launch / multihost.launch, policy_node of deploy.launch) writes ``completed`` there when it
did all it was asked (session_end.py), ``stopped`` when a shutdown ended it early, and nothing when it failed.

    rosrun op3_walk session train.launch steps:=20000 out_dir:=$HOME/runs/plen_td3 record:=true
    rosrun op3_walk session deploy.launch robot:=op3 episodes:=3

Exit status: 0 when the session node reported ``completed``; 130 (143) when this wrapper was interrupted with
Ctrl-C / SIGINT (SIGTERM), which it forwards to roslaunch (a deploy with episodes:=0 ends so); roslaunch's own
status when it failed by itself (no such launch file, a bad argument: 1); 1 otherwise (a node failed or crashed: see
the log above); 2 on a usage error.  Output is roslaunch's, unchanged, plus one line from this wrapper at the end.
A launch file without a session node (view.launch, record.launch, ...) never reports ``completed``: run it with
roslaunch.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import List, Optional

from op3_walk.ros.session_end import COMPLETED, STATUS_ENV

PROG = "session"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=__doc__.strip().replace("``", ""))
    parser.add_argument("launch", metavar="LAUNCH",
                        help="launch file: a name in this package's launch/ (train.launch, deploy.launch, "
                             "actors.launch, multihost.launch), PACKAGE FILE.launch, or a path")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG:=VALUE",
                        help="launch arguments and roslaunch options, passed on unchanged")
    return parser.parse_args(sys.argv[1:] if argv is None else argv)


def roslaunch_command(launch: str, args: List[str]) -> List[str]:
    """``roslaunch`` with ``launch`` resolved: a bare file name that is no path here is one of op3_walk's."""
    if launch.endswith(".launch") and os.sep not in launch and not os.path.exists(launch):
        return ["roslaunch", "op3_walk", launch] + list(args)
    return ["roslaunch", launch] + list(args)


def exit_status(status: str, roslaunch_rc: int, signum: Optional[int]) -> int:
    """The wrapper's exit status from what the session node wrote (``""``: nothing), roslaunch's exit status and
    the signal this wrapper forwarded (None: none)."""
    if status == COMPLETED:
        return 0
    if signum is not None:
        return 128 + signum
    if roslaunch_rc != 0:
        return roslaunch_rc if roslaunch_rc > 0 else 128 - roslaunch_rc   # -N: killed by signal N
    return 1


def _child_setup() -> None:
    """In roslaunch's process before exec: its own process group, so that a Ctrl-C in the terminal reaches it once,
    forwarded from here (it starts each node in a session of its own anyway); SIGINT handled as usual even when
    this wrapper runs as a background job of a script (which starts with SIGINT ignored)."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(command: List[str]) -> int:
    """Run ``command`` (a roslaunch) with a fresh status file; forward SIGINT/SIGTERM/SIGHUP; return the status."""
    if shutil.which(command[0]) is None:
        print("%s: %s not found: ROS is not in this shell (source env.sh, or /opt/ros/<distro>/setup.bash and the "
              "workspace's devel/setup.bash)" % (PROG, command[0]), file=sys.stderr)
        return 1
    folder = tempfile.mkdtemp(prefix="op3_walk_session_")
    status_path = os.path.join(folder, "status")
    env = dict(os.environ, **{STATUS_ENV: status_path})
    received: List[int] = []
    try:
        proc = subprocess.Popen(command, env=env, preexec_fn=_child_setup)

        def forward(signum: int, frame: object) -> None:
            received.append(signum)
            try:
                proc.send_signal(signal.SIGINT if signum == signal.SIGHUP else signum)
            except OSError:
                pass

        previous = {s: signal.signal(s, forward) for s in FORWARDED}
        try:
            while True:
                try:
                    rc = proc.wait()
                    break
                except KeyboardInterrupt:   # only if a handler other than ours ran
                    continue
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        try:
            with open(status_path) as fh:
                status = fh.read().strip()
        except OSError:
            status = ""
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    signum = received[0] if received else None
    code = exit_status(status, rc, signum)
    label = next((c for c in command[1:] if c.endswith(".launch")), " ".join(command[1:2]))
    if code == 0:
        print("%s: completed (%s)" % (PROG, label), flush=True)
    else:
        why = ("interrupted by %s" % signal.Signals(signum).name if signum is not None else
               "roslaunch failed with exit status %d" % rc if rc != 0 else
               "its session node reported %r" % status if status else
               "its session node reported no end (it failed or crashed, or the launch file has none): see the log "
               "above")
        print("%s: FAILED: %s did not complete: %s; exit status %d" % (PROG, label, why, code),
              file=sys.stderr, flush=True)
    return code


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    sys.exit(run(roslaunch_command(args.launch, args.args)))


if __name__ == "__main__":
    main()
