#!/usr/bin/env python3
"""``make soak``: an hour of training and deploying on PyBullet through ROS, watching every node for leaks.

On a private roscore (free port, ``ROS_HOME`` in the output folder), side by side:

1. **train** (namespace ``/train``): ``train.launch`` on PyBullet in lockstep, TD3 with a replay memory small enough
   to fill early in the soak (``--buffer-size``; default scaled to ~1/5 of the duration at this machine's speed), so
   that the rest of the run shows the nodes at their final size; a step budget it never reaches; periodic checkpoints.
2. **deploy** (namespace ``/deploy``): ``deploy.launch`` with the robot's shipped policy on PyBullet in **realtime**
   (fixed control rate, freshest action, watchdog), episodes until stopped.

Every ``--sample-s`` seconds (default 60) it samples, for each node process (pid from the node's own XML-RPC
``getPid``), the master and both roslaunch processes: RSS (``VmRSS``), open file descriptors (``/proc/PID/fd``),
threads and CPU time; and the learner's env steps, replay memory and episodes (``/diagnostics``), the deploy's
episodes (``/deploy/walker/episode``) and the disk use of the outputs and ROS logs.

At the end it pauses the learner, reads its counters, stops both launches with SIGINT (as Ctrl-C does) and then the
roscore, and checks that nothing was lost: ``episodes.csv`` numbered 1..N without a gap, the final checkpoint at the
env step and episode count the learner last reported, the deploy's episodes numbered 1..M and as many as its policy
node counted and its controller started (less at most the one cut by the stop), every exit status 0, no process
left behind.  Samples go to ``OUT/samples.csv`` (one row per process and sample) and ``OUT/progress.csv``; the plot
to ``docs/img/soak.png`` and the report to the section ``## Soak (make soak)`` of ``docs/benchmarks.md`` (both in OUT
instead with ``--no-docs``).  Every verdict is computed from the samples.  Exit status 0 only when every check and
verdict passes.

    python tools/soak.py                                            # 60 min; what `make soak` runs
    python tools/soak.py --minutes 4 --sample-s 20 --out /tmp/soak_short --no-docs      # a quick try
"""
import argparse
import csv
import datetime
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # bench_agents (cpu_model, write_section)

from op3_walk.proctree import alive, children_of   # noqa: E402

SECTION = "## Soak (make soak)"
RSS_SLOPE_LIMIT = 10.0      # MB/h per process after the replay memory filled: below is "flat"
RSS_FLOOR_MB = 2.0          # ... or when the slope times the window's length is below this (a short run's noise)
BUFFER_PER_HOUR = 30000     # default replay memory for a 60 min soak (fills in ~10-15 min here); scaled by duration
MIN_WINDOW_SAMPLES = 3      # fewer samples in the steady window: no verdict


# -- analysis (pure: no ROS, no processes; tests/unit/test_soak.py) ---------------------------------------------------
def slope_per_hour(times_s: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` over ``times_s`` (seconds), per hour; nan with fewer than 2 distinct times."""
    n = len(times_s)
    if n < 2 or n != len(values):
        return math.nan
    mt = sum(times_s) / n
    mv = sum(values) / n
    var = sum((t - mt) ** 2 for t in times_s)
    if var <= 0:
        return math.nan
    cov = sum((t - mt) * (v - mv) for t, v in zip(times_s, values))
    return cov / var * 3600.0


def fill_time(progress: Sequence[Dict[str, Any]], buffer_size: int) -> Optional[float]:
    """The time (``t_s``) of the first progress sample whose replay memory is full, or None."""
    for row in progress:
        memory = row.get("replay_memory")
        if memory is not None and memory != "" and not (isinstance(memory, float) and math.isnan(memory)) \
                and int(memory) >= buffer_size:
            return float(row["t_s"])
    return None


def steady_window(t_end: float, filled_at: Optional[float]) -> Tuple[float, str]:
    """Start of the window the leak verdicts look at, and how it was chosen: from the sample at which the replay
    memory was full, or (never full) the second half of the run."""
    if filled_at is not None:
        return filled_at, "after the replay memory filled (%.1f min)" % (filled_at / 60.0)
    return t_end / 2.0, "the second half of the run (the replay memory never filled)"


def floor_rises(times_s: Sequence[float], values: Sequence[float]) -> Optional[bool]:
    """Whether the floor of a count (file descriptors, threads) rises over the window: the minimum of its last third
    above the minimum of its first third.  A leak raises the floor; a descriptor or thread open for a moment at one
    sample (a checkpoint being written) does not.  None with fewer than 3 samples."""
    n = len(values)
    if n < MIN_WINDOW_SAMPLES:
        return None
    third = max(1, n // 3)
    return min(values[-third:]) > min(values[:third])


def analyse(samples: Sequence[Dict[str, Any]], window_start: float) -> Dict[str, Dict[str, Any]]:
    """Per process (``proc``): RSS at the start, at the window start and at the end [MB]; RSS slope in the window
    [MB/h]; fds and threads min/max over the run and in the window, whether their floor rises; CPU use [%]."""
    by_proc: Dict[str, List[Dict[str, Any]]] = {}
    for row in samples:
        by_proc.setdefault(row["proc"], []).append(row)
    out: Dict[str, Dict[str, Any]] = {}
    for proc, rows in by_proc.items():
        rows = sorted(rows, key=lambda r: float(r["t_s"]))
        window = [r for r in rows if float(r["t_s"]) >= window_start]
        t = [float(r["t_s"]) for r in window]
        rss = [float(r["rss_mb"]) for r in window]
        fds = [int(r["fds"]) for r in window]
        threads = [int(r["threads"]) for r in window]
        first, last = rows[0], rows[-1]
        span = float(last["t_s"]) - float(first["t_s"])
        out[proc] = {
            "samples": len(rows), "window_samples": len(window), "window_s": t[-1] - t[0] if t else 0.0,
            "rss_start": float(first["rss_mb"]), "rss_fill": rss[0] if rss else math.nan,
            "rss_end": float(last["rss_mb"]),
            "rss_slope": slope_per_hour(t, rss) if len(window) >= MIN_WINDOW_SAMPLES else math.nan,
            "fds_min": min(int(r["fds"]) for r in rows), "fds_max": max(int(r["fds"]) for r in rows),
            "fds_window": (min(fds), max(fds)) if fds else None, "fds_rising": floor_rises(t, fds),
            "threads_min": min(int(r["threads"]) for r in rows),
            "threads_max": max(int(r["threads"]) for r in rows),
            "threads_window": (min(threads), max(threads)) if threads else None,
            "threads_rising": floor_rises(t, threads),
            "cpu_pct": 100.0 * (float(last["cpu_s"]) - float(first["cpu_s"])) / span if span > 0 else math.nan,
            "pids": sorted({int(r["pid"]) for r in rows}),
        }
    return out


def verdicts(stats: Dict[str, Dict[str, Any]], rss_limit: float,
             rss_floor: float = RSS_FLOOR_MB) -> List[Tuple[bool, str]]:
    """(passed, line) per process and quantity, computed from ``analyse``'s numbers.  RSS is flat when its slope
    in the steady window is below ``rss_limit`` MB/h, or when that slope over the window's length adds up to less
    than ``rss_floor`` MB (a short run cannot tell a slow leak from the allocator's noise: the line says so)."""
    lines: List[Tuple[bool, str]] = []
    for proc in sorted(stats):
        s = stats[proc]
        if len(s["pids"]) > 1:
            lines.append((False, "%s: restarted during the soak (pids %s)" % (proc, s["pids"])))
        if s["window_samples"] < MIN_WINDOW_SAMPLES:
            lines.append((False, "%s: %d sample(s) in the steady window, %d needed for a verdict"
                          % (proc, s["window_samples"], MIN_WINDOW_SAMPLES)))
            continue
        slope = s["rss_slope"]
        drift = abs(slope) * s["window_s"] / 3600.0
        if abs(slope) < rss_limit:
            ok, text = True, "flat (|slope| < %g MB/h)" % rss_limit
        elif drift < rss_floor:
            ok, text = True, ("above %g MB/h but only %.1f MB over the %.0f min window, under the %g MB noise floor: "
                              "too short to tell" % (rss_limit, drift, s["window_s"] / 60.0, rss_floor))
        else:
            ok, text = False, "GROWS (|slope| >= %g MB/h, %.1f MB over the %.0f min window)" % (
                rss_limit, drift, s["window_s"] / 60.0)
        lines.append((ok, "%s: RSS slope in the steady window %+.1f MB/h (%.1f -> %.1f MB): %s" % (
            proc, slope, s["rss_fill"], s["rss_end"], text)))
        for what in ("fds", "threads"):
            low, high = s["%s_window" % what]
            rising = s["%s_rising" % what]
            label = "open file descriptors" if what == "fds" else "threads"
            if low == high:
                text = "constant (%d)" % low
            elif rising:
                text = "floor RISES (%d..%d): a leak" % (low, high)
            else:
                text = "bounded, floor does not rise (%d..%d)" % (low, high)
            lines.append((not rising, "%s: %s in the steady window %s" % (proc, label, text)))
    return lines


def contiguity_problem(numbers: Sequence[int], what: str) -> Optional[str]:
    """None when ``numbers`` are 1..N in order (N >= 1), else what is wrong (gaps, repeats, a wrong start)."""
    if not numbers:
        return "%s: none" % what
    expected = list(range(1, len(numbers) + 1))
    if list(numbers) == expected:
        return None
    seen: Set[int] = set()
    repeats = sorted({n for n in numbers if n in seen or seen.add(n)})
    missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
    parts = []
    if numbers[0] != 1:
        parts.append("starts at %d" % numbers[0])
    if missing:
        parts.append("missing %s" % _short(missing))
    if repeats:
        parts.append("repeated %s" % _short(repeats))
    if not parts:
        parts.append("out of order")
    return "%s: %s" % (what, ", ".join(parts))


def _short(values: Sequence[int], keep: int = 8) -> str:
    return ", ".join(str(v) for v in values[:keep]) + (" ... (%d)" % len(values) if len(values) > keep else "")


def render_section(meta: Dict[str, Any], stats: Dict[str, Dict[str, Any]], window_label: str,
                   lines: List[Tuple[bool, str]], checks: List[Tuple[bool, str]], progress_line: str) -> str:
    """The Markdown section for docs/benchmarks.md."""
    out = [SECTION, "",
           "Command: `%s`" % meta["command"], "",
           "Machine: %s, %d cores (load average at the end: %s), Linux %s; Python %s; %s." % (
               meta["cpu"], meta["cores"], meta["load"], meta["kernel"], meta["python"], meta["date"]), "",
           "Duration %.1f min after start-up (%.0f s to bring both sessions up), a sample every %g s. "
           "*train*: `train.launch` robot %s task %s, TD3, lockstep on PyBullet, replay memory %d transitions "
           "(learning_starts %d), checkpoint every %d env steps, record %s. *deploy*: `deploy.launch` with the "
           "shipped %s policy, **realtime** on PyBullet, episodes until stopped. One private roscore; all on this "
           "machine. Steady window: %s." % (
               meta["minutes"], meta["startup_s"], meta["sample_s"], meta["robot"], meta["task"],
               meta["buffer_size"], meta["learning_starts"], meta["checkpoint_every"],
               "on" if meta["record"] else "off", meta["robot"], window_label), "",
           progress_line, "",
           "| process | RSS start / window start / end [MB] | RSS slope in window [MB/h] | fds min / max (window) "
           "| threads min / max (window) | CPU [%] |", "|---|---|---|---|---|---|"]
    for proc in sorted(stats):
        s = stats[proc]
        fw = "%d / %d" % s["fds_window"] if s["fds_window"] else "-"
        tw = "%d / %d" % s["threads_window"] if s["threads_window"] else "-"
        out.append("| %s | %.1f / %.1f / %.1f | %s | %d / %d (%s) | %d / %d (%s) | %.1f |" % (
            proc, s["rss_start"], s["rss_fill"], s["rss_end"],
            "%+.1f" % s["rss_slope"] if not math.isnan(s["rss_slope"]) else "-",
            s["fds_min"], s["fds_max"], fw, s["threads_min"], s["threads_max"], tw, s["cpu_pct"]))
    out += ["", "![RSS, open file descriptors and threads per process over the soak](%s)" % meta["plot_ref"], "",
            "Verdicts (computed from the samples; %s):" % ("all pass" if all(ok for ok, _ in lines) else
                                                            "SOME FAIL"), ""]
    out += ["- %s%s" % ("" if ok else "**FAIL** ", text) for ok, text in lines]
    out += ["", "Nothing lost (%s):" % ("all pass" if all(ok for ok, _ in checks) else "SOME FAIL"), ""]
    out += ["- %s%s" % ("" if ok else "**FAIL** ", text) for ok, text in checks]
    return "\n".join(out) + "\n"


def default_buffer_size(minutes: float) -> int:
    return max(2000, int(round(BUFFER_PER_HOUR * minutes / 60.0)))


# -- processes ---------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_sample(pid: int) -> Optional[Dict[str, Any]]:
    """RSS [MB], open fds, threads and CPU time [s] of a live process, or None."""
    try:
        with open("/proc/%d/status" % pid) as fh:
            status = dict(line.split(":", 1) for line in fh if ":" in line)
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        fds = len(os.listdir("/proc/%d/fd" % pid))
    except (OSError, ValueError):
        return None
    if fields[0] == "Z":
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return {"rss_mb": round(int(status["VmRSS"].split()[0]) / 1024.0, 2), "fds": fds,
            "threads": int(status["Threads"]), "cpu_s": round((int(fields[11]) + int(fields[12])) / tick, 2)}


def disk_mb(path: str) -> float:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total / 1e6


class Launch:
    """A roslaunch of the whole launch file into namespace ``/name`` (ROS_NAMESPACE), in its own session, output to
    a log file."""

    def __init__(self, name: str, args: List[str], log_path: str):
        self.name = name
        self.log_path = log_path
        env = dict(os.environ, ROS_NAMESPACE="/" + name)
        with open(log_path, "w") as fh:
            self.popen = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                          cwd=ROOT, env=env)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def interrupt(self, timeout: float = 60.0) -> Optional[int]:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGINT)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
            return None


class Watch:
    """The soak's ROS side: the latest /diagnostics status of each node, the EpisodeStats of both sessions."""

    def __init__(self) -> None:
        import rospy
        from diagnostic_msgs.msg import DiagnosticArray
        from op3_walk.msg import EpisodeStats
        self.lock = threading.Lock()
        self.diag: Dict[str, Dict[str, str]] = {}      # hardware_id (node name) -> values (+ "_message")
        self.diag_count: Dict[str, int] = {}
        self.episodes: Dict[str, List[Any]] = {"train": [], "deploy": []}
        self.subs = [rospy.Subscriber("/diagnostics", DiagnosticArray, self._on_diag, queue_size=50),
                     rospy.Subscriber("/train/walker/episode", EpisodeStats,
                                      lambda m: self._on_episode("train", m), queue_size=200),
                     rospy.Subscriber("/deploy/walker/episode", EpisodeStats,
                                      lambda m: self._on_episode("deploy", m), queue_size=200)]

    def _on_diag(self, msg: Any) -> None:
        with self.lock:
            for st in msg.status:
                if not st.name.startswith(("op3_walk learner", "op3_walk controller")):
                    continue
                values = {kv.key: kv.value for kv in st.values}
                values["_message"] = st.message
                self.diag[st.hardware_id] = values
                self.diag_count[st.hardware_id] = self.diag_count.get(st.hardware_id, 0) + 1

    def _on_episode(self, session: str, msg: Any) -> None:
        with self.lock:
            self.episodes[session].append((int(msg.episode), str(msg.end_reason)))

    def values(self, node: str) -> Dict[str, str]:
        with self.lock:
            return dict(self.diag.get(node, {}))

    def count(self, node: str) -> int:
        with self.lock:
            return self.diag_count.get(node, 0)

    def close(self) -> None:
        for sub in self.subs:
            sub.unregister()


def node_pids(me: str, cache: Optional[Dict[str, int]] = None) -> Dict[str, int]:
    """Every registered node's pid (its own getPid), and the master's ("rosmaster").  With ``cache`` (updated in
    place), a node or master whose cached process is still alive is not asked again: in the steady state a sample
    costs the master one getSystemState and the nodes nothing (no sampling artefacts in their descriptors)."""
    import rosgraph
    import rosnode
    from xmlrpc.client import ServerProxy
    cache = {} if cache is None else cache
    master = rosgraph.Master(me)
    out: Dict[str, int] = {}
    try:
        if not alive(cache.get("rosmaster", 0)):
            cache["rosmaster"] = int(master.getPid())
        out["rosmaster"] = cache["rosmaster"]
    except Exception:
        pass
    for node in rosnode.get_node_names():
        if node == me:
            continue
        if alive(cache.get(node, 0)):
            out[node] = cache[node]
            continue
        try:
            code, _, pid = ServerProxy(rosnode.get_api_uri(master, node, skip_cache=True)).getPid(me)
        except Exception:   # starting or stopping
            continue
        if code == 1:
            out[node] = cache[node] = int(pid)
    return out


def _int(text: Any) -> Optional[int]:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


# -- the soak ----------------------------------------------------------------------------------------------------------
def agent_config(path: str, buffer_size: int, learning_starts: int) -> None:
    import yaml
    with open(os.path.join(ROOT, "config", "agents", "td3.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    cfg["buffer_size"] = buffer_size
    cfg["learning_starts"] = learning_starts
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 60)),
                        help="soak duration after start-up (env SOAK_MINUTES; default 60)")
    parser.add_argument("--sample-s", type=float, default=float(os.environ.get("SOAK_SAMPLE_S", 60)),
                        help="seconds between samples (env SOAK_SAMPLE_S; default 60)")
    parser.add_argument("--robot", default="plen", help="robot of both sessions (default plen)")
    parser.add_argument("--task", default="walk", help="training task (default walk)")
    parser.add_argument("--buffer-size", type=int, default=0,
                        help="replay memory of the learner, transitions (0: %d per hour of soak, at least 2000: "
                             "fills in about the first fifth here)" % BUFFER_PER_HOUR)
    parser.add_argument("--learning-starts", type=int, default=5000,
                        help="TD3 learning_starts (at most half the replay memory)")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="env steps between checkpoints (0: half the replay memory)")
    parser.add_argument("--record", action="store_true", help="train with record:=true (a bag grows on disk)")
    parser.add_argument("--rss-slope-limit", type=float, default=RSS_SLOPE_LIMIT,
                        help="MB/h of RSS growth in the steady window below which a process counts as flat")
    parser.add_argument("--rss-floor-mb", type=float, default=RSS_FLOOR_MB,
                        help="RSS also counts as flat when slope x window length is below this many MB")
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "soak"),
                        help="output folder (its train/, deploy/ and ros_home/ are replaced)")
    parser.add_argument("--no-docs", action="store_true",
                        help="leave docs/ alone: the report and plot go to OUT/soak.md and OUT/soak.png")
    args = parser.parse_args(argv)
    args.given = sys.argv[1:] if argv is None else list(argv)
    if args.minutes <= 0 or args.sample_s <= 0:
        parser.error("--minutes and --sample-s must be > 0")
    buffer_size = args.buffer_size or default_buffer_size(args.minutes)
    learning_starts = max(1, min(args.learning_starts, buffer_size // 2))
    checkpoint_every = args.checkpoint_every or max(1000, buffer_size // 2)
    if buffer_size < 1 or checkpoint_every < 1:
        parser.error("--buffer-size and --checkpoint-every must be >= 1")

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    for sub in ("train", "deploy", "ros_home"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    home = os.path.join(out, "ros_home")
    os.makedirs(home)
    agent_yaml = os.path.join(out, "td3_soak.yaml")
    agent_config(agent_yaml, buffer_size, learning_starts)

    port = free_port()
    os.environ["ROS_MASTER_URI"] = "http://127.0.0.1:%d" % port
    os.environ.setdefault("ROS_IP", "127.0.0.1")
    os.environ["ROS_HOME"] = home
    started = time.monotonic()

    def log(msg: str) -> None:
        print("[soak %6.0f s] %s" % (time.monotonic() - started, msg), flush=True)

    with open(os.path.join(out, "roscore.log"), "w") as fh:
        core = subprocess.Popen(["roscore", "-p", str(port)], stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    tracked: Set[int] = {core.pid}
    launches: List[Launch] = []
    try:
        import rosgraph
        deadline = time.monotonic() + 60
        while not rosgraph.is_master_online(os.environ["ROS_MASTER_URI"]):
            if time.monotonic() > deadline or core.poll() is not None:
                raise RuntimeError("roscore did not start (see %s/roscore.log)" % out)
            time.sleep(0.2)
        import rospy
        rospy.init_node("soak", disable_signals=True)
        watch = Watch()
        cfg = dict(buffer_size=buffer_size, learning_starts=learning_starts, checkpoint_every=checkpoint_every,
                   agent_yaml=agent_yaml, home=home, out=out, port=port)
        return soak(args, cfg, core, tracked, launches, watch, log)
    finally:
        for launch in launches:   # after an error: nothing left running
            if launch.popen.poll() is None:
                launch.interrupt(timeout=30)
        if core.poll() is None:
            os.killpg(core.pid, signal.SIGINT)
            try:
                core.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(core.pid, signal.SIGKILL)
                core.wait()


def soak(args: argparse.Namespace, cfg: Dict[str, Any], core: subprocess.Popen, tracked: Set[int],
         launches: List[Launch], watch: Watch, log: Any) -> int:
    import rospy
    out = cfg["out"]
    train_dir, deploy_dir = os.path.join(out, "train"), os.path.join(out, "deploy")
    launched_at = time.monotonic()
    train = Launch("train", [
        "roslaunch", "op3_walk", "train.launch", "robot:=%s" % args.robot, "task:=%s" % args.task,
        "algo:=td3", "agent_config:=%s" % cfg["agent_yaml"], "steps:=1000000000", "out_dir:=%s" % train_dir,
        "checkpoint_every:=%d" % cfg["checkpoint_every"], "progress:=false", "record:=%s" % str(args.record).lower(),
        "backend:=pybullet", "mode:=lockstep"], os.path.join(out, "train.log"))
    launches.append(train)
    deploy = Launch("deploy", [
        "roslaunch", "op3_walk", "deploy.launch", "robot:=%s" % args.robot, "backend:=pybullet",
        "mode:=realtime", "episodes:=0", "out_dir:=%s" % deploy_dir], os.path.join(out, "deploy.log"))
    launches.append(deploy)
    log("roscore on port %d; train and deploy launched (logs in %s)" % (cfg["port"], out))

    learner, deploy_ctl = "/train/learner", "/deploy/controller"
    expected = ["/train/learner", "/train/controller", "/deploy/controller", "/deploy/policy"]
    deadline = time.monotonic() + 300
    while True:   # up: every node registered, the learner stepping, the deploy controller in an episode
        pids = node_pids(rospy.get_name())
        ok = all(n in pids for n in expected) and (_int(watch.values(learner).get("env steps")) or 0) > 0 \
            and (_int(watch.values(deploy_ctl).get("episode")) or 0) > 0
        if ok:
            break
        for launch in launches:
            if launch.popen.poll() is not None:
                raise RuntimeError("%s launch exited (%s) during start-up:\n%s" % (
                    launch.name, launch.popen.returncode, launch.log()[-3000:]))
        if time.monotonic() > deadline:
            raise RuntimeError("the sessions did not come up within 300 s (nodes %s); see %s" % (sorted(pids), out))
        time.sleep(1.0)
    t0 = time.monotonic()
    startup_s = t0 - launched_at
    log("both sessions up after %.0f s; soaking for %g min, a sample every %g s" % (startup_s, args.minutes,
                                                                                     args.sample_s))

    samples: List[Dict[str, Any]] = []
    progress: List[Dict[str, Any]] = []
    early_exit: List[str] = []
    roslaunch_pids = {"roslaunch train": train.popen.pid, "roslaunch deploy": deploy.popen.pid}
    pid_cache: Dict[str, int] = {}
    end = t0 + args.minutes * 60.0
    next_sample = t0
    while True:
        now = time.monotonic()
        t = now - t0
        pids = dict(node_pids(rospy.get_name(), pid_cache), **roslaunch_pids)
        for name, pid in sorted(pids.items()):
            tracked.add(pid)
            row = proc_sample(pid)
            if row is not None:
                samples.append(dict(t_s=round(t, 1), proc=name, pid=pid, **row))
        for pid in (core.pid, train.popen.pid, deploy.popen.pid):
            tracked.update(children_of(pid))
        lv, dv = watch.values(learner), watch.values(deploy_ctl)
        progress.append({
            "t_s": round(t, 1), "env_steps": _int(lv.get("env steps")), "replay_memory": _int(lv.get("replay memory")),
            "train_episodes": _int(lv.get("episodes")), "updates": _int(lv.get("updates")),
            "deploy_episodes": len(watch.episodes["deploy"]), "deploy_controller_episode": _int(dv.get("episode")),
            "deploy_watchdog_trips": _int(dv.get("watchdog trips")), "deploy_overruns": _int(dv.get("loop overruns")),
            "train_disk_mb": round(disk_mb(os.path.join(out, "train")), 2),
            "ros_log_mb": round(disk_mb(os.path.join(cfg["home"], "log")), 2)})
        p = progress[-1]
        log("t %5.1f min: env steps %s, replay memory %s/%d, train episodes %s, deploy episodes %d; learner RSS "
            "%.0f MB" % (t / 60, p["env_steps"], p["replay_memory"], cfg["buffer_size"], p["train_episodes"],
                         p["deploy_episodes"], next((r["rss_mb"] for r in samples[::-1] if r["proc"] == learner),
                                                    math.nan)))
        for launch in launches:
            if launch.popen.poll() is not None:
                early_exit.append("%s launch exited by itself (status %s) at %.1f min" % (
                    launch.name, launch.popen.returncode, t / 60))
        if early_exit or now >= end:
            break
        next_sample += args.sample_s
        time.sleep(max(0.0, min(next_sample, end) - time.monotonic()))
        if next_sample > end:
            next_sample = end
    t_end = time.monotonic() - t0

    # -- stop: pause the learner, read its counters, then SIGINT both launches and the roscore -----------------------
    checks: List[Tuple[bool, str]] = [(not early_exit, "; ".join(early_exit) or "both launches ran the whole soak")]
    paused_steps = paused_episodes = None
    if train.popen.poll() is None:
        from std_srvs.srv import Trigger
        try:
            rospy.wait_for_service("/train/learner/pause", timeout=30)
            rospy.ServiceProxy("/train/learner/pause", Trigger)()
            last = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:   # two diagnostics in a row, paused, with the same counters
                n = watch.count(learner)
                while watch.count(learner) == n and time.monotonic() < deadline:
                    time.sleep(0.05)
                v = watch.values(learner)
                now_counts = (v.get("paused"), _int(v.get("env steps")), _int(v.get("episodes")))
                if now_counts[0] == "True" and now_counts == last:
                    paused_steps, paused_episodes = now_counts[1], now_counts[2]
                    break
                last = now_counts
        except Exception as exc:
            checks.append((False, "could not pause the learner: %s" % exc))
    log("learner paused at env step %s, %s episodes; stopping" % (paused_steps, paused_episodes))
    time.sleep(2.0)    # the last EpisodeStats in flight
    deploy_rc = deploy.interrupt()
    train_rc = train.interrupt()
    time.sleep(1.0)
    with watch.lock:
        train_eps = [e for e, _ in watch.episodes["train"]]
        deploy_eps = [e for e, _ in watch.episodes["deploy"]]
        deploy_reasons: Dict[str, int] = {}
        for _, reason in watch.episodes["deploy"]:
            deploy_reasons[reason or "?"] = deploy_reasons.get(reason or "?", 0) + 1
    deploy_ctl_episode = _int(watch.values(deploy_ctl).get("episode"))
    watch.close()
    rospy.signal_shutdown("soak over")
    os.killpg(core.pid, signal.SIGINT)
    try:
        core_rc: Optional[int] = core.wait(timeout=30)
    except subprocess.TimeoutExpired:
        core_rc = None
    checks.append((train_rc == 0 and deploy_rc == 0 and core_rc == 0,
                   "exit statuses after SIGINT: train roslaunch %s, deploy roslaunch %s, roscore %s" % (
                       train_rc, deploy_rc, core_rc)))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in tracked):
        time.sleep(0.2)
    left = sorted(pid for pid in tracked if alive(pid))
    checks.append((not left, "processes left behind: %s" % left if left else
                   "no process left behind (%d tracked)" % len(tracked)))
    checks += train_checks(train_dir, paused_steps, paused_episodes, train_eps)
    checks += deploy_checks(deploy.log(), deploy_eps, deploy_ctl_episode, deploy_reasons)

    # -- report -----------------------------------------------------------------------------------------------------
    write_csv(os.path.join(out, "samples.csv"), samples, ["t_s", "proc", "pid", "rss_mb", "fds", "threads", "cpu_s"])
    write_csv(os.path.join(out, "progress.csv"), progress, list(progress[0]))
    filled = fill_time(progress, cfg["buffer_size"])
    window_start, window_label = steady_window(t_end, filled)
    stats = analyse(samples, window_start)
    lines = verdicts(stats, args.rss_slope_limit, args.rss_floor_mb)
    plot_path = os.path.join(out, "soak.png") if args.no_docs else os.path.join(ROOT, "docs", "img", "soak.png")
    plot(samples, filled, window_start, plot_path)
    last = progress[-1]
    first_learning = next((p for p in progress if (p["updates"] or 0) > 0), None)
    progress_line = (
        "Progress: the learner made %s env steps and %s updates in %s episodes (replay memory %s/%d%s); the deploy "
        "ran %d episodes (end reasons: %s; its realtime controller: %s watchdog trips, %s loop overruns). Disk: "
        "train out_dir %.1f MB, ROS logs %.1f MB at the end." % (
            paused_steps if paused_steps is not None else last["env_steps"], last["updates"],
            paused_episodes if paused_episodes is not None else last["train_episodes"], last["replay_memory"],
            cfg["buffer_size"], ", full from %.1f min" % (filled / 60) if filled is not None else ", never full",
            len(deploy_eps), ", ".join("%s %d" % kv for kv in sorted(deploy_reasons.items())) or "none",
            last["deploy_watchdog_trips"], last["deploy_overruns"], last["train_disk_mb"], last["ros_log_mb"]))
    if first_learning is None:
        progress_line += " The learner never started its gradient updates."
    from bench_agents import cpu_model, write_section
    command = " ".join(["python tools/soak.py"] + args.given) + (" (make soak)" if os.environ.get("MAKELEVEL") else "")
    meta = {"command": command, "cpu": cpu_model(), "cores": os.cpu_count() or 0,
            "load": " ".join("%.2f" % x for x in os.getloadavg()), "kernel": platform.release(),
            "python": platform.python_version(), "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "minutes": t_end / 60.0, "startup_s": startup_s, "sample_s": args.sample_s, "robot": args.robot,
            "task": args.task, "buffer_size": cfg["buffer_size"], "learning_starts": cfg["learning_starts"],
            "checkpoint_every": cfg["checkpoint_every"], "record": args.record,
            "plot_ref": "soak.png" if args.no_docs else "img/soak.png"}
    text = render_section(meta, stats, window_label, lines, checks, progress_line)
    print(text)
    report = os.path.join(out, "soak.md") if args.no_docs else os.path.join(ROOT, "docs", "benchmarks.md")
    if args.no_docs:
        with open(report, "w") as fh:
            fh.write(text)
    else:
        write_section(report, SECTION, text)
    log("wrote %s, %s, %s/samples.csv and progress.csv" % (report, plot_path, out))
    failed = [text for ok, text in lines + checks if not ok]
    for text in failed:
        log("FAIL: %s" % text)
    return 1 if failed else 0


def train_checks(train_dir: str, paused_steps: Optional[int], paused_episodes: Optional[int],
                 topic_episodes: List[int]) -> List[Tuple[bool, str]]:
    checks: List[Tuple[bool, str]] = []
    csv_path = os.path.join(train_dir, "episodes.csv")
    numbers: List[int] = []
    try:
        with open(csv_path, newline="") as fh:
            numbers = [int(row["episode"]) for row in csv.DictReader(fh)]
    except (OSError, KeyError, ValueError) as exc:
        checks.append((False, "train: cannot read %s: %s" % (csv_path, exc)))
    problem = contiguity_problem(numbers, "train: episodes.csv episode numbers")
    checks.append((problem is None, problem or "train: episodes.csv numbers episodes 1..%d without a gap"
                   % len(numbers)))
    problem = contiguity_problem(topic_episodes, "train: walker/episode messages")
    checks.append((problem is None and len(topic_episodes) == len(numbers),
                   problem or "train: %d walker/episode messages, numbered 1..%d (episodes.csv: %d rows)"
                   % (len(topic_episodes), len(topic_episodes), len(numbers))))
    try:
        from op3_walk.training.checkpoint import read_meta
        meta = read_meta(os.path.join(train_dir, "checkpoint.pt"))
    except Exception as exc:
        checks.append((False, "train: final checkpoint unreadable: %s" % exc))
        return checks
    ok = paused_steps is not None and int(meta["env_steps"]) == paused_steps \
        and int(meta.get("episodes", -1)) == paused_episodes == len(numbers)
    checks.append((ok, "train: final checkpoint at env step %s with %s episodes; the learner's /diagnostics "
                   "when paused before the stop: env step %s, %s episodes; episodes.csv: %d" % (
                       meta["env_steps"], meta.get("episodes"), paused_steps, paused_episodes, len(numbers))))
    status_path = os.path.join(train_dir, "session_status")
    status = open(status_path).read().strip() if os.path.exists(status_path) else "(none)"
    checks.append((status == "stopped", "train: session_status %r (a stop request ended it)" % status))
    return checks


def deploy_checks(log_text: str, episodes: List[int], controller_episode: Optional[int],
                  reasons: Dict[str, int]) -> List[Tuple[bool, str]]:
    checks: List[Tuple[bool, str]] = []
    problem = contiguity_problem(episodes, "deploy: walker/episode messages")
    checks.append((problem is None, problem or "deploy: %d episodes reported, numbered 1..%d"
                   % (len(episodes), len(episodes))))
    found = re.findall(r"policy: (\d+) episode\(s\)", log_text)
    counted = int(found[-1]) if found else None
    checks.append((counted == len(episodes), "deploy: the policy node's summary counts %s episodes, %d reported"
                   % (counted, len(episodes))))
    cut = None if controller_episode is None else controller_episode - len(episodes)
    checks.append((cut in (0, 1), "deploy: its controller started %s episodes, %d finished (%s cut short by the stop)"
                   % (controller_episode, len(episodes), cut)))
    return checks


def write_csv(path: str, rows: List[Dict[str, Any]], columns: List[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot(samples: List[Dict[str, Any]], filled_at: Optional[float], window_start: float, path: str) -> None:
    """RSS, RSS change within the steady window (from ``window_start``), fds and threads per process over time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    procs = sorted({r["proc"] for r in samples})
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    in_window: List[float] = []
    for proc in procs:
        rows = [r for r in samples if r["proc"] == proc]
        t = [float(r["t_s"]) / 60.0 for r in rows]
        ref = next((float(r["rss_mb"]) for r in rows if float(r["t_s"]) >= window_start), float(rows[0]["rss_mb"]))
        change = [float(r["rss_mb"]) - ref for r in rows]
        axes[1].plot(t, change, marker=".", label=proc)
        in_window += [c for c, r in zip(change, rows) if float(r["t_s"]) >= window_start]
        for ax, key in zip(axes[[0, 2, 3]], ("rss_mb", "fds", "threads")):
            ax.plot(t, [float(r[key]) for r in rows], marker=".", label=proc)
    for ax, label in zip(axes, ("RSS [MB]", "RSS change in the\nsteady window [MB]", "open file descriptors",
                                "threads")):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if filled_at is not None:
            ax.axvline(filled_at / 60.0, color="k", linestyle="--", linewidth=0.8)
    if in_window:   # the change panel shows the steady window's range: what the slope verdicts look at
        axes[1].set_ylim(min(in_window) - 1.0, max(in_window) + 1.0)
    axes[0].set_yscale("log")
    axes[0].set_title("soak: RSS, descriptors, threads per process (dashed: replay memory full)")
    axes[-1].set_xlabel("minutes since both sessions were up")
    axes[0].legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
