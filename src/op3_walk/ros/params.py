"""Private ROS parameters -> typed dataclasses (unknown parameters rejected, like the YAML configs), and the
common ``run_node`` wrapper that turns a user error into one clear fatal log line and a non-zero exit, and
``parse_node_args``: a node's ``--help`` answered before ``rospy.init_node`` (which waits for a master)."""
import argparse
import dataclasses
import sys
import textwrap
from typing import Any, Callable, List, Optional, Type, TypeVar

import rospy

from op3_walk.config import from_dict

T = TypeVar("T")


def _default_text(field: Any) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, bool):
        return str(value).lower()
    return '""' if value == "" else "{}" if value == {} else str(value)


def params_help(cls: Type[Any], width: int = 100) -> str:
    """The private parameters of a node's parameter class: one entry per field, default and documentation."""
    lines = ["private parameters (_name:=value on the command line, <param> or <rosparam> in a launch file;",
             "README.md, section 'Node parameters', lists the nested ones too):"]
    for field in dataclasses.fields(cls):
        text = field.metadata.get("doc", "") if field.metadata else ""
        lines.append("  ~%s (default: %s)" % (field.name, _default_text(field)))
        lines += textwrap.wrap(" ".join(text.split()), width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


def parse_node_args(prog: str, params_cls: Type[Any], module_doc: Optional[str],
                    argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the node's command line before ``rospy.init_node``: ``--help`` prints what the node does and its private
    parameters and exits 0 without a ROS master; any other argument (ROS remappings ``a:=b``, ``_param:=value``
    and ``__name:=...`` aside, which ``rospy.myargv`` leaves to rospy) is an error (exit status 2)."""
    args = rospy.myargv(sys.argv if argv is None else argv)
    summary = (module_doc or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(prog=prog, description=textwrap.fill(" ".join(summary.split()), 100),
                                     epilog=params_help(params_cls),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser.parse_args(args[1:])


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
