"""deploy.launch end to end: an exported policy (untrained, tiny) drives the controller through policy_node, which
runs its episodes and ends the launch cleanly, swaps policies on request, refuses bad ones, and never loads torch."""
import subprocess

import numpy as np
import pytest
import yaml

from ros_harness import children_of, wait_until

LAUNCH_TIMEOUT = 180.0   # s; two 600-step PLEN episodes take a few seconds of lockstep


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    """Exported policies made the way a user makes them: agent -> checkpoint (our writer) -> export_policy.

    ``a`` and ``b`` fit PLEN on the walk task (different algorithms and weights), ``op3`` is for another robot,
    ``corrupt`` is a truncated file.
    """
    from op3_walk.agents import AGENTS
    from op3_walk.policy.export import export_policy
    from op3_walk.policy.runtime import expected_interface
    from op3_walk.training.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("policies")
    paths = {}
    for name, algo, robot, seed in (("a", "td3", "plen", 1), ("b", "sac", "plen", 2), ("op3", "td3", "op3", 3)):
        iface = expected_interface(robot, "walk")
        agent_cls, config_cls = AGENTS[algo]
        agent = agent_cls(iface.obs_dim, iface.action_size, config_cls(hidden_sizes=[16, 16], batch_size=32,
                                                                      buffer_size=64), seed=seed)
        checkpoint = save_checkpoint(str(folder / ("%s.pt" % name)), {"agent": agent.state_dict(), "trainer": {}},
                                     {"robot": robot, "task": "walk", "algo": algo, "obs_dim": agent.obs_dim,
                                      "act_dim": agent.act_dim, "env_steps": 0, "episodes": 0})
        paths[name] = export_policy(checkpoint, str(folder / ("%s.npz" % name)))[0].path
    data = open(paths["a"], "rb").read()
    paths["corrupt"] = str(folder / "corrupt.npz")
    with open(paths["corrupt"], "wb") as fh:
        fh.write(data[:len(data) // 2])
    return paths


def deploy_args(policy, **extra):
    """These test policies are trained-for-nothing nets on the plain ``walk`` task (the launch's default task is the
    shipped policies' recipe task)."""
    extra.setdefault("task", "walk")
    return ["roslaunch", "op3_walk", "deploy.launch", "policy:=%s" % policy] + ["%s:=%s" % kv for kv in extra.items()]


def test_deploy_runs_its_episodes_records_them_and_exits_cleanly(spawn, rospy_node, policies, tmp_path):
    from op3_walk.msg import EpisodeStats
    stats = []
    sub = rospy_node.Subscriber("/walker/episode", EpisodeStats, stats.append)
    try:
        out = tmp_path / "deploy"
        proc = spawn(deploy_args(policies["a"], episodes=2, seed=4, record="true", out_dir=out), name="deploy")
        # policy_node is required (its crash would end the launch); after its two episodes it ends the launch
        # itself, quietly: exit 0 and no "REQUIRED process [policy-2] has died!" banner.
        assert proc.wait(timeout=LAUNCH_TIMEOUT) == 0, proc.log()[-4000:]
        assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
        assert "REQUIRED process" not in proc.log() and "has died" not in proc.log(), proc.log()[-4000:]
    finally:
        sub.unregister()
    wait_until(lambda: len(stats) >= 2, 10, what="both EpisodeStats")
    assert [s.episode for s in stats] == [1, 2]
    assert all(s.length > 0 and s.total_updates == 0 and s.reward_term_names for s in stats)
    assert stats[1].total_env_steps == stats[0].length + stats[1].length
    log = proc.log()
    assert "policy: 2 episode(s)" in log and "inference mean" in log and "Traceback" not in log

    info = subprocess.run(["rosbag", "info", "--yaml", str(out / "session.bag")], capture_output=True, text=True,
                          check=True).stdout
    topics = {t["topic"].lstrip("/"): t["messages"] for t in yaml.safe_load(info)["topics"]}
    steps = sum(s.length for s in stats)
    assert topics["walker/episode"] == 2
    # One answer per non-terminal state and never a repeat. (Not checked for equality: rospy drops the oldest queued
    # message when a subscriber falls behind, and the controller's state queue is short, so a recorder starved of
    # CPU may miss some.)
    assert 0 < topics["walker/action"] <= steps
    assert 0 < topics["walker/state"] <= steps + 2     # plus each episode's reset state


def policy_pid(launch) -> int:
    """The policy_node process under a running roslaunch (found by its command line)."""
    for pid in children_of(launch.popen.pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"policy_node") for a in args) and b"__name:=policy" in args:
            return pid
    return 0


def test_policy_node_swaps_policies_refuses_bad_ones_and_never_loads_torch(spawn, rospy_node, policies):
    rospy = rospy_node
    from op3_walk.msg import EpisodeStats, WalkerAction, WalkerState
    from op3_walk.policy.runtime import NumpyPolicy
    from op3_walk.srv import LoadPolicy

    states, actions, stats = {}, [], []
    subs = [rospy.Subscriber("/walker/state", WalkerState,
                             lambda m: states.setdefault((m.episode, m.step), np.array(m.observation, np.float32)),
                             tcp_nodelay=True),
            rospy.Subscriber("/walker/action", WalkerAction, actions.append, tcp_nodelay=True),
            rospy.Subscriber("/walker/episode", EpisodeStats, stats.append)]
    proc = spawn(deploy_args(policies["a"], episodes=0), name="deploy_forever")
    try:
        try:
            rospy.wait_for_service("/policy/load", timeout=90)
        except rospy.ROSException:
            raise AssertionError("policy_node did not start:\n" + proc.log()[-4000:])
        proc.track()
        pid = wait_until(lambda: policy_pid(proc), 30, what="the policy_node process")
        with open("/proc/%d/maps" % pid) as fh:
            maps = fh.read()
        assert "numpy" in maps, "not the policy node's python?"
        assert "libtorch" not in maps and "/torch/" not in maps, "policy_node loaded torch"

        a, b = NumpyPolicy(policies["a"]), NumpyPolicy(policies["b"])

        def verdicts(msgs):
            """For each action whose state we saw: 'a', 'b' or '?' by which policy gives that action there."""
            out = []
            for m in msgs:
                obs = states.get((m.episode, m.step))
                if obs is None:
                    continue
                sent = np.array(m.action, np.float32)
                out.append("a" if np.allclose(sent, a.act(obs), atol=1e-5) else
                           "b" if np.allclose(sent, b.act(obs), atol=1e-5) else "?")
            return out

        wait_until(lambda: verdicts(list(actions)).count("a") >= 20, 60, what="20 actions of policy a")

        load = rospy.ServiceProxy("/policy/load", LoadPolicy)
        refused = load(path=policies["corrupt"])
        assert not refused.success and "cannot be read" in refused.message
        refused = load(path=policies["op3"])
        assert not refused.success and "trained for robot op3, not plen" in refused.message
        refused = load(path=policies["a"] + ".missing")
        assert not refused.success and "does not exist" in refused.message
        assert "?" not in verdicts(list(actions)) and "b" not in verdicts(list(actions))   # still policy a

        before = len(actions)
        loaded = load(path=policies["b"])
        assert loaded.success, loaded.message
        assert "sac policy" in loaded.message
        wait_until(lambda: verdicts(list(actions)[before:]).count("b") >= 20, 60, what="20 actions of policy b")
        seen = "".join(verdicts(list(actions)))
        assert "?" not in seen
        assert seen.index("b") > 0 and "a" not in seen[seen.index("b"):], "policy a acted after the swap"
        wait_until(lambda: len(stats) >= 1, 60, what="an EpisodeStats")
        assert proc.popen.poll() is None, "episodes:=0 must keep running:\n" + proc.log()[-3000:]
    finally:
        for sub in subs:
            sub.unregister()
    assert proc.interrupt(timeout=40) == 0, proc.log()[-4000:]
    assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
    log = proc.log()
    assert "refused to load" in log and "now running sac policy" in log and "policy loads" in log


def connected(node: str, topic: str) -> bool:
    """Whether ``node`` has a live connection on ``topic`` (its bus info, what ``rosnode info`` shows)."""
    import rosgraph
    import rosnode
    from xmlrpc.client import ServerProxy
    try:
        uri = rosnode.get_api_uri(rosgraph.Master("/op3_walk_test"), node, skip_cache=True)
        code, _, info = ServerProxy(uri).getBusInfo("/op3_walk_test")
    except Exception:   # not up yet
        return False
    return code == 1 and any(c[4] == topic and c[5] for c in info)


def test_policy_node_acts_on_episodes_started_by_someone_else(spawn, rospy_node, policies):
    """start_episodes:=false: the node answers whatever episode another client resets, reports it, and exits after
    its episode budget."""
    rospy = rospy_node
    from op3_walk.msg import EpisodeStats
    from op3_walk.srv import ResetEpisode
    stats = []
    sub = rospy.Subscriber("/walker/episode", EpisodeStats, stats.append)
    controller = spawn(["rosrun", "op3_walk", "controller_node", "__name:=passive_controller"], name="controller")
    node = spawn(["rosrun", "op3_walk", "policy_node", "__name:=passive_policy", "_policy:=%s" % policies["a"],
                  "_robot:=plen", "_task:=walk", "_start_episodes:=false", "_episodes:=1"], name="policy")
    try:
        rospy.wait_for_service("/walker/reset", timeout=60)
        rospy.wait_for_service("/policy/load", timeout=60)
        wait_until(lambda: sub.get_num_connections() > 0, 30, what="walker/episode connection")
        # the reset state is published once: the node's state subscription must be connected (not just registered)
        wait_until(lambda: connected("/passive_policy", "/walker/state"), 30, what="policy_node receiving states")
        reset = rospy.ServiceProxy("/walker/reset", ResetEpisode)
        first = reset(seed=5).state
        assert node.wait(timeout=120) == 0, node.log()[-4000:]
        wait_until(lambda: stats, 10, what="the EpisodeStats")
        assert len(stats) == 1 and stats[0].length > 0 and stats[0].episode == 1
        log = node.log()
        assert "acting on episodes started by others" in log and "policy: 1 episode(s)" in log
        assert first.episode == 1
    finally:
        sub.unregister()
    assert controller.interrupt(timeout=30) == 0


@pytest.mark.parametrize("name,args,message", [
    ("policyless", [], "parameter ~policy"),
    ("mismatched", ["_policy:=OP3", "_robot:=plen", "_task:=walk"], "trained for robot op3, not plen"),
    ("corrupted", ["_policy:=CORRUPT"], "cannot be read"),
])
def test_policy_node_refuses_to_start_with_a_bad_policy(spawn, policies, name, args, message):
    args = [a.replace("OP3", policies["op3"]).replace("CORRUPT", policies["corrupt"]) for a in args]
    proc = spawn(["rosrun", "op3_walk", "policy_node", "__name:=%s_policy" % name] + args, name=name)
    assert proc.wait(timeout=60) == 1, proc.log()[-3000:]
    log = proc.log()
    assert message in log and "Traceback" not in log, log[-3000:]


def test_policy_node_gives_up_clearly_when_the_controller_dies(spawn, rospy_node, policies):
    rospy = rospy_node
    from op3_walk.msg import WalkerAction
    actions = []
    sub = rospy.Subscriber("/walker/action", WalkerAction, actions.append)
    controller = spawn(["rosrun", "op3_walk", "controller_node", "__name:=doomed_controller"], name="controller")
    node = spawn(["rosrun", "op3_walk", "policy_node", "__name:=orphaned_policy", "_policy:=%s" % policies["a"],
                  "_episodes:=0", "_state_timeout:=3.0"], name="policy")
    try:
        wait_until(lambda: len(actions) > 50, 90, what="the policy acting")
        controller.track()
        controller.kill()                       # mid-episode, no goodbye
        assert node.wait(timeout=60) == 1, node.log()[-3000:]
    finally:
        sub.unregister()
    log = node.log()
    assert "no new walker/state within 3.0 s (state_timeout) after episode" in log, log[-3000:]
    assert "Traceback" not in log


# m in 10 s: PLEN the 0.1 m/s; OP3 beyond its reference gait's 1.40 m (docs/results.md)
@pytest.mark.parametrize("robot, min_distance", [("op3", 1.5), ("plen", 1.0)])
def test_the_shipped_policy_walks_out_of_the_box_without_torch(spawn, torch_blocked, robot, min_distance):
    """``roslaunch op3_walk deploy.launch robot:=R backend:=pybullet``, nothing else: the robot's shipped policy
    (policies/R_walk.npz, docs/results.md) on its recipe task walks a 10 s episode forward without falling, and no
    process imports torch (a package named torch that raises on import comes first on PYTHONPATH).  The episode
    is read from policy_node's log: it is over in about two seconds, sooner than a test subscriber connects."""
    import re
    proc = spawn(["roslaunch", "op3_walk", "deploy.launch", "robot:=%s" % robot, "backend:=pybullet"],
                 name="deploy_%s" % robot)
    assert proc.wait(timeout=LAUNCH_TIMEOUT) == 0, proc.log()[-4000:]
    assert not proc.orphans()
    log = proc.log()
    assert "ImportError" not in log and "Traceback" not in log
    assert "policies/%s_walk.npz" % robot in log and "task %s_walk_fast" % robot in log, log[-4000:]
    episode = re.search(r"policy: episode 1: return (\S+), (\d+) steps, (\S+) m, (.+)", log)
    assert episode, log[-4000:]
    steps, distance, end = int(episode.group(2)), float(episode.group(3)), episode.group(4).strip()
    assert steps == 500 and end == "time limit" and distance >= min_distance, episode.group(0)
