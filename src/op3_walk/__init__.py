"""op3_walk: deep reinforcement learning that teaches bipedal robots (ROBOTIS OP3, PLEN) to walk, through ROS1.

Layers (imports point down only): ``ros`` (the only rospy user) -> ``training`` -> ``agents`` (torch) and
``envs`` -> ``robots`` / ``backends``.  ``envs``, ``robots`` and ``backends`` never import torch or rospy.
"""
import os as _os

_NAME = "op3_walk"


def _is_package_root(folder):
    """True for a folder holding this package's ``package.xml`` (by its ``<name>``) and its ``config/``."""
    manifest = _os.path.join(folder, "package.xml")
    if not (_os.path.isfile(manifest) and _os.path.isdir(_os.path.join(folder, "config"))):
        return False
    try:
        with open(manifest) as fh:
            return "<name>%s</name>" % _NAME in fh.read().replace(" ", "")
    except OSError:
        return False


def _module_dirs():
    """Folders this package's modules were loaded from (the devel space's shim adds the source folder)."""
    dirs = [_os.path.abspath(entry) for entry in globals().get("__path__", [])]
    return dirs + [_os.path.dirname(_os.path.abspath(__file__))]


def _ros_package_path_roots():
    """Candidates from ``ROS_PACKAGE_PATH``: rospkg's answer when rospkg is installed, else a plain scan of each
    entry and its sub-folders (the layout rospkg crawls: a package folder or a folder of packages)."""
    try:
        import rospkg
    except ImportError:
        rospkg = None
    if rospkg is not None:
        try:
            yield rospkg.RosPack().get_path(_NAME)
        except (rospkg.ResourceNotFound, OSError):
            pass
        return
    for entry in _os.environ.get("ROS_PACKAGE_PATH", "").split(_os.pathsep):
        if not entry:
            continue
        yield entry
        for walk_root, dirs, _files in _os.walk(entry):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if _NAME in dirs:
                yield _os.path.join(walk_root, _NAME)
            if walk_root.count(_os.sep) - entry.count(_os.sep) >= 2:
                dirs[:] = []


def _find_package_root():
    """Return the catkin package root: the folder holding ``package.xml``, ``config/``, ``urdf/``, ``policies/``.

    In order: ``OP3_WALK_ROOT`` (an override; used as given); the source package these modules were loaded from
    (the devel space, a checkout); the install space's share folder beside these modules
    (``<prefix>/lib/python3/dist-packages/op3_walk`` -> ``<prefix>/share/op3_walk``); the package as ROS finds it
    on ``ROS_PACKAGE_PATH`` (through rospkg when it is installed, else a plain scan).
    """
    override = _os.environ.get("OP3_WALK_ROOT")
    if override:
        return _os.path.abspath(override)
    dirs = _module_dirs()
    for entry in dirs:                                     # <root>/src/op3_walk
        candidate = _os.path.dirname(_os.path.dirname(entry))
        if _is_package_root(candidate):
            return candidate
    for entry in dirs:                                     # <prefix>/lib/python3[.X]/{dist,site}-packages/op3_walk
        parent = entry
        for _ in range(5):
            parent = _os.path.dirname(parent)
            candidate = _os.path.join(parent, "share", _NAME)
            if _is_package_root(candidate):
                return candidate
    for candidate in _ros_package_path_roots():
        if _is_package_root(candidate):
            return _os.path.abspath(candidate)
    raise RuntimeError("op3_walk: cannot find the package root (package.xml, config/): not beside the modules in %s, "
                       "not in <prefix>/share/op3_walk, not on ROS_PACKAGE_PATH; source the workspace's setup.bash "
                       "or set OP3_WALK_ROOT" % ", ".join(dirs))


PACKAGE_ROOT = _find_package_root()
CONFIG_DIR = _os.path.join(PACKAGE_ROOT, "config")
URDF_DIR = _os.path.join(PACKAGE_ROOT, "urdf")
POLICIES_DIR = _os.path.join(PACKAGE_ROOT, "policies")
