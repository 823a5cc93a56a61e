"""backend:=hardware through ROS, on what this machine has instead of robots (labelled as such):

- PLEN: controller_node with the real Adafruit drivers on the simulated I2C bus (``hardware/i2c: sim``), torch made
  unimportable for the node (a package named torch that raises on import comes first on PYTHONPATH): the safety
  services and /diagnostics, then deploy.launch running an exported policy to the end of an episode;
- OP3: train.launch against the PyBullet stand-in of the ROBOTIS framework (op3_standin.launch), not op3_manager.
"""
from ros_harness import wait_until
from test_deploy import deploy_args, policies  # noqa: F401  (the module-scoped fixture of exported policies)
from test_ros_suite import Diagnostics, train_launch


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
