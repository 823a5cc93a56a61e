"""Robot descriptions (config/robots/*.yaml) and the generated URDFs (PLEN, ROBOTIS OP3)."""
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
from op3_walk.backends.pybullet_backend import PyBulletBackend
from op3_walk.config import ConfigError
from op3_walk.robots import load_robot, op3_urdf, plen_urdf
from op3_walk.robots.description import LEG_JOINT_ROLES
from op3_walk.robots.urdf_writer import BASE_JOINT, BASE_LINK

PLEN_YAML = os.path.join(CONFIG_DIR, "robots", "plen.yaml")
GENERATORS = {"plen": plen_urdf, "op3": op3_urdf}
ROBOTS = sorted(GENERATORS)
SRC = os.path.join(PACKAGE_ROOT, "src")
LEG = ["hip_yaw", "hip_roll", "hip_pitch", "knee", "ankle_pitch", "ankle_roll"]
ARM = ["shoulder_pitch", "shoulder_roll", "elbow"]
STANCE_HEIGHT = 0.158  # m, published standing torso height
# ROBOTIS OP3 facts: joint order of the ROBOTIS framework, link masses (robotis_op3 URDF), left-side joint axes
# (robotis_op3.urdf.xacro; the right axes are these mirrored and reversed).
ROBOTIS_JOINTS = ("head_pan head_tilt l_sho_pitch r_sho_pitch l_sho_roll r_sho_roll l_el r_el l_hip_yaw r_hip_yaw "
                  "l_hip_roll r_hip_roll l_hip_pitch r_hip_pitch l_knee r_knee l_ank_pitch r_ank_pitch l_ank_roll "
                  "r_ank_roll").split()
ROBOTIS_AXES = {"head_pan": (0, 0, 1), "head_tilt": (0, -1, 0),
                "l_sho_pitch": (0, 1, 0), "r_sho_pitch": (0, -1, 0), "l_sho_roll": (-1, 0, 0), "r_sho_roll": (-1, 0, 0),
                "l_el": (1, 0, 0), "r_el": (1, 0, 0), "l_hip_yaw": (0, 0, -1), "r_hip_yaw": (0, 0, -1),
                "l_hip_roll": (-1, 0, 0), "r_hip_roll": (-1, 0, 0), "l_hip_pitch": (0, 1, 0), "r_hip_pitch": (0, -1, 0),
                "l_knee": (0, 1, 0), "r_knee": (0, -1, 0), "l_ank_pitch": (0, -1, 0), "r_ank_pitch": (0, 1, 0),
                "l_ank_roll": (1, 0, 0), "r_ank_roll": (1, 0, 0)}
OP3_MASS = 3.147   # kg, summed link mass
OP3_TRUNK = 1.349  # kg, body_link


@pytest.fixture(scope="module")
def plen():
    return load_robot("plen")


def _urdf_root(robot):
    return ET.parse(robot.urdf_path).getroot()


def _fixed_base_kinematics(urdf_path):
    """Fixed-base robot in its own DIRECT client: set joint angles by name, read link poses by name."""
    client = pybullet.connect(pybullet.DIRECT)
    body = pybullet.loadURDF(urdf_path, useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE,
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

        def close(self):
            pybullet.disconnect(client)

    return Kinematics()


@pytest.fixture(scope="module")
def kinematics(plen):
    kin = _fixed_base_kinematics(plen.urdf_path)
    yield kin
    kin.close()


@pytest.fixture(scope="module")
def op3():
    return load_robot("op3")


@pytest.fixture(scope="module")
def op3_kinematics(op3):
    kin = _fixed_base_kinematics(op3.urdf_path)
    yield kin
    kin.close()


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
    assert plen.substeps == 5 and plen.control_period_s == pytest.approx(1.0 / 50.0)
    assert np.all(plen.lower <= plen.stance) and np.all(plen.stance <= plen.upper)
    assert plen.stance.dtype == np.float64 and plen.lower.shape == (18,)
    a = plen.stance[plen.joint_names.index("l_hip_pitch")]
    assert a > 0.0
    for side in "lr":  # flat-footed crouch: hip +a, knee -2a, ankle +a
        assert plen.joint("%s_knee" % side).stance == pytest.approx(-2.0 * a)
        assert plen.joint("%s_ankle_pitch" % side).stance == pytest.approx(a)


def test_op3_config(op3):
    assert op3.joint_names == tuple(ROBOTIS_JOINTS)
    assert [leg.name for leg in op3.legs] == ["left", "right"]
    for leg in op3.legs:
        assert list(leg.joints) == ["%s_%s" % (leg.name[0], role) for role in
                                    ("hip_yaw", "hip_roll", "hip_pitch", "knee", "ank_pitch", "ank_roll")]
    assert op3.foot_links == ["l_ank_roll_link", "r_ank_roll_link"] and op3.torso_link == "body_link"
    assert op3.control_rate_hz == 50 and op3.substeps * op3.control_rate_hz == op3.physics_rate_hz
    for name in ROBOTIS_JOINTS:  # ROBOTIS signs: a symmetric pose and the joint ranges read r = -l
        if name.startswith("l_"):
            left, right = op3.joint(name), op3.joint("r" + name[1:])
            assert (right.lower, right.upper, right.stance) == (-left.upper, -left.lower, -left.stance), name
    a = -op3.joint("l_hip_pitch").stance  # flat-footed crouch: hip -a, knee 2a, ankle a
    assert a > 0.0
    assert op3.joint("l_knee").stance == pytest.approx(2.0 * a) and op3.joint("l_ank_pitch").stance == a


@pytest.mark.parametrize("name", ROBOTS)
def test_load_by_path_equals_load_by_name(name):
    robot = load_robot(name)
    assert load_robot(os.path.join(CONFIG_DIR, "robots", name + ".yaml")) == robot
    assert load_robot(robot) is robot
    assert [leg.name for leg in robot.legs] == ["left", "right"] and len(LEG_JOINT_ROLES) == 6


@pytest.mark.parametrize("name", ROBOTS)
def test_every_yaml_line_is_commented(name):
    for number, line in enumerate(open(os.path.join(CONFIG_DIR, "robots", name + ".yaml")), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, "%s.yaml line %d has no comment: %s" % (name, number, line.rstrip())


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(colour="red"), "unknown key"),
    (lambda d: d["joints"][0].update(torque=1.0), "unknown key"),
    (lambda d: d["joints"][3].update(stance=0.5), "outside limits"),
    (lambda d: d.update(physics_rate_hz=260), "integer multiple"),
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
@pytest.mark.parametrize("name", ROBOTS)
def test_committed_urdf_is_up_to_date(name):
    assert GENERATORS[name].main(["--check"]) == 0


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


@pytest.mark.parametrize("name", ROBOTS)
def test_urdf_joints_follow_the_yaml(name):
    robot = load_robot(name)
    joints = [j for j in _urdf_root(robot).findall("joint") if j.get("name") != BASE_JOINT]  # base_link -> torso
    assert [j.get("name") for j in joints] == list(robot.joint_names)
    for element, cfg in zip(joints, robot.joints):
        assert element.get("type") == "revolute"
        limit = element.find("limit")
        assert float(limit.get("lower")) == pytest.approx(cfg.lower)
        assert float(limit.get("upper")) == pytest.approx(cfg.upper)
        assert float(limit.get("effort")) == pytest.approx(cfg.effort)
        assert float(limit.get("velocity")) == pytest.approx(cfg.velocity)


@pytest.mark.parametrize("name, n_links, mass", [("plen", 19, 0.496), ("op3", 21, OP3_MASS)])
def test_urdf_mass_and_inertias(name, n_links, mass):
    robot = load_robot(name)
    links = [link for link in _urdf_root(robot).findall("link") if link.get("name") != BASE_LINK]  # massless root
    assert len(links) == n_links
    total = 0.0
    masses = {}
    for link in links:
        inertial = link.find("inertial")
        masses[link.get("name")] = float(inertial.find("mass").get("value"))
        assert masses[link.get("name")] > 0.0, link.get("name")
        total += masses[link.get("name")]
        i = inertial.find("inertia")
        tensor = np.array([[float(i.get(a)) for a in row] for row in
                           (("ixx", "ixy", "ixz"), ("ixy", "iyy", "iyz"), ("ixz", "iyz", "izz"))])
        principal = np.linalg.eigvalsh(tensor)
        assert np.all(principal > 0.0), link.get("name")
        assert principal[0] + principal[1] >= principal[2] * (1 - 1e-9), link.get("name")  # physically possible
        assert link.find("collision/geometry/box") is not None or link.find("collision/geometry/cylinder") is not None
    assert total == pytest.approx(mass, abs=0.01)
    assert masses == pytest.approx(GENERATORS[name].MODEL.link_masses(robot))
    if name == "op3":
        assert masses["body_link"] == pytest.approx(OP3_TRUNK, abs=0.001)


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


# -- ROBOTIS OP3 sign conventions ---------------------------------------------------------------------------------
def test_op3_axes_are_robotis(op3):
    axes = {j.get("name"): tuple(float(v) for v in j.find("axis").get("xyz").split())
            for j in _urdf_root(op3).findall("joint") if j.get("name") != BASE_JOINT}
    assert axes == ROBOTIS_AXES


@pytest.mark.parametrize("side, sign", [("l", 1.0), ("r", -1.0)])
def test_op3_leg_sign_conventions(op3_kinematics, side, sign):
    """Left-side meanings; the right side does the mirror-image motion for the negated angle (ROBOTIS)."""
    def foot(**angles):
        op3_kinematics.pose({"%s_%s" % (side, k): sign * v for k, v in angles.items()})
        return op3_kinematics.link(side + "_ank_roll_link")

    rest, _ = foot()
    assert foot(hip_pitch=0.4)[0][0] < rest[0] - 0.05           # + hip pitch: leg swings back
    assert foot(hip_pitch=-0.4)[0][0] > rest[0] + 0.05
    assert foot(knee=0.6)[0][0] < rest[0] - 0.03                # + knee: flexes, the shin goes back and up
    assert foot(knee=0.6)[0][2] > rest[2] + 0.01
    assert sign * (foot(hip_roll=0.3)[0][1] - rest[1]) < -0.03  # + hip roll: leg swings inward
    assert sign * foot(hip_yaw=0.3)[1][1, 0] < -0.2             # + hip yaw: toe turns inward
    assert foot(ank_pitch=0.3)[1][2, 0] > 0.2                   # + ankle pitch: toe up
    assert sign * foot(ank_roll=0.3)[1][2, 1] > 0.2             # + ankle roll: outer sole edge up


def test_op3_right_side_mirrors_left_with_negated_angles(op3, op3_kinematics):
    rng = np.random.default_rng(5)
    kinds = [n[2:] for n in op3.joint_names if n.startswith("l_")]
    angles = dict(zip(kinds, rng.uniform(-0.5, 0.5, len(kinds))))
    op3_kinematics.pose(dict([("l_" + k, v) for k, v in angles.items()] + [("r_" + k, -v) for k, v in angles.items()]))
    mirror = np.diag([1.0, -1.0, 1.0])
    for link in ["ank_roll_link", "knee_link", "el_link", "sho_roll_link"]:
        left, left_rot = op3_kinematics.link("l_" + link)
        right, right_rot = op3_kinematics.link("r_" + link)
        assert np.allclose(right, mirror.dot(left), atol=1e-9), link
        assert np.allclose(right_rot, mirror.dot(left_rot).dot(mirror), atol=1e-9), link


def test_op3_stance_is_a_flat_footed_crouch_with_arms_down(op3, op3_kinematics):
    op3_kinematics.pose(dict(zip(op3.joint_names, op3.stance)))
    for foot in op3.foot_links:
        position, rotation = op3_kinematics.link(foot)
        assert np.allclose(rotation, np.eye(3), atol=1e-9), foot
        assert abs(position[0]) < 0.001  # ankle under the hip
    height = -min(op3_kinematics.aabb(f)[0][2] for f in op3.foot_links)
    assert height == pytest.approx(op3_urdf.HIP_DROP + op3_urdf.THIGH + op3_urdf.SHIN + op3_urdf.ANKLE_TO_SOLE - 0.035,
                                   abs=0.001)  # legs 35 mm shorter than straight (ROBOTIS walking-ready pose)
    assert 0.0 < op3.spawn_height - height < 0.002
    for side, outward in (("l", 1.0), ("r", -1.0)):
        elbow, forearm = op3_kinematics.link(side + "_el_link")
        hand = elbow + forearm.dot([0.0, outward * 0.13, 0.0])  # the forearm points along +-y at zero angles
        assert elbow[2] < 0.06                                            # upper arm down from the 0.1 m shoulder
        assert hand[2] < elbow[2] - 0.12 and outward * hand[1] > 0.1      # forearm hangs, outside the body


# -- kinematic contract of every leg (from the URDF text, at zero angles) -----------------------------------------
def _joint_frames(robot):
    """joint name -> (origin, unit axis) in the torso frame at zero angles, and link -> its frame origin."""
    root = _urdf_root(robot)
    joints = {j.get("name"): j for j in root.findall("joint") if j.get("name") != BASE_JOINT}
    by_child = {j.find("child").get("link"): j for j in joints.values()}
    link_origin = {robot.torso_link: np.zeros(3)}

    def origin_of(link):
        if link not in link_origin:
            joint = by_child[link]
            assert joint.find("origin").get("rpy", "0 0 0").split() == ["0", "0", "0"], joint.get("name")
            offset = np.array([float(v) for v in joint.find("origin").get("xyz").split()])
            link_origin[link] = origin_of(joint.find("parent").get("link")) + offset
        return link_origin[link]

    frames = {}
    for name, joint in joints.items():
        axis = np.array([float(v) for v in joint.find("axis").get("xyz").split()])
        frames[name] = (origin_of(joint.find("child").get("link")), axis / np.linalg.norm(axis))
    return frames, link_origin, root


def _meeting_point(lines):
    """The point nearest to all ``(point, unit direction)`` lines and its largest distance to one of them."""
    projections = [np.eye(3) - np.outer(a, a) for _, a in lines]
    point = np.linalg.solve(sum(projections), sum(m.dot(p) for m, (p, _) in zip(projections, lines)))
    return point, max(np.linalg.norm(m.dot(point - p)) for m, (p, _) in zip(projections, lines))


@pytest.mark.parametrize("name", ROBOTS)
def test_leg_axes_meet_and_leg_hangs_straight(name):
    robot = load_robot(name)
    frames, link_origin, root = _joint_frames(robot)
    for leg in robot.legs:
        line = {role: frames[leg.role(role)] for role in LEG_JOINT_ROLES}
        hip, miss = _meeting_point([line["hip_yaw"], line["hip_roll"], line["hip_pitch"]])
        assert miss < 1e-9, (name, leg.name, "hip axes do not meet", miss)
        ankle, miss = _meeting_point([line["ankle_pitch"], line["ankle_roll"]])
        assert miss < 1e-9, (name, leg.name, "ankle axes do not meet", miss)
        pitch = line["hip_pitch"][1]
        assert abs(pitch[1]) == pytest.approx(1.0) and abs(line["hip_roll"][1][0]) == pytest.approx(1.0)
        for role in ("knee", "ankle_pitch"):
            assert np.linalg.norm(np.cross(line[role][1], pitch)) < 1e-12, (name, leg.name, role)
        vertical = (hip, np.array([0.0, 0.0, 1.0]))
        knee, miss = _meeting_point([vertical, line["knee"]])
        assert miss < 1e-9, (name, leg.name, "knee axis is not on the vertical through the hip point")
        assert np.allclose(ankle[:2], hip[:2], atol=1e-9) and hip[2] > knee[2] > ankle[2], (name, leg.name)
        assert np.allclose(link_origin[leg.foot], ankle, atol=1e-9), (name, leg.name, "sole frame off the ankle")
        foot = [link for link in root.findall("link") if link.get("name") == leg.foot][0]
        boxes = foot.findall("collision")
        assert boxes and all(c.find("geometry/box") is not None for c in boxes), (name, leg.foot)
        for collision in boxes:  # the sole box lies below the ankle point, under it
            centre = np.array([float(v) for v in collision.find("origin").get("xyz").split()])
            size = np.array([float(v) for v in collision.find("geometry/box").get("size").split()])
            assert centre[2] + size[2] / 2 < 0.0 and np.all(np.abs(centre[:2]) < size[:2] / 2), (name, leg.foot)


# -- standing in PyBullet -----------------------------------------------------------------------------------------
def _sole_offset(robot, foot):
    """Height of the sole's lowest point in the foot link frame (the feet are flat at stance)."""
    link = [link for link in _urdf_root(robot).findall("link") if link.get("name") == foot][0]
    return min(float(c.find("origin").get("xyz").split()[2]) - float(c.find("geometry/box").get("size").split()[2]) / 2
               for c in link.findall("collision"))


@pytest.mark.sim
@pytest.mark.parametrize("name", ROBOTS)
def test_stands_for_five_seconds_holding_the_stance(name):
    robot = load_robot(name)
    backend = PyBulletBackend(robot)
    try:
        state = backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
        soles = [p[2] + _sole_offset(robot, f) for p, f in zip(state.foot_positions, robot.foot_links)]
        assert all(0.0 <= z <= 0.002 for z in soles), soles  # spawned just above the ground
        heights, tilts = [], []
        for _ in range(int(round(5.0 * robot.control_rate_hz))):
            state = backend.step()
            heights.append(state.base_position[2])
            tilts.append(state.tilt())
        assert max(abs(h - robot.spawn_height) for h in heights) < 0.01
        assert max(tilts) < 0.1
        assert state.foot_contacts.all() and np.all(state.foot_forces > 0.0)
        weight = sum(GENERATORS[name].MODEL.link_masses(robot).values()) * 9.80665
        assert sum(state.foot_forces) == pytest.approx(weight, rel=0.1)  # the feet carry it all
        assert np.abs(state.joint_positions - robot.stance).max() < 0.02  # held stiffly
        assert np.linalg.norm(state.base_position[:2]) < 0.005             # no creeping
    finally:
        backend.close()
