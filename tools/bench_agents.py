#!/usr/bin/env python3
"""``make bench-agents``: our DQN, DDPG, TD3 and SAC against Stable-Baselines3 at the same settings.

For each algorithm and seed, our agent (through ``op3_walk.training.Trainer``, the loop every entry point uses) and
SB3's run one after the other, in alternating order, each in a fresh process with one torch thread, on the same env,
budget, seed and hyperparameters: ``config/agents/bench/<algo>_<task>.yaml`` (the rl-baselines3-zoo settings) is
loaded into our config class and the SB3 keyword arguments are derived from that same object.  Each run is then
evaluated deterministically (10 episodes, the same env seeds for both).  The report (return, env steps/s overall
and in the learning phase, the ours/SB3 ratios, wall time, the machine) replaces the section
``## Agents (make bench-agents)`` of ``docs/benchmarks.md``; per-run CSVs and learning curves go to ``out/bench``.

    python tools/bench_agents.py                                   # all four, seeds 0,1,2 (BENCH_ALGOS, BENCH_SEEDS)
    python tools/bench_agents.py --algos td3 --seeds 0 --steps 3000 --report out/bench/quick.md   # a quick check
    python tools/bench_agents.py --bipedal --steps 1000000         # make bench-bipedal: TD3 on BipedalWalker-v3

``--steps`` overrides the budget; the step-counted settings (learning_starts, DQN's epsilon decay) then scale with
it, and the report says so (such a run is a harness check, not comparable with the targets).
"""
import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

SECTION = "## Agents (make bench-agents)"
BIPEDAL_SECTION = "## TD3 on BipedalWalker-v3 (make bench-bipedal)"


@dataclasses.dataclass
class Setting:
    algo: str
    env_id: str
    steps: int
    config: str                 # path relative to config/
    target: Optional[float]     # acceptance target on the deterministic evaluation's mean return
    note: str = ""


SETTINGS = {
    "td3": Setting("td3", "Pendulum-v1", 20000, "agents/bench/td3_pendulum.yaml", -200.0),
    "ddpg": Setting("ddpg", "Pendulum-v1", 20000, "agents/bench/ddpg_pendulum.yaml", -200.0),
    "sac": Setting("sac", "Pendulum-v1", 20000, "agents/bench/sac_pendulum.yaml", None),
    "dqn": Setting("dqn", "CartPole-v1", 50000, "agents/bench/dqn_cartpole.yaml", 500.0),
}
BIPEDAL = Setting("td3", "BipedalWalker-v3", 1000000, "agents/bench/td3_bipedal.yaml", 300.0)
SPEED_TARGET = {"td3": 2.0}     # ours/SB3 env steps/s at least this
EVAL_SEED = 10000               # evaluation episodes use env seeds EVAL_SEED + 100 * seed + i, for both


# ------------------------------------------------------------------------------------------------ one run (worker)
def load_config(setting: Setting, steps: int) -> Any:
    """Our config for ``setting``, with step-counted settings scaled when ``steps`` is not the standard budget."""
    from op3_walk.agents import agent_classes
    from op3_walk.config import load
    config = load(agent_classes(setting.algo)[1], setting.config)
    if steps != setting.steps:
        scale = steps / float(setting.steps)
        changes = {"learning_starts": max(1, int(round(config.learning_starts * scale)))}
        if hasattr(config, "exploration_decay_steps"):
            changes["exploration_decay_steps"] = max(1, int(round(config.exploration_decay_steps * scale)))
        config = dataclasses.replace(config, **changes)
    return config


def sb3_model(setting: Setting, config: Any, env: Any, seed: int, steps: int) -> Any:
    """The SB3 model with ``config``'s settings (translated; an untranslatable difference is an error)."""
    import numpy as np
    import stable_baselines3 as sb3
    from stable_baselines3.common.noise import NormalActionNoise

    def same(*names: str) -> float:
        values = {n: getattr(config, n) for n in names}
        if len(set(values.values())) != 1:
            raise SystemExit("SB3 has one learning rate for all networks; %s differ: %s" % (setting.config, values))
        return values[names[0]]

    if config.n_step != 1 or config.prioritized_replay:
        raise SystemExit("%s: n_step > 1 and prioritized replay have no SB3 counterpart here" % setting.config)
    common = dict(buffer_size=config.buffer_size, learning_starts=config.learning_starts,
                  batch_size=config.batch_size, gamma=config.gamma, seed=seed, device="cpu", verbose=0)
    algo = setting.algo
    if algo in ("td3", "ddpg"):
        act_dim = env.action_space.shape[0]
        kwargs = dict(common, learning_rate=same("actor_lr", "critic_lr"), tau=config.tau, train_freq=1,
                      gradient_steps=config.updates_per_step,
                      action_noise=NormalActionNoise(np.zeros(act_dim), config.exploration_noise * np.ones(act_dim)),
                      policy_kwargs=dict(net_arch=list(config.hidden_sizes), n_critics=config.n_critics))
        if algo == "td3":
            return sb3.TD3("MlpPolicy", env, policy_delay=config.policy_delay,
                           target_policy_noise=config.target_noise, target_noise_clip=config.target_noise_clip,
                           **kwargs)
        if (config.policy_delay, config.target_noise, config.n_critics) != (1, 0.0, 1):
            raise SystemExit("%s: SB3's DDPG fixes policy_delay 1, target_noise 0, one critic" % setting.config)
        return sb3.DDPG("MlpPolicy", env, **kwargs)
    if algo == "sac":
        ent_coef = ("auto_%g" % config.ent_coef_init) if config.autotune else config.ent_coef_init
        return sb3.SAC("MlpPolicy", env, learning_rate=same("actor_lr", "critic_lr", "ent_coef_lr"), tau=config.tau,
                       train_freq=1, gradient_steps=config.updates_per_step, ent_coef=ent_coef,
                       target_entropy=config.target_entropy_per_dim * env.action_space.shape[0],
                       policy_kwargs=dict(net_arch=list(config.hidden_sizes), n_critics=config.n_critics), **common)
    if algo == "dqn":
        if config.double_dqn or config.loss != "huber":
            raise SystemExit("%s: SB3's DQN is vanilla DQN with a Huber loss" % setting.config)
        if config.target_update_interval != config.gradient_steps or config.tau != 1.0:
            raise SystemExit("%s: only 'hard target copy once per training round' is translated to SB3"
                             % setting.config)
        # Ours counts target updates in gradient steps, SB3 in env steps; any SB3 interval <= train_freq copies the
        # target during each collection phase, so every round starts from a fresh copy (zoo: 10).
        return sb3.DQN("MlpPolicy", env, learning_rate=config.lr, tau=1.0, train_freq=config.train_freq,
                       gradient_steps=config.gradient_steps, target_update_interval=min(10, config.train_freq),
                       exploration_fraction=config.exploration_decay_steps / float(steps),
                       exploration_initial_eps=config.exploration_initial_eps,
                       exploration_final_eps=config.exploration_final_eps, max_grad_norm=config.max_grad_norm,
                       policy_kwargs=dict(net_arch=list(config.hidden_sizes)), **common)
    raise SystemExit("no SB3 counterpart for %s" % algo)


def write_rows(path: str, rows: List[Dict[str, float]]) -> None:
    import csv
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["episode", "total_env_steps", "episode_return", "length"])
        writer.writeheader()
        writer.writerows(rows)


def run_worker(args: argparse.Namespace) -> Dict[str, Any]:
    """Train one (implementation, algorithm, seed) and evaluate it; the result as a dict."""
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from op3_walk.training.loop import evaluate_returns

    setting = BIPEDAL if args.bipedal else SETTINGS[args.algo]
    config = load_config(setting, args.steps)
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "episodes.csv")
    marks: Dict[str, float] = {}
    eval_seed = EVAL_SEED + 100 * args.seed

    if args.impl == "ours":
        from op3_walk.training.logger import EpisodeCsv, loss_columns
        from op3_walk.training.loop import Trainer, TrainConfig
        from op3_walk.training.session import make_gym_env, space_dims, wants_discrete
        from op3_walk.agents import agent_classes
        env = make_gym_env(setting.env_id)
        obs_dim, act_dim, discrete = space_dims(env)
        if discrete != wants_discrete(setting.algo):
            raise SystemExit("%s does not fit %s's action space" % (setting.algo, setting.env_id))
        agent = agent_classes(setting.algo)[0](obs_dim, act_dim, config, seed=args.seed)
        log = EpisodeCsv(csv_path, loss_columns(agent))

        def on_step(trainer: Any) -> None:
            if "learn_start" not in marks and trainer.agent.env_steps >= config.learning_starts:
                marks["learn_start"], marks["learn_start_steps"] = time.perf_counter(), trainer.agent.env_steps
                marks["learn_start_cpu"] = time.process_time()

        trainer = Trainer(agent, env, TrainConfig(total_steps=args.steps, seed=args.seed, checkpoint_every=0,
                                                   overlap_updates=False),
                          on_episode=[log], on_step=on_step)
        start, start_cpu = time.perf_counter(), time.process_time()
        summary = trainer.run()
        end, end_cpu = time.perf_counter(), time.process_time()
        log.close()
        env.close()
        updates = summary.updates
        eval_env = make_gym_env(setting.env_id)
        returns = evaluate_returns(lambda obs: agent.act(obs, explore=False), eval_env, args.eval_episodes,
                                   eval_seed)
        eval_env.close()
        version = "op3_walk"
    else:
        import gymnasium
        import stable_baselines3
        from stable_baselines3.common.callbacks import BaseCallback
        env = gymnasium.make(setting.env_id)
        model = sb3_model(setting, config, env, args.seed, args.steps)
        rows: List[Dict[str, float]] = []

        class Marks(BaseCallback):
            def _on_step(self) -> bool:
                if "learn_start" not in marks and self.num_timesteps >= config.learning_starts:
                    marks["learn_start"], marks["learn_start_steps"] = time.perf_counter(), self.num_timesteps
                    marks["learn_start_cpu"] = time.process_time()
                for info in self.locals.get("infos", []):
                    if "episode" in info:
                        rows.append({"episode": len(rows) + 1, "total_env_steps": self.num_timesteps,
                                     "episode_return": float(info["episode"]["r"]),
                                     "length": int(info["episode"]["l"])})
                return True

        start, start_cpu = time.perf_counter(), time.process_time()
        model.learn(total_timesteps=args.steps, callback=Marks())
        end, end_cpu = time.perf_counter(), time.process_time()
        write_rows(csv_path, rows)
        updates = int(model._n_updates)
        eval_env = gymnasium.make(setting.env_id)
        returns = evaluate_returns(lambda obs: model.predict(obs, deterministic=True)[0], eval_env,
                                   args.eval_episodes, eval_seed)
        eval_env.close()
        env.close()
        version = "stable-baselines3 %s" % stable_baselines3.__version__

    learn_steps = args.steps - int(marks.get("learn_start_steps", args.steps))
    learn_time = end - marks.get("learn_start", end)
    learn_cpu = end_cpu - marks.get("learn_start_cpu", end_cpu)
    return {"impl": args.impl, "version": version, "algo": setting.algo, "env": setting.env_id, "seed": args.seed,
            "steps": args.steps, "learning_starts": config.learning_starts, "wall_s": end - start,
            "sps": args.steps / (end - start), "learn_steps": learn_steps,
            "learn_sps": learn_steps / learn_time if learn_time > 0 else float("nan"), "updates": updates,
            "cpu_s": end_cpu - start_cpu,
            "learn_cpu_sps": learn_steps / learn_cpu if learn_cpu > 0 else float("nan"),
            "eval_returns": [float(r) for r in returns], "eval_mean": float(np.mean(returns)),
            "eval_std": float(np.std(returns)), "torch_threads": torch.get_num_threads(), "csv": csv_path}


# ------------------------------------------------------------------------------------------------ the harness
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one); shared by every benchmark tool."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return cpu


def machine() -> Dict[str, str]:
    import torch
    cpu = cpu_model()
    try:
        import stable_baselines3
        sb3_version = stable_baselines3.__version__
    except ImportError:
        sb3_version = "not installed"
    import gymnasium
    return {"cpu": cpu, "cores": str(os.cpu_count()), "os": "%s %s" % (platform.system(), platform.release()),
            "python": platform.python_version(), "torch": torch.__version__, "sb3": sb3_version,
            "gymnasium": gymnasium.__version__,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "load": "%.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else "n/a"}


def launch(impl: str, algo: str, seed: int, steps: int, out: str, eval_episodes: int, bipedal: bool) -> Dict:
    """One run in a fresh process (one torch thread; its result is the last stdout line, JSON)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--algos", algo, "--seed", str(seed),
           "--steps", str(steps), "--out", out, "--eval-episodes", str(eval_episodes)] + (["--bipedal"] if bipedal
                                                                                           else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        return {"impl": impl, "algo": algo, "seed": seed, "error": tail or "exit %d" % done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def mean_std(values: List[float]) -> str:
    import numpy as np
    if not values:
        return "—"
    if len(values) == 1:
        return "%.1f" % values[0]
    return "%.1f ± %.1f" % (float(np.mean(values)), float(np.std(values)))


def ratio(a: List[float], b: List[float]) -> str:
    import numpy as np
    if not a or not b or not np.mean(b) > 0:
        return "—"
    return "%.2f×" % (float(np.mean(a)) / float(np.mean(b)))


def report(results: List[Dict], settings: List[Setting], seeds: List[int], steps_of: Dict[str, int],
           info: Dict[str, str], command: str, section: str, curves: Dict[str, str]) -> str:
    import numpy as np
    ok = [r for r in results if "error" not in r]
    lines = [section, "",
             "Command: `%s`" % command, "",
             "Machine: %s, %s cores (load average at the end: %s), %s; Python %s, torch %s, Stable-Baselines3 %s, "
             "gymnasium %s; %s." % (info["cpu"], info["cores"], info["load"], info["os"], info["python"],
                                    info["torch"], info["sb3"], info["gymnasium"], info["date"]), "",
             "Each run is a fresh process with one torch thread; runs go one after another, ours and SB3 "
             "alternating (and swapping who goes first every seed), with the same env, budget, seed and "
             "hyperparameters (`config/agents/bench/*.yaml`, the rl-baselines3-zoo settings, loaded into our config "
             "class; SB3's arguments are derived from the same object by `tools/bench_agents.py`). Return: mean "
             "over seeds of a deterministic evaluation (10 episodes, the same env seeds for both) after training. "
             "Env steps/s: budget / training wall time (warm-up included); learning phase: env steps/s from "
             "`learning_starts` to the end (one gradient step per env step for TD3/DDPG/SAC); steps per CPU-second "
             "divide by the process's CPU time instead of wall time, which other load on the machine disturbs "
             "less.", ""]
    off_budget = [s for s in settings if steps_of[s.algo] != s.steps]
    if off_budget:
        lines += ["**Not the standard budget** (%s): a harness check, not comparable with the targets; "
                  "learning_starts (and DQN's epsilon decay) scaled with the budget." %
                  ", ".join("%s %d instead of %d steps" % (s.algo, steps_of[s.algo], s.steps) for s in off_budget),
                  ""]
    returns = ["| algorithm | env | steps | seeds | return ours | return SB3 | target |",
               "|---|---|---|---|---|---|---|"]
    speeds = ["| algorithm | env steps/s ours | SB3 | ours/SB3 | learning phase ours | SB3 | ours/SB3 | "
              "learning phase, steps per CPU-second: ours/SB3 | wall ours [s] | wall SB3 [s] |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for s in settings:
        mine = [r for r in ok if r["algo"] == s.algo and r["impl"] == "ours"]
        theirs = [r for r in ok if r["algo"] == s.algo and r["impl"] == "sb3"]

        def col(rs: List[Dict], key: str) -> List[float]:
            return [r[key] for r in rs]
        returns.append("| %s | %s | %d | %s | %s | %s | %s |" % (
            s.algo.upper(), s.env_id, steps_of[s.algo], ",".join(str(x) for x in seeds),
            mean_std(col(mine, "eval_mean")), mean_std(col(theirs, "eval_mean")),
            "≥ %g" % s.target if s.target is not None else "—"))
        speeds.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            s.algo.upper(), mean_std(col(mine, "sps")), mean_std(col(theirs, "sps")),
            ratio(col(mine, "sps"), col(theirs, "sps")),
            mean_std(col(mine, "learn_sps")), mean_std(col(theirs, "learn_sps")),
            ratio(col(mine, "learn_sps"), col(theirs, "learn_sps")),
            ratio(col(mine, "learn_cpu_sps"), col(theirs, "learn_cpu_sps")),
            mean_std(col(mine, "wall_s")), mean_std(col(theirs, "wall_s"))))
        if s.target is not None and mine:
            got = float(np.mean(col(mine, "eval_mean")))
            verdicts.append("- %s on %s: ours %.1f %s the target %g (per seed: %s)." % (
                s.algo.upper(), s.env_id, got, "meets" if got >= s.target else "MISSES", s.target,
                ", ".join("%.1f" % r["eval_mean"] for r in mine)))
        if s.algo in SPEED_TARGET and mine and theirs:
            for key, what in (("sps", "overall"), ("learn_sps", "learning phase"),
                              ("learn_cpu_sps", "learning phase per CPU-second")):
                r = float(np.mean(col(mine, key))) / float(np.mean(col(theirs, key)))
                verdicts.append("- %s env steps/s %s: ours/SB3 = %.2f, %s the %g× target." % (
                    s.algo.upper(), what, r, "meets" if r >= SPEED_TARGET[s.algo] else "MISSES",
                    SPEED_TARGET[s.algo]))
    lines += returns + ["", "Speed:", ""] + speeds
    if verdicts:
        lines += ["", "Acceptance targets:", ""] + verdicts
    lines += ["", "Per run:", "", "| algorithm | impl | seed | eval return (10 ep.) | env steps/s | learning phase "
              "env steps/s | learning phase steps per CPU-s | updates | wall [s] | CPU [s] |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append("| %s | %s | %d | FAILED: %s | | | | | | |" % (r["algo"], r["impl"], r["seed"],
                                                                          r["error"].splitlines()[-1][:120]))
        else:
            lines.append("| %s | %s | %d | %.1f ± %.1f | %.0f | %.0f | %.0f | %d | %.0f | %.0f |" % (
                r["algo"], r["impl"], r["seed"], r["eval_mean"], r["eval_std"], r["sps"], r["learn_sps"],
                r["learn_cpu_sps"], r["updates"], r["wall_s"], r["cpu_s"]))
    if curves:
        lines += ["", "Learning curves (training episodes, mean and min–max over seeds): %s." %
                  ", ".join("`%s`" % os.path.relpath(p, ROOT) for p in curves.values())]
    return "\n".join(lines) + "\n"


def write_section(path: str, section_title: str, text: str) -> None:
    """Replace (or append) the section starting with ``section_title`` in the Markdown file ``path``."""
    old = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    pattern = re.compile(r"^%s\n.*?(?=^## |\Z)" % re.escape(section_title), re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda m: text + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(new.rstrip("\n") + "\n")


def split(text: str) -> List[str]:
    return [x.strip() for x in text.replace(" ", ",").split(",") if x.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark our agents against Stable-Baselines3 (same settings).")
    parser.add_argument("--algos", default=os.environ.get("BENCH_ALGOS", "td3,ddpg,sac,dqn"),
                        help="comma-separated subset of td3,ddpg,sac,dqn (env BENCH_ALGOS)")
    parser.add_argument("--seeds", default=os.environ.get("BENCH_SEEDS", "0,1,2"),
                        help="comma-separated seeds (env BENCH_SEEDS)")
    parser.add_argument("--steps", type=int, default=int(os.environ.get("BENCH_STEPS", "0") or 0),
                        help="override every budget (env BENCH_STEPS; default: 20k Pendulum, 50k CartPole, 1M "
                             "BipedalWalker)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(ROOT, "out", "bench"), help="per-run CSVs and curves")
    parser.add_argument("--report", default=os.path.join(ROOT, "docs", "benchmarks.md"),
                        help="Markdown file whose section is replaced ('' = print only)")
    parser.add_argument("--no-sb3", action="store_true", help="run ours only")
    parser.add_argument("--bipedal", action="store_true", help="TD3 on BipedalWalker-v3 instead (make bench-bipedal)")
    parser.add_argument("--worker", choices=("ours", "sb3"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        args.impl, args.algo = args.worker, split(args.algos)[0]
        setting = BIPEDAL if args.bipedal else SETTINGS[args.algo]
        args.steps = args.steps or setting.steps
        print(json.dumps(run_worker(args)), flush=True)
        return 0

    if args.bipedal:
        settings = [BIPEDAL]
    else:
        unknown = [a for a in split(args.algos) if a not in SETTINGS]
        if unknown:
            parser.error("unknown algorithm(s) %s; choose from %s" % (", ".join(unknown), ", ".join(SETTINGS)))
        settings = [SETTINGS[a] for a in split(args.algos)]
    seeds = [int(s) for s in split(args.seeds)]
    impls = ["ours"] if args.no_sb3 else ["ours", "sb3"]
    if not args.no_sb3:
        import importlib.util
        if importlib.util.find_spec("stable_baselines3") is None:
            parser.exit(2, "bench_agents: stable-baselines3 is not installed: pip install -r requirements-bench.txt "
                           "(make bench-agents does it), or pass --no-sb3\n")
    steps_of = {s.algo: args.steps or s.steps for s in settings}
    command = " ".join(["python tools/bench_agents.py"] + (argv if argv is not None else sys.argv[1:]))
    print("bench: %s; seeds %s; %s" % (", ".join("%s on %s (%d steps)" % (s.algo, s.env_id, steps_of[s.algo])
                                                 for s in settings), seeds, " vs ".join(impls)), flush=True)
    results = []
    curves: Dict[str, str] = {}
    for s in settings:
        for i, seed in enumerate(seeds):
            for impl in (impls if i % 2 == 0 else impls[::-1]):
                out = os.path.join(args.out, "%s_%s_%s_s%d" % (s.algo, s.env_id.split("-")[0].lower(), impl, seed))
                r = launch(impl, s.algo, seed, steps_of[s.algo], out, args.eval_episodes, args.bipedal)
                results.append(r)
                if "error" in r:
                    print("bench: %-4s %-4s seed %d FAILED:\n%s" % (s.algo, impl, seed, r["error"]), flush=True)
                else:
                    print("bench: %-4s %-4s seed %d  eval return %8.1f ± %6.1f  %6.0f env steps/s (learning phase "
                          "%5.0f)  %d updates  %.0f s" % (s.algo, impl, seed, r["eval_mean"], r["eval_std"], r["sps"],
                                                          r["learn_sps"], r["updates"], r["wall_s"]), flush=True)
        runs = [r for r in results if r["algo"] == s.algo and "error" not in r]
        if runs:
            from op3_walk.training.plots import plot_groups
            groups: Dict[str, List[str]] = {}
            for r in runs:
                groups.setdefault("ours" if r["impl"] == "ours" else "SB3", []).append(r["csv"])
            png = os.path.join(args.out, "%s_%s_curves.png" % (s.algo, s.env_id.split("-")[0].lower()))
            try:
                plot_groups(groups, png, title="%s on %s" % (s.algo.upper(), s.env_id), band="minmax")
                curves[s.algo] = png
            except ValueError as exc:
                print("bench: no curve for %s: %s" % (s.algo, exc), flush=True)
    text = report(results, settings, seeds, steps_of, machine(), command,
                  BIPEDAL_SECTION if args.bipedal else SECTION, curves)
    print("\n" + text)
    if args.report:
        write_section(args.report, BIPEDAL_SECTION if args.bipedal else SECTION, text)
        print("bench: wrote %s" % args.report)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
