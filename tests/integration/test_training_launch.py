"""train.launch end to end against a real roscore: the session trains, writes its outputs, records a bag, and
every process it started is gone afterwards (whether it ends by its budget or by Ctrl-C)."""
import csv
import os
import subprocess

from ros_harness import ROOT, wait_until

STEPS = 600


def launch_args(out_dir, agent_config, **extra):
    args = ["roslaunch", "op3_walk", "train.launch", "headless:=true", "progress:=false",
            "out_dir:=%s" % out_dir, "agent_config:=%s" % agent_config]
    args += ["%s:=%s" % kv for kv in extra.items()]
    return args


def test_session_runs_its_budget_leaves_its_outputs_and_matches_in_process_training(spawn, tmp_path, small_agent_config):
    out = tmp_path / "run"
    proc = spawn(launch_args(out, small_agent_config, steps=STEPS, record="true", checkpoint_every=250),
                 name="train")
    # The learner is required (its crash would end the launch), and spending its budget ends the whole launch
    # by itself, quietly: exit 0, no "REQUIRED process [learner-2] has died!" banner, status file "completed".
    assert proc.wait(timeout=240) == 0, proc.log()[-4000:]
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
    assert "REQUIRED process" not in proc.log() and "has died" not in proc.log(), proc.log()[-4000:]
    assert (out / "session_status").read_text().strip() == "completed"

    from op3_walk.training.checkpoint import read_meta
    meta = read_meta(str(out / "checkpoint.pt"))
    assert meta["env_steps"] == STEPS and meta["robot"] == "plen" and meta["algo"] == "td3"
    assert meta["updates"] > 0, "learning never started"

    with open(out / "episodes.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows, "no episode finished"
    assert int(rows[-1]["total_env_steps"]) <= STEPS
    assert all(int(r["length"]) > 0 for r in rows)
    assert sum(int(r["length"]) for r in rows) <= STEPS
    assert (out / "learning_curve.png").stat().st_size > 1000

    info = subprocess.run(["rosbag", "info", "--yaml", str(out / "session.bag")], capture_output=True, text=True,
                          check=True).stdout
    import yaml
    # Lockstep is exact: the same seed, config and budget trained in-process gives the same episodes, updates,
    # reward terms and losses (only the timing columns differ).
    inproc = tmp_path / "inproc"
    subprocess.run([os.path.join(ROOT, "scripts", "train"), "--steps", str(STEPS), "--agent-config", small_agent_config, "--seed", "0",
                    "--out-dir", str(inproc), "--no-progress"], check=True, capture_output=True, timeout=240)
    with open(inproc / "episodes.csv") as fh:
        inproc_rows = list(csv.DictReader(fh))
    timing = ("wall_time_s", "env_steps_per_s", "env_only_steps_per_s", "updates_per_s")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]  # noqa: E731
    assert strip(rows) == strip(inproc_rows)

    # rosbag stores the names as given: relative, i.e. relative to the namespace the session ran in.
    topics = {t["topic"].lstrip("/"): t["messages"] for t in yaml.safe_load(info)["topics"]}
    for topic in ("walker/state", "walker/action", "walker/episode", "joint_states", "imu/data"):
        assert topics.get(topic, 0) > 0, "bag lacks %s: %s" % (topic, topics)
    assert topics["walker/episode"] == len(rows)
    assert topics["walker/action"] == STEPS                       # every action the learner sent
    # One state per step plus one per reset (the last reset has no episode row unless the budget ended exactly
    # at an episode's end): nothing was lost, the learner waits for the recorder before its first reset.
    assert topics["walker/state"] in (STEPS + len(rows), STEPS + len(rows) + 1)


def test_ctrl_c_and_save_service_leave_a_checkpoint_and_no_orphans(spawn, tmp_path, small_agent_config,
                                                                   rospy_node):
    rospy = rospy_node
    from op3_walk.srv import SaveCheckpoint
    from op3_walk.training.checkpoint import read_meta
    out = tmp_path / "run"
    proc = spawn(launch_args(out, small_agent_config, steps=10 ** 6, checkpoint_every=0), name="train")
    try:
        rospy.wait_for_service("/learner/save_checkpoint", timeout=60)
    except rospy.ROSException:
        raise AssertionError("learner did not start:\n" + proc.log()[-4000:])
    wait_until(lambda: (out / "episodes.csv").exists(), 120, what="a first episode")
    proc.track()

    # What a person watching from a second terminal sees: readable fields, not just a vector.
    state = subprocess.run(["rostopic", "echo", "-n", "1", "/walker/state"], capture_output=True, text=True,
                           timeout=60, check=True).stdout
    for field in ("episode:", "joint_names:", "l_hip_yaw", "joint_positions:", "torso_pose:", "foot_names:",
                  "l_foot", "foot_contacts:", "reward_term_names:", "forward_velocity", "observation_names:",
                  "previous_action", "distance:"):
        assert field in state, "rostopic echo /walker/state lacks %r:\n%s" % (field, state[:2000])
    stats = subprocess.run(["rostopic", "echo", "-n", "1", "/walker/episode"], capture_output=True, text=True,
                           timeout=120, check=True).stdout
    for field in ("episode_return:", "length:", "distance:", "fell:", "env_steps_per_s:",
                  "reward_term_sums:"):
        assert field in stats, "rostopic echo /walker/episode lacks %r:\n%s" % (field, stats)

    requested = tmp_path / "requested" / "snap.pt"
    save = rospy.ServiceProxy("/learner/save_checkpoint", SaveCheckpoint)
    resp = save(path=str(requested))
    assert resp.success, resp.message
    assert resp.path == str(requested) and read_meta(str(requested))["env_steps"] > 0

    assert proc.interrupt(timeout=60) == 0, proc.log()[-4000:]
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
    meta = read_meta(str(out / "checkpoint.pt"))  # written on shutdown
    assert meta["env_steps"] >= read_meta(str(requested))["env_steps"]
    assert "Traceback" not in proc.log(), proc.log()[-4000:]


def test_dqn_trains_through_ros_on_a_discrete_action_task(spawn, tmp_path):
    """Discrete actions cross the lockstep protocol (WalkerAction.discrete_action) and DQN learns from them."""
    config = tmp_path / "dqn_small.yaml"
    config.write_text("hidden_sizes: [32, 32]\nbatch_size: 32\nbuffer_size: 5000\nlearning_starts: 100\n"
                      "train_freq: 4\nexploration_decay_steps: 200\n")
    out = tmp_path / "dqn"
    proc = spawn(launch_args(out, str(config), steps=300, robot="op3", task="zmp_tracking", algo="dqn",
                             tensorboard="false"), name="train-dqn")
    assert proc.wait(timeout=240) == 0, proc.log()[-4000:]
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
    from op3_walk.training.checkpoint import read_meta
    meta = read_meta(str(out / "checkpoint.pt"))
    assert meta["env_steps"] == 300 and meta["robot"] == "op3" and meta["algo"] == "dqn"
    assert meta["updates"] > 0
    assert "rejected action" not in proc.log()  # every discrete action was well-formed
