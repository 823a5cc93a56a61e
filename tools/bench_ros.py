#!/usr/bin/env python3
"""``make bench-ros``: what going through ROS costs, and what several actors buy.

Against a private roscore on a free port, on one robot, task and seed, side by side in one run:

1. **Env only** (a uniform-random policy, no learning: the transport is all that differs): env steps/s of the
   in-process ``WalkEnv`` and of ``RosWalkEnv`` in lockstep with one controller_node process, and their ratio;
   the per-step time of each (median, p99): in-process ``env.step``, and through ROS the round trip action
   published -> controller steps -> state received.  The difference is what ROS adds per step.
2. **Training** (TD3 at ``config/agents/td3.yaml``, with ``learning_starts`` lowered so the run is mostly
   learning): env steps/s in-process and through ROS, in the learning phase.
3. **Actors**: 1, 2 and 4 controller processes (namespaces actor_0 ...) feeding one learner, for the env-only
   and the training loads.

Every number comes from the same ``Trainer`` loop the nodes use.  The report replaces the section
``## ROS (make bench-ros)`` of ``docs/benchmarks.md``.

    python tools/bench_ros.py                         # plen/walk, 3000 env-only steps, 2000 training steps
    python tools/bench_ros.py --robot op3 --report out/bench/ros_op3.md
"""
import argparse
import datetime
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # bench_agents (write_section); op3_walk comes
# from the catkin devel space (source env.sh), which also has the generated messages

SECTION = "## ROS (make bench-ros)"
RATIO_TARGET = 0.85


class RandomAgent:
    """The agent interface with a seeded uniform-random policy and no learning: measures the env path alone."""

    algo = "random"

    def __init__(self, act_dim: int, seed: int):
        self.act_dim = act_dim
        self.rng = np.random.default_rng(seed)
        self.env_steps = 0
        self.updates = 0

    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, self.act_dim).astype(np.float32)

    def observe(self, *transition: Any) -> None:
        self.env_steps += 1

    def updates_due(self) -> int:
        return 0


class StepTimer:
    """Wraps an env and records the duration of every step (``step`` or ``step_async`` .. ``step_wait``)."""

    def __init__(self, env: Any):
        self.env = env
        self.durations: List[float] = []
        self._t0 = 0.0

    def reset(self, **kwargs: Any) -> Any:
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        t0 = time.perf_counter()
        out = self.env.step(action)
        self.durations.append(time.perf_counter() - t0)
        return out

    def __getattr__(self, name: str) -> Any:
        if name == "step_async" and hasattr(self.env, "step_async"):
            return self._step_async
        if name == "step_wait" and hasattr(self.env, "step_wait"):
            return self._step_wait
        return getattr(self.env, name)

    def _step_async(self, action: Any) -> None:
        self._t0 = time.perf_counter()
        self.env.step_async(action)

    def _step_wait(self) -> Any:
        out = self.env.step_wait()
        self.durations.append(time.perf_counter() - self._t0)
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_trainer(agent: Any, envs: List[Any], steps: int, seed: int, learning_starts: int = 0,
                overlap: bool = True) -> Dict[str, float]:
    """Env steps/s over the whole run and from ``learning_starts`` on, through the shared Trainer loop."""
    from op3_walk.training.loop import Trainer, TrainConfig
    marks: Dict[str, float] = {}

    def on_step(trainer: Any) -> None:
        if "learn" not in marks and trainer.agent.env_steps >= learning_starts:
            marks["learn"] = time.perf_counter()
            marks["learn_steps"] = trainer.agent.env_steps

    trainer = Trainer(agent, envs if len(envs) > 1 else envs[0],
                      TrainConfig(total_steps=steps, seed=seed, checkpoint_every=0, overlap_updates=overlap),
                      on_step=on_step)
    t0 = time.perf_counter()
    trainer.run()
    t1 = time.perf_counter()
    out = {"sps": steps / (t1 - t0)}
    if "learn" in marks and steps > marks["learn_steps"]:
        out["learn_sps"] = (steps - marks["learn_steps"]) / (t1 - marks["learn"])
    return out


def td3_config(tmp: str, learning_starts: int) -> str:
    """config/agents/td3.yaml with a lower learning_starts (the run is about the learning phase's speed)."""
    import yaml
    with open(os.path.join(ROOT, "config", "agents", "td3.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    cfg["learning_starts"] = learning_starts
    path = os.path.join(tmp, "td3_bench.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return path


class Controllers:
    """``n`` controller_node processes in namespaces actor_0 ... (or the root namespace for n = 0 -> one, '')."""

    def __init__(self, n: int, robot: str, task: str, log_dir: str, extra: Sequence[str] = ()):
        self.procs = []
        self.namespaces = ["actor_%d" % i for i in range(n)]
        for ns in self.namespaces:
            log = open(os.path.join(log_dir, "%s.log" % ns), "w")
            self.procs.append(subprocess.Popen(
                ["rosrun", "op3_walk", "controller_node", "__name:=controller", "__ns:=%s" % ns,
                 "_robot:=%s" % robot, "_task:=%s" % task] + list(extra), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))

    def envs(self, robot_cfg: Any, task_cfg: Any) -> List[Any]:
        from op3_walk.ros.remote_env import RosWalkEnv
        return [RosWalkEnv(robot_cfg, task_cfg, state_topic=ns + "/walker/state", action_topic=ns + "/walker/action",
                           reset_service=ns + "/walker/reset", connect_timeout=120.0) for ns in self.namespaces]

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def pct(values: List[float]) -> str:
    v = np.asarray(values) * 1e3
    return "%.3f / %.3f" % (float(np.median(v)), float(np.percentile(v, 99)))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot", default="plen")
    parser.add_argument("--task", default="walk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-steps", type=int, default=3000, help="env steps of each env-only run")
    parser.add_argument("--train-steps", type=int, default=2000, help="env steps of each training run")
    parser.add_argument("--learning-starts", type=int, default=500, help="TD3 learning_starts of the training runs")
    parser.add_argument("--actors", default="1,2,4", help="actor counts to measure")
    parser.add_argument("--controller-arg", action="append", default=[],
                        help="extra controller_node argument, e.g. _publish_tf:=false (repeatable)")
    parser.add_argument("--report", default=os.path.join(ROOT, "docs", "benchmarks.md"),
                        help="Markdown file whose section is replaced ('' = print only)")
    args = parser.parse_args(argv)
    actor_counts = [int(x) for x in args.actors.split(",") if x.strip()]

    tmp = tempfile.mkdtemp(prefix="bench_ros_")
    port = free_port()
    os.environ["ROS_MASTER_URI"] = "http://127.0.0.1:%d" % port
    os.environ.setdefault("ROS_IP", "127.0.0.1")
    os.environ["ROS_HOME"] = tmp
    core = subprocess.Popen(["roscore", "-p", str(port)], stdout=open(os.path.join(tmp, "roscore.log"), "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import rosgraph
        deadline = time.monotonic() + 30
        while not rosgraph.is_master_online(os.environ["ROS_MASTER_URI"]):
            if time.monotonic() > deadline:
                raise RuntimeError("roscore did not start (see %s/roscore.log)" % tmp)
            time.sleep(0.2)
        import rospy
        rospy.init_node("bench_ros", disable_signals=True)
        return measure(args, actor_counts, tmp)
    finally:
        os.killpg(core.pid, signal.SIGINT)
        core.wait(timeout=30)


def measure(args: argparse.Namespace, actor_counts: List[int], tmp: str) -> int:
    import torch
    from op3_walk.envs.walk_env import WalkEnv, load_task
    from op3_walk.robots import load_robot
    robot_cfg, task_cfg = load_robot(args.robot), load_task(args.task)
    agent_yaml = td3_config(tmp, args.learning_starts)
    rows: Dict[str, Dict[str, Any]] = {}
    started = time.monotonic()

    def log(msg: str) -> None:
        print("[bench-ros %5.0f s] %s" % (time.monotonic() - started, msg), flush=True)

    # In-process, env only and training.
    env = StepTimer(WalkEnv(robot=robot_cfg, task=task_cfg))
    act_dim = int(env.action_space.shape[0])
    obs_dim = int(env.observation_space.shape[0])
    rows["in-process"] = run_trainer(RandomAgent(act_dim, args.seed), [env], args.env_steps, args.seed)
    rows["in-process"]["step"] = pct(env.durations)
    log("in-process env only: %.0f steps/s" % rows["in-process"]["sps"])
    train_runs(args, rows["in-process"], [env], obs_dim, act_dim, agent_yaml, log, "in-process")
    env.close()

    for n in actor_counts:
        ctl = Controllers(n, args.robot, args.task, tmp, args.controller_arg)
        try:
            envs = [StepTimer(e) for e in ctl.envs(robot_cfg, task_cfg)]
            key = "ROS, %d actor%s" % (n, "" if n == 1 else "s")
            rows[key] = run_trainer(RandomAgent(act_dim, args.seed), envs, args.env_steps, args.seed)
            rows[key]["step"] = pct([d for e in envs for d in e.durations])
            log("%s env only: %.0f steps/s" % (key, rows[key]["sps"]))
            train_runs(args, rows[key], envs, obs_dim, act_dim, agent_yaml, log, key)
            for e in envs:
                e.close()
        finally:
            ctl.close()

    text = report(args, rows, torch.get_num_threads())
    print(text)
    if args.report:
        from bench_agents import write_section
        write_section(args.report, SECTION, text)
        print("wrote section %r of %s" % (SECTION, args.report))
    return 0


def train_runs(args: argparse.Namespace, row: Dict[str, Any], envs: List[Any], obs_dim: int, act_dim: int,
               agent_yaml: str, log: Callable[[str], None], key: str) -> None:
    """TD3 training speed in the learning phase, with the Trainer's update overlap on (default) and off."""
    from op3_walk.training.session import build_agent
    for overlap, name in ((True, "train_sps"), (False, "strict_sps")):
        agent = build_agent("td3", obs_dim, act_dim, agent_yaml, args.seed)
        train = run_trainer(agent, envs, args.train_steps, args.seed, args.learning_starts, overlap)
        row[name] = train.get("learn_sps", float("nan"))
        log("%s training (overlap_updates %s): %.0f steps/s in the learning phase"
            % (key, "on" if overlap else "off", row[name]))


def report(args: argparse.Namespace, rows: Dict[str, Dict[str, Any]], threads: int) -> str:
    from bench_agents import cpu_model
    cpu = cpu_model()
    load = " ".join("%.2f" % x for x in os.getloadavg())
    base = rows["in-process"]
    lines = [SECTION, "",
             "Command: `python tools/bench_ros.py --robot %s --task %s --seed %d --env-steps %d --train-steps %d "
             "--learning-starts %d --actors %s`" % (args.robot, args.task, args.seed, args.env_steps,
                                                   args.train_steps, args.learning_starts, args.actors), "",
             "Machine: %s, %d cores (load average at the end: %s), Linux %s; Python %s, torch threads %d; %s." % (
                 cpu, os.cpu_count() or 0, load, platform.release(), platform.python_version(), threads,
                 datetime.datetime.now().strftime("%Y-%m-%d %H:%M")), "",
             "Robot %s, task %s, seed %d. *Env only*: a uniform-random policy, no learning (%d env steps per run): the "
             "transport is all that differs. *Training*: TD3 at `config/agents/td3.yaml` with learning_starts %d, "
             "env steps/s after learning starts (%d env steps per run), with the Trainer's default `overlap_updates` (the "
             "gradient updates of step t run while the controller computes step t+1) and, in the last columns, "
             "with it off (act, step, observe, update in strict sequence; in-process the two orders cost the "
             "same). *Step time*: in-process, `env.step`; "
             "through ROS, the round trip from publishing the action to receiving the next state (controller "
             "physics step included). ROS runs: one lockstep controller_node process per actor (namespaces "
             "actor_0 ...), the learner loop in the benchmark process, one private roscore, all on this machine."
             % (args.robot, args.task, args.seed, args.env_steps, args.learning_starts, args.train_steps), "",
             "| run | env only: env steps/s | ÷ in-process | step time median / p99 [ms] | training: env steps/s | "
             "÷ in-process | training, no overlap | ÷ in-process |", "|---|---|---|---|---|---|---|---|"]
    for key, row in rows.items():
        lines.append("| %s | %.0f | %.2f | %s | %.1f | %.2f | %.1f | %.2f |" % (
            key, row["sps"], row["sps"] / base["sps"], row["step"], row["train_sps"],
            row["train_sps"] / base["train_sps"], row["strict_sps"], row["strict_sps"] / base["strict_sps"]))
    one = rows.get("ROS, 1 actor")
    if one is not None:
        env_ratio, train_ratio = one["sps"] / base["sps"], one["train_sps"] / base["train_sps"]
        lines += ["", "Targets (ROS lockstep with one controller ÷ in-process, same robot and seed, ≥ %.2f):"
                  % RATIO_TARGET, "",
                  "- training: %.2f, %s the target (%.2f without the update overlap);"
                  % (train_ratio, "meets" if train_ratio >= RATIO_TARGET else "MISSES",
                     one["strict_sps"] / base["strict_sps"]),
                  "- env only (the transport's worst case: nothing else to do between steps): %.2f, %s the target."
                  % (env_ratio, "meets" if env_ratio >= RATIO_TARGET else "MISSES")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
