"""Packaging: setup.py installs every sub-package, the package root is found in every layout a ROS user has (source
or devel space, install space, ROS_PACKAGE_PATH only, OP3_WALK_ROOT), and catkin_lint finds nothing.

The full install space (catkin_make install, rosrun, roslaunch) is tests/integration/test_install_space.py.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from op3_walk import PACKAGE_ROOT

INIT = os.path.join(PACKAGE_ROOT, "src", "op3_walk", "__init__.py")
PRINT_ROOT = "import op3_walk; print(op3_walk.PACKAGE_ROOT); print(op3_walk.CONFIG_DIR)"


def test_setup_py_installs_every_subpackage():
    """What catkin's setup.py call installs: every folder of src/op3_walk that holds Python modules."""
    code = ("import json, runpy, setuptools; seen = {}; setuptools.setup = lambda **kw: seen.update(kw); "
            "runpy.run_path('setup.py', run_name='__main__'); "
            "print(json.dumps([seen['packages'], seen['package_dir']]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    packages, package_dir = json.loads(out.stdout.strip().splitlines()[-1])
    assert package_dir == {"": "src"}
    src = os.path.join(PACKAGE_ROOT, "src")
    wanted = set()
    for folder, dirs, files in os.walk(os.path.join(src, "op3_walk")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if any(f.endswith(".py") for f in files):
            assert "__init__.py" in files, "%s holds modules but no __init__.py" % folder
            wanted.add(os.path.relpath(folder, src).replace(os.sep, "."))
    assert {"op3_walk.hardware", "op3_walk.policy", "op3_walk.ros"} <= wanted
    assert sorted(packages) == sorted(wanted)


def _package(folder, name="op3_walk"):
    """A package root: package.xml (with its name) and config/."""
    os.makedirs(os.path.join(folder, "config"), exist_ok=True)
    with open(os.path.join(folder, "package.xml"), "w") as fh:
        fh.write('<?xml version="1.0"?>\n<package format="3">\n  <name>%s</name>\n</package>\n' % name)
    return str(folder)


def _modules(folder):
    """The op3_walk Python package (its __init__.py is what finds the root) in ``folder``."""
    os.makedirs(os.path.join(folder, "op3_walk"), exist_ok=True)
    shutil.copy(INIT, os.path.join(folder, "op3_walk", "__init__.py"))
    return str(folder)


def _root(pythonpath, ros_package_path="", **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OP3_WALK_ROOT", "ROS_PACKAGE_PATH", "PYTHONPATH")}
    env.update(PYTHONPATH=pythonpath, ROS_PACKAGE_PATH=ros_package_path, **extra)
    out = subprocess.run([sys.executable, "-c", PRINT_ROOT], env=env, capture_output=True, text=True, timeout=60,
                         cwd="/")
    return out.returncode, out.stdout.split("\n"), out.stderr


def test_install_space_root_is_the_share_folder_beside_the_modules(tmp_path):
    prefix = tmp_path / "install"
    share = _package(prefix / "share" / "op3_walk")
    _package(prefix / "share" / "other_pkg", name="other_pkg")
    site = _modules(prefix / "lib" / "python3" / "dist-packages")
    rc, (root, config, _), err = _root(site)
    assert rc == 0, err
    assert (root, config) == (share, os.path.join(share, "config"))
    # Another op3_walk earlier on ROS_PACKAGE_PATH does not take precedence over the data installed with the code.
    rc, (root, _, _), err = _root(site, ros_package_path=_package(tmp_path / "elsewhere" / "op3_walk"))
    assert rc == 0 and root == share, err


def test_root_found_through_ros_package_path_with_and_without_rospkg(tmp_path):
    site = _modules(tmp_path / "somewhere" / "site-packages")      # no share/ folder anywhere above it
    pkg = _package(tmp_path / "ws" / "src" / "op3_walk")
    _package(tmp_path / "ws" / "src" / "other_pkg", name="other_pkg")
    rc, (root, _, _), err = _root(site, ros_package_path=str(tmp_path / "ws" / "src"))
    assert rc == 0 and root == pkg, err
    blocker = tmp_path / "no_rospkg"
    (blocker / "rospkg").mkdir(parents=True)
    (blocker / "rospkg" / "__init__.py").write_text("raise ImportError('rospkg blocked by the test')\n")
    rc, (root, _, _), err = _root("%s:%s" % (blocker, site), ros_package_path=str(tmp_path / "ws" / "src"))
    assert rc == 0 and root == pkg, err


def test_op3_walk_root_overrides_and_a_missing_root_says_how_to_fix_it(tmp_path):
    site = _modules(tmp_path / "site-packages")
    chosen = _package(tmp_path / "chosen")
    rc, (root, _, _), err = _root(site, OP3_WALK_ROOT=chosen)
    assert rc == 0 and root == chosen, err
    rc, _, err = _root(site)
    assert rc != 0 and "cannot find the package root" in err and "OP3_WALK_ROOT" in err


def test_source_tree_root():
    """This checkout (the devel space and tests run from it) is its own root."""
    assert os.path.isfile(os.path.join(PACKAGE_ROOT, "package.xml"))
    rc, (root, _, _), err = _root(os.path.join(PACKAGE_ROOT, "src"))
    assert rc == 0 and os.path.realpath(root) == os.path.realpath(PACKAGE_ROOT), err


def _catkin_lint():
    exe = shutil.which("catkin_lint") or os.path.join(os.path.dirname(sys.executable), "catkin_lint")
    return exe if os.access(exe, os.X_OK) else None


@pytest.mark.skipif(_catkin_lint() is None, reason="catkin_lint is not installed (make setup installs it into .venv "
                                                   "from requirements.txt; or: pip install catkin_lint)")
def test_catkin_lint_reports_nothing():
    """package.xml and CMakeLists.txt at catkin_lint's default level (-W1); --strict makes any warning fail."""
    out = subprocess.run([_catkin_lint(), "--strict", PACKAGE_ROOT], capture_output=True, text=True, timeout=120)
    report = out.stdout + out.stderr
    assert out.returncode == 0 and "found 0 problems" in report, report
