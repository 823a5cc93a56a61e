"""Private ROS parameters -> typed dataclasses (unknown parameters rejected, like the YAML configs), and the
common ``run_node`` wrapper that turns a user error into one clear fatal log line and a non-zero exit."""
import sys
from typing import Callable, Type, TypeVar

import rospy

from op3_walk.config import from_dict

T = TypeVar("T")


def load_private_params(cls: Type[T]) -> T:
    """Build ``cls`` from the node's private namespace (``~``); a typo'd or mistyped parameter is an error."""
    raw = rospy.get_param("~", {})
    return from_dict(cls, raw, where="%s private parameters" % rospy.get_name())


# Errors a user can cause (bad parameter or config, no controller, incompatible checkpoint or data): reported in
# one line, no traceback. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, RuntimeError, OSError)


def run_node(name: str, body: Callable[[], None]) -> None:
    """``rospy.init_node(name)`` then ``body()``; a user error ends the process with exit status 1."""
    rospy.init_node(name)
    try:
        body()
    except USER_ERRORS as exc:
        rospy.logfatal("%s: %s", rospy.get_name(), exc)
        rospy.signal_shutdown(str(exc))
        sys.exit(1)
