"""roslaunch-check (roslaunch's own static check: XML, args, substitutions, packages and nodes found, package.xml
declaring the packages of the nodes) reports nothing for every launch file, the included ones too."""
import glob
import os
import subprocess

import pytest

from ros_harness import ROOT

LAUNCH_FILES = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "launch", "**", "*.launch"),
                                                                  recursive=True))
# rospkg's note when rosdep has never been initialised on the machine (`rosdep init`), not a finding about a file
ROSDEP_NOTE = "the rosdep view is empty: call 'sudo rosdep init' and 'rosdep update'"


def test_every_launch_file_is_checked():
    assert "launch/view.launch" in LAUNCH_FILES and "launch/include/actor_chain.launch" in LAUNCH_FILES


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_roslaunch_check_reports_nothing(launch_file, tmp_path):
    # `rosrun roslaunch roslaunch-check` finds the script where the distribution puts it (Noetic: lib/roslaunch,
    # Debian: /usr/share/roslaunch/scripts); -o keeps its JUnit file out of ROS_HOME.
    result = subprocess.run(["rosrun", "roslaunch", "roslaunch-check", "-o", str(tmp_path / "check.xml"), launch_file],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            timeout=120)
    complaints = [line for line in result.stderr.splitlines() if line.strip() and line.strip() != ROSDEP_NOTE]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
    assert "passed" in result.stdout.splitlines()
