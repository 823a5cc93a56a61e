#!/usr/bin/env python3
"""``make bench-hardware``: does the PLEN controller stack hold its 50 Hz loop, and with what jitter.

The full per-tick path the controller runs on the robot, in this process: ``WalkEnv`` (robot plen, task walk) over
``SafeBackend(PlenHardwareBackend)``, the real Adafruit drivers on a simulated I2C bus (``--bus sim``: bus time per
byte at the bus clock plus ``bus.transaction_overhead_s`` per transaction is really waited for), and a torch-free
``NumpyPolicy`` choosing every action (random weights of the TD3 actor's layout unless ``--policy`` names an
exported one).  The backend paces itself to the control period; this tool only times it:

* tick period: the interval between successive I/O burst starts (the moment the backend wakes and writes the
  servo targets), the rate it achieves, its jitter |period - control period|, the periods more than 1 ms long
  and the ticks the backend counted as late (started more than one period after their deadline);
* I2C per tick: the burst's wall time (write targets, read ``reads_per_tick`` feedback channels, read the IMU,
  each a hand-off to the PlenIO I/O thread) against the config's estimate (``estimate_tick_io``), the bus time the
  simulated bus charged, transactions per tick, and the slack (period minus the tick's busy time);
* the policy's time per action and the env + safety + state-estimation time per tick (``env.step`` minus the
  backend's wait and the I/O burst);
* feedback age: how old the oldest joint sample is at the end of each tick (the round-robin staleness);
* CPU time per tick of the control thread and of PlenIO's I/O thread (and in it, the simulator's own models), and
  the per-transaction overhead that would make the config's estimate match the measured burst (on the robot's Pi,
  with ``--bus board``, that is the number the config's placeholder ``bus.transaction_overhead_s`` wants).

Besides the main run (``--seconds`` at ``--bus-hz`` and ``--reads-per-tick``) it runs ``--compare`` rows of
``--side-seconds`` each (bus clock : reads per tick); a row the config's own budget check refuses is run anyway by
raising ``adc.reads_per_tick`` on the loaded config (the bus clock is set on the simulated bus), and marked.
The policy runs in the control loop's thread, as a deployed policy would without ROS between them (what ROS adds
is ``make bench-ros``'s subject).  Nothing here imports torch or rospy (checked at the end of the run).

Instrumentation (bench only): ``backend.io`` is wrapped to time each burst, the backend's pacing sleep is wrapped
to time the wait, and the simulated chips' bus handlers and plant hook are wrapped to count their CPU time.

    python tools/bench_hardware.py                                    # 30 s main run + 4 compare rows, ~2.5 min
    python tools/bench_hardware.py --seconds 10 --compare '' --report ''
    python tools/bench_hardware.py --bus board --allow-motion         # on the robot's Raspberry Pi (moves it!)

The report replaces the section ``## Hardware loop (make bench-hardware)`` of ``docs/benchmarks.md``.
"""
import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # bench_agents (write_section: stdlib only)

SECTION = "## Hardware loop (make bench-hardware)"
HW_CONFIG = "hardware/plen.yaml"
WARMUP_TICKS = 10            # ticks after reset not measured (first deadline, caches)
HIDDEN = (256, 256)          # the TD3/SAC actor's hidden layers (config/agents/td3.yaml)
DEFAULT_COMPARE = "100000:4,100000:1,400000:2,400000:8,400000:4:moving"
PLANTS = ("static", "moving")   # SimulatedPlen: servos hold still (time_driven=False) or follow their pulses
LONG_PERIOD_S = 0.001        # a period this much over the control period counts as long
HELD_TOLERANCE = 0.01        # the rate is held when the achieved rate is within 1 % of the control rate


# ==================================================================================================== instruments
class TimedIO:
    """Stands in for the backend's ``PlenIO`` (``backend.io``): times each tick's I/O burst and measures the joint
    feedback's age; everything else passes through untouched."""

    def __init__(self, io: Any):
        self._io = io
        self.burst_start = math.nan
        self.burst_end = math.nan
        self.write_s = math.nan
        self.oldest_age = math.nan
        self.mean_age = math.nan

    def begin(self) -> None:
        self.burst_start = self.burst_end = self.write_s = self.oldest_age = self.mean_age = math.nan

    def _start(self) -> None:
        if math.isnan(self.burst_start):
            self.burst_start = time.perf_counter()

    def write_targets(self, targets: Any) -> Any:
        self._start()
        t0 = time.perf_counter()
        out = self._io.write_targets(targets)
        self.burst_end = time.perf_counter()
        self.write_s = self.burst_end - t0
        return out

    def read_joints(self) -> Any:
        self._start()
        reading = self._io.read_joints()
        self.burst_end = time.perf_counter()
        fed = np.isfinite(reading.volts)              # joints with a potentiometer (the others are not sampled)
        if fed.any():
            ages = time.monotonic() - reading.sample_time[fed]   # PlenIO stamps samples with time.monotonic
            self.oldest_age, self.mean_age = float(ages.max()), float(ages.mean())
        return reading

    def read_imu(self) -> Any:
        self._start()
        out = self._io.read_imu()
        self.burst_end = time.perf_counter()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._io, name)


class ModelTimer:
    """CPU time the simulated bus spends in its own chip and plant models (register files, conversions, fusion,
    servo integration, potentiometer voltages): simulation cost that the robot does not have.  Wraps each simulated
    chip's ``i2c_write``/``i2c_read`` and the plant's per-transaction hook; counts the I/O thread's CPU time in
    them (``time.thread_time``)."""

    def __init__(self, plant: Any):
        self.total = 0.0
        for dev in [plant.pca, plant.imu] + list(plant.adcs.values()):
            dev.i2c_write = self._wrap(dev.i2c_write)
            dev.i2c_read = self._wrap(dev.i2c_read)
        hooks = plant.bus._hooks          # the plant coupling (SimulatedPlen._hook), called before every transaction
        hooks[:] = [self._wrap(h) for h in hooks]

    def _wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.thread_time() - t0
        return timed


class TimedSleep:
    """The backend's pacing sleep, timed: requested vs actual (the OS wake-up latency is the difference)."""

    def __init__(self, sleep: Any):
        self._sleep = sleep
        self.requested = 0.0
        self.actual = 0.0

    def begin(self) -> None:
        self.requested = self.actual = 0.0

    def __call__(self, seconds: float) -> None:
        t0 = time.perf_counter()
        self._sleep(seconds)
        self.actual += time.perf_counter() - t0
        self.requested += seconds


# ==================================================================================================== set-up
@dataclasses.dataclass
class Row:
    name: str
    hz: float
    overhead_s: float
    reads: int
    seconds: float
    plant: str = "static"          # simulated servos: static or moving (see PLANTS)
    forced: str = ""               # why the config refuses this setting ("" = the config accepts it)
    estimate: Dict[str, float] = dataclasses.field(default_factory=dict)
    est_slope: float = 0.0         # d(estimate)/d(overhead): transactions the estimate counts per tick
    est_zero: float = 0.0          # the estimate with no per-transaction overhead, s
    est_pwm_zero: float = 0.0      # its servo-write part, s
    result: Dict[str, Any] = dataclasses.field(default_factory=dict)


def random_policy(robot: Any, task: str, seed: int) -> Any:
    """A NumpyPolicy of the right layout (the walk task's observation, the TD3 actor's 256-256 MLP, tanh output)
    with random weights, built from the documented file format (as tests/unit/test_policy_runtime.py does)."""
    from op3_walk.policy.runtime import FORMAT, VERSION, NumpyPolicy, expected_interface
    iface = expected_interface(robot, task)
    rng = np.random.default_rng(seed)
    sizes = [iface.obs_dim] + list(HIDDEN) + [iface.action_size]
    meta = {"algo": "td3", "robot": iface.robot, "task": iface.task, "env": "",
            "observation_names": iface.observation_names, "observation_sizes": iface.observation_sizes,
            "action_kind": iface.action_kind, "action_size": iface.action_size,
            "control_rate_hz": iface.control_rate_hz, "task_interface": iface.task_interface,
            "source_checkpoint": "(random weights: tools/bench_hardware.py)", "env_steps": 0}
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION), "meta": np.array(json.dumps(meta)),
              "activations": np.array(["relu"] * len(HIDDEN) + ["tanh"])}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        arrays["w%d" % i] = rng.normal(0.0, 1.0 / math.sqrt(a), (a, b)).astype(np.float32)
        arrays["b%d" % i] = rng.normal(0.0, 0.1, b).astype(np.float32)
    return NumpyPolicy.from_arrays(arrays, source="random weights")


def row_config(row: Row) -> Tuple[Optional[Dict[str, Any]], Any]:
    """(overrides that the config loader accepts for this row, or None when it refuses them; the config with the
    row's settings, unvalidated, for the estimate).  Sets ``row.forced`` and the estimate fields."""
    from op3_walk.config import ConfigError, load_yaml
    from op3_walk.hardware.plen_config import estimate_tick_io, load_hardware_config
    data = load_yaml(HW_CONFIG)
    overrides = {"bus": dict(data["bus"], frequency_hz=row.hz, transaction_overhead_s=row.overhead_s),
                 "adc": dict(data["adc"], reads_per_tick=row.reads)}
    base = load_hardware_config(HW_CONFIG)
    cfg = dataclasses.replace(base, bus=dataclasses.replace(base.bus, frequency_hz=row.hz,
                                                            transaction_overhead_s=row.overhead_s),
                              adc=dataclasses.replace(base.adc, reads_per_tick=row.reads))
    row.estimate = estimate_tick_io(cfg)
    zero = dataclasses.replace(cfg, bus=dataclasses.replace(cfg.bus, transaction_overhead_s=0.0))
    one = dataclasses.replace(cfg, bus=dataclasses.replace(cfg.bus, transaction_overhead_s=1e-4))
    row.est_zero = estimate_tick_io(zero)["total_s"]
    row.est_pwm_zero = estimate_tick_io(zero)["pwm_s"]
    row.est_slope = (estimate_tick_io(one)["total_s"] - row.est_zero) / 1e-4
    try:
        load_hardware_config(HW_CONFIG, overrides)
    except ConfigError as exc:
        text = str(exc)
        row.forced = "budget" if "does not fit" in text else text
        return None, cfg
    return overrides, cfg


def open_stack(row: Row, robot: Any, task: str, bus: str) -> Tuple[Any, Any, Any, TimedIO, TimedSleep,
                                                                   Optional[ModelTimer]]:
    """(env, safe backend, inner backend, I/O timer, sleep timer, simulator model timer or None) for ``row``."""
    from op3_walk.backends.plen_hardware import open_plen_backend
    from op3_walk.envs.walk_env import WalkEnv
    from op3_walk.hardware.safety import SafeBackend, load_safety_config
    overrides, _ = row_config(row)
    plant = {"frequency_hz": row.hz, "transaction_overhead_s": row.overhead_s,
             "time_driven": row.plant == "moving"} if bus == "sim" else {}
    inner = open_plen_backend(robot, "plen", bus=bus, overrides=overrides, **plant)
    try:
        if overrides is None and inner.io.config.adc.reads_per_tick != row.reads:
            inner.io.config.adc.reads_per_tick = row.reads      # past the config's budget check, on purpose
        timed_io = TimedIO(inner.io)
        inner.io = timed_io
        sleeper = TimedSleep(inner._sleep)
        inner._sleep = sleeper
        models = ModelTimer(inner.plant) if inner.plant is not None else None
        safe = SafeBackend(inner, robot, load_safety_config(robot))
    except BaseException:
        inner.close()
        raise
    try:
        env = WalkEnv(robot=robot, task=task, backend=safe)
    except BaseException:
        safe.close()
        raise
    return env, safe, inner, timed_io, sleeper, models


# ==================================================================================================== the loop
def run_row(row: Row, robot: Any, task: str, policy: Any, bus: str, seed: int, log: Any) -> None:
    import resource
    env, safe, inner, io, sleeper, models = open_stack(row, robot, task, bus)
    sim = getattr(inner, "plant", None)
    sim_bus = sim.bus if sim is not None else None
    period = robot.control_period_s
    io_threads = [t for t in threading.enumerate() if t.name == "plen-io"]   # PlenIO's I/O thread (this row's)
    io_clock = time.pthread_getcpuclockid(io_threads[0].ident) if len(io_threads) == 1 else None
    n = WARMUP_TICKS + int(round(row.seconds / period))
    cols = ("t0", "t1", "t2", "burst_start", "burst_end", "sleep_req", "sleep_act", "tx", "bus_s", "oldest_age",
            "mean_age", "model_s", "main_cpu", "io_cpu", "write_s")
    rec = np.full((n, len(cols)), np.nan)
    late0 = 0
    try:
        obs, _ = env.reset(seed=seed)
        for k in range(n):
            if k == WARMUP_TICKS:
                late0 = inner.stats.late_ticks
                usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            io.begin()
            sleeper.begin()
            if sim_bus is not None:
                with sim_bus.state_lock:
                    tx0, bus0 = sim_bus.transaction_count, sim_bus.bus_time_s
                model0 = models.total
            c0 = time.thread_time()
            p0 = time.clock_gettime(io_clock) if io_clock is not None else math.nan
            t0 = time.perf_counter()
            action = policy.act(obs)
            t1 = time.perf_counter()
            obs, _, _, _, _ = env.step(action)   # episode ends are ignored: the loop keeps its rate, as on the robot
            t2 = time.perf_counter()
            main_cpu = time.thread_time() - c0
            io_cpu = time.clock_gettime(io_clock) - p0 if io_clock is not None else math.nan
            tx = bus_s = model_s = math.nan
            if sim_bus is not None:
                with sim_bus.state_lock:
                    tx, bus_s = sim_bus.transaction_count - tx0, sim_bus.bus_time_s - bus0
                model_s = models.total - model0
            rec[k] = (t0, t1, t2, io.burst_start, io.burst_end, sleeper.requested, sleeper.actual, tx, bus_s,
                      io.oldest_age, io.mean_age, model_s, main_cpu, io_cpu, io.write_s)
        late = inner.stats.late_ticks - late0
        usage1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        counts = safe.stats()
    finally:
        safe.close()
    r = {c: rec[WARMUP_TICKS - 1:, i] for i, c in enumerate(cols)}     # one tick before the first, for periods
    m = {c: v[1:] for c, v in r.items()}
    io_s = m["burst_end"] - m["burst_start"]
    busy = (m["t2"] - m["t0"]) - m["sleep_act"]
    slept = m["sleep_req"] > 0.0
    out = {
        "ticks": int(len(io_s)),
        "period": np.diff(r["burst_start"]),
        "late": int(late),
        "io": io_s,
        "bus": m["bus_s"],
        "tx": m["tx"],
        "policy": m["t1"] - m["t0"],
        "env": (m["t2"] - m["t1"]) - m["sleep_act"] - io_s,
        "slack": period - busy,
        "wake": (m["sleep_act"] - m["sleep_req"])[slept],
        "no_sleep": int((~slept).sum()),
        "model": m["model_s"],
        "main_cpu": m["main_cpu"],
        "io_cpu": m["io_cpu"],
        "write": m["write_s"],
        "oldest_age": m["oldest_age"],
        "nivcsw_per_s": (usage1.ru_nivcsw - usage0.ru_nivcsw) / (wall1 - wall0),
        "mean_age": m["mean_age"],
        "safety": {k: v for k, v in counts.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
    }
    out["jitter"] = np.abs(out["period"] - period)
    out["rate"] = 1.0 / float(np.mean(out["period"]))
    out["long"] = int((out["period"] > period + LONG_PERIOD_S).sum())
    row.result = out
    log("%s: %.2f Hz, period median %.3f ms p99 %.3f max %.3f, late %d, I/O median %.2f ms (estimate %.2f)" % (
        row.name, out["rate"], 1e3 * np.median(out["period"]), 1e3 * np.percentile(out["period"], 99),
        1e3 * out["period"].max(), late, 1e3 * np.median(io_s), 1e3 * row.estimate["total_s"]))


# ==================================================================================================== report
def q(values: Any, scale: float = 1e3, fmt: str = "%.2f", parts: Sequence[str] = ("median", "p99", "max")) -> str:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)] * scale
    if v.size == 0:
        return "n/a"
    pick = {"median": lambda: np.median(v), "p99": lambda: np.percentile(v, 99), "max": lambda: v.max(),
            "p1": lambda: np.percentile(v, 1), "min": lambda: v.min()}
    return " / ".join(fmt % float(pick[p]()) for p in parts)


def machine() -> Dict[str, str]:
    from bench_agents import cpu_model   # (imports no torch)
    cpu = cpu_model()
    return {"cpu": cpu, "cores": str(os.cpu_count() or 0), "os": "%s %s" % (platform.system(), platform.release()),
            "python": platform.python_version(), "numpy": np.__version__,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def loadavg() -> str:
    return "%.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else "n/a"


def command_line(args: argparse.Namespace) -> str:
    parts = ["python tools/bench_hardware.py", "--bus %s" % args.bus, "--seconds %g" % args.seconds,
             "--reads-per-tick %d" % args.reads_per_tick, "--bus-hz %g" % args.bus_hz,
             "--overhead-us %g" % (args.overhead_s * 1e6)]
    if args.bus == "sim":
        parts += ["--plant %s" % args.plant, "--side-seconds %g" % args.side_seconds,
                  "--compare '%s'" % args.compare]
    if args.policy:
        parts.append("--policy %s" % args.policy)
    parts.append("--seed %d" % args.seed)
    return " ".join(parts)


def verdict(row: Row) -> str:
    if not row.forced:
        return "passes"
    return "**refused** (over budget; run anyway)" if row.forced == "budget" else "**refused**: %s" % row.forced


def implied_overhead(row: Row, n_servos: int) -> float:
    """The per-transaction overhead that makes the config's servo-write estimate (one 6-byte transaction per servo)
    equal the measured median ``write_targets`` call, s: the servo write is the one part of the burst with a fixed
    transaction count (no conversion polling), so it measures the overhead cleanly."""
    return (float(np.nanmedian(row.result["write"])) - row.est_pwm_zero) / n_servos


def report(args: argparse.Namespace, rows: List[Row], period: float, policy_text: str, info: Dict[str, str],
           load_start: str, load_end: str, modules_ok: str) -> str:
    main = rows[0]
    est = main.estimate
    sim = args.bus == "sim"
    budget = 100.0 * args.max_utilisation
    lines = [
        SECTION, "",
        "Command: `%s` (`make bench-hardware`)" % command_line(args), "",
        "Machine: %s, %s cores, %s; Python %s, numpy %s; %s. Load average (1/5/15 min) at the start: %s, at the end: "
        "%s. A shared, noisy machine: read the medians and p99; a max is one event."
        % (info["cpu"], info["cores"], info["os"], info["python"], info["numpy"], info["date"], load_start,
           load_end), "",
        "What runs, per tick, in one process, as the controller runs it on the robot: the policy (%s) picks an "
        "action from the latest observation, then `WalkEnv.step` (robot plen, task walk: action map, reward, "
        "observation) over `SafeBackend` (clamp, slew limit, watchdog, fall check; stock "
        "`config/hardware/safety.yaml`) over `PlenHardwareBackend`, which waits for its deadline and does one I2C "
        "burst on the PlenIO I/O thread: the servo targets to the PCA9685, `reads_per_tick` ADS1115 single-shot "
        "reads (round robin over the %d potentiometers) and the BNO055, through the real Adafruit drivers. %s "
        "Each row: %d warm-up ticks after `reset`, then the measured ticks; episode ends are ignored (the loop "
        "keeps stepping: the rate is what is measured). %s"
        % (policy_text, args.n_feedback,
           ("The bus is `SimulatedI2CBus` with `SimulatedPlen`: every transaction really takes (address + data "
            "bytes) x 9 bits / bus clock + %.0f us (the config's `bus.transaction_overhead_s`), and the chips are "
            "modelled behind it. Plant: %s in the rows not marked otherwise (*static*: the simulated servos hold "
            "still, `SimulatedPlen(time_driven=False)`; *moving*: they follow their pulses, an integration on every "
            "transaction that is simulator CPU the robot does not spend)." % (main.overhead_s * 1e6, args.plant))
           if sim else
           "The bus is the Raspberry Pi's I2C (`--bus board`).", WARMUP_TICKS, modules_ok), "",
        "**Loop timing.** Target %.0f Hz (%.0f ms). A tick starts when the backend wakes and starts its I2C burst; "
        "*rate*: ticks per second over the row; *period*: between successive tick starts; *long*: periods more "
        "than %.0f ms over; *late*: ticks the backend counted as starting more than one period after their "
        "deadline (a late tick takes the new phase: no catch-up burst); *no wait*: ticks that found their "
        "deadline already passed (no slack left); *preempted/s*: involuntary context switches of this process per "
        "second (the scheduler took the CPU from one of its runnable threads)."
        % (1.0 / period, period * 1e3, LONG_PERIOD_S * 1e3),
        "",
        "| run | ticks | rate [Hz] | period median / p99 / max [ms] | jitter \\|period - %.0f ms\\| median / p99 / "
        "max [ms] | long | late | no wait | preempted/s |" % (period * 1e3),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row.result
        lines.append("| %s | %d | %.2f | %s | %s | %d (%.1f %%) | %d | %d | %.0f |" % (
            row.name, r["ticks"], r["rate"], q(r["period"], fmt="%.3f"), q(r["jitter"], fmt="%.3f"), r["long"],
            100.0 * r["long"] / r["ticks"], r["late"], r["no_sleep"], r["nivcsw_per_s"]))
    lines += [
        "",
        "**Where the time goes**, per tick, ms. *Budget check*: the config's own check (`estimate_tick_io` within "
        "%.0f%% of the period) for the row's bus clock, overhead and reads per tick; *estimate*: that estimate; "
        "*I2C burst*: wall time of the three PlenIO calls (write targets, read joints, read IMU), hand-offs to the "
        "I/O thread included; *bus time* (simulated bus only): what the simulated bus charged (wire + "
        "per-transaction overhead; the driver code runs while the bus is busy and the caller sleeps what is still "
        "owed); *transactions*: "
        "median (range) per tick, and in brackets the count the estimate assumes (the ADS1115 driver polls the "
        "conversion flag as fast as the bus allows, so the real count floats); *policy*: "
        "`NumpyPolicy.act`; *env*: `env.step` minus the backend's wait and the burst (action map, safety layer, "
        "state estimation, reward, observation); *slack*: period - (policy + env + burst); p1 is the worst 1 %%, "
        "negative is over budget." % budget,
        "",
        "| run | budget check | estimate | I2C burst median / p99 | burst ÷ estimate | bus time | transactions | "
        "policy median / p99 | env median / p99 | slack median / p1 / min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row.result
        tx = r["tx"][np.isfinite(r["tx"])]
        tx_text = ("%.0f (%d..%d) [%.0f]" % (np.median(tx), tx.min(), tx.max(), row.est_slope) if tx.size
                   else "n/a [%.0f]" % row.est_slope)
        lines.append("| %s | %s | %.2f | %s | %.2f | %s | %s | %s | %s | %s |" % (
            row.name, verdict(row), 1e3 * row.estimate["total_s"], q(r["io"], parts=("median", "p99")),
            float(np.median(r["io"])) / row.estimate["total_s"], q(r["bus"], parts=("median",)), tx_text,
            q(r["policy"], fmt="%.3f", parts=("median", "p99")),
            q(r["env"], fmt="%.3f", parts=("median", "p99")), q(r["slack"], parts=("median", "p1", "min"))))
    lines += [
        "",
        "**Feedback age and CPU.** *Oldest sample*: at the end of each tick's joint read, the age of the stalest "
        "of the %d joint samples (each is refreshed every %d / `reads_per_tick` ticks); *mean age*: over the %d; "
        "*wake-up*: how much later than asked the backend's pacing sleep returned (OS timer and scheduling); "
        "*CPU*: CPU time per tick of the control thread (policy, env, safety, state estimation) and of PlenIO's "
        "I/O thread (Adafruit drivers, PlenIO%s)%s%s" % (
            args.n_feedback, args.n_feedback, args.n_feedback,
            " and, in brackets, the simulator's chip and plant models, which the robot does not run" if sim else "",
            "; *drivers per transaction*: the I/O thread's CPU less the simulator's models, per transaction: this "
            "CPU's cost of the Python driver stack" if sim else "",
            "; *implied overhead*: (median `write_targets` time - the estimate's wire time for it) / the %d servo "
            "writes (one transaction each, no conversion polling): the per-transaction overhead of this computer, "
            "the number for `bus.transaction_overhead_s` (an upper bound: PlenIO's one hand-off per call is spread "
            "over the writes)%s." % (args.n_servos, "; here it only checks the method against the simulated "
                                     "%.0f us" % (main.overhead_s * 1e6) if sim else "")),
        "",
        "| run | oldest sample median / max [ms] | mean age median [ms] | wake-up median / p99 [ms] | "
        "CPU: control thread, median [ms] | CPU: I/O thread%s, median [ms] | %simplied overhead [us] |" % (
            " (sim models)" if sim else "", "drivers per transaction, median [us] | " if sim else ""),
        "|---|---|---|---|---|---|%s---|" % ("---|" if sim else ""),
    ]
    for row in rows:
        r = row.result
        io_text = q(r["io_cpu"], parts=("median",))
        last = "%.0f" % (1e6 * implied_overhead(row, args.n_servos))
        if sim:
            io_text += " (%s)" % q(r["model"], parts=("median",))
            last = q((r["io_cpu"] - r["model"]) / r["tx"], scale=1e6, fmt="%.0f", parts=("median",)) + " | " + last
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            row.name, q(r["oldest_age"], fmt="%.1f", parts=("median", "max")),
            q(r["mean_age"], fmt="%.1f", parts=("median",)), q(r["wake"], fmt="%.3f", parts=("median", "p99")),
            q(r["main_cpu"], parts=("median",)), io_text, last))
    lines += ["", "The estimate for the main row: PWM %.2f ms (%d servos) + ADC %d x %.2f ms + IMU %.2f ms = %.2f ms "
              "of the %.0f ms period (budget %.1f ms)."
              % (1e3 * est["pwm_s"], args.n_servos, int(est["adc_reads"]),
                 1e3 * est["adc_read_s"], 1e3 * est["imu_s"], 1e3 * est["total_s"], 1e3 * period,
                 period * 1e3 * args.max_utilisation), ""]
    lines += notes(args, rows, period)
    return "\n".join(lines) + "\n"


def notes(args: argparse.Namespace, rows: List[Row], period: float) -> List[str]:
    main = rows[0]
    r = main.result
    held = [row.name for row in rows if row.result["rate"] * period >= 1.0 - HELD_TOLERANCE]
    missed = ["%s (%.1f Hz)" % (row.name, row.result["rate"]) for row in rows if row.name not in held]
    busy = float(np.median(r["policy"]) + np.median(r["env"]) + np.median(r["io"]))
    out = ["Notes:", "",
           "- %.0f Hz held (achieved rate within %.0f %%): %s. Not held: %s." % (
               1.0 / period, 100.0 * HELD_TOLERANCE, "; ".join(held) or "none", "; ".join(missed) or "none"),
           "- Main row, medians: the tick is busy %.1f ms of %.0f (%.0f %%): I2C burst %.2f ms (%.0f %% of the busy "
           "time), env %.2f ms, policy %.3f ms. The I2C traffic dominates; the policy (a 256-256 MLP in numpy) is "
           "noise next to it. The servo targets changed, so were written, in %d of the %d ticks (the backend skips "
           "the write when they repeat)." % (
               1e3 * busy, 1e3 * period, 100.0 * busy / period, 1e3 * np.median(r["io"]),
               100.0 * np.median(r["io"]) / busy, 1e3 * np.median(r["env"]), 1e3 * np.median(r["policy"]),
               int(np.isfinite(r["write"]).sum()), r["ticks"])]
    if args.bus == "sim":
        per_tx = (r["io_cpu"] - np.nan_to_num(r["model"], nan=0.0)) / r["tx"]
        out.append("- This is a **simulated bus on an x86 development machine**, not the robot. The %.0f us "
                   "per-transaction overhead is the config's placeholder, not a measurement of the Raspberry Pi. "
                   "Here the drivers' Python code (about %.0f us per transaction on this CPU) and the simulator's "
                   "models run while the simulated bus counts its time (the caller then sleeps what is still owed), "
                   "so the burst follows the bus as long as that CPU work fits inside the charged time. On the Pi "
                   "the same driver code runs on cores a few times slower, in series with the kernel's transfer, and "
                   "may use up much of the placeholder: run `python tools/bench_hardware.py --bus board "
                   "--allow-motion` on the robot's Pi (robot on a stand: the random policy moves the servos, "
                   "through the safety layer) and put its *implied overhead* in `bus.transaction_overhead_s`. The "
                   "ADS1115 conversion time is nominal (no oscillator error); the simulator's models cost CPU here "
                   "that the Pi will not spend." % (main.overhead_s * 1e6, 1e6 * float(np.nanmedian(per_tx))))
        implied = [1e6 * implied_overhead(row, args.n_servos) - row.overhead_s * 1e6 for row in rows]
        out.append("- The *implied overhead* reads %.0f..%.0f us above the simulated %.0f us: PlenIO's hand-off is "
                   "spread over the servo writes, and the simulated bus's sleeps wake late (OS latency, not "
                   "compensated; most at 100 kHz, where it sleeps every second transaction). On the Pi it is an "
                   "upper bound in the same way." % (min(implied), max(implied), main.overhead_s * 1e6))
        same_clock = [float(np.median(row.result["io"])) / row.estimate["total_s"] for row in rows
                      if row.hz == main.hz and row.plant == main.plant]
        out.append("- At %g kHz (%s plant) the measured burst is %s of the config's estimate (which takes every "
                   "ADS1115 conversion at +10 %% and two polls past its end; the simulated conversion is "
                   "nominal). The transaction count runs above the estimate's (main row: %.0f per tick against "
                   "%.0f) because the driver polls the conversion flag back to back; the time is the same." % (
                       main.hz / 1e3, main.plant,
                       "%.2f..%.2f" % (min(same_clock), max(same_clock)) if len(same_clock) > 1
                       else "%.2f" % same_clock[0], float(np.nanmedian(r["tx"])),
                       main.est_slope))
        tight = ["%s (slack p1 %.2f ms, median burst %.1f ms)" % (
            row.name, 1e3 * float(np.percentile(row.result["slack"], 1)), 1e3 * float(np.median(row.result["io"])))
                 for row in rows if row.forced == "budget" and row.name in held]
        if tight:
            out.append("- Refused by the budget check yet held here: %s. That is 50 Hz with no margin left for a "
                       "slower computer or a slower conversion: the check's refusal stands." % "; ".join(tight))
        forced = [row.name for row in rows if row.forced == "budget"]
        if forced:
            out.append("- Rows the config's budget check refuses were run anyway, for the comparison: the bus clock "
                       "is set on the simulated bus (the config keeps its %g Hz) and `adc.reads_per_tick` is raised "
                       "on the loaded config after its check: %s. Configured that way, `open_plen_backend` would "
                       "refuse to start." % (main.hz, "; ".join(forced)))
        hundred = [row for row in rows if row.hz == 100000.0 and main.hz != 100000.0]
        if hundred:
            kept = [row.name for row in hundred if row.name in held]
            out.append("- The 100 kHz rows are what happens when the Pi's I2C stays at its default clock (no "
                       "`dtparam=i2c_arm_baudrate=400000` in /boot/config.txt) while the config assumes %g Hz: %s."
                       % (main.hz, ("only %s kept 50 Hz" % "; ".join(kept)) if kept else
                          "even %d ADC read%s per tick missed 50 Hz" % (
                              min(row.reads for row in hundred), "" if min(row.reads for row in hundred) == 1
                              else "s")))
    else:
        out.append("- Measured on the robot's own I2C bus (`--bus board`): the real bus reports no bus time or "
                   "transaction counts (n/a); the *implied overhead* is the per-transaction overhead to put in "
                   "`bus.transaction_overhead_s`.")
    safety = r["safety"]
    keys = ("watchdog_holds", "watchdog_relaxes", "falls", "rejected_commands", "slew_limited_commands",
            "start_ramps")
    out.append("- Safety layer counters over the main row: %s (a watchdog hold would mean the loop starved it)."
               % ", ".join("%s %s" % (k, safety.get(k, 0)) for k in keys))
    return out[:2] + [line for line in out[2:] if line] + [""]


# ==================================================================================================== main
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bus", choices=("sim", "board"), default="sim",
                        help="sim: simulated I2C bus with real timing (default); board: the Raspberry Pi's I2C "
                             "(moves the robot: needs --allow-motion)")
    parser.add_argument("--allow-motion", action="store_true",
                        help="--bus board only: the policy's targets (random weights unless --policy) drive the "
                             "real servos, through the safety layer; put the robot on a stand")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds of the main run")
    parser.add_argument("--side-seconds", type=float, default=15.0, help="measured seconds of each --compare row")
    parser.add_argument("--reads-per-tick", type=int, default=0,
                        help="ADC feedback channels read per tick (0 = the config's adc.reads_per_tick)")
    parser.add_argument("--bus-hz", type=float, default=0.0,
                        help="I2C clock of the simulated bus, Hz (0 = the config's bus.frequency_hz); with --bus "
                             "board, the clock the Pi's bus is set to (for the estimate only)")
    parser.add_argument("--overhead-us", type=float, default=-1.0,
                        help="per-transaction overhead of the simulated bus, us (negative = the config's "
                             "bus.transaction_overhead_s)")
    parser.add_argument("--compare", default=DEFAULT_COMPARE,
                        help="extra rows, 'bus_hz:reads_per_tick[:static|moving],...' at the main overhead (--bus "
                             "sim only; '' = none)")
    parser.add_argument("--plant", choices=PLANTS, default="static",
                        help="--bus sim: the simulated servos hold still (static, default: the plant's integration "
                             "is simulator CPU the robot does not spend) or follow their pulses (moving)")
    parser.add_argument("--policy", default="", help="an exported policy (.npz) instead of random weights")
    parser.add_argument("--task", default="walk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", default=os.path.join(ROOT, "docs", "benchmarks.md"),
                        help="Markdown file whose section is replaced ('' = print only)")
    args = parser.parse_args(argv)

    from op3_walk.config import ConfigError
    from op3_walk.hardware.plen_config import load_hardware_config
    from op3_walk.robots.description import load_robot

    if args.bus == "board" and not args.allow_motion:
        print("bench-hardware: --bus board drives the real servos with the %s policy (through the safety layer); "
              "put the robot on a stand and add --allow-motion" % ("given" if args.policy else "random-weight"),
              file=sys.stderr)
        return 2
    cfg = load_hardware_config(HW_CONFIG)
    args.max_utilisation = cfg.bus.max_utilisation
    args.n_servos, args.n_feedback = len(cfg.servos), len(cfg.feedback)
    args.bus_hz = args.bus_hz or cfg.bus.frequency_hz
    args.reads_per_tick = args.reads_per_tick or cfg.adc.reads_per_tick
    args.overhead_s = cfg.bus.transaction_overhead_s if args.overhead_us < 0 else args.overhead_us * 1e-6
    robot = load_robot(cfg.robot)
    period = robot.control_period_s
    if min(args.seconds, args.side_seconds) < 2 * period:
        parser.error("--seconds and --side-seconds must cover at least two control periods")

    def label(hz: float, reads: int, plant: str) -> str:
        return "%g kHz, %d reads/tick%s" % (hz / 1e3, reads, ", %s plant" % plant if plant != args.plant else "")

    rows = [Row(label(args.bus_hz, args.reads_per_tick, args.plant) + " (main)", args.bus_hz, args.overhead_s,
                args.reads_per_tick, args.seconds, args.plant)]
    if args.bus == "sim":
        for spec in [s.strip() for s in args.compare.split(",") if s.strip()]:
            fields = spec.split(":")
            if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] not in PLANTS):
                parser.error("--compare: each row is bus_hz:reads_per_tick[:static|moving], got %r" % spec)
            hz, reads, plant = float(fields[0]), int(fields[1]), fields[2] if len(fields) == 3 else args.plant
            rows.append(Row(label(hz, reads, plant), hz, args.overhead_s, reads, args.side_seconds, plant))
    elif args.compare != DEFAULT_COMPARE and args.compare:
        print("bench-hardware: --compare applies to --bus sim only (the Pi's bus clock is set in /boot/config.txt)",
              file=sys.stderr)

    if args.policy:
        from op3_walk.policy.runtime import NumpyPolicy
        policy = NumpyPolicy(args.policy)
        policy.check_compatible(robot, args.task)
        policy_text = "`NumpyPolicy` %s, layers %s" % (args.policy, policy.layer_sizes)
    else:
        policy = random_policy(robot, args.task, args.seed)
        policy_text = ("a torch-free `NumpyPolicy` with **random weights** (the TD3 actor's layout %s, relu, tanh; "
                       "no trained policy is needed to time the loop)" % "-".join(str(s) for s in policy.layer_sizes))

    started = time.monotonic()

    def log(msg: str) -> None:
        print("[bench-hardware %5.0f s] %s" % (time.monotonic() - started, msg), flush=True)

    load_start = loadavg()
    info = machine()
    for row in rows:
        log("%s: %g s (%d ticks)..." % (row.name, row.seconds, int(round(row.seconds / period))))
        try:
            run_row(row, robot, args.task, policy, args.bus, args.seed, log)
        except ConfigError as exc:
            print("bench-hardware: %s%s" % (exc, " (this tool: --bus sim)" if args.bus == "board" else ""),
                  file=sys.stderr)
            return 2
    load_end = loadavg()
    bad = [m for m in ("torch", "rospy") if m in sys.modules]
    modules_ok = ("Checked at the end of the run: `torch` and `rospy` were never imported." if not bad else
                  "**`%s` was imported during the run.**" % "`, `".join(bad))
    print("torch imported: %s; rospy imported: %s" % ("torch" in sys.modules, "rospy" in sys.modules))
    text = report(args, rows, period, policy_text, info, load_start, load_end, modules_ok)
    print(text)
    if args.report:
        from bench_agents import write_section
        write_section(args.report, SECTION, text)
        print("wrote section %r of %s" % (SECTION, args.report))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
