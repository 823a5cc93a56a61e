"""README.md's node-parameter and launch-argument tables are generated from the code; they must be current."""
from op3_walk.ros import readme


def test_readme_ros_tables_are_current():
    assert readme.main(["--check"]) == 0, "run: python -m op3_walk.ros.readme --write"


def test_every_node_and_launch_file_is_in_the_tables():
    text = readme.tables()
    for node in ("controller_node", "learner_node", "policy_node", "gazebo_standin", "op3_standin"):
        assert "#### %s" % node in text
    for launch in ("train", "deploy", "actors", "record", "replay", "view", "gazebo_standin", "op3_standin"):
        assert "#### %s.launch" % launch in text
