"""Backend interface helpers (RobotState, quaternions) and the PyBullet backend."""
import dataclasses
import math

import numpy as np
import pybullet
import pytest

from op3_walk.backends import STANDARD_GRAVITY, Backend, RobotState, quat_to_matrix
from op3_walk.backends.pybullet_backend import PyBulletBackend
from op3_walk.robots import load_robot

pytestmark = pytest.mark.sim  # runs PyBullet: `make test-portable` runs it under two OpenBLAS kernels


def quat(axis, angle):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    return tuple(axis * math.sin(angle / 2.0)) + (math.cos(angle / 2.0),)


def state_with(orientation):
    zeros = np.zeros(3)
    return RobotState(0.0, np.zeros(2), np.zeros(2), np.zeros(2), zeros, np.asarray(orientation, dtype=float),
                      zeros, zeros, zeros, np.zeros(2, dtype=bool))


@pytest.fixture(scope="module")
def plen():
    return load_robot("plen")


@pytest.fixture
def backend(plen):
    b = PyBulletBackend(plen)
    yield b
    b.close()


def standing(backend, plen, steps):
    state = backend.reset(plen.stance, (0.0, 0.0, plen.spawn_height))
    for _ in range(steps):
        backend.apply(plen.stance)
        state = backend.step()
    return state


# -- RobotState geometry ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation, tilt, gravity", [
    ((0, 0, 0, 1), 0.0, (0, 0, -1)),
    (quat((0, 0, 1), 1.0), 0.0, (0, 0, -1)),                  # yaw only: still upright
    (quat((1, 0, 0), math.pi / 2), math.pi / 2, (0, -1, 0)),  # 90 deg roll: body y points down
    (quat((1, 0, 0), -math.pi / 2), math.pi / 2, (0, 1, 0)),
    (quat((0, 1, 0), math.pi / 6), math.pi / 6, (0.5, 0, -math.sqrt(3) / 2)),  # pitched forward 30 deg
    (quat((0, 1, 0), -math.pi / 2), math.pi / 2, (-1, 0, 0)),
    (quat((1, 1, 0), math.pi), math.pi, (0, 0, 1)),           # upside down
    ((0, 0, 0, 2.0), 0.0, (0, 0, -1)),                        # not normalised
])
def test_tilt_and_gravity_on_known_orientations(orientation, tilt, gravity):
    state = state_with(orientation)
    assert state.tilt() == pytest.approx(tilt, abs=1e-12)
    assert np.allclose(state.gravity_body(), gravity, atol=1e-12)


def test_quat_to_matrix_matches_pybullet_and_gravity_body():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        r = quat_to_matrix(q)
        assert np.allclose(r, np.reshape(pybullet.getMatrixFromQuaternion(q), (3, 3)), atol=1e-12)
        assert np.allclose(r.T.dot(r), np.eye(3), atol=1e-12)
        state = state_with(q)
        assert np.allclose(state.gravity_body(), r.T.dot([0, 0, -1]), atol=1e-12)
        assert state.tilt() == pytest.approx(math.acos(np.clip(r[2, 2], -1, 1)), abs=1e-6)


def test_robot_state_equality_compares_arrays():
    a, b = state_with((0, 0, 0, 1)), state_with((0, 0, 0, 1))
    assert a == b
    b.joint_positions[0] = 1.0
    assert a != b


# -- PyBullet backend ---------------------------------------------------------------------------------------------
def test_is_a_backend(backend, plen):
    assert isinstance(backend, Backend)
    assert backend.control_period_s == pytest.approx(1.0 / plen.control_rate_hz)


def test_reset_places_the_robot(backend, plen):
    q = plen.stance + 0.01
    state = backend.reset(q, (0.1, -0.2, 0.3), quat((0, 0, 1), 0.5))
    assert state.time == 0.0
    assert np.allclose(state.joint_positions, q)
    assert np.allclose(state.base_position, (0.1, -0.2, 0.3))
    assert np.allclose(state.base_orientation, quat((0, 0, 1), 0.5))
    assert np.allclose(state.linear_acceleration, (0, 0, STANDARD_GRAVITY))
    assert state.foot_contacts.shape == (2,) and state.foot_contacts.dtype == bool


def test_step_advances_one_control_period(backend, plen):
    backend.reset(plen.stance, (0.0, 0.0, plen.spawn_height))
    for k in range(1, 4):
        assert backend.step().time == pytest.approx(k / plen.control_rate_hz)


def test_standing_still_reads_like_an_imu(backend, plen):
    state = standing(backend, plen, 90)
    assert state.base_position[2] == pytest.approx(0.158, abs=0.01)
    assert np.allclose(state.linear_acceleration, (0, 0, STANDARD_GRAVITY), atol=0.2)
    assert np.allclose(state.base_angular_velocity, 0.0, atol=0.05)
    assert np.allclose(state.base_linear_velocity, 0.0, atol=0.01)
    assert state.foot_contacts.tolist() == [True, True]
    assert np.all(np.abs(state.joint_efforts) <= plen.effort + 1e-9)


def test_accelerometer_is_in_the_body_frame(backend, plen):
    """Resting on its back the torso's +x axis (its front) points up: the accelerometer reads +9.81 on body x."""
    state = backend.reset(plen.stance, (0.0, 0.0, 0.04), quat((0, 1, 0), -math.pi / 2))
    for _ in range(120):
        state = backend.step()
    assert state.linear_acceleration[0] == pytest.approx(STANDARD_GRAVITY, abs=0.5)
    assert abs(state.linear_acceleration[2]) < 1.0


@pytest.mark.parametrize("bad", [np.zeros(17), np.zeros((18, 1)), np.full(18, np.nan),
                                 np.r_[np.zeros(17), np.inf]])
def test_apply_rejects_bad_targets(backend, plen, bad):
    backend.reset(plen.stance, (0.0, 0.0, plen.spawn_height))
    with pytest.raises(ValueError):
        backend.apply(bad)


def test_apply_clamps_to_limits_and_respects_motor_limits(backend, plen):
    backend.reset(plen.stance, (0.0, 0.0, plen.spawn_height))
    targets = plen.stance.copy()
    arm = plen.joint_names.index("l_shoulder_pitch")
    targets[arm] = 10.0
    backend.apply(targets)
    peak_speed = 0.0
    for _ in range(60):
        state = backend.step()
        peak_speed = max(peak_speed, abs(state.joint_velocities[arm]))
        assert np.all(np.abs(state.joint_efforts) <= plen.effort + 1e-9)
    assert state.joint_positions[arm] == pytest.approx(plen.upper[arm], abs=0.02)
    assert 2.0 < peak_speed <= plen.joints[arm].velocity + 0.05


def test_base_pose_is_the_torso_link_frame_even_with_an_offset_centre_of_mass(plen, tmp_path):
    text = open(plen.urdf_path).read()
    torso = text.index('<link name="%s">' % plen.torso_link)
    origin = text.index('<origin xyz="0 0 0" rpy="0 0 0"/>', torso)
    shifted = text[:origin] + '<origin xyz="0.01 0.005 -0.02" rpy="0 0 0"/>' + text[origin + 33:]
    path = tmp_path / "offset.urdf"
    path.write_text(shifted)
    robot = dataclasses.replace(plen, urdf=str(path))
    with PyBulletBackend(robot) as b:
        pose = quat((0, 0, 1), 0.7)
        state = b.reset(robot.stance, (0.1, 0.2, 0.5), pose)
        assert np.allclose(state.base_position, (0.1, 0.2, 0.5), atol=1e-9)
        assert np.allclose(state.base_orientation, pose, atol=1e-9)
        state = b.step()  # free fall, no rotation: the link origin falls like the centre of mass
        assert np.allclose(state.base_linear_velocity, (0, 0, -STANDARD_GRAVITY * robot.control_period_s), atol=1e-3)
        assert np.allclose(state.base_position[:2], (0.1, 0.2), atol=1e-6)


def test_same_calls_give_identical_states(plen):
    rng = np.random.default_rng(1)
    actions = plen.stance + rng.uniform(-0.3, 0.3, (60, plen.n_joints))
    runs = []
    for _ in range(2):
        with PyBulletBackend(plen) as b:
            states = [b.reset(plen.stance, (0.0, 0.0, plen.spawn_height))]
            for a in actions:
                b.apply(a)
                states.append(b.step())
            runs.append(states)
    assert all(x == y for x, y in zip(*runs))
    assert runs[0][-1] != runs[0][-2]


def test_reset_forgets_the_previous_episode(backend, plen):
    def episode():
        states = [backend.reset(plen.stance, (0.0, 0.0, plen.spawn_height))]
        for k in range(30):
            backend.apply(plen.stance + 0.2 * math.sin(k / 5.0))
            states.append(backend.step())
        return states
    first = episode()
    assert all(x == y for x, y in zip(first, episode()))


def test_two_backends_are_independent(plen):
    with PyBulletBackend(plen) as a, PyBulletBackend(plen) as b:
        a.reset(plen.stance, (0.0, 0.0, plen.spawn_height))
        b.reset(plen.stance, (0.0, 0.0, 1.0))
        for _ in range(10):
            a.step()
        assert b.state.time == 0.0
        assert b.step().base_position[2] < 1.0  # b falls freely, unaffected by a's ground contact
        assert b.state.foot_contacts.tolist() == [False, False]
        assert a.state.base_position[2] == pytest.approx(0.158, abs=0.01)


def test_close_is_idempotent_and_final(plen):
    b = PyBulletBackend(plen)
    b.reset(plen.stance, (0.0, 0.0, plen.spawn_height))
    b.close()
    b.close()
    with pytest.raises(RuntimeError):
        b.step()


def test_render_rgb(backend, plen):
    backend.reset(plen.stance, (0.0, 0.0, plen.spawn_height))
    image = backend.render_rgb(64, 48)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert image.std() > 0  # not a blank frame
