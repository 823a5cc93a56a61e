"""Private ROS parameters -> typed dataclasses (unknown parameters rejected, like the YAML configs)."""
from typing import Type, TypeVar

import rospy

from op3_walk.config import from_dict

T = TypeVar("T")


def load_private_params(cls: Type[T]) -> T:
    """Build ``cls`` from the node's private namespace (``~``); a typo'd or mistyped parameter is an error."""
    raw = rospy.get_param("~", {})
    return from_dict(cls, raw, where="%s private parameters" % rospy.get_name())
