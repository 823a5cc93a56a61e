"""Every script in scripts/ answers --help at once, without a ROS master (ROS_MASTER_URI points at a dead port):
the nodes parse their command line before rospy.init_node, which would wait for a master forever. The nodes' help
lists their private parameters. (The same scripts from the install space: test_install_space.py.)"""
import dataclasses
import importlib
import os
import subprocess
import time

import pytest

from ros_harness import ROOT, free_port
from op3_walk.ros.readme import NODES

SCRIPTS = sorted(name for name in os.listdir(os.path.join(ROOT, "scripts"))
                 if os.access(os.path.join(ROOT, "scripts", name), os.X_OK))
HELP_TIMEOUT = 60.0   # s; a node waiting for a master never returns, a healthy --help takes ~1 s (learner: torch)


def dead_master_env(tmp_path):
    env = dict(os.environ)
    env.update(ROS_MASTER_URI="http://127.0.0.1:%d" % free_port(), ROS_HOME=str(tmp_path))
    return env


def params_of(script):
    """The parameter class of a node script (None for the other scripts)."""
    for node, module, cls, _ in NODES:
        if node == script:
            return getattr(importlib.import_module(module), cls)
    return None


def run_script(args, tmp_path):
    try:
        return subprocess.run(["rosrun", "op3_walk"] + args, env=dead_master_env(tmp_path), capture_output=True,
                              text=True, timeout=HELP_TIMEOUT, cwd=str(tmp_path))
    except subprocess.TimeoutExpired:
        raise AssertionError("%s still running after %.0f s (waiting for a ROS master?)" % (args, HELP_TIMEOUT))


def test_every_node_script_is_checked():
    assert {node for node, _, _, _ in NODES} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_without_a_master(script, tmp_path):
    started = time.monotonic()
    out = run_script([script, "--help"], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("usage: ") and "-h, --help" in out.stdout, out.stdout
    print("%s --help: %.1f s" % (script, time.monotonic() - started))
    params = params_of(script)
    if params is not None:   # a node: its private parameters are listed
        missing = [f.name for f in dataclasses.fields(params) if "~%s (default: " % f.name not in out.stdout]
        assert not missing, "%s --help lacks %s:\n%s" % (script, missing, out.stdout)


def test_node_rejects_unknown_arguments_but_passes_ros_ones(tmp_path):
    """ROS remappings and private parameters pass (rospy.myargv drops them); anything else is a usage error, also
    before any master is contacted."""
    out = run_script(["policy_node", "--no-such-option", "__name:=x", "_robot:=plen", "walker/state:=s"], tmp_path)
    assert out.returncode == 2 and "unrecognized arguments: --no-such-option" in out.stderr, out.stderr
