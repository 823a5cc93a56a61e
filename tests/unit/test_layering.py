"""Layering rules: rospy only in op3_walk.ros; the controller side (envs, robots, backends) never loads torch."""
import ast
import os
import subprocess
import sys

from op3_walk import PACKAGE_ROOT

SRC = os.path.join(PACKAGE_ROOT, "src", "op3_walk")
ROS_ONLY = ("rospy", "rosbag", "rosgraph", "genpy", "op3_walk.msg", "op3_walk.srv", "sensor_msgs", "std_msgs",
            "geometry_msgs")


def imported_modules(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_ros_imports_only_inside_the_ros_package():
    offenders = []
    for folder, _, files in os.walk(SRC):
        if os.path.relpath(folder, SRC).split(os.sep)[0] == "ros":
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                for module in imported_modules(path):
                    if module.split(".")[0] in ROS_ONLY or module.startswith(("op3_walk.msg", "op3_walk.srv",
                                                                              "op3_walk.ros")):
                        offenders.append("%s imports %s" % (os.path.relpath(path, PACKAGE_ROOT), module))
    assert not offenders, offenders


def test_controller_side_modules_do_not_import_torch():
    """Import what controller_node uses (minus rospy) in a fresh interpreter and check torch never loaded."""
    code = ("import sys; import op3_walk.envs, op3_walk.envs.walk_env, op3_walk.backends.pybullet_backend, "
            "op3_walk.robots; import gymnasium; env = gymnasium.make('op3_walk/PlenWalk-v0'); env.reset(seed=0); "
            "env.step(env.action_space.sample()); env.close(); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=os.path.join(PACKAGE_ROOT, "src")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_controller_node_module_imports_no_torch_statically():
    path = os.path.join(SRC, "ros", "controller.py")
    seen = set(imported_modules(path))
    assert not any(m.split(".")[0] == "torch" for m in seen)
    assert not any(m.startswith(("op3_walk.agents", "op3_walk.training")) for m in seen), seen


def test_deployment_modules_import_no_torch_statically():
    """What runs on the robot's computer besides the controller: the policy node and the numpy runtime."""
    for rel in (("ros", "policy_node.py"), ("policy", "runtime.py"), ("policy", "__init__.py"),
                ("ros", "diagnostics.py"), ("ros", "gazebo_bridge.py"), ("ros", "op3_bridge.py"),
                ("hardware", "safety.py"), ("hardware", "plen_io.py"), ("hardware", "simbus.py"),
                ("backends", "plen_hardware.py"), ("hardware", "calibration.py")):
        seen = set(imported_modules(os.path.join(SRC, *rel)))
        assert not any(m.split(".")[0] == "torch" for m in seen), (rel, seen)
        assert not any(m.startswith(("op3_walk.agents", "op3_walk.training", "op3_walk.policy.export"))
                       for m in seen), (rel, seen)


def test_scripts_are_two_line_entry_points():
    scripts = os.path.join(PACKAGE_ROOT, "scripts")
    for name in os.listdir(scripts):
        lines = [l for l in open(os.path.join(scripts, name)).read().splitlines() if l.strip()]
        assert lines[0].startswith("#!") and len(lines) <= 3, "%s is more than an entry point" % name
        assert os.access(os.path.join(scripts, name), os.X_OK), "%s is not executable" % name
