"""Launch files and a broken configuration (issue 14, defects 3 and 7): a controller that cannot start ends
train.launch at once with its own error, and private parameters left on the master by one launch never reach the
next (clear_params on every node)."""
import glob
import os
import time
import xml.etree.ElementTree as ET

from ros_harness import ROOT
from test_ros_suite import train_launch

TYPO = "watchdog_timout_s: 0.2\n"   # watchdog_timeout_s, misspelt: an unknown key


def test_every_node_of_every_launch_file_clears_its_private_parameters():
    files = sorted(glob.glob(os.path.join(ROOT, "launch", "**", "*.launch"), recursive=True))
    nodes = [(os.path.relpath(path, ROOT), node) for path in files for node in ET.parse(path).getroot().iter("node")]
    assert len(nodes) >= 15
    missing = [(path, node.get("name")) for path, node in nodes if node.get("clear_params") != "true"]
    assert not missing, "nodes without clear_params=\"true\": %s" % missing


def test_a_controller_that_cannot_start_ends_train_launch_at_once_with_its_error(spawn, tmp_path,
                                                                               small_agent_config):
    """Defect 7: the controller was not required, so the learner waited its 60 s connect_timeout and blamed a
    missing service."""
    bad = tmp_path / "bad_controller.yaml"
    bad.write_text(TYPO)
    started = time.monotonic()
    proc = spawn(train_launch(tmp_path / "out", small_agent_config, steps=200, controller_params=bad), name="bad")
    proc.wait(timeout=150)
    elapsed = time.monotonic() - started
    log = proc.log()
    assert "unknown key" in log and "watchdog_timout_s" in log, log[-4000:]
    assert "did not appear" not in log, log[-4000:]
    assert elapsed < 40.0, "the launch ran %.0f s after its controller died:\n%s" % (elapsed, log[-3000:])
    assert not proc.orphans()


def test_a_typo_in_one_launch_does_not_break_the_next_launch_on_the_same_roscore(spawn, tmp_path,
                                                                                small_agent_config):
    """Defect 3: the first launch's private parameters stayed on the master, so a default train.launch on the
    same roscore died with "unknown key(s)" until `rosparam delete`."""
    bad = tmp_path / "bad_controller.yaml"
    bad.write_text(TYPO)
    first = spawn(train_launch(tmp_path / "first", small_agent_config, steps=200, controller_params=bad),
                  name="typo")
    first.wait(timeout=150)
    assert "watchdog_timout_s" in first.log()
    second = spawn(train_launch(tmp_path / "second", small_agent_config, steps=200), name="default")
    assert second.wait(timeout=240) == 0, second.log()[-4000:]
    log = second.log()
    assert "unknown key" not in log, log[-4000:]
    assert os.path.exists(tmp_path / "second" / "checkpoint.pt"), log[-4000:]
    assert not second.orphans()
