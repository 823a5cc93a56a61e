"""PyBulletBackend.set_pose: a kinematic pose (for re-rendering recorded episodes) without any simulation."""
import math

import numpy as np
import pytest

from op3_walk.backends.pybullet_backend import PyBulletBackend
from op3_walk.robots import load_robot

pytestmark = pytest.mark.sim  # runs PyBullet: `make test-portable` runs it under two OpenBLAS kernels


def yaw_pitch(yaw, pitch):
    """Quaternion (x, y, z, w) of a yaw about z followed by a pitch about the new y."""
    cy, sy, cp, sp = math.cos(yaw / 2), math.sin(yaw / 2), math.cos(pitch / 2), math.sin(pitch / 2)
    return (-sy * sp, cy * sp, sy * cp, cy * cp)


def bent_pose(robot, amount):
    """Stance moved ``amount`` of the way to each joint's upper limit: every joint away from stance."""
    return robot.stance + amount * (robot.upper - robot.stance)


@pytest.fixture(params=["plen", "op3"])
def robot(request):
    return load_robot(request.param)


@pytest.fixture
def backend(robot):
    b = PyBulletBackend(robot)
    yield b
    b.close()


def test_the_pose_is_what_the_backend_then_reads(backend, robot):
    """Joint positions and the torso link frame come back (to PyBullet's float32 transform precision), also for the
    OP3 whose base centre of mass is offset from its link frame (PyBullet places bodies by their centre of mass)."""
    q = bent_pose(robot, 0.4)
    position, orientation = (0.3, -0.2, 0.7), yaw_pitch(0.8, 0.5)
    state = backend.set_pose(q, position, orientation)
    assert np.allclose(state.joint_positions, q, atol=1e-6)
    assert np.allclose(state.base_position, position, atol=1e-6)
    # q and -q are the same rotation
    assert min(np.abs(state.base_orientation - orientation).max(),
               np.abs(state.base_orientation + orientation).max()) < 1e-6
    assert np.allclose(state.joint_velocities, 0.0) and np.allclose(state.base_linear_velocity, 0.0)


def test_no_physics_runs_the_robot_stays_in_the_air_and_time_stands_still(backend, robot):
    """A pose 1 m above the ground stays there: nothing was simulated, and setting it again changes nothing."""
    backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    backend.step()
    time_before = backend.state.time
    first = backend.set_pose(bent_pose(robot, 0.2), (0.0, 0.0, 1.0))
    again = backend.set_pose(bent_pose(robot, 0.2), (0.0, 0.0, 1.0))
    assert first.time == again.time == time_before
    assert first.base_position[2] == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(first.joint_positions, again.joint_positions)


def test_no_contact_of_the_last_physics_step_lingers(backend, robot):
    """Contact forces come from the solver: after a kinematic pose there are none, even with the feet on the
    ground, rather than stale ones from the last step."""
    state = backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
    for _ in range(10):
        state = backend.step()
    assert state.foot_contacts.all()
    posed = backend.set_pose(robot.stance, state.base_position, state.base_orientation)
    assert not posed.foot_contacts.any() and np.all(posed.foot_forces == 0.0)


def test_works_before_any_reset_and_outside_the_joint_limits(backend, robot):
    """Recorded states can sit slightly past a (soft) limit: they are drawn as recorded, not clamped, while the
    motor targets held for a later step are clamped."""
    q = robot.upper + 0.05
    state = backend.set_pose(q, (0.0, 0.0, 0.5))
    assert np.allclose(state.joint_positions, q, atol=1e-6)
    assert np.array_equal(backend.joint_targets, robot.upper)


def test_renders_the_pose_it_was_given(backend, robot):
    backend.set_pose(robot.stance, (0.0, 0.0, robot.spawn_height))
    standing = backend.render_rgb(64, 48)
    backend.set_pose(bent_pose(robot, 0.8), (0.0, 0.0, robot.spawn_height), yaw_pitch(0.0, 0.6))
    bent = backend.render_rgb(64, 48)
    backend.set_pose(robot.stance, (0.0, 0.0, robot.spawn_height))
    assert standing.shape == bent.shape == (48, 64, 3)
    assert np.abs(standing.astype(int) - bent.astype(int)).sum() > 0
    assert np.array_equal(backend.render_rgb(64, 48), standing)   # a pose is drawn the same each time


@pytest.mark.parametrize("args, message", [
    (lambda r: (np.zeros(r.n_joints + 1), (0, 0, 1)), "joint_positions must have shape"),
    (lambda r: (np.full(r.n_joints, np.nan), (0, 0, 1)), "finite"),
    (lambda r: (r.stance, (0, 0)), "base_position needs 3"),
    (lambda r: (r.stance, (0, 0, np.inf)), "finite"),
    (lambda r: (r.stance, (0, 0, 1), (0, 0, 0, 0)), "non-zero quaternion"),
])
def test_bad_poses_are_refused_and_change_nothing(backend, robot, args, message):
    before = backend.set_pose(robot.stance, (0.0, 0.0, 0.4))
    with pytest.raises(ValueError, match=message):
        backend.set_pose(*args(robot))
    after = backend.set_pose(robot.stance, (0.0, 0.0, 0.4))
    assert np.array_equal(before.joint_positions, after.joint_positions)


def test_closed_backend_is_an_error(robot):
    b = PyBulletBackend(robot)
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.set_pose(robot.stance, (0.0, 0.0, 0.4))


def test_relax_lets_joints_go_limp_and_apply_powers_them_again():
    from op3_walk.backends.pybullet_backend import PyBulletBackend
    from op3_walk.robots import load_robot
    robot = load_robot("plen")
    heights = {}
    for limp in (False, True):
        with PyBulletBackend(robot) as backend:
            backend.reset(robot.stance, (0.0, 0.0, robot.spawn_height))   # standing: the legs carry the weight
            if limp:
                backend.relax()
            for _ in range(50):
                state = backend.step()
            heights[limp] = state.base_position[2]
            if limp:
                slumped = np.abs(state.joint_positions - robot.stance).max()
                backend.apply(robot.stance)           # powered again: every joint drives back to its target
                for _ in range(50):
                    state = backend.step()
                assert np.abs(state.joint_positions - robot.stance).max() < 0.5 * slumped
                with pytest.raises(ValueError, match="mask of 18"):
                    backend.relax([True, False])
    assert heights[False] > 0.9 * robot.spawn_height      # powered: still standing
    assert heights[True] < 0.8 * heights[False]           # limp: collapsed
