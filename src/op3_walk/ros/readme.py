"""The README's tables of node parameters and launch-file arguments, generated from the code, so they cannot drift.

Node parameters come from the nodes' parameter dataclasses (name, default, the ``doc()`` text with its unit);
launch arguments from the ``<arg>`` elements of ``launch/*.launch`` (name, default, ``doc``).  The tables sit
between ``<!-- ros-tables:begin -->`` and ``<!-- ros-tables:end -->`` in README.md.

    python -m op3_walk.ros.readme --write     # regenerate
    python -m op3_walk.ros.readme --check     # exit 1 when README.md is stale (a test runs this)
"""
import dataclasses
import importlib
import os
import sys
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Tuple

from op3_walk.readme_blocks import block_main, replace_block

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BEGIN, END = "<!-- ros-tables:begin -->", "<!-- ros-tables:end -->"

# (node, module, parameter class, nested parameter classes: field -> "module:Class")
NODES: List[Tuple[str, str, str, Dict[str, Any]]] = [
    ("controller_node", "op3_walk.ros.controller", "ControllerParams",
     {"gazebo": "op3_walk.ros.gazebo_bridge:GazeboBridgeParams",
      "hardware": ("op3_walk.ros.controller:HardwareParams",
                   {"op3_framework": "op3_walk.ros.op3_bridge:Op3FrameworkParams"})}),
    ("learner_node", "op3_walk.ros.learner", "LearnerParams", {}),
    ("policy_node", "op3_walk.ros.policy_node", "PolicyParams", {}),
    ("gazebo_standin", "op3_walk.ros.gazebo_standin", "GazeboStandinParams", {}),
    ("op3_standin", "op3_walk.ros.op3_standin", "Op3StandinParams", {}),
]


def _cls(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    if isinstance(value, bool):
        return "`%s`" % str(value).lower()
    if isinstance(value, str):
        return "`\"%s\"`" % value if value == "" else "`%s`" % value
    return "`%s`" % (value,)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def param_rows(cls: Any, prefix: str = "~", nested: dict = None) -> List[str]:
    rows = []
    for field in dataclasses.fields(cls):
        doc = field.metadata.get("doc", "") if field.metadata else ""
        if nested and field.name in nested:
            spec = nested[field.name]   # "module:Class", or ("module:Class", {its own nested fields})
            path, inner = (spec, None) if isinstance(spec, str) else spec
            rows.append("| `%s%s/...` | | %s; fields below |" % (prefix, field.name, _cell(doc)))
            rows += param_rows(_cls(path), "%s%s/" % (prefix, field.name), inner)
            continue
        rows.append("| `%s%s` | %s | %s |" % (prefix, field.name, _default(field), _cell(doc)))
    return rows


def launch_rows(path: str) -> List[str]:
    rows = []
    for arg in ET.parse(path).getroot().iter("arg"):
        if "value" in arg.attrib:       # a computed arg, not settable from the command line
            continue
        default = arg.get("default")
        rows.append("| `%s` | %s | %s |" % (arg.get("name"), "(required)" if default is None else
                                              "`%s`" % default if default else "`\"\"`", _cell(arg.get("doc", ""))))
    return rows


def tables() -> str:
    out = ["### Node parameters (generated from the parameter classes)", "",
           "Private parameters (`~name`); unknown ones are an error. Units are in the names or the text."]
    for node, module, name, nested in NODES:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        out += ["", "#### %s (`%s.%s`)" % (node, module, name), "", "| parameter | default | meaning |",
                "|---|---|---|"] + param_rows(cls, nested=nested)
    out += ["", "### Launch-file arguments (generated from launch/*.launch)"]
    launch_dir = os.path.join(ROOT, "launch")
    for name in sorted(os.listdir(launch_dir)):
        if not name.endswith(".launch"):
            continue
        out += ["", "#### %s" % name, ""]
        rows = launch_rows(os.path.join(launch_dir, name))
        out += (["| arg | default | meaning |", "|---|---|---|"] + rows) if rows else ["(no arguments)"]
    return "\n".join(out) + "\n"


def render(readme: str) -> str:
    return replace_block(readme, BEGIN, END, tables())


def main(argv: List[str] = None) -> int:
    return block_main(argv, __doc__.split("\n\n")[0], BEGIN, END, tables, "python -m op3_walk.ros.readme")


if __name__ == "__main__":
    sys.exit(main())
