"""REP 105 base_link: the generated URDFs' massless root, and PyBullet simulating the torso as the floating base
exactly as it did before base_link existed."""
import dataclasses
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pybullet
import pytest

pytestmark = pytest.mark.sim

from op3_walk.backends.pybullet_backend import PyBulletBackend, torso_rooted_urdf
from op3_walk.robots import load_robot
from op3_walk.robots.urdf_writer import BASE_JOINT, BASE_LINK, root_link
from op3_walk.training.evaluate import urdf_mass

ROBOTS = ("plen", "op3")


@pytest.mark.parametrize("name", ROBOTS)
def test_root_link_is_a_massless_base_link_fixed_to_the_torso(name):
    robot = load_robot(name)
    assert root_link(robot.urdf_path) == BASE_LINK
    urdf = ET.parse(robot.urdf_path).getroot()
    base = [link for link in urdf.findall("link") if link.get("name") == BASE_LINK]
    assert len(base) == 1 and base[0].find("inertial") is None   # KDL: no inertia on the root link
    joint = [j for j in urdf.findall("joint") if j.get("name") == BASE_JOINT]
    assert len(joint) == 1 and joint[0].get("type") == "fixed"
    assert joint[0].find("parent").get("link") == BASE_LINK
    assert joint[0].find("child").get("link") == robot.torso_link
    origin = joint[0].find("origin")
    assert [float(v) for v in (origin.get("xyz") + " " + origin.get("rpy")).split()] == [0.0] * 6


def _torso_rooted_copy(robot, folder):
    """The committed URDF with the base_link lines cut out by text: what the file was before base_link."""
    text = open(robot.urdf_path).read()
    text, links = re.subn(r'  <link name="%s"/>\n' % BASE_LINK, "", text)
    text, joints = re.subn(r'  <joint name="%s" type="fixed">.*?</joint>\n' % BASE_JOINT, "", text, flags=re.S)
    assert links == 1 and joints == 1
    path = os.path.join(str(folder), "%s_torso_rooted.urdf" % robot.name)
    with open(path, "w") as fh:
        fh.write(text)
    return path


@pytest.mark.parametrize("name", ROBOTS)
def test_pybullet_floats_the_torso_with_the_urdf_masses(name):
    robot = load_robot(name)
    with PyBulletBackend(robot) as b:
        assert b.link_names[0] == robot.torso_link and BASE_LINK not in b.link_names
        state = b.reset(robot.stance, (0.0, 0.0, 1.0))   # 1 m up: falls freely
        assert b._total_mass == pytest.approx(urdf_mass(robot.urdf_path), rel=1e-9)   # no 1 kg default base
        for _ in range(5):
            b.apply(robot.stance)
            state = b.step()
        assert state.base_position[2] < 1.0 - 0.01          # a dynamic base, not a static one
        assert state.base_linear_velocity[2] < -0.5


@pytest.mark.parametrize("name", ROBOTS)
def test_base_link_model_simulates_bit_identically_to_the_torso_rooted_model(name, tmp_path):
    robot = load_robot(name)
    old = dataclasses.replace(robot, urdf=_torso_rooted_copy(robot, tmp_path))
    rng = np.random.default_rng(5)
    actions = robot.stance + rng.uniform(-0.3, 0.3, (80, robot.n_joints))
    runs = []
    for model in (robot, old):
        with PyBulletBackend(model) as b:
            b.set_dynamics(mass_scales=np.linspace(0.9, 1.1, len(b.link_names)))   # per-link randomisation too
            states = [b.reset(robot.stance, (0.0, 0.0, robot.spawn_height))]
            for a in actions:
                b.apply(a)
                states.append(b.step())
            runs.append((b.link_names, states))
    assert runs[0][0] == runs[1][0]
    assert all(x == y for x, y in zip(runs[0][1], runs[1][1]))
    assert runs[0][1][-1] != runs[0][1][-2]   # it moved


def test_torso_rooted_urdf_accepts_only_a_massless_identity_root(tmp_path):
    robot = load_robot("plen")
    assert torso_rooted_urdf(_torso_rooted_copy(robot, tmp_path), robot.torso_link) is None   # loads as it is
    stripped = ET.fromstring(torso_rooted_urdf(robot.urdf_path, robot.torso_link))
    assert BASE_LINK not in [link.get("name") for link in stripped.findall("link")]
    assert BASE_JOINT not in [j.get("name") for j in stripped.findall("joint")]
    text = open(robot.urdf_path).read()
    variants = {
        "offset": text.replace('<child link="torso"/>\n    <origin xyz="0 0 0"', '<child link="torso"/>\n    '
                               '<origin xyz="0 0 0.01"'),
        "massive": text.replace('<link name="base_link"/>',
                                '<link name="base_link"><inertial><mass value="0.1"/><inertia ixx="1e-4" ixy="0" '
                                'ixz="0" iyy="1e-4" iyz="0" izz="1e-4"/></inertial></link>'),
    }
    for label, variant in variants.items():
        assert variant != text, label
        path = tmp_path / ("%s.urdf" % label)
        path.write_text(variant)
        with pytest.raises(ValueError, match="massless link fixed to it with an identity origin"):
            torso_rooted_urdf(str(path), robot.torso_link)


def test_the_simulation_copy_is_removed_on_close():
    robot = load_robot("plen")
    b = PyBulletBackend(robot)
    path = b._sim_urdf
    assert path != robot.urdf_path and os.path.isfile(path)
    b.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    b.close()
    assert not os.path.exists(path)


def test_pybullet_alone_would_give_the_massless_root_a_default_mass():
    """Why the backend strips base_link: PyBullet loads a link without <inertial> with 1 kg, a mass the robot does
    not have (and a zero-mass base would be static)."""
    robot = load_robot("plen")
    client = pybullet.connect(pybullet.DIRECT)
    try:
        body = pybullet.loadURDF(robot.urdf_path, flags=pybullet.URDF_USE_INERTIA_FROM_FILE, physicsClientId=client)
        assert pybullet.getBodyInfo(body, physicsClientId=client)[0].decode() == BASE_LINK
        assert pybullet.getDynamicsInfo(body, -1, physicsClientId=client)[0] == pytest.approx(1.0)
    finally:
        pybullet.disconnect(client)
