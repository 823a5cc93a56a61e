"""Robot descriptions (joints, limits, gains, rates) loaded from ``config/robots/*.yaml``."""
from op3_walk.robots.description import ROBOTS_DIR, JointConfig, RobotConfig, find_config, load_robot

__all__ = ["ROBOTS_DIR", "JointConfig", "RobotConfig", "find_config", "load_robot"]
