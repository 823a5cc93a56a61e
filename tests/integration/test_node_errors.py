"""User errors end a node with one clear fatal line and exit status 1 (no traceback, nothing left running);
malformed messages are refused by the conversions with the problem named.

Each node gets a unique name: rosrun's ``_param:=value`` stays on the shared parameter server under the node's
name, and a later test's node of the same name would (rightly) refuse the leftover."""
import numpy as np
import pytest
from gymnasium import spaces


def run_until_exit(spawn, args, name, timeout=60):
    proc = spawn(args, name=name)
    code = proc.wait(timeout=timeout)
    return code, proc.log()


def test_unknown_private_parameter_is_fatal(spawn):
    code, log = run_until_exit(spawn, ["rosrun", "op3_walk", "controller_node", "__name:=typo_controller",
                                              "_robto:=plen"], "controller")
    assert code == 1, log
    assert "unknown key(s) robto" in log and "Traceback" not in log


def test_learner_without_controller_gives_up_clearly(spawn, tmp_path):
    code, log = run_until_exit(spawn, ["rosrun", "op3_walk", "learner_node", "__name:=lonely_learner",
                                       "_connect_timeout:=2.0",
                                       "_out_dir:=%s" % (tmp_path / "out"), "_progress:=false"], "learner")
    assert code == 1, log
    assert "no controller" in log and "walker/reset" in log and "Traceback" not in log


def test_corrupt_resume_checkpoint_is_refused_before_connecting(spawn, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint" * 64)
    code, log = run_until_exit(spawn, ["rosrun", "op3_walk", "learner_node", "__name:=resuming_learner",
                                       "_resume:=%s" % bad,
                                       "_connect_timeout:=30.0", "_progress:=false"], "learner", timeout=25)
    assert code == 1, log
    assert "bad.pt" in log and "Traceback" not in log


def test_conversions_refuse_malformed_messages():
    from op3_walk.msg import WalkerAction, WalkerState
    from op3_walk.ros.conversions import action_from_message, observation_from_message
    state = WalkerState(episode=1, step=4, observation=[0.0] * 61)
    with pytest.raises(ValueError, match="61 values, expected 62"):
        observation_from_message(state, 62)
    state.observation = [0.0] * 61 + [float("nan")]
    with pytest.raises(ValueError, match="non-finite observation at indices \\[61\\]"):
        observation_from_message(state, 62)
    state.observation = list(np.linspace(-1, 1, 62))
    assert observation_from_message(state, 62).dtype == np.float32
    box, discrete = spaces.Box(-1.0, 1.0, (18,)), spaces.Discrete(27)
    with pytest.raises(ValueError, match="discrete action 3"):
        action_from_message(WalkerAction(discrete_action=3), box)
    with pytest.raises(ValueError, match="non-finite"):
        action_from_message(WalkerAction(action=[0.0] * 17 + [float("inf")], discrete_action=-1), box)
    with pytest.raises(ValueError, match="has 2 values, expected 18"):
        action_from_message(WalkerAction(action=[0.0, 1.0], discrete_action=-1), box)
    assert action_from_message(WalkerAction(discrete_action=26), discrete) == 26
    with pytest.raises(ValueError, match="outside \\[0, 27\\)"):
        action_from_message(WalkerAction(discrete_action=27), discrete)
    with pytest.raises(ValueError, match="expected a discrete action"):
        action_from_message(WalkerAction(action=[0.5], discrete_action=-1), discrete)
