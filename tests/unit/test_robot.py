"""Robot description (config/robots/plen.yaml) and the generated PLEN URDF."""
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pybullet
import pytest
import yaml

from op3_walk import CONFIG_DIR, PACKAGE_ROOT
from op3_walk.config import ConfigError
from op3_walk.robots import load_robot
from op3_walk.robots import plen_urdf

PLEN_YAML = os.path.join(CONFIG_DIR, "robots", "plen.yaml")
SRC = os.path.join(PACKAGE_ROOT, "src")
LEG = ["hip_yaw", "hip_roll", "hip_pitch", "knee", "ankle_pitch", "ankle_roll"]
ARM = ["shoulder_pitch", "shoulder_roll", "elbow"]
STANCE_HEIGHT = 0.158  # m, published standing torso height


@pytest.fixture(scope="module")
def plen():
    return load_robot("plen")


@pytest.fixture(scope="module")
def urdf_root(plen):
    return ET.parse(plen.urdf_path).getroot()


@pytest.fixture(scope="module")
def kinematics(plen):
    """Fixed-base PLEN in its own DIRECT client: set joint angles by name, read link poses by name."""
    client = pybullet.connect(pybullet.DIRECT)
    body = pybullet.loadURDF(plen.urdf_path, useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE,
                             physicsClientId=client)
    joints, links = {}, {}
    for i in range(pybullet.getNumJoints(body, physicsClientId=client)):
        info = pybullet.getJointInfo(body, i, physicsClientId=client)
        joints[info[1].decode()] = i
        links[info[12].decode()] = i

    class Kinematics:
        def pose(self, angles):
            for name, index in joints.items():
                pybullet.resetJointState(body, index, angles.get(name, 0.0), physicsClientId=client)

        def link(self, name):
            """(position, rotation matrix) of a link frame, torso frame = world."""
            state = pybullet.getLinkState(body, links[name], computeForwardKinematics=True, physicsClientId=client)
            return np.array(state[4]), np.reshape(pybullet.getMatrixFromQuaternion(state[5]), (3, 3))

        def aabb(self, name):
            low, high = pybullet.getAABB(body, links[name], physicsClientId=client)
            return np.array(low), np.array(high)

    yield Kinematics()
    pybullet.disconnect(client)


def _write_variant(tmp_path, change):
    data = yaml.safe_load(open(PLEN_YAML))
    change(data)
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


# -- config -------------------------------------------------------------------------------------------------------
def test_plen_config(plen):
    assert plen.n_joints == 18
    assert plen.joint_names == tuple(["l_" + j for j in LEG] + ["r_" + j for j in LEG] +
                                     ["l_" + j for j in ARM] + ["r_" + j for j in ARM])
    assert plen.foot_links == ["l_foot", "r_foot"]
    assert plen.substeps == 4 and plen.control_period_s == pytest.approx(1.0 / 60.0)
    assert np.all(plen.lower <= plen.stance) and np.all(plen.stance <= plen.upper)
    assert plen.stance.dtype == np.float64 and plen.lower.shape == (18,)
    a = plen.stance[plen.joint_names.index("l_hip_pitch")]
    assert a > 0.0
    for side in "lr":  # flat-footed crouch: hip +a, knee -2a, ankle +a
        assert plen.joint("%s_knee" % side).stance == pytest.approx(-2.0 * a)
        assert plen.joint("%s_ankle_pitch" % side).stance == pytest.approx(a)


def test_load_by_path_equals_load_by_name(plen):
    assert load_robot(PLEN_YAML) == plen
    assert load_robot(plen) is plen


def test_every_yaml_line_is_commented():
    for number, line in enumerate(open(PLEN_YAML), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, "plen.yaml line %d has no comment: %s" % (number, line.rstrip())


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(colour="red"), "unknown key"),
    (lambda d: d["joints"][0].update(torque=1.0), "unknown key"),
    (lambda d: d["joints"][3].update(stance=0.5), "outside limits"),
    (lambda d: d.update(physics_rate_hz=250), "integer multiple"),
    (lambda d: d["joints"][1].update(name="l_hip_yaw"), "duplicate"),
    (lambda d: d.pop("spawn_height"), "missing"),
])
def test_invalid_robot_config_raises(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_robot(_write_variant(tmp_path, change))


def test_overrides_are_validated(plen):
    assert load_robot("plen", overrides={"kp": 0.5}).kp == 0.5
    assert load_robot(plen, overrides={"spawn_height": 0.2}).spawn_height == 0.2
    with pytest.raises(ConfigError, match="integer multiple"):
        load_robot(plen, overrides={"control_rate_hz": 70.0})


def test_unknown_robot_name_raises():
    with pytest.raises(ConfigError, match="plen"):
        load_robot("no_such_robot")


# -- URDF file ----------------------------------------------------------------------------------------------------
def test_committed_urdf_is_up_to_date():
    assert plen_urdf.main(["--check"]) == 0


def test_check_detects_stale_file_and_rewrite_fixes_it(tmp_path):
    path = str(tmp_path / "plen.urdf")
    assert plen_urdf.main(["--check", "--output", path]) == 1  # missing
    with open(path, "w") as fh:
        fh.write("<robot/>")
    assert plen_urdf.main(["--check", "--output", path]) == 1  # stale
    assert plen_urdf.main(["--output", path]) == 0
    assert plen_urdf.main(["--check", "--output", path]) == 0


def test_module_entry_point_exit_status(tmp_path):
    path = tmp_path / "plen.urdf"
    path.write_text("<robot/>")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "op3_walk.robots.plen_urdf", "--check", "--output", str(path)]
    stale = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert stale.returncode != 0 and "out of date" in stale.stderr
    committed = subprocess.run(command[:-2], env=env, capture_output=True, text=True, timeout=60)
    assert committed.returncode == 0, committed.stderr


def test_urdf_joints_follow_the_yaml(plen, urdf_root):
    joints = urdf_root.findall("joint")
    assert [j.get("name") for j in joints] == list(plen.joint_names)
    for element, cfg in zip(joints, plen.joints):
        assert element.get("type") == "revolute"
        limit = element.find("limit")
        assert float(limit.get("lower")) == pytest.approx(cfg.lower)
        assert float(limit.get("upper")) == pytest.approx(cfg.upper)
        assert float(limit.get("effort")) == pytest.approx(cfg.effort)
        assert float(limit.get("velocity")) == pytest.approx(cfg.velocity)


def test_urdf_mass_and_inertias(urdf_root):
    links = urdf_root.findall("link")
    assert len(links) == 19
    total = 0.0
    for link in links:
        inertial = link.find("inertial")
        mass = float(inertial.find("mass").get("value"))
        assert mass > 0.0, link.get("name")
        total += mass
        i = inertial.find("inertia")
        tensor = np.array([[float(i.get(a)) for a in row] for row in
                           (("ixx", "ixy", "ixz"), ("ixy", "iyy", "iyz"), ("ixz", "iyz", "izz"))])
        principal = np.linalg.eigvalsh(tensor)
        assert np.all(principal > 0.0), link.get("name")
        assert principal[0] + principal[1] >= principal[2] * (1 - 1e-9), link.get("name")  # physically possible
        assert link.find("collision/geometry/box") is not None or link.find("collision/geometry/cylinder") is not None
    assert 0.48 <= total <= 0.52


# -- kinematics and sign conventions (PyBullet forward kinematics) ------------------------------------------------
def _sole_height(kinematics):
    """Torso origin height above the lowest foot point."""
    return -min(kinematics.aabb("l_foot")[0][2], kinematics.aabb("r_foot")[0][2])


def test_stance_height_flat_feet_and_hip_width(plen, kinematics):
    kinematics.pose(dict(zip(plen.joint_names, plen.stance)))
    assert _sole_height(kinematics) == pytest.approx(STANCE_HEIGHT, abs=0.002)
    assert 0.0 < plen.spawn_height - _sole_height(kinematics) < 0.003
    for foot in plen.foot_links:
        assert np.allclose(kinematics.link(foot)[1], np.eye(3), atol=1e-9), foot
    left_low, _ = kinematics.aabb("l_foot")
    _, right_high = kinematics.aabb("r_foot")
    assert left_low[1] - right_high[1] > 0.005  # feet do not overlap


@pytest.mark.parametrize("side, outward", [("l", 1.0), ("r", -1.0)])
def test_leg_sign_conventions(kinematics, side, outward):
    def foot(**angles):
        kinematics.pose({"%s_%s" % (side, k): v for k, v in angles.items()})
        return kinematics.link(side + "_foot")

    rest, _ = foot()
    assert foot(hip_pitch=0.4)[0][0] > rest[0] + 0.02          # positive hip pitch: leg swings forward
    assert foot(knee=-0.6)[0][0] < rest[0] - 0.01              # knee flexion is negative: shin goes back
    assert foot(knee=-0.6)[0][2] > rest[2]
    assert outward * (foot(hip_roll=0.3)[0][1] - rest[1]) > 0.01  # positive roll: outward
    toe = foot(hip_yaw=0.3)[1][:, 0]                            # foot x axis
    assert outward * toe[1] > 0.2                               # positive yaw: toe turns outward
    ankle = foot(ankle_pitch=0.3)[1][:, 0]
    assert ankle[2] > 0.2                                       # positive ankle pitch: toe up


@pytest.mark.parametrize("side, outward", [("l", 1.0), ("r", -1.0)])
def test_arm_sign_conventions(kinematics, side, outward):
    def hand(**angles):
        kinematics.pose({"%s_%s" % (side, k): v for k, v in angles.items()})
        return kinematics.link(side + "_forearm")[0] + kinematics.link(side + "_forearm")[1].dot([0, 0, -0.035])

    rest = hand()
    assert hand(shoulder_pitch=0.5)[0] > rest[0] + 0.02
    assert outward * (hand(shoulder_roll=0.5)[1] - rest[1]) > 0.02
    assert hand(elbow=0.3)[0] > rest[0] + 0.005


def test_right_side_mirrors_left(plen, kinematics):
    rng = np.random.default_rng(3)
    kinds = LEG + ARM
    angles = dict(zip(kinds, rng.uniform(-0.5, 0.5, len(kinds))))
    pose = {"%s_%s" % (side, k): v for side in "lr" for k, v in angles.items()}
    kinematics.pose(pose)
    for link in ["foot", "shin", "forearm", "ankle_link"]:
        left, left_rot = kinematics.link("l_" + link)
        right, right_rot = kinematics.link("r_" + link)
        mirror = np.diag([1.0, -1.0, 1.0])
        assert np.allclose(right, mirror.dot(left), atol=1e-9), link
        assert np.allclose(right_rot, mirror.dot(left_rot).dot(mirror), atol=1e-9), link
    assert math.isfinite(_sole_height(kinematics))
