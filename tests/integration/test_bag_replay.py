"""Bags end to end against a real roscore: a train.launch session recorded by the real `rosbag record`, then
`replay_bag info/render/plot/buffer` and `train --prefill` on it; record.launch joining a running (namespaced)
session from outside; replay.launch playing a bag into a namespace with robot_state_publisher turning it into /tf."""
import csv
import glob
import json
import math
import os
import subprocess
import xml.etree.ElementTree as ElementTree
import xmlrpc.client

import numpy as np
import pytest

from ros_harness import ROOT, Proc, wait_until

STEPS = 300
REPLAY_BAG = os.path.join(ROOT, "scripts", "replay_bag")
SMALL_TD3 = "hidden_sizes: [64, 64]\nbatch_size: 64\nbuffer_size: 20000\nlearning_starts: 150\n"


def replay_bag(*args, timeout=300):
    return subprocess.run([REPLAY_BAG] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def info_of(*bags):
    result = replay_bag("info", "--json", *bags)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def recorded(ros_master, tmp_path_factory):
    """A short `train.launch record:=true` session: its folder, bag, episode rows and agent config."""
    base = tmp_path_factory.mktemp("bag_session")
    config = base / "td3_small.yaml"
    config.write_text(SMALL_TD3)
    out = base / "run"
    proc = Proc(["roslaunch", "op3_walk", "train.launch", "headless:=true", "progress:=false", "tensorboard:=false",
                 "record:=true", "checkpoint_every:=0", "steps:=%d" % STEPS, "out_dir:=%s" % out,
                 "agent_config:=%s" % config], str(base / "train.log"), dict(os.environ))
    try:
        assert proc.wait(timeout=300) == 0, proc.log()[-4000:]
    finally:
        if proc.popen.poll() is None:
            proc.interrupt(timeout=30)
        proc.kill()
    with open(out / "episodes.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows, "no episode finished in %d steps" % STEPS
    return {"dir": out, "bag": out / "session.bag", "rows": rows, "config": str(config)}


@pytest.fixture(scope="module")
def buffer_file(recorded, tmp_path_factory):
    path = tmp_path_factory.mktemp("buffer") / "transitions.npz"
    result = replay_bag("buffer", recorded["bag"], "--out", path)
    assert result.returncode == 0, result.stderr
    assert "%d transitions" % STEPS in result.stdout, result.stdout
    return path


def longest_complete(info):
    return max((e for e in info["episodes"] if e["complete"]), key=lambda e: e["states"])


# -- replay_bag on a recorded session ------------------------------------------------------------------------
def test_info_finds_every_episode_step_and_return_of_the_session(recorded):
    from op3_walk.robots import load_robot
    info = info_of(recorded["bag"])
    rows, totals = recorded["rows"], info["totals"]
    assert info["robot"] == "plen" and info["joint_names"] == list(load_robot("plen").joint_names)
    assert info["action"] == {"kind": "continuous", "size": 18, "max_discrete_action": -1}
    assert info["observation"]["size"] == 62 and info["duration_s"] > 0
    # The learner waited for the recorder: every step is in the bag, and every finished episode is complete.
    assert totals["actions"] == totals["steps"] == STEPS
    assert totals["complete"] == len(rows) and totals["open"] in (0, 1)
    assert totals["states"] == STEPS + totals["episodes"]        # one reset state per episode
    assert totals["stats_matched"] == len(rows) and totals["stats_unmatched"] == 0
    assert totals["stats_return_mismatches"] == 0
    complete = [e for e in info["episodes"] if e["complete"]]
    assert [e["episode"] for e in complete] == [int(r["episode"]) for r in rows]
    for e, row in zip(complete, rows):
        assert e["steps"] == int(row["length"])
        # exactly what the learner summed and published; the CSV keeps 6 significant digits
        assert e["return"] == pytest.approx(e["stats"]["return"], rel=1e-12, abs=1e-12)
        assert e["return"] == pytest.approx(float(row["episode_return"]), rel=1e-5, abs=1e-5)
        assert e["end"] == ("fell" if row["fell"] in ("1", "True", "true") else "time_limit")
    text = replay_bag("info", recorded["bag"]).stdout
    assert "robot:        plen, 18 joints: l_hip_yaw" in text and "EpisodeStats: %d matched" % len(rows) in text


def test_render_draws_one_frame_per_recorded_state_in_recorded_time(recorded, tmp_path):
    from PIL import Image
    episode = longest_complete(info_of(recorded["bag"]))
    states = episode["states"]
    gif = tmp_path / "every.gif"
    result = replay_bag("render", recorded["bag"], "--episode", episode["episode"], "--out", gif, "--stride", 1,
                        "--width", 96, "--height", 72)
    assert result.returncode == 0, result.stderr
    with Image.open(gif) as im:
        assert im.n_frames == states and im.size == (96, 72)
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    # Played back in recorded time: PLEN's states are one control period apart (GIF durations are whole 10 ms).
    from op3_walk.robots import load_robot
    from op3_walk.ros.bag_tools import default_stride
    rate = load_robot("plen").control_rate_hz
    assert sum(durations) == pytest.approx(1000.0 * states / rate, abs=20)
    # The default stride keeps GIF frames >= 20 ms (every state at PLEN's 50 Hz; every 2nd at 60 Hz).
    assert default_stride(50.0, True) == 1 and default_stride(60.0, True) == 2
    result = replay_bag("render", recorded["bag"], "--episode", episode["episode"], "--out", tmp_path / "default.gif",
                        "--width", 96, "--height", 72)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "default.gif") as im:
        assert im.n_frames == math.ceil(states / default_stride(rate, True))
    frames = tmp_path / "frames"
    result = replay_bag("render", recorded["bag"], "--episode", episode["episode"], "--frames", frames,
                        "--width", 64, "--height", 48)
    assert result.returncode == 0, result.stderr
    pngs = sorted(os.listdir(frames))
    assert pngs == ["frame_%05d.png" % i for i in range(states)]
    first, last = (np.asarray(Image.open(frames / name)) for name in (pngs[0], pngs[-1]))
    assert first.shape == (48, 64, 3) and not np.array_equal(first, last)   # the robot moved (and fell)


def test_plot_writes_an_image(recorded, tmp_path):
    from PIL import Image
    episode = longest_complete(info_of(recorded["bag"]))
    out = tmp_path / "plots" / "episode.png"
    result = replay_bag("plot", recorded["bag"], "--episode", episode["episode"], "--out", out)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 500


def test_buffer_holds_every_step_and_its_rewards_are_the_episode_returns(recorded, buffer_file):
    from op3_walk.training.offline import load_transitions
    t = load_transitions(str(buffer_file))
    rows = recorded["rows"]
    published = {e["episode"]: e["stats"]["return"] for e in info_of(recorded["bag"])["episodes"] if e["stats"]}
    assert sorted(published) == [int(r["episode"]) for r in rows]   # the learner's EpisodeStats, in the bag
    assert len(t["rewards"]) == STEPS
    assert t["obs"].shape == t["next_obs"].shape == (STEPS, 62) and t["actions"].shape == (STEPS, 18)
    assert t["meta"]["robot"] == "plen" and t["meta"]["task"] == "walk" and not t["meta"]["discrete"]
    # nothing skipped; the budget may end mid-episode, leaving its last state without an action
    open_episodes = info_of(recorded["bag"])["totals"]["open"]
    assert t["meta"]["skipped"] == {"no_state": 0, "no_next_state": 0, "after_end": 0, "open_states": open_episodes}
    for row in rows:
        mine = t["episode"] == int(row["episode"])
        assert mine.sum() == int(row["length"])
        assert math.fsum(t["rewards"][mine]) == pytest.approx(published[int(row["episode"])], rel=1e-12, abs=1e-12)
    complete = np.isin(t["episode"], list(published))
    assert math.fsum(t["rewards"][complete]) == pytest.approx(math.fsum(published.values()), rel=1e-12, abs=1e-9)
    assert t["terminated"].sum() == sum(r["fell"] in ("1", "True", "true") for r in rows)
    # Consecutive transitions chain: next_obs of step k is obs of step k+1.
    same_episode = (t["episode"][1:] == t["episode"][:-1]) & (t["step"][1:] == t["step"][:-1] + 1)
    assert np.array_equal(t["next_obs"][:-1][same_episode], t["obs"][1:][same_episode])


def test_buffer_sizes_are_checked_against_the_robot_and_task(recorded, tmp_path):
    result = replay_bag("buffer", recorded["bag"], "--out", tmp_path / "x.npz", "--task", "zmp_tracking")
    assert result.returncode == 1 and "pass the --robot/--task it was recorded with" in result.stderr
    result = replay_bag("buffer", recorded["bag"], "--out", tmp_path / "y.npz", "--robot", "op3")
    assert result.returncode == 1 and "the bag is of another robot" in result.stderr
    assert "Traceback" not in result.stderr and not os.listdir(tmp_path)


def test_train_prefill_loads_the_buffer(recorded, buffer_file, tmp_path):
    from op3_walk.training.checkpoint import read_meta
    out = tmp_path / "finetune"
    result = subprocess.run([os.path.join(ROOT, "scripts", "train"), "--prefill", str(buffer_file),
                             "--offline-updates", "20", "--steps", "10", "--agent-config", recorded["config"],
                             "--out-dir", str(out), "--no-progress", "--no-tensorboard"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "prefilled %d transitions" % STEPS in result.stdout and "offline: 20 gradient updates" in result.stdout
    meta = read_meta(str(out / "checkpoint.pt"))
    assert meta["env_steps"] == 10 and meta["updates"] >= 20


def test_bad_bags_and_episodes_are_one_line_errors(recorded, tmp_path):
    result = replay_bag("info", tmp_path / "missing.bag")
    assert result.returncode == 1 and "does not exist" in result.stderr
    result = replay_bag("render", recorded["bag"], "--episode", 9999, "--out", tmp_path / "x.gif")
    assert result.returncode == 1 and "episode 9999 is not in the bag" in result.stderr
    data = open(recorded["bag"], "rb").read()
    cut = tmp_path / "cut.bag"
    cut.write_bytes(data[:len(data) // 2])
    garbage = tmp_path / "garbage.bag"
    garbage.write_bytes(b"not a bag at all\n" * 100)
    active = tmp_path / "live.bag.active"
    active.write_bytes(data[:1000])
    for path, message in ((cut, "reindex"), (garbage, "not a readable bag"), (tmp_path / "live.bag", "reindex")):
        result = replay_bag("info", path)
        assert result.returncode == 1, result.stdout
        assert result.stderr.startswith("replay_bag: error: ") and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


# -- record.launch and replay.launch -------------------------------------------------------------------------
def test_record_launch_joins_a_running_namespaced_session_and_stops_cleanly(spawn, tmp_path, rospy_node,
                                                                            monkeypatch):
    rospy = rospy_node
    import rosgraph
    import rosbag
    from op3_walk.msg import EpisodeStats
    config = tmp_path / "td3_small.yaml"
    config.write_text(SMALL_TD3)
    monkeypatch.setenv("ROS_NAMESPACE", "/bagtest")       # the whole session runs in /bagtest
    session = spawn(["roslaunch", "op3_walk", "train.launch", "headless:=true", "progress:=false",
                     "tensorboard:=false", "checkpoint_every:=0", "steps:=1000000",
                     "out_dir:=%s" % (tmp_path / "run"), "agent_config:=%s" % config], name="session")
    monkeypatch.delenv("ROS_NAMESPACE")
    try:
        rospy.wait_for_message("/bagtest/walker/state", rospy.AnyMsg, timeout=120)
    except rospy.ROSException:
        raise AssertionError("the session did not start:\n" + session.log()[-4000:])

    prefix = tmp_path / "bags" / "sess"       # the folder does not exist yet: the launch file creates it
    recorder = spawn(["roslaunch", "op3_walk", "record.launch", "ns:=bagtest", "out:=%s" % prefix], name="record")
    master = rosgraph.Master("/bag_replay_test")

    def recorder_connected():
        """Registered with the master is not yet receiving: look at the publishers' live connections."""
        links = set()
        for node in ("/bagtest/controller", "/bagtest/learner"):
            try:
                bus = xmlrpc.client.ServerProxy(master.lookupNode(node)).getBusInfo("/bag_replay_test")[2]
            except (rosgraph.MasterError, OSError):
                return False
            links |= {c[4] for c in bus if c[2] == "o" and c[1].startswith("/bagtest/bag_recorder") and c[5]}
        return links >= {"/bagtest/walker/state", "/bagtest/walker/action", "/bagtest/walker/episode"}
    finished = []
    sub = rospy.Subscriber("/bagtest/walker/episode", EpisodeStats, finished.append)
    try:
        wait_until(recorder_connected, 60, what="the recorder's connections")
        recorder.track()
        seen = len(finished)
        # The episode running now is partial in the bag, and the last one may be cut by the stop (the recorder may
        # not have read its last state yet when this test hears of its end); the two in between are whole.
        wait_until(lambda: len(finished) >= seen + 4, 120, what="4 episodes while recording")
    finally:
        sub.unregister()

    assert recorder.interrupt(timeout=60) == 0, recorder.log()[-4000:]
    assert not recorder.orphans(), "processes left behind: %s" % recorder.orphans()
    bags = glob.glob(str(prefix) + "_*.bag*")
    # -o prefix -> date-stamped name; split_size_mb (1024 by default) -> _0; closed: no .active left
    assert len(bags) == 1 and bags[0].endswith("_0.bag"), bags
    with rosbag.Bag(bags[0]) as bag:
        assert bag.get_compression_info().compression == "lz4"
        topics = bag.get_type_and_topic_info().topics
    for topic in ("walker/state", "walker/action", "walker/episode", "joint_states", "imu/data"):
        assert topics[topic].message_count > 0, topics         # stored relative to the session's namespace
    info = info_of(bags[0])
    # The recorder joined mid-episode: that episode is partial; whole ones follow, their returns what the learner
    # reported.
    totals = info["totals"]
    assert totals["complete"] >= 2 and totals["stats_matched"] >= 2, totals
    assert totals["stats_return_mismatches"] == 0, info["episodes"]
    assert session.popen.poll() is None, "stopping the recorder stopped the session"


def test_replay_launch_plays_into_a_namespace_and_robot_state_publisher_publishes_tf(spawn, recorded, rospy_node):
    rospy = rospy_node
    from tf2_msgs.msg import TFMessage
    from op3_walk.msg import WalkerState
    urdf = ElementTree.parse(os.path.join(ROOT, "urdf", "plen.urdf")).getroot()
    moving_links = {j.find("child").get("link") for j in urdf.iter("joint") if j.get("type") != "fixed"}
    frames, states = set(), []
    tf_sub = rospy.Subscriber("/tf", TFMessage, lambda m: frames.update(t.child_frame_id for t in m.transforms))
    state_sub = rospy.Subscriber("/replay/walker/state", WalkerState, states.append)
    try:
        proc = spawn(["roslaunch", "op3_walk", "replay.launch", "bag:=%s" % recorded["bag"], "ns:=replay",
                      "view:=true", "robot:=plen", "rate:=2"], name="replay")
        # rosbag play is required: the launch ends by itself when the bag is played
        assert proc.wait(timeout=180) == 0, proc.log()[-4000:]
        assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
    finally:
        tf_sub.unregister()
        state_sub.unregister()
    assert moving_links <= frames, "no transform for %s" % sorted(moving_links - frames)
    info = info_of(recorded["bag"])
    assert 0 < len(states) <= info["totals"]["states"]
    assert all(len(s.joint_names) == 18 for s in states)
    assert not rospy.get_param("/use_sim_time", False)      # clock:=false (default) leaves sim time alone


# -- bag logic on hand-written bags (no master needed) --------------------------------------------------------
def write_state(bag, topic, t, e, k, reward=0.0, terminated=False, truncated=False, stamp=None, obs=None):
    import genpy
    from op3_walk.msg import WalkerState
    m = WalkerState()
    m.header.stamp = genpy.Time.from_sec(t if stamp is None else stamp)
    m.episode, m.step, m.sim_time = e, k, k / 60.0
    m.observation = [float(e), float(k), 0.5] if obs is None else obs
    m.observation_names, m.observation_sizes = ["toy"], [3]
    m.reward, m.terminated, m.truncated = reward, terminated, truncated
    m.reward_term_names, m.reward_terms = ["r"], [reward]
    m.joint_names, m.joint_positions = ["a", "b"], [0.1 * k, -0.1 * k]
    m.torso_pose.orientation.w = 1.0
    bag.write(topic, m, genpy.Time.from_sec(t))
    return m


def duration(seconds):
    import genpy
    return genpy.Duration.from_sec(seconds)


def write_action(bag, topic, t, e, k, values=(0.1, 0.2), discrete=-1):
    import genpy
    from op3_walk.msg import WalkerAction
    m = WalkerAction()
    m.header.stamp = genpy.Time.from_sec(t)
    m.episode, m.step, m.action, m.discrete_action = e, k, list(values), discrete
    bag.write(topic, m, genpy.Time.from_sec(t))


def write_stats(bag, topic, t, e, episode_return, length, actor=""):
    import genpy
    from op3_walk.msg import EpisodeStats
    m = EpisodeStats()
    m.header.stamp = genpy.Time.from_sec(t)
    m.episode, m.episode_return, m.length, m.actor = e, episode_return, length, actor
    bag.write(topic, m, genpy.Time.from_sec(t))


def test_resends_conflicts_gaps_and_a_controller_restart(tmp_path):
    """What a real bag can hold besides clean lockstep: each is counted, and only whole transitions are kept."""
    import rosbag
    from op3_walk.ros.bag_tools import BagError, read_recording, transitions
    path = str(tmp_path / "messy.bag")
    S, A, E = "walker/state", "walker/action", "walker/episode"
    with rosbag.Bag(path, "w") as bag:
        t = 100.0
        # episode 1: 3 steps, falls; a resent state and action, a conflicting and a malformed action, an action
        # after the fall, and its EpisodeStats stored before its last state (separate connections)
        write_state(bag, S, t, 1, 0)
        write_action(bag, A, t + 0.01, 1, 0)
        write_action(bag, A, t + 0.015, 1, 0, values=(0.9, 0.9))          # conflicting: the first one counts
        write_state(bag, S, t + 0.02, 1, 1, reward=1.0)
        write_action(bag, A, t + 0.03, 1, 1)
        resent = write_state(bag, S, t + 0.04, 1, 2, reward=2.0)
        write_action(bag, A, t + 0.05, 1, 1)                              # resent action ...
        bag.write(S, resent, resent.header.stamp + duration(0.01))  # ... and the state re-sent for it
        write_action(bag, A, t + 0.06, 1, 2, values=(float("nan"), 0.0))  # malformed: the controller rejected it
        write_action(bag, A, t + 0.07, 1, 2)
        write_stats(bag, E, t + 0.085, 1, 1.0 + 2.0 + 4.0, 3)
        write_state(bag, S, t + 0.09, 1, 3, reward=4.0, terminated=True, stamp=t + 0.08)
        write_action(bag, A, t + 0.10, 1, 3)                              # after the fall
        # episode 2: state 2 lost, the recording stops after the action for step 3
        write_state(bag, S, t + 1.0, 2, 0)
        write_action(bag, A, t + 1.01, 2, 0)
        write_state(bag, S, t + 1.02, 2, 1, reward=1.5)
        write_action(bag, A, t + 1.03, 2, 1)
        write_action(bag, A, t + 1.05, 2, 2)
        write_state(bag, S, t + 1.06, 2, 3, reward=1.5)
        write_action(bag, A, t + 1.07, 2, 3)
        # the controller restarts: episode 1 again, 2 steps, time limit
        write_state(bag, S, t + 2.0, 1, 0)
        write_action(bag, A, t + 2.01, 1, 0, values=(-0.5, 0.5))
        write_state(bag, S, t + 2.02, 1, 1, reward=0.25)
        write_action(bag, A, t + 2.03, 1, 1, values=(-0.5, 0.5))
        write_state(bag, S, t + 2.04, 1, 2, reward=0.75, truncated=True)

    rec = read_recording([path], observations=True, detail=lambda s, e: True)
    assert rec.counts == {"duplicate_states": 1, "conflicting_states": 0, "duplicate_actions": 1,
                          "conflicting_actions": 1, "malformed_actions": 1, "segments": 2}
    assert list(rec.episodes) == [(0, 1), (0, 2), (1, 1)]
    first = rec.episodes[(0, 1)]
    assert first.complete and first.end == "fell" and first.episode_return == 7.0
    assert first.stats is not None and first.stats["return"] == 7.0 and not rec.unmatched_stats
    assert np.allclose(first.actions[0], (0.1, 0.2))
    second = rec.episodes[(0, 2)]
    assert not second.complete and second.end == "open"
    t, skipped = transitions(rec)
    assert skipped == {"no_state": 1, "no_next_state": 2, "after_end": 1, "open_states": 0}
    assert list(zip(t["episode"], t["step"])) == [(1, 0), (1, 1), (1, 2), (2, 0), (1, 0), (1, 1)]
    assert np.allclose(t["rewards"], [1.0, 2.0, 4.0, 1.5, 0.25, 0.75])
    assert list(t["terminated"]) == [False, False, True, False, False, False]
    assert list(t["truncated"]) == [False, False, False, False, False, True]
    assert np.allclose(t["actions"][4], (-0.5, 0.5))
    with pytest.raises(BagError, match="episode 1 is in 2 segments"):
        rec.find(1)
    assert rec.find(1, segment=1).length == 2 and rec.find(2).episode == 2
    with pytest.raises(BagError, match="episode 7 is not in the bag"):
        rec.find(7)


def test_stats_of_the_partial_first_episode_do_not_take_a_later_whole_one(tmp_path):
    """A recorder that joins mid-episode holds that episode's end and its EpisodeStats, but not its whole return.
    A whole episode of the same length ending within the clock slack must keep its own stats (a CI run once
    matched them crosswise and reported a return mismatch that the learner never made)."""
    import rosbag
    from op3_walk.ros.bag_tools import read_recording, summary
    path = str(tmp_path / "joined.bag")
    S, A, E = "walker/state", "walker/action", "walker/episode"
    with rosbag.Bag(path, "w") as bag:
        write_state(bag, S, 50.00, 4, 2, reward=1.0)                      # joined at step 2 of episode 4
        write_action(bag, A, 50.01, 4, 2)
        write_state(bag, S, 50.02, 4, 3, reward=1.0, terminated=True)
        write_stats(bag, E, 50.03, 9, 5.0, 3)                             # its whole return: 3 + 1 + 1
        for k in range(4):                                                # episode 5: whole, same length
            write_state(bag, S, 50.10 + 0.02 * k, 5, k, reward=0.5 * k, terminated=k == 3)
            if k < 3:
                write_action(bag, A, 50.11 + 0.02 * k, 5, k)
        write_stats(bag, E, 50.20, 10, 3.0, 3)
    rec = read_recording([path])
    joined, whole = rec.episodes[(0, 4)], rec.episodes[(0, 5)]
    assert not joined.complete and whole.complete and whole.episode_return == 3.0
    assert whole.stats["episode"] == 10 and joined.stats["episode"] == 9
    assert summary(rec)["totals"]["stats_return_mismatches"] == 0


def test_stats_of_an_episode_that_ended_before_the_recording_do_not_take_a_whole_one(tmp_path):
    """The recorder can hear an EpisodeStats whose episode's states it never got (it ended just before the
    recording). Those stats must not take a whole episode of the same length ending within the clock slack before
    that episode's own stats arrive."""
    import rosbag
    from op3_walk.ros.bag_tools import read_recording, summary
    path = str(tmp_path / "late.bag")
    S, A, E = "walker/state", "walker/action", "walker/episode"
    with rosbag.Bag(path, "w") as bag:
        write_stats(bag, E, 70.00, 3, 9.0, 3)                             # episode 2's: no states recorded
        for k in range(4):                                                # episode 3: whole, same length
            write_state(bag, S, 70.10 + 0.02 * k, 3, k, reward=0.5 * k, terminated=k == 3)
            if k < 3:
                write_action(bag, A, 70.11 + 0.02 * k, 3, k)
        write_stats(bag, E, 70.20, 4, 3.0, 3)
    rec = read_recording([path])
    whole = rec.episodes[(0, 3)]
    assert whole.complete and whole.stats["episode"] == 4
    assert [s["episode"] for s in rec.unmatched_stats] == [3]
    assert summary(rec)["totals"]["stats_return_mismatches"] == 0


def test_several_namespaces_need_ns_and_stats_go_to_their_actor(tmp_path):
    import rosbag
    from op3_walk.ros.bag_tools import BagError, read_recording
    path = str(tmp_path / "actors.bag")
    with rosbag.Bag(path, "w") as bag:
        for i, ns in enumerate(("/actor_0/", "/actor_1/")):
            t = 10.0 + i * 0.001
            write_state(bag, ns + "walker/state", t, 1, 0)
            write_action(bag, ns + "walker/action", t + 0.01, 1, 0)
            write_state(bag, ns + "walker/state", t + 0.02, 1, 1, reward=1.0 + i, terminated=True)
        write_stats(bag, "walker/episode", 10.1, 1, 1.0, 1, actor="actor_0")
        write_stats(bag, "walker/episode", 10.1, 2, 2.0, 1, actor="actor_1")
    with pytest.raises(BagError, match="several namespaces .*'actor_0', 'actor_1'.* --ns"):
        read_recording([path])
    rec = read_recording([path], ns="actor_1")
    assert rec.topics["state"] == "/actor_1/walker/state" and rec.topics["episode"] == "walker/episode"
    only = rec.episodes[(0, 1)]
    assert only.episode_return == 2.0 and only.stats["return"] == 2.0 and only.stats["actor"] == "actor_1"
    result = replay_bag("info", path, "--ns", "actor_2")
    assert result.returncode == 1 and "no walker/state in namespace 'actor_2'" in result.stderr


def test_discrete_actions_become_indices_and_are_checked_against_the_task(tmp_path):
    import rosbag
    from op3_walk.ros.bag_tools import BagError, check_sizes, read_recording, transitions
    from op3_walk.robots import load_robot
    path = str(tmp_path / "discrete.bag")
    with rosbag.Bag(path, "w") as bag:
        for k in range(3):
            write_state(bag, "walker/state", 1.0 + k, 1, k, reward=float(k))
            write_action(bag, "walker/action", 1.5 + k, 1, k, values=(), discrete=k)
        write_state(bag, "walker/state", 4.0, 1, 3, reward=3.0, terminated=True)
    rec = read_recording([path], observations=True)
    t, _ = transitions(rec)
    assert t["actions"].dtype == np.int64 and list(t["actions"]) == [0, 1, 2]
    with pytest.raises(BagError, match="not those of robot plen with task walk"):
        check_sizes(rec, load_robot("plen"), "walk")
