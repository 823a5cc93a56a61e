"""The ROS suite around training, against a real roscore and real nodes: the learner's services, /diagnostics,
a controller dying and coming back, a learner killed and resumed, several actors, view.launch, and the realtime
controller's freshest-action rule and watchdog."""
import csv
import math
import os

import pytest
import yaml

from ros_harness import ROOT, wait_until


class Diagnostics:
    """The latest /diagnostics status of each name, as {key: value} dicts."""

    def __init__(self, rospy):
        from diagnostic_msgs.msg import DiagnosticArray
        self.latest = {}
        self.sub = rospy.Subscriber("/diagnostics", DiagnosticArray, self._on)

    def _on(self, msg):
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            values["_level"], values["_message"] = st.level, st.message
            self.latest[st.name] = values

    def find(self, prefix):
        for name, values in list(self.latest.items()):
            if name.startswith(prefix):
                return values
        return None

    def close(self):
        self.sub.unregister()


def train_launch(out_dir, agent_config, **extra):
    args = ["roslaunch", "op3_walk", "train.launch", "headless:=true", "progress:=false", "tensorboard:=false",
            "out_dir:=%s" % out_dir, "agent_config:=%s" % agent_config]
    return args + ["%s:=%s" % kv for kv in extra.items()]


def learner_steps(diag):
    values = diag.find("op3_walk learner")
    return int(values["env steps"]) if values else -1


def test_shipped_node_parameter_files_load_into_the_node_parameter_classes():
    from op3_walk.config import from_dict
    from op3_walk.ros.controller import ControllerParams
    from op3_walk.ros.learner import LearnerParams
    for cls, name in ((ControllerParams, "controller.yaml"), (LearnerParams, "learner.yaml")):
        with open(os.path.join(ROOT, "config", "ros", name)) as fh:
            from_dict(cls, yaml.safe_load(fh))


def test_learner_services_and_diagnostics(spawn, rospy_node, tmp_path, small_agent_config):
    from std_srvs.srv import Trigger
    from op3_walk.srv import LoadPolicy, SaveCheckpoint, SetExploration
    diag = Diagnostics(rospy_node)
    proc = spawn(train_launch(tmp_path / "run", small_agent_config, steps=200000), name="train")
    try:
        rospy_node.wait_for_service("/learner/pause", timeout=90)
        wait_until(lambda: learner_steps(diag) > 200, 90, what="training under way")
        controller = diag.find("op3_walk controller")
        assert controller is not None and float(controller["control steps/s"]) > 0
        assert controller["state->action latency median [ms]"] != "n/a"
        assert controller["mode"] == "lockstep" and controller["backend"] == "pybullet"

        pause = rospy_node.ServiceProxy("/learner/pause", Trigger, persistent=True)
        resume = rospy_node.ServiceProxy("/learner/resume", Trigger, persistent=True)
        assert pause().success
        wait_until(lambda: diag.find("op3_walk learner")["paused"] == "True", 10, what="paused in diagnostics")
        held = learner_steps(diag)
        rospy_node.sleep(2.5)
        assert learner_steps(diag) == held, "env steps went on while paused"
        assert resume().success
        wait_until(lambda: learner_steps(diag) > held + 20, 30, what="training again after resume")

        explore = rospy_node.ServiceProxy("/learner/set_exploration", SetExploration, persistent=True)
        answer = explore(value=0.3)
        assert answer.success and answer.value == pytest.approx(0.3)
        wait_until(lambda: float(diag.find("op3_walk learner")["exploration"]) == pytest.approx(0.3), 10,
                   what="exploration 0.3 in diagnostics")
        answer = explore(value=-1.0)                 # back to the configured noise
        assert answer.success and answer.value == pytest.approx(0.1)
        answer = explore(value=float("nan"))
        assert not answer.success and answer.message and answer.value == pytest.approx(0.1)

        save = rospy_node.ServiceProxy("/learner/save_checkpoint", SaveCheckpoint)
        saved = save(path=str(tmp_path / "snapshot.pt"))
        assert saved.success and os.path.exists(saved.path)
        load = rospy_node.ServiceProxy("/learner/load_policy", LoadPolicy)
        assert load(path=saved.path).success
        (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
        bad = load(path=str(tmp_path / "corrupt.pt"))
        assert not bad.success and "corrupt.pt" in bad.message
        assert not load(path=str(tmp_path / "missing.pt")).success
        wait_until(lambda: learner_steps(diag) > held + 100, 30, what="training after the service calls")
        pause.close()
        resume.close()
        explore.close()
    finally:
        diag.close()
    assert proc.interrupt(timeout=60) == 0, proc.log()[-3000:]
    assert not proc.orphans()


def learner_cmd(out_dir, agent_config, steps, resume=""):
    return ["rosrun", "op3_walk", "learner_node", "__name:=learner", "_steps:=%d" % steps,
            "_agent_config:=%s" % agent_config, "_out_dir:=%s" % out_dir, "_progress:=false", "_tensorboard:=false",
            "_state_timeout:=2.0", "_reconnect_timeout:=60.0", "_checkpoint_every:=200", "_resume:=%s" % resume]


def test_learner_survives_a_controller_restart_and_resumes_after_being_killed(spawn, rospy_node, tmp_path,
                                                                               small_agent_config):
    diag = Diagnostics(rospy_node)
    out = tmp_path / "run"
    try:
        controller = spawn(["rosrun", "op3_walk", "controller_node", "__name:=controller"], name="controller1")
        learner = spawn(learner_cmd(out, small_agent_config, 1500, resume="auto"), name="learner1")
        wait_until(lambda: learner_steps(diag) > 300, 120, what="training under way")
        controller.track()
        controller.kill()                                   # SIGKILL: no goodbye to the learner
        stalled = learner_steps(diag)
        rospy_node.sleep(3.0)
        assert learner.popen.poll() is None, "the learner died with its controller:\n" + learner.log()[-3000:]
        spawn(["rosrun", "op3_walk", "controller_node", "__name:=controller"], name="controller2")
        wait_until(lambda: learner_steps(diag) > stalled + 100, 120, what="training after the controller restart")
        # Now the learner dies (SIGKILL, between checkpoints) and a new one resumes from the last checkpoint.
        learner.track()
        learner.kill()
        from op3_walk.training.checkpoint import read_meta
        saved = read_meta(str(out / "checkpoint.pt"))["env_steps"]
        assert saved >= 200
        again = spawn(learner_cmd(out, small_agent_config, 1500, resume="auto"), name="learner2")
        assert again.wait(timeout=240) == 0, again.log()[-3000:]
    finally:
        diag.close()
    with open(learner.log_path) as fh:   # killed above: its log file is closed, read it back
        log = fh.read()
    assert "env 0 unavailable" in log and "env 0 is back" in log, log[-3000:]
    assert "resumed from %s at env step %d" % (out / "checkpoint.pt", saved) in again.log()
    assert read_meta(str(out / "checkpoint.pt"))["env_steps"] == 1500
    with open(out / "episodes.csv") as fh:
        episodes = [int(r["episode"]) for r in csv.DictReader(fh)]
    assert episodes == list(range(1, len(episodes) + 1)), "episode numbers repeat or skip after the resume"


def test_actors_launch_feeds_one_learner_from_separate_controllers(spawn, rospy_node, tmp_path, small_agent_config):
    from op3_walk.msg import EpisodeStats
    stats = []
    sub = rospy_node.Subscriber("/walker/episode", EpisodeStats, stats.append)
    out = tmp_path / "actors"
    proc = spawn(["roslaunch", "op3_walk", "actors.launch", "n:=2", "steps:=1200", "progress:=false",
                  "tensorboard:=false", "out_dir:=%s" % out, "agent_config:=%s" % small_agent_config], name="actors")
    try:
        assert proc.wait(timeout=300) == 0, proc.log()[-4000:]
    finally:
        sub.unregister()
    assert not proc.orphans()
    assert {s.actor for s in stats} == {"actor_0", "actor_1"}
    from op3_walk.training.checkpoint import read_meta
    assert read_meta(str(out / "checkpoint.pt"))["env_steps"] == 1200


def test_view_launch_turns_joint_states_into_link_transforms(spawn, rospy_node):
    from tf2_msgs.msg import TFMessage
    from op3_walk.srv import ResetEpisode
    frames = set()
    sub = rospy_node.Subscriber("/tf", TFMessage, lambda m: frames.update((t.header.frame_id, t.child_frame_id)
                                                                          for t in m.transforms))
    controller = spawn(["rosrun", "op3_walk", "controller_node", "__name:=controller"], name="controller")
    view = spawn(["roslaunch", "op3_walk", "view.launch", "rviz:=false"], name="view")
    try:
        rospy_node.wait_for_service("/walker/reset", timeout=60)
        reset = rospy_node.ServiceProxy("/walker/reset", ResetEpisode)
        wait_until(lambda: (reset(seed=0).success and ("odom", "base_link") in frames
                            and any(child.startswith("l_") for _, child in frames)), 60, interval=0.5,
                   what="odom -> base_link and leg link transforms on /tf")
    finally:
        sub.unregister()
    view.track()
    assert view.interrupt() == 0 and not view.orphans()
    assert controller.interrupt() == 0


def test_realtime_controller_applies_the_freshest_action_and_its_watchdog_ends_the_episode(spawn, rospy_node):
    from op3_walk.msg import WalkerAction, WalkerState
    from op3_walk.srv import ResetEpisode
    diag = Diagnostics(rospy_node)
    states = []
    sub = rospy_node.Subscriber("/rt/walker/state", WalkerState, states.append, tcp_nodelay=True)
    pub = rospy_node.Publisher("/rt/walker/action", WalkerAction, queue_size=10, tcp_nodelay=True)
    proc = spawn(["rosrun", "op3_walk", "controller_node", "__name:=controller", "__ns:=rt", "_mode:=realtime",
                  "_watchdog_timeout_s:=0.3", "_publish_tf:=false"], name="controller")
    try:
        rospy_node.wait_for_service("/rt/walker/reset", timeout=60)
        wait_until(lambda: pub.get_num_connections() and sub.get_num_connections(), 30, what="connections")
        first = rospy_node.ServiceProxy("/rt/walker/reset", ResetEpisode)(seed=1).state
        zero = [0.0] * 18
        # Answer every state for a while: the episode advances at the control rate.
        answered = set()
        deadline = rospy_node.get_time() + 1.0
        while rospy_node.get_time() < deadline:
            for s in list(states):
                if s.episode == first.episode and s.step not in answered and not (s.terminated or s.truncated):
                    answered.add(s.step)
                    pub.publish(WalkerAction(episode=s.episode, step=s.step, action=zero, discrete_action=-1))
            rospy_node.sleep(0.002)
        assert max(answered) >= 10, "the realtime loop did not advance"
        # Late (an old step) and foreign (another episode) actions are dropped and counted.
        pub.publish(WalkerAction(episode=first.episode, step=1, action=zero, discrete_action=-1))
        pub.publish(WalkerAction(episode=first.episode + 5, step=max(answered), action=zero, discrete_action=-1))
        # Then silence: the watchdog ends the episode (truncated) and holds the robot.
        wait_until(lambda: any(s.truncated and s.episode == first.episode for s in states), 10,
                   what="the watchdog's truncated state")
        wait_until(lambda: (diag.find("op3_walk controller /rt") or {}).get("watchdog trips") == "1", 10,
                   what="watchdog trip in /diagnostics")
        values = diag.find("op3_walk controller /rt")
        assert values["mode"] == "realtime" and int(values["dropped actions"]) >= 2
        assert values["_level"] == 1 and "watchdog" in values["_message"]
        steps = [s.step for s in states if s.episode == first.episode]
        assert steps == sorted(steps), "states went back in time"
        assert all(math.isfinite(v) for s in states for v in s.observation)
    finally:
        sub.unregister()
        pub.unregister()
        diag.close()
    assert proc.interrupt() == 0 and not proc.orphans()


def test_train_launch_with_the_gazebo_backend_against_the_standin(spawn, rospy_node, tmp_path, small_agent_config):
    """backend:=gazebo end to end: controller_node drives the PyBullet *stand-in* for op3_gazebo (not Gazebo)
    through the stock topics and services, and the learner trains through it for a short budget."""
    had_sim_time = rospy_node.has_param("/use_sim_time")
    diag = Diagnostics(rospy_node)
    standin = spawn(["roslaunch", "op3_walk", "gazebo_standin.launch", "robot:=op3"], name="standin")
    try:
        rospy_node.wait_for_service("/gazebo/unpause_physics", timeout=60)
        out = tmp_path / "gz"
        proc = spawn(train_launch(out, small_agent_config, robot="op3", backend="gazebo", steps=60,
                                  checkpoint_every=0), name="train")
        assert proc.wait(timeout=240) == 0, proc.log()[-4000:]
        assert not proc.orphans()
        from op3_walk.training.checkpoint import read_meta
        meta = read_meta(str(out / "checkpoint.pt"))
        assert meta["env_steps"] == 60 and meta["robot"] == "op3"
        seen = [v for name, v in diag.latest.items() if name.startswith("op3_walk controller")]
        assert seen and seen[-1]["backend"] == "gazebo" and "overshoot mean [ms]" in seen[-1]
    finally:
        diag.close()
        standin.interrupt()
        if not had_sim_time and rospy_node.has_param("/use_sim_time"):
            rospy_node.delete_param("/use_sim_time")
