"""Who drives an episode: the controller applies actions only from the node that reset it, refuses resets from
other nodes while that episode runs, and counts what it ignores; the learner's env says when someone else's reset
ended its episode (issue 14, defects 5 and 9)."""
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from ros_harness import wait_until
from test_deploy import connected
from test_ros_suite import Diagnostics

# A stray node on the same master: answers every non-terminal WalkerState (episode e, step k) of namespace NS with
# its own WalkerAction (e, k), as a second policy or learner started by mistake would.
INTRUDER = r'''
import sys
import rospy
from op3_walk.msg import WalkerAction, WalkerState
ns, value = sys.argv[1], float(sys.argv[2])
rospy.init_node("intruder")
answered = set()
pub = rospy.Publisher(ns + "walker/action", WalkerAction, queue_size=100, tcp_nodelay=True)
def on_state(s):
    if (s.episode, s.step) not in answered and not (s.terminated or s.truncated):
        answered.add((s.episode, s.step))
        pub.publish(WalkerAction(episode=s.episode, step=s.step, action=[value] * len(s.joint_names),
                                 discrete_action=-1))
rospy.Subscriber(ns + "walker/state", WalkerState, on_state, tcp_nodelay=True)
rospy.spin()
'''

# A node that resets the controller (owning the episode it starts), then waits to be killed.
RESETTER = r'''
import sys
import rospy
from op3_walk.srv import ResetEpisode
rospy.init_node("first_owner")
rospy.wait_for_service(sys.argv[1] + "walker/reset", timeout=60)
answer = rospy.ServiceProxy(sys.argv[1] + "walker/reset", ResetEpisode)(seed=0)
print("reset: success=%s episode=%d" % (answer.success, answer.state.episode), flush=True)
rospy.spin()
'''


def start_controller(spawn, rospy_node, ns, *params):
    proc = spawn(["rosrun", "op3_walk", "controller_node", "__name:=controller", "__ns:=%s" % ns,
                  "_publish_tf:=false", "_publish_odom:=false", "_diagnostics_rate_hz:=5"] + list(params),
                 name="controller_%s" % ns)
    try:
        rospy_node.wait_for_service("/%s/walker/reset" % ns, timeout=60)
    except rospy_node.ROSException:
        raise AssertionError("controller_node did not start:\n" + proc.log()[-4000:])
    return proc


def start_script(spawn, tmp_path, name, text, *args):
    path = tmp_path / ("%s.py" % name)
    path.write_text(text)
    return spawn([sys.executable, str(path)] + list(args), name=name)


class Owner:
    """The test process as the episode's owner: resets the controller and sends actions of its own."""

    def __init__(self, rospy, ns):
        from op3_walk.msg import WalkerAction, WalkerState
        from op3_walk.srv import ResetEpisode
        self.states = []
        self.sub = rospy.Subscriber("/%s/walker/state" % ns, WalkerState, self.states.append, tcp_nodelay=True)
        self.pub = rospy.Publisher("/%s/walker/action" % ns, WalkerAction, queue_size=10, tcp_nodelay=True)
        self.reset = rospy.ServiceProxy("/%s/walker/reset" % ns, ResetEpisode)
        self.Action = WalkerAction
        wait_until(lambda: self.pub.get_num_connections() and self.sub.get_num_connections(), 30,
                   what="topic connections")

    def send(self, episode, step, value=0.0):
        self.pub.publish(self.Action(episode=episode, step=step, action=[value] * 18, discrete_action=-1))

    def steps(self, episode):
        return [s.step for s in list(self.states) if s.episode == episode]

    def close(self):
        self.sub.unregister()
        self.pub.unregister()


def wait_connected(node, *topics):
    wait_until(lambda: all(connected(node, t) for t in topics), 30, what="%s connected on %s" % (node, topics))


def test_lockstep_controller_applies_only_the_resetting_nodes_actions_and_counts_the_rest(spawn, rospy_node,
                                                                                         tmp_path):
    """Defect 5: a foreign node answering every state was applied in place of the learner's actions (pushing the
    controller ahead of it); clipped actions were not counted."""
    controller = start_controller(spawn, rospy_node, "own")
    intruder = start_script(spawn, tmp_path, "intruder", INTRUDER, "/own/", "0.9")
    wait_connected("/intruder", "/own/walker/action", "/own/walker/state")
    diag = Diagnostics(rospy_node)
    owner = Owner(rospy_node, "own")
    try:
        first = owner.reset(seed=1)
        assert first.success, first.message
        episode = first.state.episode
        for step in range(4):
            # the intruder has answered the current state (episode, step): nothing moves until the owner does
            rospy_node.sleep(0.5)
            assert owner.steps(episode) == list(range(step + 1)), \
                "the controller stepped on the intruder's action: %s" % owner.steps(episode)
            owner.send(episode, step, value=1.5 if step == 2 else 0.0)   # one out-of-range action, clipped
            wait_until(lambda: step + 1 in owner.steps(episode), 10, what="state %d" % (step + 1))
        wait_until(lambda: int((diag.find("op3_walk controller /own") or {}).get("foreign actions", 0)) >= 4, 10,
                   what="foreign actions on /diagnostics")
        values = diag.find("op3_walk controller /own")
        assert values["repeated actions"] == "0", "the owner's actions were taken for repeats: %s" % values
        assert values["clipped actions"] == "1" and values["episode owner"] == rospy_node.get_name(), values
        assert values["dropped actions"] == "0", values
        assert intruder.popen.poll() is None
    finally:
        owner.close()
        diag.close()
    log = controller.log()
    assert "ignored an action from /intruder" in log and "clipped" in log, log[-3000:]
    assert controller.interrupt(timeout=30) == 0


def test_realtime_controller_ignores_a_foreign_node_and_its_watchdog_ends_the_owners_silent_episode(
        spawn, rospy_node, tmp_path):
    """Realtime (hardware's mode): the owner stops acting; a foreign node's actions must not keep the robot going."""
    controller = start_controller(spawn, rospy_node, "rtown", "_mode:=realtime", "_watchdog_timeout_s:=0.3")
    start_script(spawn, tmp_path, "intruder", INTRUDER, "/rtown/", "0.0")
    wait_connected("/intruder", "/rtown/walker/action", "/rtown/walker/state")
    owner = Owner(rospy_node, "rtown")
    try:
        first = owner.reset(seed=1)
        assert first.success, first.message
        episode = first.state.episode
        wait_until(lambda: any(s.episode == episode and s.truncated for s in list(owner.states)), 10,
                   what="the watchdog ending the episode")
        end = [s for s in list(owner.states) if s.episode == episode and s.truncated][0]
        assert end.end_reason == "watchdog" and end.step == 0, (end.end_reason, end.step)
    finally:
        owner.close()
    log = controller.log()
    assert "ignored an action from /intruder" in log, log[-3000:]
    assert controller.interrupt(timeout=30) == 0


def test_a_foreign_reset_is_refused_while_the_owners_episode_runs_and_accepted_once_the_owner_is_gone(
        spawn, rospy_node, tmp_path):
    """Defect 9 (reset storm): a reset from another node ended the learner's episode; now it is refused with a
    message naming the owner, counted, and the owner's episode goes on.  A killed owner does not block resets."""
    controller = start_controller(spawn, rospy_node, "storm")
    diag = Diagnostics(rospy_node)
    owner = Owner(rospy_node, "storm")
    try:
        # another node starts an episode, so it owns it: the test process's reset is refused, naming it ...
        other = start_script(spawn, tmp_path, "first_owner", RESETTER, "/storm/")
        wait_until(lambda: "reset: success=True" in other.log(), 60, what="the other node's reset")
        refused = owner.reset(seed=-1)
        assert not refused.success and not refused.retry, refused
        assert "/first_owner's episode 1 was running" in refused.message, refused.message
        # ... until that node dies without a word: then the reset is accepted at once
        other.track()
        other.kill()
        started = time.monotonic()
        first = owner.reset(seed=1)
        assert first.success, first.message
        assert time.monotonic() - started < 5.0
        episode = first.state.episode
        owner.send(episode, 0)
        wait_until(lambda: 1 in owner.steps(episode), 10, what="state 1")
        for _ in range(3):   # a storm of resets from another node (rosservice is a node of its own)
            out = subprocess.run(["rosservice", "call", "/storm/walker/reset", "seed: -1"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, universal_newlines=True, timeout=60).stdout
            answer = yaml.safe_load(out)
            assert answer["success"] is False and answer["retry"] is False, out
            assert "while %s's episode %d was running" % (rospy_node.get_name(), episode) in answer["message"], out
        owner.send(episode, 1)                            # the owner's episode was not touched
        wait_until(lambda: 2 in owner.steps(episode), 10, what="state 2 of the owner's episode")
        assert {s.episode for s in list(owner.states)} == {1, episode}
        assert owner.steps(episode) == [0, 1, 2]
        wait_until(lambda: (diag.find("op3_walk controller /storm") or {}).get("resets refused (foreign)") == "4",
                   10, what="4 refused resets on /diagnostics")
    finally:
        owner.close()
        diag.close()
    log = controller.log()
    assert "walker/reset called by %s while /first_owner's episode 1 was running" % rospy_node.get_name() in log
    assert "/first_owner no longer answers; reset accepted" in log, log[-3000:]
    assert controller.interrupt(timeout=30) == 0


def test_the_learner_env_says_when_another_nodes_reset_ended_its_episode(rospy_node):
    """The learner's side of defect 9: its episode ended by someone else's reset was reported after state_timeout
    as "controller stopped or its host unreachable".  Here the test process plays the controller."""
    from op3_walk.envs.walk_env import load_task, make_spaces
    from op3_walk.msg import WalkerState
    from op3_walk.robots import load_robot
    from op3_walk.ros.remote_env import ControllerUnavailable, RosWalkEnv
    from op3_walk.srv import ResetEpisode, ResetEpisodeResponse
    robot, task = load_robot("plen"), load_task("walk")
    observation_space, _ = make_spaces(robot, task)
    n_obs = int(observation_space.shape[0])

    def state(episode, step):
        return WalkerState(episode=episode, step=step, observation=[0.0] * n_obs, observation_names=["all"],
                           observation_sizes=[n_obs])

    from op3_walk.msg import WalkerAction
    pub = rospy_node.Publisher("/fake/walker/state", WalkerState, queue_size=10, tcp_nodelay=True)
    actions = rospy_node.Subscriber("/fake/walker/action", WalkerAction, lambda msg: None)
    service = rospy_node.Service("/fake/walker/reset", ResetEpisode,
                                 lambda req: ResetEpisodeResponse(success=True, state=state(7, 0)))
    env = RosWalkEnv(robot, task, state_topic="/fake/walker/state", action_topic="/fake/walker/action",
                     reset_service="/fake/walker/reset", state_timeout=10.0, connect_timeout=30.0)
    try:
        env.reset()
        env.step_async(np.zeros(18, dtype=np.float32))
        started = time.monotonic()
        pub.publish(state(8, 0))                 # another node reset the controller: its episode 8 begins
        with pytest.raises(ControllerUnavailable) as caught:
            env.step_wait()
        assert time.monotonic() - started < 3.0, "waited out the state timeout"
        message = str(caught.value)
        assert "episode 7 was ended" in message and "another node" in message and "/fake/walker/reset" in message
        assert "not a controller failure" in message
        assert not env.lost and env.available()
    finally:
        env.close()
        service.shutdown()
        pub.unregister()
        actions.unregister()
