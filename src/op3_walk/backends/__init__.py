"""Robot backends: one interface (``Backend``, ``RobotState``) for simulators, ROS bridges and hardware.

``PyBulletBackend`` is imported lazily from ``op3_walk.backends.pybullet_backend`` so that hosts without pybullet
(the robot's Raspberry Pi) can still use the interface.
"""
from op3_walk.backends.base import STANDARD_GRAVITY, Backend, RobotState, clamp_targets, quat_to_matrix

__all__ = ["STANDARD_GRAVITY", "Backend", "RobotState", "clamp_targets", "quat_to_matrix"]
