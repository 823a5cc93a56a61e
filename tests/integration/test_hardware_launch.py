"""backend:=hardware through ROS, on what this machine has instead of robots (labelled as such):

- PLEN: controller_node with the real Adafruit drivers on the simulated I2C bus (``hardware/i2c: sim``), torch made
  unimportable for the node (a package named torch that raises on import comes first on PYTHONPATH): the safety
  services and /diagnostics, then deploy.launch running an exported policy to the end of an episode; a policy that
  stops (the episode ends as "watchdog" and the safety layer relaxes the robot within its documented 2.2 s); an
  e-stop ending the episode as such, a deploy session waiting through the latched e-stop (reset_estop refused while
  the simulated IMU is tilted) and continuing after it;
- OP3: train.launch against the PyBullet stand-in of the ROBOTIS framework (op3_standin.launch), not op3_manager.
"""
import math
import os
import time

import pytest

from ros_harness import wait_until
from test_deploy import deploy_args, policies  # noqa: F401  (the module-scoped fixture of exported policies)
from test_ros_suite import Diagnostics, train_launch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def quaternion_tilt(q):
    """Torso tilt from vertical (rad) of an orientation message (x, y, z, w; torso -> odom)."""
    n2 = q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w
    return math.acos(max(-1.0, min(1.0, 1.0 - 2.0 * (q.x * q.x + q.y * q.y) / n2)))


def sim_plen_controller(ns, *params):
    """controller_node on the simulated PLEN (the real drivers on a simulated I2C bus) in namespace ``ns``."""
    return ["rosrun", "op3_walk", "controller_node", "__name:=controller", "__ns:=%s" % ns, "_backend:=hardware",
            "_hardware/i2c:=sim", "_publish_tf:=false", "_publish_odom:=false"] + list(params)


def test_plen_controller_on_the_simulated_bus_serves_the_safety_services_without_torch(spawn, rospy_node,
                                                                                       torch_blocked):
    from std_srvs.srv import Trigger
    from op3_walk.msg import WalkerAction, WalkerState
    from op3_walk.srv import ResetEpisode
    diag = Diagnostics(rospy_node)
    states = []
    sub = rospy_node.Subscriber("/hw/walker/state", WalkerState, states.append, tcp_nodelay=True)
    pub = rospy_node.Publisher("/hw/walker/action", WalkerAction, queue_size=10, tcp_nodelay=True)
    proc = spawn(["rosrun", "op3_walk", "controller_node", "__name:=controller", "__ns:=hw", "_backend:=hardware",
                  "_hardware/i2c:=sim", "_publish_tf:=false", "_watchdog_timeout_s:=0.5"], name="controller")
    try:
        rospy_node.wait_for_service("/hw/walker/reset", timeout=60)
        wait_until(lambda: pub.get_num_connections() and sub.get_num_connections(), 30, what="connections")
        first = rospy_node.ServiceProxy("/hw/walker/reset", ResetEpisode)(seed=0)
        assert first.success, first.message
        zero = [0.0] * 18
        answered = set()
        deadline = rospy_node.get_time() + 1.0
        while rospy_node.get_time() < deadline:
            for s in list(states):
                if s.episode == first.state.episode and s.step not in answered:
                    answered.add(s.step)
                    pub.publish(WalkerAction(episode=s.episode, step=s.step, action=zero, discrete_action=-1))
            rospy_node.sleep(0.002)
        assert max(answered) >= 20, "the 50 Hz loop did not advance"
        wait_until(lambda: diag.find("op3_walk safety /hw") is not None, 10, what="the safety status")
        trigger = rospy_node.ServiceProxy("/hw/safety/trigger_estop", Trigger)
        reset = rospy_node.ServiceProxy("/hw/safety/reset_estop", Trigger)
        assert trigger().success
        wait_until(lambda: (diag.find("op3_walk safety /hw") or {}).get("state") == "estopped", 10,
                   what="the e-stop on /diagnostics")
        safety = diag.find("op3_walk safety /hw")
        assert safety["_level"] == 2 and "reset_estop" in safety["_message"] and safety["estops"] == "1"
        answer = reset()
        assert answer.success, answer.message
        wait_until(lambda: (diag.find("op3_walk safety /hw") or {}).get("estop_resets") == "1", 10,
                   what="the e-stop reset on /diagnostics")
        controller = diag.find("op3_walk controller /hw")
        assert controller["backend"] == "hardware" and controller["mode"] == "realtime"
        assert "I2C time per tick median [ms]" in controller
        with open("/proc/%d/maps" % proc.popen.pid) as fh:
            assert "libtorch" not in fh.read()
    finally:
        sub.unregister()
        pub.unregister()
        diag.close()
    assert proc.interrupt() == 0 and not proc.orphans()
    assert "Traceback" not in proc.log()


def test_deploy_launch_runs_a_policy_on_the_simulated_plen_hardware(spawn, rospy_node, policies, torch_blocked):
    from op3_walk.msg import EpisodeStats
    stats = []
    sub = rospy_node.Subscriber("/walker/episode", EpisodeStats, stats.append)
    try:
        proc = spawn(deploy_args(policies["a"], backend="hardware", i2c="sim", episodes=1), name="deploy")
        # one 600-step episode at 50 Hz in real time (12 s), after the safety layer's start ramp
        assert proc.wait(timeout=120) == 0, proc.log()[-4000:]
        assert not proc.orphans()
    finally:
        sub.unregister()
    wait_until(lambda: stats, 10, what="the episode's statistics")
    assert stats[-1].length == 600 and not stats[-1].fell
    assert "ImportError" not in proc.log()


def test_train_launch_drives_the_op3_framework_standin_through_the_hardware_backend(spawn, rospy_node, tmp_path,
                                                                                   small_agent_config):
    diag = Diagnostics(rospy_node)
    standin = spawn(["roslaunch", "op3_walk", "op3_standin.launch"], name="op3_standin")
    try:
        wait_until(lambda: "/robotis/present_joint_states" in dict(rospy_node.get_published_topics()), 60,
                   what="the framework stand-in's topics")
        out = tmp_path / "op3hw"
        proc = spawn(train_launch(out, small_agent_config, robot="op3", backend="hardware", steps=60,
                                  checkpoint_every=0), name="train")
        assert proc.wait(timeout=180) == 0, proc.log()[-4000:]
        assert not proc.orphans()
        from op3_walk.training.checkpoint import read_meta
        meta = read_meta(str(out / "checkpoint.pt"))
        assert meta["env_steps"] == 60 and meta["robot"] == "op3"
        seen = [v for name, v in diag.latest.items() if name.startswith("op3_walk controller")]
        assert seen and seen[-1]["backend"] == "hardware" and seen[-1]["mode"] == "realtime"
        assert any(name.startswith("op3_walk safety") for name in diag.latest)
    finally:
        diag.close()
        standin.interrupt()


def test_shadow_mode_logs_what_the_policy_would_command_and_holds_the_stance(spawn, rospy_node, policies, tmp_path,
                                                                             monkeypatch):
    import csv
    import glob
    ros_home = tmp_path / "ros_home"
    monkeypatch.setenv("ROS_HOME", str(ros_home))
    proc = spawn(deploy_args(policies["a"], backend="hardware", i2c="sim", shadow="true", episodes=1),
                 name="deploy_shadow")
    assert proc.wait(timeout=120) == 0, proc.log()[-4000:]
    logs = glob.glob(str(ros_home / "op3_walk" / "shadow_*.csv"))
    assert len(logs) == 1, proc.log()[-2000:]
    with open(logs[0]) as fh:
        rows = list(csv.reader(fh))
    assert len(rows) > 500 and len(rows[1]) == 2 + 18      # time, step, one column per joint; one row per command
    assert "shadow mode" in proc.log()


def test_a_stopped_policy_ends_the_episode_as_watchdog_and_the_safety_layer_relaxes_the_plen(spawn, rospy_node):
    """Defect: the controller's watchdog ended the episode but kept sending hold targets, so the safety layer never
    relaxed a robot whose policy had stopped. Documented (safety.yaml, README): limp within watchdog_timeout_s +
    watchdog_hold_s + watchdog_relax_s = 0.1 + 0.1 + 2.0 s of the policy's last action."""
    from diagnostic_msgs.msg import DiagnosticArray
    from op3_walk.msg import WalkerAction, WalkerState
    from op3_walk.ros.controller import ControllerParams
    from op3_walk.srv import ResetEpisode
    with pytest.raises(ValueError, match="safety layer holds, then relaxes"):   # stance would command a stopped robot
        ControllerParams(backend="hardware", watchdog_action="stance").validate()
    states, safety, controller, relaxed_at = [], {}, {}, []

    def on_diag(msg):
        now = time.monotonic()
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if st.name.startswith("op3_walk safety /stop"):
                safety.update(values)
                if values.get("state") == "relaxed" and not relaxed_at:
                    relaxed_at.append(now)
            elif st.name.startswith("op3_walk controller /stop"):
                controller.update(values)

    subs = [rospy_node.Subscriber("/stop/walker/state", WalkerState, states.append, tcp_nodelay=True),
            rospy_node.Subscriber("/diagnostics", DiagnosticArray, on_diag)]
    pub = rospy_node.Publisher("/stop/walker/action", WalkerAction, queue_size=10, tcp_nodelay=True)
    proc = spawn(sim_plen_controller("stop", "_diagnostics_rate_hz:=20"), name="controller_stop")
    zero = [0.0] * 18

    def answer(episode, seconds):
        """Act as a policy for ``seconds``; returns when it last answered (monotonic)."""
        answered, last = set(), time.monotonic()
        deadline = last + seconds
        while time.monotonic() < deadline:
            for s in list(states):
                if s.episode == episode and s.step not in answered and not (s.terminated or s.truncated):
                    answered.add(s.step)
                    pub.publish(WalkerAction(episode=s.episode, step=s.step, action=zero, discrete_action=-1))
                    last = time.monotonic()
            time.sleep(0.002)
        assert len(answered) >= 20, "the 50 Hz loop did not advance"
        return last

    try:
        rospy_node.wait_for_service("/stop/walker/reset", timeout=60)
        wait_until(lambda: pub.get_num_connections() and subs[0].get_num_connections(), 30, what="connections")
        reset = rospy_node.ServiceProxy("/stop/walker/reset", ResetEpisode)
        first = reset(seed=0)
        assert first.success, first.message
        stopped = answer(first.state.episode, 1.0)          # then the policy stops answering
        end = wait_until(lambda: [s for s in list(states) if s.episode == first.state.episode
                                  and (s.terminated or s.truncated)], 10, what="the episode's end")
        assert len(end) == 1 and end[0].truncated and not end[0].terminated
        assert end[0].end_reason == "watchdog", end[0].end_reason      # not "time limit" (600 steps = 12 s)
        wait_until(lambda: relaxed_at, 10, what="the safety layer relaxing the robot (state on /diagnostics: %s)"
                   % safety.get("state"))
        delay = relaxed_at[0] - stopped
        assert 2.0 <= delay <= 2.2 + 1.3, "relaxed %.2f s after the policy's last action" % delay
        wait_until(lambda: safety.get("limp") == "True" and safety.get("watchdog_relaxes") == "1", 5,
                   what="limp on /diagnostics")
        wait_until(lambda: controller.get("episodes ended: watchdog") == "1", 5, what="the episode end counted")
        assert controller["last episode end"].startswith("watchdog")
        # the session goes on: a new episode ramps the relaxed robot up again
        second = reset(seed=-1)
        assert second.success, second.message
        answer(second.state.episode, 0.5)
        wait_until(lambda: safety.get("state") in ("ramping", "running") and safety.get("limp") == "False", 5,
                   what="the robot commanded again")
    finally:
        for sub in subs:
            sub.unregister()
        pub.unregister()
    assert proc.interrupt() == 0 and not proc.orphans()
    assert "Traceback" not in proc.log()


def test_an_estop_ends_the_episode_and_deploy_continues_after_reset_estop_refused_while_tilted(
        spawn, rospy_node, policies, tmp_path):
    """Defects: an e-stop did not end the episode (reported as "time limit" after a relaxed run to the time limit);
    the next reset was refused and policy_node died (FATAL, ~5 s), so a deploy session could not continue after
    reset_estop; the simulated PLEN's IMU could not be tilted to try the reset's tilt check through ROS."""
    from geometry_msgs.msg import Quaternion
    from sensor_msgs.msg import Imu
    from std_srvs.srv import Trigger
    from op3_walk.msg import EpisodeStats, WalkerState
    task = tmp_path / "walk_250.yaml"           # the walk task, 250 steps (5 s at 50 Hz) per episode
    with open(os.path.join(ROOT, "config", "tasks", "walk.yaml")) as fh:
        text = fh.read()
    assert "max_episode_steps: 600" in text
    task.write_text(text.replace("max_episode_steps: 600", "max_episode_steps: 250"))
    states, stats, imu = [], [], []
    diag = Diagnostics(rospy_node)
    subs = [rospy_node.Subscriber("/dep/walker/state", WalkerState, states.append, tcp_nodelay=True),
            rospy_node.Subscriber("/dep/walker/episode", EpisodeStats, stats.append),
            rospy_node.Subscriber("/dep/imu/data", Imu, lambda m: imu.append(quaternion_tilt(m.orientation)))]
    tilt_pub = rospy_node.Publisher("/dep/sim/torso_orientation", Quaternion, queue_size=10, latch=True)
    controller = spawn(sim_plen_controller("dep", "_task:=%s" % task, "_diagnostics_rate_hz:=5"),
                       name="controller_dep")
    policy = spawn(["rosrun", "op3_walk", "policy_node", "__name:=policy", "__ns:=dep", "_policy:=%s" % policies["a"],
                    "_robot:=plen", "_task:=%s" % task, "_episodes:=2", "_seed:=0"], name="policy_dep")
    trigger = rospy_node.ServiceProxy("/dep/safety/trigger_estop", Trigger)
    reset_estop = rospy_node.ServiceProxy("/dep/safety/reset_estop", Trigger)
    try:
        wait_until(lambda: any(s.episode == 1 and s.step >= 10 for s in list(states)), 90,
                   what="episode 1 running; policy log:\n" + policy.log()[-2000:])
        assert trigger().success
        wait_until(lambda: stats, 10, what="episode 1 ending with the e-stop")
        assert stats[0].end_reason == "e-stop" and not stats[0].fell and 10 <= stats[0].length < 100, stats[0]
        last = [s for s in list(states) if s.episode == 1 and (s.terminated or s.truncated)]
        assert len(last) == 1 and last[0].truncated and last[0].end_reason == "e-stop"
        # while latched, policy_node keeps asking for its next episode instead of dying

        def retrying():
            assert policy.popen.poll() is None, "policy_node exited:\n" + policy.log()[-3000:]
            return int((diag.find("op3_walk controller /dep") or {}).get("resets refused (latched)", 0)) >= 3

        wait_until(retrying, 15, what="reset retries")
        # tilted 0.6 rad (beyond reset_max_tilt_rad 0.35, short of a fall): the reset of the e-stop is refused
        wait_until(lambda: tilt_pub.get_num_connections(), 10, what="the controller on sim/torso_orientation")
        tilt_pub.publish(Quaternion(x=math.sin(0.3), y=0.0, z=0.0, w=math.cos(0.3)))
        wait_until(lambda: imu and abs(imu[-1] - 0.6) < 0.02, 10, what="the simulated IMU tilted")
        answer = reset_estop()
        assert not answer.success and "tilt" in answer.message, answer.message
        assert (diag.find("op3_walk safety /dep") or {}).get("state", "estopped") == "estopped"
        tilt_pub.publish(Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
        wait_until(lambda: imu and imu[-1] < 0.02, 10, what="the simulated IMU upright")
        answer = reset_estop()
        assert answer.success, answer.message
        # the session continues: episode 2 runs to its time limit and policy_node ends normally
        assert policy.wait(timeout=90) == 0, policy.log()[-4000:]
        wait_until(lambda: len(stats) >= 2, 10, what="episode 2's statistics")
        assert stats[1].end_reason == "time limit" and stats[1].length == 250 and not stats[1].fell
        log = policy.log()
        assert "refused to reset" in log and "e-stop" in log and "reset accepted after" in log
        assert "Traceback" not in log
        values = wait_until(lambda: (diag.find("op3_walk controller /dep") or {}).get("episodes ended: time limit")
                            and diag.find("op3_walk controller /dep"), 10, what="episode ends on /diagnostics")
        assert values["episodes ended: e-stop"] == "1" and values["episodes ended: time limit"] == "1"
    finally:
        for sub in subs:
            sub.unregister()
        tilt_pub.unregister()
        diag.close()
    assert controller.interrupt() == 0 and not controller.orphans()
    assert "Traceback" not in controller.log()
