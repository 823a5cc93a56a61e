"""op3_walk: deep reinforcement learning that teaches bipedal robots (ROBOTIS OP3, PLEN) to walk, through ROS1.

Layers (imports point down only): ``ros`` (the only rospy user) -> ``training`` -> ``agents`` (torch) and
``envs`` -> ``robots`` / ``backends``.  ``envs``, ``robots`` and ``backends`` never import torch or rospy.
"""
import os as _os


def _find_package_root():
    """Return the catkin package root (the folder holding ``package.xml``, ``config/`` and ``urdf/``).

    Catkin's devel space runs this file through a generated shim whose ``__file__`` lies in the workspace, so the
    package's own search path (``__path__``) is used; ``OP3_WALK_ROOT`` overrides it (for installed layouts).
    """
    override = _os.environ.get("OP3_WALK_ROOT")
    if override:
        return _os.path.abspath(override)
    for entry in list(globals().get("__path__", [])) + [_os.path.dirname(_os.path.abspath(__file__))]:
        candidate = _os.path.dirname(_os.path.dirname(_os.path.abspath(entry)))
        if _os.path.isfile(_os.path.join(candidate, "package.xml")):
            return candidate
    raise RuntimeError("op3_walk: cannot find the package root (package.xml); set OP3_WALK_ROOT")


PACKAGE_ROOT = _find_package_root()
CONFIG_DIR = _os.path.join(PACKAGE_ROOT, "config")
URDF_DIR = _os.path.join(PACKAGE_ROOT, "urdf")
