"""Leg kinematics from the URDF: FK against PyBullet, closed-form IK against FK, the contract checks."""
import math
import os
import re

import numpy as np
import pybullet
import pytest

from op3_walk import CONFIG_DIR
from op3_walk.robots import load_robot
from op3_walk.robots.kinematics import BipedKinematics, rot_z

ROBOTS = sorted(f[:-5] for f in os.listdir(os.path.join(CONFIG_DIR, "robots")) if f.endswith(".yaml"))
TOL = 1e-6  # m, and for rotation matrix entries


@pytest.fixture(scope="module", params=ROBOTS)
def biped(request):
    robot = load_robot(request.param)
    return robot, BipedKinematics(robot)


def flat_canonical(rng, leg, n):
    """``n`` random leg poses within the joint limits whose foot is flat: canonical ankle pitch = -(hip pitch +
    knee) and ankle roll = -hip roll cancel the hip's tilt, leaving the hip yaw as the foot's yaw."""
    lo_c = np.minimum(leg.to_canonical(leg.lower), leg.to_canonical(leg.upper))
    hi_c = np.maximum(leg.to_canonical(leg.lower), leg.to_canonical(leg.upper))
    lo_c, hi_c = np.maximum(lo_c, -1.2), np.minimum(hi_c, 1.2)  # keep hip roll and yaw away from +-pi/2
    poses = []
    while len(poses) < n:
        c = rng.uniform(lo_c, hi_c)
        c[3] = rng.uniform(max(lo_c[3], 0.05), hi_c[3])  # the IK bends the knee forward (canonical >= 0)
        c[4] = -(c[2] + c[3])
        c[5] = -c[1]
        if lo_c[4] <= c[4] <= hi_c[4] and lo_c[5] <= c[5] <= hi_c[5]:
            poses.append(c)
    return poses


def test_ik_inverts_fk_for_flat_feet(biped):
    robot, kin = biped
    rng = np.random.default_rng(1)
    for leg in kin.legs:
        for c in flat_canonical(rng, leg, 300):
            q_true = leg.to_joint(c)
            position, rotation = leg.fk(q_true)
            yaw = c[0]
            np.testing.assert_allclose(rotation, rot_z(yaw).dot(leg.foot_rotation0), atol=1e-12)
            q = leg.ik(position, yaw)
            p2, r2 = leg.fk(q)
            assert np.abs(p2 - position).max() < TOL, (leg.name, c)
            assert np.abs(r2 - rot_z(yaw).dot(leg.foot_rotation0)).max() < TOL, (leg.name, c)
            np.testing.assert_allclose(q, q_true, atol=1e-7)  # the solution is unique with the knee forward


def test_ik_of_random_targets_near_stance(biped):
    """Targets drawn around the stance foot: every one the IK accepts lands within 1e-6 m, flat, with its yaw."""
    robot, kin = biped
    rng = np.random.default_rng(2)
    for leg in kin.legs:
        home, _ = leg.fk(leg.stance)
        solved = 0
        for _ in range(300):
            target = home + rng.uniform(-0.15, 0.15, 3) * leg.length
            yaw = rng.uniform(-0.4, 0.4)
            try:
                q = leg.ik(target, yaw)
            except ValueError:
                continue
            solved += 1
            position, rotation = leg.fk(q)
            assert np.abs(position - target).max() < TOL
            assert np.abs(rotation - rot_z(yaw).dot(leg.foot_rotation0)).max() < TOL
            assert np.all(q >= leg.lower - 1e-9) and np.all(q <= leg.upper + 1e-9)
        assert solved >= 30, "only %d of 300 targets near stance were reachable for leg %s" % (solved, leg.name)


def test_ik_with_a_leaning_torso_keeps_the_foot_level(biped):
    robot, kin = biped
    lean = 0.1
    world_to_torso = np.array([[math.cos(lean), 0.0, -math.sin(lean)], [0.0, 1.0, 0.0],
                               [math.sin(lean), 0.0, math.cos(lean)]])  # Ry(-lean)
    for leg in kin.legs:
        home, _ = leg.fk(leg.stance)
        target = world_to_torso.dot(home)
        q = leg.ik(target, rotation=world_to_torso, check_limits=False)
        position, rotation = leg.fk(q)
        assert np.abs(position - target).max() < TOL
        assert np.abs(world_to_torso.T.dot(rotation) - leg.foot_rotation0).max() < TOL


def test_fk_matches_pybullet(biped):
    """Foot link frame in the torso frame, ours vs PyBullet's, for random joint angles within the limits."""
    robot, kin = biped
    client = pybullet.connect(pybullet.DIRECT)
    try:
        body = pybullet.loadURDF(robot.urdf_path, useFixedBase=True, physicsClientId=client)
        joints, links = {}, {}
        for i in range(pybullet.getNumJoints(body, physicsClientId=client)):
            info = pybullet.getJointInfo(body, i, physicsClientId=client)
            joints[info[1].decode()] = i
            links[info[12].decode()] = i
        # PyBullet reports the base's inertial frame; the torso link frame is that times the inverse local inertial
        com_pos, com_orn = pybullet.getBasePositionAndOrientation(body, physicsClientId=client)
        local = pybullet.getDynamicsInfo(body, -1, physicsClientId=client)[3:5]
        torso_pos, torso_orn = pybullet.multiplyTransforms(com_pos, com_orn, *pybullet.invertTransform(*local))
        torso_r = np.reshape(pybullet.getMatrixFromQuaternion(torso_orn), (3, 3))
        rng = np.random.default_rng(3)
        for _ in range(50):
            q = rng.uniform(robot.lower, robot.upper)
            for name, value in zip(robot.joint_names, q):
                pybullet.resetJointState(body, joints[name], float(value), physicsClientId=client)
            for leg in kin.legs:
                state = pybullet.getLinkState(body, links[leg.foot_link], computeForwardKinematics=True,
                                              physicsClientId=client)
                expected_p = torso_r.T.dot(np.array(state[4]) - np.array(torso_pos))
                expected_r = torso_r.T.dot(np.reshape(pybullet.getMatrixFromQuaternion(state[5]), (3, 3)))
                position, rotation = leg.fk(q[leg.indices])
                assert np.abs(position - expected_p).max() < TOL, leg.name
                assert np.abs(rotation - expected_r).max() < TOL, leg.name
    finally:
        pybullet.disconnect(client)


def test_full_joint_vector_puts_both_feet_and_keeps_other_joints(biped):
    robot, kin = biped
    homes = [leg.fk(leg.stance)[0] for leg in kin.legs]
    targets = [h + np.array([0.05, 0.0, 0.03]) * leg.length for h, leg in zip(homes, kin.legs)]
    q = kin.joint_vector(targets, yaws=[0.1, -0.1])
    leg_indices = np.concatenate([leg.indices for leg in kin.legs])
    others = np.setdiff1d(np.arange(robot.n_joints), leg_indices)
    np.testing.assert_array_equal(q[others], robot.stance[others])
    for (position, rotation), target, yaw, leg in zip(kin.foot_poses(q), targets, [0.1, -0.1], kin.legs):
        assert np.abs(position - target).max() < TOL
        assert np.abs(rotation - rot_z(yaw).dot(leg.foot_rotation0)).max() < TOL
    with pytest.raises(ValueError, match="expected 2 foot positions"):
        kin.joint_vector(targets[:1])


def test_signs_come_from_the_urdf_and_mirror_the_legs(biped):
    """Stance angles map to the same foot height on both sides and mirrored lateral offsets."""
    robot, kin = biped
    left, right = kin.legs
    assert set(np.abs(left.signs)) == {1.0}
    pl, _ = left.fk(left.stance)
    pr, _ = right.fk(right.stance)
    np.testing.assert_allclose(pl * [1, -1, 1], pr, atol=1e-9)
    np.testing.assert_allclose(left.ik(pl), left.stance, atol=1e-9)
    np.testing.assert_allclose(right.ik(pr), right.stance, atol=1e-9)


def test_unreachable_targets_are_rejected(biped):
    robot, kin = biped
    for leg in kin.legs:
        home, _ = leg.fk(leg.stance)
        with pytest.raises(ValueError, match="out of reach"):
            leg.ik(leg.hip - np.array([0.0, 0.0, 1.5 * leg.length]))
        with pytest.raises(ValueError, match="out of reach|not below the hip"):
            leg.ik(leg.hip + np.array([0.0, 0.0, 0.5 * leg.length]))
        with pytest.raises(ValueError, match="outside its limits"):  # needs a deep knee bend
            leg.ik(leg.hip - np.array([0.0, 0.0, 1.05 * abs(leg.thigh - leg.shin) + 0.02 * leg.length]))
        with pytest.raises(ValueError, match="position must be 3 finite numbers"):
            leg.ik([0.0, float("nan"), -0.1])
        with pytest.raises(ValueError, match="expected 6 joint angles"):
            leg.fk([0.0] * 5)


def _variant(tmp_path, robot_name, edit):
    robot = load_robot(robot_name)
    text = open(robot.urdf_path).read()
    new = edit(text)
    assert new != text
    path = tmp_path / "variant.urdf"
    path.write_text(new)
    return load_robot(robot_name, overrides={"urdf": str(path)})


def _joint_block(text, name):
    match = re.search(r'<joint name="%s".*?</joint>' % re.escape(name), text, re.S)
    return match.group(0)


def test_contract_violations_are_named(tmp_path):
    robot = load_robot("plen")
    pitch = robot.legs[0].role("hip_pitch")
    knee = robot.legs[0].role("knee")

    def shift_hip_pitch(text):
        block = _joint_block(text, pitch)
        return text.replace(block, re.sub(r'<origin xyz="[^"]*"', '<origin xyz="0.003 0 0"', block))

    with pytest.raises(ValueError, match="hip pitch axis misses the hip yaw axis"):
        BipedKinematics(_variant(tmp_path, "plen", shift_hip_pitch))

    def tilt_knee(text):
        block = _joint_block(text, knee)
        return text.replace(block, re.sub(r'<axis xyz="[^"]*"', '<axis xyz="0 -1 0.2"', block))

    with pytest.raises(ValueError, match="knee axis is .* not parallel to y"):
        BipedKinematics(_variant(tmp_path, "plen", tilt_knee))

    def knee_forward(text):
        block = _joint_block(text, knee)
        return text.replace(block, re.sub(r'<origin xyz="0 0 ', '<origin xyz="0.01 0 ', block))

    with pytest.raises(ValueError, match="knee axis misses the vertical through the hip point"):
        BipedKinematics(_variant(tmp_path, "plen", knee_forward))
