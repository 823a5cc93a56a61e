"""The ``train`` CLI as a process: killed with SIGKILL it resumes from its last checkpoint without repeating or
skipping episodes; SIGTERM and SIGINT end it cleanly with a final checkpoint.  No ROS; Pendulum-v1 and a tiny TD3."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

import op3_walk
from op3_walk.training.checkpoint import read_meta

SRC = os.path.dirname(os.path.dirname(os.path.abspath(op3_walk.__file__)))
BUDGET = 1500

AGENT_YAML = """\
hidden_sizes: [32, 32]  # tiny networks: this tests the process, not learning
learning_starts: 200    # learn before the first checkpoint
batch_size: 32          # small batches for speed
buffer_size: 5000       # holds the whole run
save_buffer: true       # checkpoints carry the replay memory: the resumed run continues exactly
"""


def train_cmd(out, agent_yaml, steps, *extra):
    return [sys.executable, "-m", "op3_walk.training.cli", "--env", "Pendulum-v1", "--algo", "td3",
            "--agent-config", str(agent_yaml), "--steps", str(steps), "--seed", "3", "--out-dir", str(out),
            "--no-progress", "--no-tensorboard"] + list(extra)


def start(cmd, log_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log


def csv_rows(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def wait_for(predicate, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail("train exited (%s) before %s" % (proc.returncode, what))
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no %s within %d s" % (what, timeout))


def test_sigkill_then_resume_continues_from_the_checkpoint(tmp_path):
    agent_yaml = tmp_path / "td3_tiny.yaml"
    agent_yaml.write_text(AGENT_YAML)
    out = tmp_path / "run"
    ckpt, csv_path = out / "checkpoint.pt", out / "episodes.csv"

    # A run with a large budget, killed once an episode has been logged after its latest checkpoint.
    def episode_after_checkpoint():
        rows = csv_rows(csv_path)
        return ckpt.exists() and rows and int(rows[-1]["total_env_steps"]) > read_meta(str(ckpt))["env_steps"]

    proc, log = start(train_cmd(out, agent_yaml, 100000, "--checkpoint-every", "300"), tmp_path / "first.log")
    try:
        wait_for(episode_after_checkpoint, proc, 25, "episode logged after a checkpoint")
    finally:
        proc.kill()
        proc.wait()
        log.close()
    meta = read_meta(str(ckpt))
    killed_rows = csv_rows(csv_path)
    assert 300 <= meta["env_steps"] < BUDGET and meta["updates"] > 0
    kept = [r for r in killed_rows if int(r["episode"]) <= meta["episodes"]]
    first_log = (tmp_path / "first.log").read_text()
    assert "replay memory %d transitions" % meta["env_steps"] in first_log   # buffer size stated when saved

    # Resume to the budget of 1500 steps in the same folder.
    proc, log = start(train_cmd(out, agent_yaml, BUDGET, "--resume", str(ckpt), "--checkpoint-every", "300"),
                      tmp_path / "second.log")
    try:
        assert proc.wait(timeout=60) == 0, (tmp_path / "second.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    second_log = (tmp_path / "second.log").read_text()
    assert "resumed from %s at env step %d" % (ckpt, meta["env_steps"]) in second_log
    if len(killed_rows) > len(kept):
        assert "dropped %d CSV rows" % (len(killed_rows) - len(kept)) in second_log

    final = read_meta(str(ckpt))
    assert final["env_steps"] == BUDGET and final["env"] == "Pendulum-v1"
    rows = csv_rows(csv_path)
    episodes = [int(r["episode"]) for r in rows]
    steps = [int(r["total_env_steps"]) for r in rows]
    assert episodes == list(range(1, len(rows) + 1)) and final["episodes"] == len(rows)
    assert all(a < b for a, b in zip(steps, steps[1:]))
    assert rows[:len(kept)] == kept                               # the checkpoint's history is kept as it was
    assert steps[len(kept)] == meta["env_steps"] + 200            # then the run goes on from the checkpoint
    assert steps[-1] <= BUDGET


def test_sigterm_and_sigint_write_a_final_checkpoint(tmp_path):
    agent_yaml = tmp_path / "td3_tiny.yaml"
    agent_yaml.write_text(AGENT_YAML.replace("save_buffer: true", "save_buffer: false"))
    runs = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            out = tmp_path / sig.name
            # checkpoint-every 0: only the final checkpoint, so its existence proves the shutdown path wrote it
            runs[sig] = (out,) + start(train_cmd(out, agent_yaml, 100000, "--checkpoint-every", "0"),
                                       tmp_path / ("%s.log" % sig.name))
        for sig, (out, proc, _) in runs.items():
            wait_for(lambda: len(csv_rows(out / "episodes.csv")) >= 2, proc, 25, "two episodes")
            proc.send_signal(sig)
        for sig, (out, proc, _) in runs.items():
            assert proc.wait(timeout=20) == 128 + sig
    finally:
        for _, proc, log in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for sig, (out, _, _) in runs.items():
        text = (tmp_path / ("%s.log" % sig.name)).read_text()
        meta = read_meta(str(out / "checkpoint.pt"))
        assert 400 <= meta["env_steps"] < 100000
        assert "stopped by %s at env step %d" % (sig.name, meta["env_steps"]) in text
        assert "replay memory not saved" in text
        assert "Traceback" not in text
