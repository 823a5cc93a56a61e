"""The catkin install space works on its own: ``catkin_make install`` of this package into a temporary prefix, then,
with only ``<prefix>/setup.bash`` sourced (no devel space, no OP3_WALK_ROOT, no source tree: it is deleted after the
build) and a PATH whose first ``python3`` is a fake that exits 99, every script answers ``--help`` through rosrun
and ``deploy.launch`` runs the shipped walking policy from ``<prefix>/share/op3_walk``.

The package is built from a copy of the repository's files (tracked and untracked, not ignored: what a user's clone
in a catkin workspace holds), with the interpreter tools/setup.sh builds with (-DPYTHON_EXECUTABLE=.venv's python3),
once per module (a few seconds on Debian's catkin).
"""
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Dict, List

import pytest
import yaml

from ros_harness import ROOT, Proc, free_port

PYTHON = os.path.join(ROOT, ".venv", "bin", "python3")
if not os.path.exists(PYTHON):
    PYTHON = sys.executable
SCRIPTS = sorted(name for name in os.listdir(os.path.join(ROOT, "scripts"))
                 if os.access(os.path.join(ROOT, "scripts", name), os.X_OK))
PATH_LISTS = ("PATH", "PYTHONPATH", "CMAKE_PREFIX_PATH", "ROS_PACKAGE_PATH", "LD_LIBRARY_PATH", "PKG_CONFIG_PATH",
              "ROSLISP_PACKAGE_DIRECTORIES")
BUILD_TIMEOUT = 600.0    # s; ~5 s on a quiet machine (messages for Python only, no C++ targets)
HELP_TIMEOUT = 60.0      # s; a healthy --help takes ~1-5 s
DEPLOY_TIMEOUT = 240.0   # s; one 500-step episode of lockstep PyBullet plus start-up


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder + os.sep)


def environment_without_this_checkout() -> Dict[str, str]:
    """This process's environment less everything that leads to this checkout: its devel space (.ws), its venv's
    bin folder, its source folder, OP3_WALK_ROOT; ROS itself (/opt/ros/noetic or Debian's /usr) stays."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OP3_WALK_ROOT", "VIRTUAL_ENV", "PYTHONHOME", "ROS_MASTER_URI", "ROS_HOME")}
    for key in PATH_LISTS:
        kept = [p for p in env.get(key, "").split(os.pathsep) if p and not _inside(p, ROOT)]
        if kept:
            env[key] = os.pathsep.join(kept)
        else:
            env.pop(key, None)
    env.setdefault("PATH", "/usr/bin:/bin")
    return env


def copy_package(dest: str) -> None:
    """The repository's files as a clone has them (tracked, plus untracked ones git does not ignore)."""
    listed = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, timeout=60)
    if listed.returncode == 0:
        for rel in sorted(set(filter(None, listed.stdout.decode().split("\0")))):
            src = os.path.join(ROOT, rel)
            if not os.path.isfile(src):       # deleted in the work tree but still in the index
                continue
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))
    else:                                     # not a git checkout: everything but build products
        shutil.copytree(ROOT, dest, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", ".ws", ".venv", ".stamps", "out", "__pycache__"))


class InstallSpace:
    def __init__(self, prefix: str, home: str, shims: str):
        self.prefix = prefix
        self.share = os.path.join(prefix, "share", "op3_walk")
        self.home = home
        self.shims = shims

    def env(self) -> Dict[str, str]:
        """A shell environment before sourcing ``<prefix>/setup.bash``: no trace of this checkout, a fake python3
        first on PATH, a ROS master URI on a free port (nothing listens there unless roslaunch starts one)."""
        env = environment_without_this_checkout()
        env["PATH"] = self.shims + os.pathsep + env["PATH"]
        env.update(ROS_MASTER_URI="http://127.0.0.1:%d" % free_port(), ROS_HOME=self.home, ROS_IP="127.0.0.1",
                   ROS_PYTHON_VERSION="3")
        return env

    def command(self, args: List[str]) -> List[str]:
        # (setup.bash hands the positional parameters to catkin's _setup_util.py: clear them while sourcing)
        return ["bash", "-c", 'args=("$@"); set --; source "$0/setup.bash" && exec "${args[@]}"', self.prefix] + args

    def run(self, args: List[str], timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.command(args), env=self.env(), capture_output=True, text=True,
                                  timeout=timeout, cwd=self.home)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %.0f s (waiting for a ROS master?)" % (args, timeout))


@pytest.fixture(scope="module")
def install_space(tmp_path_factory):
    """``catkin_make install`` into a temporary prefix; the workspace's source, build and devel folders are deleted
    afterwards, so only the install space is left."""
    base = tmp_path_factory.mktemp("install_space")
    ws, prefix = base / "ws", base / "install"
    copy_package(str(ws / "src" / "op3_walk"))
    env = environment_without_this_checkout()
    env["PATH"] = "/usr/bin:/bin:" + env["PATH"]          # as tools/setup.sh builds: the system tools first
    started = time.monotonic()
    env["PWD"] = str(ws)
    build = subprocess.run(["catkin_make", "-C", str(ws), "install", "-DPYTHON_EXECUTABLE=%s" % PYTHON,
                            "-DCMAKE_INSTALL_PREFIX=%s" % prefix, "-DCATKIN_ENABLE_TESTING=OFF",
                            "-DCMAKE_BUILD_TYPE=Release"], cwd=str(ws), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=BUILD_TIMEOUT)
    seconds = time.monotonic() - started
    (base / "build.log").write_text(build.stdout)
    assert build.returncode == 0, "catkin_make install failed:\n" + build.stdout[-6000:]
    print("\ncatkin_make install of op3_walk: %.1f s" % seconds)
    for folder in ("src", "build", "devel"):
        shutil.rmtree(str(ws / folder))
    shims = base / "shims"
    shims.mkdir()
    for name in ("python3", "python"):
        shim = shims / name
        shim.write_text('#!/bin/sh\necho "fake %s from PATH ran: $*" >&2\nexit 99\n' % name)
        shim.chmod(0o755)
    home = base / "ros_home"
    home.mkdir()
    return InstallSpace(str(prefix), str(home), str(shims))


def test_the_fake_python3_is_what_path_finds(install_space, tmp_path):
    """The control: a script that asks PATH for python3 fails in this environment (so the tests below would see it)."""
    probe = tmp_path / "probe"
    probe.write_text("#!/usr/bin/env python3\nprint('hello')\n")
    probe.chmod(0o755)
    out = install_space.run([str(probe)], timeout=30)
    assert out.returncode == 99 and "fake python3 from PATH ran" in out.stderr, (out.returncode, out.stderr)


def test_installed_layout(install_space):
    out = install_space.run(["bash", "-c", 'echo "$ROS_PACKAGE_PATH"; echo "$PYTHONPATH"; rospack find op3_walk'],
                            timeout=60)
    assert out.returncode == 0, out.stderr
    assert ROOT not in out.stdout and ".ws" not in out.stdout, out.stdout   # no devel space, no source tree
    assert out.stdout.split("\n")[2] == install_space.share
    for script in SCRIPTS:
        with open(os.path.join(install_space.prefix, "lib", "op3_walk", script)) as fh:
            assert fh.readline() == "#!%s\n" % PYTHON, "%s does not run with the workspace's interpreter" % script
    if os.path.exists(os.path.join(ROOT, "tools", "env_loader.sh")):   # the <machine env-loader> for other hosts
        assert os.access(os.path.join(install_space.prefix, "lib", "op3_walk", "env_loader.sh"), os.X_OK)
    for folder in ("config", "launch", "policies", "urdf"):
        assert os.path.isdir(os.path.join(install_space.share, folder)), folder
    assert not [p for p in (os.path.join(d, f) for d, _, fs in os.walk(install_space.prefix) for f in fs)
                if os.path.islink(p) and not _inside(p, install_space.prefix)]
    code = ("import op3_walk, op3_walk.hardware, op3_walk.policy.runtime, op3_walk.msg; "
            "print(op3_walk.__file__); print(op3_walk.PACKAGE_ROOT); print(op3_walk.CONFIG_DIR)")
    out = install_space.run([PYTHON, "-c", code], timeout=60)
    assert out.returncode == 0, out.stderr
    module, root, config = out.stdout.split("\n")[:3]
    assert _inside(module, install_space.prefix), module
    assert (root, config) == (install_space.share, os.path.join(install_space.share, "config"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help_from_the_install_space(install_space, script):
    out = install_space.run(["rosrun", "op3_walk", script, "--help"], timeout=HELP_TIMEOUT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert out.stdout.startswith("usage: "), out.stdout


class _Proc(Proc):
    """ros_harness.Proc (process tree tracked for the orphan check), started in a folder of ours."""

    def __init__(self, args: List[str], log_path: str, env: Dict[str, str], cwd: str):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True, cwd=cwd)
        self.tree = set()


def test_deploy_launch_runs_the_shipped_policy_from_the_install_space(install_space, tmp_path):
    """roslaunch (which starts its own master on the free port) runs controller_node and policy_node from
    ``<prefix>/lib/op3_walk`` on the default policy ``$(find op3_walk)/policies/plen_walk.npz`` in the share folder,
    for one episode, and ends cleanly."""
    policy = os.path.join(install_space.share, "policies", "plen_walk.npz")
    assert os.path.isfile(policy)
    dump = install_space.run(["roslaunch", "--dump-params", "op3_walk", "deploy.launch", "robot:=plen"], timeout=60)
    assert dump.returncode == 0, dump.stderr
    params = yaml.safe_load(dump.stdout)
    assert params["/policy/policy"] == policy, params
    assert params["/controller/task"] == params["/policy/task"] == "plen_walk_fast"
    proc = _Proc(install_space.command(["roslaunch", "op3_walk", "deploy.launch", "robot:=plen", "backend:=pybullet",
                                        "episodes:=1", "seed:=0"]),
                 str(tmp_path / "deploy.log"), install_space.env(), cwd=str(tmp_path))
    try:
        rc = proc.wait(timeout=DEPLOY_TIMEOUT)
        log = proc.log()
        assert rc == 0, log[-6000:]
        assert not proc.orphans(), "processes left behind: %s" % proc.orphans()
    finally:
        proc.kill()
    for bad in ("Traceback", "fake python", "ModuleNotFoundError", "RuntimeError"):
        assert bad not in log, log[-6000:]
    episode = re.search(r"policy: episode 1: return (\S+), (\d+) steps", log)
    assert episode and int(episode.group(2)) > 0, log[-6000:]
    assert "policy: 1 episode(s)" in log, log[-6000:]
