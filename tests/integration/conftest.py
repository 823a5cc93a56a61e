"""Fixtures of the integration tests (defined in ros_harness.py, which the tests import their helpers from: a
module named conftest would clash with tests/hardware/conftest.py when pytest collects both folders)."""
from ros_harness import ros_master, rospy_node, small_agent_config, spawn, torch_blocked  # noqa: F401  (pytest fixtures)
