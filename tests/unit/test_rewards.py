"""Reward library: each term's formula and sign on hand-built states, the registry, the gait history and the
per-step RewardComputer, and the reward sections of the task YAMLs."""
import dataclasses
import math
import os

import numpy as np
import pytest

from op3_walk import CONFIG_DIR
from op3_walk.backends import RobotState
from op3_walk.config import ConfigError, from_dict, load_yaml
from op3_walk.envs import rewards as R
from op3_walk.envs.rewards import (REWARD_TERMS, GaitHistory, Reference, RewardComputer, RewardParams, RewardWeights,
                                   StepContext, weighted_terms)
from op3_walk.robots import load_robot

DT = 1.0 / 60.0
N_JOINTS = 18
UPRIGHT = (0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def plen():
    return load_robot("plen")


def quat(axis, angle):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    return tuple(axis * math.sin(angle / 2.0)) + (math.cos(angle / 2.0),)


def qmul(a, b):
    """Hamilton product of (x, y, z, w) quaternions: rotation b, then a."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz)


def make_state(time_s=0.0, position=(0.0, 0.0, 0.158), orientation=UPRIGHT, velocity=(0.0, 0.0, 0.0),
               angular_velocity=(0.0, 0.0, 0.0), contacts=(True, True), joints=None, efforts=None, com=None,
               foot_orientations=None, cop=None):
    joints = np.zeros(N_JOINTS) if joints is None else np.asarray(joints, dtype=float)
    return RobotState(
        float(time_s), joints, np.zeros(N_JOINTS),
        np.zeros(N_JOINTS) if efforts is None else np.asarray(efforts, dtype=float),
        np.asarray(position, dtype=float), np.asarray(orientation, dtype=float), np.asarray(velocity, dtype=float),
        np.asarray(angular_velocity, dtype=float), np.array([0.0, 0.0, 9.81]), np.asarray(contacts, dtype=bool),
        com_position=np.asarray(com if com is not None else (position[0], position[1], 0.1), dtype=float),
        com_velocity=np.zeros(3), foot_positions=np.zeros((2, 3)),
        foot_orientations=np.tile(UPRIGHT, (2, 1)) if foot_orientations is None else np.asarray(foot_orientations),
        foot_forces=np.asarray(contacts, dtype=float) * 2.4,
        center_of_pressure=np.asarray(cop, dtype=float) if cop is not None else np.array([0.0, 0.0, 0.0]))


def ctx_for(state=None, previous=None, **kwargs):
    state = make_state(time_s=DT) if state is None else state
    previous = make_state() if previous is None else previous
    kwargs.setdefault("action", np.zeros(N_JOINTS))
    kwargs.setdefault("previous_action", np.zeros(N_JOINTS))
    kwargs.setdefault("fell", False)
    kwargs.setdefault("dt", DT)
    return StepContext(state=state, previous_state=previous, **kwargs)


def moved(dx=0.0, z=0.158, **kwargs):
    """Context of a step whose torso moved dx along x and ended at height z."""
    return ctx_for(make_state(time_s=DT, position=(0.3 + dx, 0.0, z)), make_state(position=(0.3, 0.0, 0.158)),
                   **kwargs)


# -- registry ------------------------------------------------------------------------------------------------------
def test_every_term_is_a_weight_field_and_vice_versa():
    fields = dataclasses.fields(RewardWeights)
    assert [f.name for f in fields] == list(REWARD_TERMS)
    for f in fields:
        assert f.default == 0.0, f.name
        assert f.metadata.get("doc"), f.name
    for name, term in REWARD_TERMS.items():
        assert term.__doc__ and term.__name__ == name
    for f in dataclasses.fields(RewardParams):
        assert f.metadata.get("doc"), f.name
    assert set(R.HISTORY_TERMS) <= set(REWARD_TERMS)


def test_weights_load_from_yaml_strictly():
    weights = from_dict(RewardWeights, {"alive": 1, "fall": 2.5})
    assert weights.active() == [("alive", 1.0), ("fall", 2.5)]
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(RewardWeights, {"alive_bonus": 1.0})


@pytest.mark.parametrize("bad, match", [
    ({"tracking_sigma": 0.0}, "tracking_sigma"), ({"cycle_steps": 1}, "cycle_steps"),
    ({"max_double_support": 1.5}, "max_double_support"), ({"still_joint_range": -0.1}, "still_joint_range"),
    ({"nominal_height": -0.1}, "nominal_height"), ({"right_leg_sign": 0.5}, "right_leg_sign"),
    ({"feet_air_time_target": -1.0}, "feet_air_time"),
])
def test_invalid_params_raise(bad, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(RewardParams, bad)


def test_zero_weights_are_skipped():
    ctx = ctx_for()  # no command, no reference, no history: those terms would raise if evaluated
    assert weighted_terms(RewardWeights(alive=2.0), ctx) == {"alive": 2.0}
    assert weighted_terms(RewardWeights(), ctx) == {}
    with pytest.raises(ValueError, match="lin_vel_tracking needs a velocity command"):
        weighted_terms(RewardWeights(lin_vel_tracking=1.0), ctx)


# -- generic terms -------------------------------------------------------------------------------------------------
def test_forward_velocity_alive_fall_tilt_action_rate():
    ctx = moved(0.002)
    assert R.forward_velocity(ctx) == pytest.approx(0.002 / DT)
    assert R.forward_velocity(dataclasses.replace(ctx, dt=0.0)) == pytest.approx(0.002 / DT)  # from the times
    assert R.alive(ctx) == 1.0 and R.fall(ctx) == 0.0
    fallen = dataclasses.replace(ctx, fell=True)
    assert R.alive(fallen) == 0.0 and R.fall(fallen) == -1.0
    for axis in ((1, 0, 0), (0, 1, 0), (1, 1, 0)):
        for angle in (0.3, -0.3):
            tilted = ctx_for(make_state(orientation=quat(axis, angle)))
            assert R.tilt(tilted) == pytest.approx(-0.09)
    ctx = ctx_for(action=np.full(N_JOINTS, 0.5), previous_action=np.full(N_JOINTS, 0.2))
    assert R.action_rate(ctx) == pytest.approx(-N_JOINTS * 0.09)
    assert R.action_rate(dataclasses.replace(ctx, previous_action=None)) == pytest.approx(-N_JOINTS * 0.25)


# -- OP3 DQN -------------------------------------------------------------------------------------------------------
def test_forward_progress_reproduces_the_op3_dqn_reward():
    assert R.forward_progress(moved(0.01)) == pytest.approx(10.0)       # 1000 dx upright, forward
    assert R.forward_progress(moved(-0.01)) == pytest.approx(-0.1)      # 10 dx backward
    assert R.forward_progress(moved(0.0)) == 0.0
    assert R.forward_progress(moved(0.01, fell=True)) == pytest.approx(-2.0 + 0.1)   # -2 + 10 dx when down
    assert R.forward_progress(moved(-0.01, fell=True)) == pytest.approx(-2.0 - 0.1)
    # with a fall height, the torso height decides (not the fall flag)
    low = moved(0.01, z=0.05, fall_height=0.09)
    assert R.forward_progress(low) == pytest.approx(-1.9)
    assert R.forward_progress(moved(0.01, z=0.12, fell=True, fall_height=0.09)) == pytest.approx(10.0)
    params = RewardParams(fall_height=0.06)  # the params' fall height wins over the env's
    assert R.forward_progress(dataclasses.replace(low, params=params)) == pytest.approx(-1.9)
    assert R.forward_progress(moved(0.01, z=0.07, fall_height=0.09, params=params)) == pytest.approx(10.0)


# -- PLEN shaping --------------------------------------------------------------------------------------------------
def plen_velocity_at(vx):
    return R.plen_velocity(ctx_for(make_state(velocity=(vx, 0.3, 0.0))))


def test_plen_velocity_is_exactly_the_published_formula():
    assert plen_velocity_at(0.1) == pytest.approx(0.09)        # (3 vx)^2
    assert plen_velocity_at(0.5) == pytest.approx(2.25)
    assert plen_velocity_at(0.0) == 0.0
    assert plen_velocity_at(-0.1) == pytest.approx(-math.exp(-0.3))  # -exp(3 vx)
    assert plen_velocity_at(-1e-9) == pytest.approx(-1.0)      # the jump at 0, as published
    assert plen_velocity_at(-1.0) > plen_velocity_at(-0.1)     # ... and faster backward costs less, as published


def test_height_lateral_posture():
    for z in (0.148, 0.168):
        assert R.height(ctx_for(make_state(position=(0, 0, z)), nominal_height=0.158)) == pytest.approx(-0.16)
    assert R.height(ctx_for(make_state(position=(0, 0, 0.158)), nominal_height=0.158)) == 0.0
    assert R.height(ctx_for(make_state(position=(0, 0, 0.148)), params=RewardParams(nominal_height=0.158))) == \
        pytest.approx(-0.16)
    with pytest.raises(ValueError, match="height needs a nominal height"):
        R.height(ctx_for())
    for y in (0.1, -0.1):
        assert R.lateral(ctx_for(make_state(position=(0.5, y, 0.158)))) == pytest.approx(-0.01)
    for sign in (1.0, -1.0):
        a = sign * 0.2
        assert R.posture(ctx_for(make_state(orientation=quat((1, 0, 0), a)))) == pytest.approx(-0.04)   # roll
        assert R.posture(ctx_for(make_state(orientation=quat((0, 1, 0), a)))) == pytest.approx(-0.02)   # pitch
        assert R.posture(ctx_for(make_state(orientation=quat((0, 0, 1), a)))) == pytest.approx(-0.04)   # yaw
    assert R.posture(ctx_for()) == 0.0


def test_euler_zyx_inverts_yaw_pitch_roll():
    rng = np.random.default_rng(0)
    for _ in range(50):
        roll, pitch, yaw = rng.uniform(-1.4, 1.4, 3)
        q = qmul(quat((0, 0, 1), yaw), qmul(quat((0, 1, 0), pitch), quat((1, 0, 0), roll)))
        assert np.allclose(R.euler_zyx(q), (roll, pitch, yaw), atol=1e-9)
        expected = -(roll ** 2 + 0.5 * pitch ** 2 + yaw ** 2)
        assert R.posture(ctx_for(make_state(orientation=q))) == pytest.approx(expected)


# -- gait history and bio-inspired terms ---------------------------------------------------------------------------
T = 80


def sine_triplet(t, shift=0.0, amplitude=(0.3, 0.5, 0.2), offset=(0.3, -0.6, 0.3)):
    phase = 2.0 * math.pi * (t + shift) / T
    return [o + a * math.sin(phase + k) for k, (a, o) in enumerate(zip(amplitude, offset))]


def filled(right_shift, steps=T, right_sign=1.0, left_amplitude=(0.3, 0.5, 0.2), right_amplitude=(0.3, 0.5, 0.2)):
    history = GaitHistory(T)
    for t in range(steps):
        left = sine_triplet(t, amplitude=left_amplitude)
        right = [right_sign * v for v in sine_triplet(t, right_shift, amplitude=right_amplitude)]
        history.push(np.array(left + right), (True, True), DT)
    return history


def symmetry(history, **params):
    return R.gait_symmetry(ctx_for(history=history, params=RewardParams(**params)))


def test_gait_symmetry_is_one_for_an_anti_phased_gait_and_lower_otherwise():
    assert symmetry(filled(-T / 2)) == pytest.approx(1.0)           # right lags half a cycle
    assert symmetry(filled(-T / 2, steps=3 * T + 17)) == pytest.approx(1.0)  # after the ring buffer wrapped
    assert symmetry(filled(T / 2)) == pytest.approx(1.0)            # half a cycle either way
    assert symmetry(filled(0.0)) == pytest.approx(-1.0)             # both legs swing together
    quarter = symmetry(filled(-T / 4))
    assert abs(quarter) < 0.05
    partial = symmetry(filled(-T / 2 + 8))
    assert quarter < partial < 1.0
    assert symmetry(filled(-T / 2, steps=T - 1)) == 0.0             # not a whole cycle yet
    still = filled(0.0, right_amplitude=(0.0, 0.0, 0.0))
    assert symmetry(still) == 0.0                                   # one leg does not move
    assert symmetry(still, symmetry_centered=False) > 0.5           # raw angles: the stance offsets dominate
    mirrored = filled(-T / 2, right_sign=-1.0)
    assert symmetry(mirrored) == pytest.approx(-1.0)
    assert symmetry(mirrored, right_leg_sign=-1.0) == pytest.approx(1.0)
    assert R.gait_symmetry(ctx_for()) == 0.0                        # no history


def test_right_leg_sign_comes_from_the_stance_unless_given(plen):
    op3 = load_robot("op3")
    assert R.right_leg_sign(plen) == 1.0 and R.right_leg_sign(op3) == -1.0
    assert RewardComputer(RewardWeights(gait_symmetry=1.0), RewardParams(), op3).params.right_leg_sign == -1.0
    assert RewardComputer(RewardWeights(gait_symmetry=1.0), RewardParams(), plen).params.right_leg_sign == 1.0
    given = RewardParams(right_leg_sign=1.0)
    assert RewardComputer(RewardWeights(gait_symmetry=1.0), given, op3).params.right_leg_sign == 1.0
    assert RewardParams().right_leg_sign is None  # the caller's params are not changed
    mirrored = filled(-T / 2, right_sign=-1.0)  # an OP3-like anti-phased gait
    computer = RewardComputer(RewardWeights(gait_symmetry=1.0), RewardParams(), op3)
    assert R.gait_symmetry(ctx_for(history=mirrored, params=computer.params)) == pytest.approx(1.0)


def test_gait_symmetry_matches_the_plain_numpy_definition():
    rng = np.random.default_rng(1)
    history = GaitHistory(T)
    for _ in range(T + 23):
        history.push(rng.normal(size=6), (True, False), DT)
    left, right = history.left(), np.roll(history.right(), T // 2, axis=0)
    for centered in (True, False):
        a = (left - left.mean(0) if centered else left).ravel()
        b = (right - right.mean(0) if centered else right).ravel()
        expected = a.dot(b) / np.linalg.norm(a) / np.linalg.norm(b)
        assert symmetry(history, symmetry_centered=centered) == pytest.approx(expected, abs=1e-12)


def test_gait_history_returns_rows_oldest_first():
    history = GaitHistory(4)
    for t in range(6):
        history.push(np.arange(6.0) + 10 * t, (t % 2 == 0, True), DT)
    assert history.full and history.count == 4
    assert np.array_equal(history.left()[:, 0], [20, 30, 40, 50])
    assert np.array_equal(history.right()[:, 0], [23, 33, 43, 53])
    assert np.array_equal(history.leg_joints()[-1], np.arange(6.0) + 50)
    assert np.array_equal(history.contacts()[:, 0], [True, False, True, False])
    assert history.double_support_fraction() == 0.5
    assert np.allclose(history.joint_ranges(), 30.0)
    partial = GaitHistory(4)
    partial.push(np.arange(6.0), (True, True), DT)
    assert np.array_equal(partial.right(), [[3, 4, 5]]) and partial.double_support_fraction() == 1.0


def test_joint_motion_counts_still_leg_joints():
    def motion(amplitude_left, amplitude_right, steps=T):
        history = filled(-T / 2, steps=steps, left_amplitude=amplitude_left, right_amplitude=amplitude_right)
        return R.joint_motion(ctx_for(history=history, params=RewardParams(still_joint_range=0.05)))
    assert motion((0.3, 0.5, 0.2), (0.3, 0.5, 0.2)) == 0.0
    assert motion((0.3, 0.01, 0.2), (0.3, 0.5, 0.0)) == pytest.approx(-2.0 / 6.0)  # ranges 0.02 and 0 < 0.05
    assert motion((0.0,) * 3, (0.0,) * 3) == -1.0
    assert motion((0.0,) * 3, (0.0,) * 3, steps=T - 1) == 0.0                       # not a whole cycle yet


@pytest.mark.parametrize("step, contacts, expected", [
    (1, (False, True), 1.0), (1, (True, False), 0.0), (40, (True, True), 1.0), (40, (True, False), 0.0),
    (41, (True, False), 1.0), (41, (False, True), 0.0), (80, (True, False), 1.0), (81, (False, True), 1.0),
    (81, (True, False), 0.0), (5, (False, False), 0.0),
])
def test_gait_phase_contact_right_foot_first_half_left_second(step, contacts, expected):
    ctx = ctx_for(make_state(contacts=contacts), step=step, params=RewardParams(cycle_steps=80))
    assert R.gait_phase_contact(ctx) == expected


def test_double_support_penalises_the_excess_over_the_allowed_fraction():
    def history_with(double_steps, single_steps):
        history = GaitHistory(T)
        for _ in range(double_steps):
            history.push(np.zeros(6), (True, True), DT)
        for i in range(single_steps):
            history.push(np.zeros(6), (i % 2 == 0, i % 2 == 1), DT)
        return history
    params = RewardParams(max_double_support=0.33)
    value = R.double_support(ctx_for(history=history_with(40, 40), params=params))
    assert value == pytest.approx(-(0.5 - 0.33))
    assert R.double_support(ctx_for(history=history_with(20, 60), params=params)) == 0.0
    assert R.double_support(ctx_for(history=history_with(T, T), params=params)) == 0.0   # the window slid on
    assert R.double_support(ctx_for(history=history_with(T - 1, 0), params=params)) == 0.0  # not a whole cycle
    assert R.double_support(ctx_for(history=history_with(T, 0), params=params)) == pytest.approx(-0.67)


def test_flat_foot_rewards_flat_soles_in_contact():
    flat = np.tile(UPRIGHT, (2, 1))
    assert R.flat_foot(ctx_for(make_state(contacts=(True, True), foot_orientations=flat))) == pytest.approx(2.0)
    assert R.flat_foot(ctx_for(make_state(contacts=(False, False), foot_orientations=flat))) == 0.0
    tilted = np.array([quat((0, 1, 0), 0.4), quat((1, 0, 0), -0.7)])
    assert R.flat_foot(ctx_for(make_state(contacts=(True, False), foot_orientations=tilted))) == \
        pytest.approx(math.cos(0.4))
    assert R.flat_foot(ctx_for(make_state(contacts=(True, True), foot_orientations=tilted))) == \
        pytest.approx(math.cos(0.4) + math.cos(0.7))
    yawed = np.array([quat((0, 0, 1), 1.0), UPRIGHT])  # turning the foot on the ground keeps it flat
    assert R.flat_foot(ctx_for(make_state(contacts=(True, False), foot_orientations=yawed))) == pytest.approx(1.0)


# -- ZMP tracking --------------------------------------------------------------------------------------------------
def reference(zmp=(0.0, 0.0), support=(True, True)):
    return Reference(zmp=np.asarray(zmp, dtype=float), support=np.asarray(support, dtype=bool), phase=0.25)


def test_zmp_tracking_uses_the_centre_of_pressure_or_the_com_when_airborne():
    on_ground = make_state(cop=(0.03, 0.04, 0.0), com=(0.5, 0.5, 0.1))
    assert R.zmp_tracking(ctx_for(on_ground, reference=reference())) == pytest.approx(-0.05)
    assert R.zmp_tracking(ctx_for(on_ground, reference=reference((0.03, 0.04)))) == 0.0
    airborne = make_state(contacts=(False, False), cop=(np.nan, np.nan, np.nan), com=(0.06, -0.08, 0.1))
    assert R.zmp_tracking(ctx_for(airborne, reference=reference())) == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="reference"):
        R.zmp_tracking(ctx_for(on_ground))
    with pytest.raises(ValueError, match="reference ZMP"):
        R.zmp_tracking(ctx_for(on_ground, reference=Reference(zmp=None, support=np.ones(2, bool), phase=0.0)))


def test_support_tracking_fall_after_steps_success():
    state = make_state(contacts=(True, False))
    assert R.support_tracking(ctx_for(state, reference=reference(support=(True, False)))) == 1.0
    assert R.support_tracking(ctx_for(state, reference=reference(support=(True, True)))) == 0.5
    assert R.support_tracking(ctx_for(state, reference=reference(support=(False, True)))) == 0.0
    assert R.fall_after_steps(ctx_for(fell=True, step=100)) == -150.0
    assert R.fall_after_steps(ctx_for(fell=True, step=1)) == -249.0
    assert R.fall_after_steps(ctx_for(fell=False, step=100)) == 0.0
    assert R.success(ctx_for(episode_end=True)) == 1.0
    assert R.success(ctx_for(episode_end=False)) == 0.0
    assert R.success(ctx_for(episode_end=True, fell=True)) == 0.0


# -- velocity tracking ---------------------------------------------------------------------------------------------
def test_lin_vel_tracking_is_one_at_the_command_and_decreases_away_from_it():
    command = np.array([0.2, 0.05, 0.0])
    def tracking(vx, vy, yaw=0.0):
        state = make_state(velocity=(vx, vy, 0.3), orientation=quat((0, 0, 1), yaw))
        return R.lin_vel_tracking(ctx_for(state, command=command))
    assert tracking(0.2, 0.05) == pytest.approx(1.0)  # vertical velocity does not count
    assert tracking(0.7, 0.05) == pytest.approx(math.exp(-1.0))  # error 0.5 m/s, sigma^2 = 0.25
    values = [tracking(0.2 - e, 0.05) for e in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(values, values[1:]))
    # heading frame: facing +y, moving along world +y is "forward"
    assert tracking(-0.05, 0.2, yaw=math.pi / 2) == pytest.approx(1.0)
    assert tracking(0.2, 0.05, yaw=math.pi / 2) < 0.9
    slow = np.array([0.05, 0.0, 0.0])  # slow commands are tracked the same way
    assert R.lin_vel_tracking(ctx_for(make_state(velocity=(0.05, 0, 0)), command=slow)) == pytest.approx(1.0)
    assert R.lin_vel_tracking(ctx_for(make_state(), command=slow)) < 1.0
    with pytest.raises(ValueError, match="command"):
        R.lin_vel_tracking(ctx_for())


def test_yaw_rate_tracking_uses_the_rate_about_world_z():
    command = np.array([0.0, 0.0, 0.5])
    upright = make_state(angular_velocity=(0.3, -0.2, 0.5))
    assert R.yaw_rate_tracking(ctx_for(upright, command=command)) == pytest.approx(1.0)
    assert R.yaw_rate_tracking(ctx_for(make_state(angular_velocity=(0, 0, 1.0)), command=command)) == \
        pytest.approx(math.exp(-1.0))
    rolled = make_state(orientation=quat((1, 0, 0), math.pi / 2), angular_velocity=(0.0, 0.5, 0.0))  # body y = up
    assert R.yaw_rate_tracking(ctx_for(rolled, command=command)) == pytest.approx(1.0)


def test_regularisers():
    assert R.lin_vel_z(ctx_for(make_state(velocity=(0.3, 0.1, 0.2)))) == pytest.approx(-0.04)
    pitched = make_state(orientation=quat((0, 1, 0), math.pi / 2), velocity=(0.5, 0.0, 0.0))  # body z = world x
    assert R.lin_vel_z(ctx_for(pitched)) == pytest.approx(-0.25)
    assert R.ang_vel_xy(ctx_for(make_state(angular_velocity=(0.1, 0.2, 5.0)))) == pytest.approx(-0.05)
    assert R.orientation(ctx_for()) == pytest.approx(0.0)
    for axis in ((1, 0, 0), (0, 1, 0)):
        state = make_state(orientation=quat(axis, 0.3))
        assert R.orientation(ctx_for(state)) == pytest.approx(-math.sin(0.3) ** 2)
    assert R.orientation(ctx_for(make_state(orientation=quat((0, 0, 1), 2.0)))) == pytest.approx(0.0)
    efforts = np.zeros(N_JOINTS)
    efforts[:3] = (0.1, -0.2, 0.05)
    assert R.torques(ctx_for(make_state(efforts=efforts))) == pytest.approx(-(0.01 + 0.04 + 0.0025))


def air_time_run(contacts_sequence, command=None, params=None):
    """Feed a contact sequence through a history; the feet_air_time term of each step."""
    history = GaitHistory(T)
    history.clear((True, True))
    values = []
    for contacts in contacts_sequence:
        history.push(np.zeros(6), contacts, DT)
        values.append(R.feet_air_time(ctx_for(make_state(contacts=contacts), history=history, command=command,
                                              params=params or RewardParams())))
    return values


def test_feet_air_time_pays_only_at_touchdown():
    flight = 45  # steps with the left foot up: 0.75 s
    sequence = [(True, True)] * 3 + [(False, True)] * flight + [(True, True)] * 5
    values = air_time_run(sequence)
    touchdown = 3 + flight
    assert values[touchdown] == pytest.approx(flight * DT - 0.5)   # 0.75 s - 0.5 s target
    assert all(v == 0.0 for i, v in enumerate(values) if i != touchdown)
    short = air_time_run([(True, True), (True, False)] + [(True, True)] * 3 + [(False, True)] * 6 + [(True, True)])
    assert short[1:4] == [0.0, 0.0, 0.0]        # a one-step contact loss is not a flight (legged_gym filter)
    assert short[-1] == pytest.approx(6 * DT - 0.5)  # a short step costs
    both = air_time_run([(False, False)] * 30 + [(True, True)])
    assert both[-1] == pytest.approx(2 * (30 * DT - 0.5))
    assert air_time_run(sequence, command=np.array([0.05, 0.05, 1.0]))[touchdown] == 0.0  # standing command
    assert air_time_run(sequence, command=np.array([0.3, 0.0, 0.0]))[touchdown] == pytest.approx(flight * DT - 0.5)
    target = RewardParams(feet_air_time_target=0.25)
    assert air_time_run(sequence, params=target)[touchdown] == pytest.approx(flight * DT - 0.25)


# -- RewardComputer ------------------------------------------------------------------------------------------------
ALL_WEIGHTS = RewardWeights(**{name: 0.5 + i for i, name in enumerate(REWARD_TERMS)})


def walking_states(n, seed=0, still_joint=None):
    """A made-up but varied sequence of states: swinging legs, alternating contacts, wobbling torso."""
    rng = np.random.default_rng(seed)
    states = [make_state()]
    for k in range(1, n + 1):
        joints = np.zeros(N_JOINTS)
        joints[[2, 3, 4]] = sine_triplet(k)
        joints[[8, 9, 10]] = sine_triplet(k, -T / 2)
        if still_joint is not None:
            joints[still_joint] = 0.1
        phase = (k // 20) % 4
        contacts = [(True, True), (False, True), (True, True), (True, False)][phase]
        states.append(make_state(
            time_s=k * DT, position=(0.002 * k, 0.01 * math.sin(k / 7.0), 0.158 + 0.003 * rng.normal()),
            orientation=quat((0.2, 1.0, 0.1), 0.05 * math.sin(k / 5.0)), velocity=rng.normal(0, 0.1, 3),
            angular_velocity=rng.normal(0, 0.3, 3), contacts=contacts, joints=joints,
            efforts=rng.normal(0, 0.05, N_JOINTS), cop=(0.002 * k, 0.0, 0.0),
            foot_orientations=np.array([quat((0, 1, 0), 0.1 * math.sin(k / 9.0)), UPRIGHT])))
    return states


def run(computer, states, command=np.array([0.15, 0.0, 0.1])):
    computer.reset(states[0])
    rng = np.random.default_rng(3)
    previous_action = np.zeros(N_JOINTS)
    outputs, contexts = [], []
    for k in range(1, len(states)):
        action = rng.uniform(-1, 1, N_JOINTS)
        last = k == len(states) - 1
        terms = computer(states[k], states[k - 1], action, previous_action, False, k, DT, last, command=command,
                         reference=reference((0.002 * k, 0.01)))
        outputs.append(terms)
        contexts.append(computer.context)
        previous_action = action
    return outputs, contexts


def test_computer_equals_the_sum_of_the_pure_terms(plen):
    computer = RewardComputer(ALL_WEIGHTS, RewardParams(), plen)
    assert computer.nominal_height == plen.spawn_height
    states = walking_states(2 * T + 10, still_joint=plen.joint_index("r_ankle_pitch"))
    computer.reset(states[0])
    previous_action = np.zeros(N_JOINTS)
    nonzero = set()
    for k in range(1, len(states)):
        action = np.full(N_JOINTS, 0.01 * k)
        terms = computer(states[k], states[k - 1], action, previous_action, False, k, DT, False,
                         command=np.array([0.15, 0.0, 0.1]), reference=reference((0.002 * k, 0.01)))
        ctx = computer.context
        assert ctx.step == k and ctx.history is computer.history and ctx.nominal_height == plen.spawn_height
        assert list(terms) == list(REWARD_TERMS)
        for name, value in terms.items():
            assert value == getattr(ALL_WEIGHTS, name) * REWARD_TERMS[name](ctx)
            assert math.isfinite(value)
            if value != 0.0:
                nonzero.add(name)
        assert terms == weighted_terms(ALL_WEIGHTS, ctx)
        previous_action = action
    # every term fired at least once on this sequence, except the ones that need a fall or the episode's end
    assert set(REWARD_TERMS) - nonzero == {"fall", "fall_after_steps", "success"}


def test_computer_returns_only_weighted_terms_and_is_deterministic(plen):
    weights = RewardWeights(forward_velocity=10.0, alive=0.1, tilt=1.0, action_rate=0.01, fall=10.0)
    computer = RewardComputer(weights, RewardParams(), plen)
    states = walking_states(50)
    outputs, _ = run(computer, states, command=None)
    assert all(list(o) == ["forward_velocity", "alive", "tilt", "action_rate", "fall"] for o in outputs)
    again, _ = run(RewardComputer(weights, RewardParams(), plen), states, command=None)
    assert outputs == again
    bio = RewardWeights(gait_symmetry=1.0, double_support=2.0, feet_air_time=1.0, success=3.0)
    first, _ = run(RewardComputer(bio, RewardParams(), plen), walking_states(3 * T))
    second, _ = run(RewardComputer(bio, RewardParams(), plen), walking_states(3 * T))
    assert first == second and first[-1]["success"] == 3.0
    assert first[T - 2]["gait_symmetry"] == 0.0 and first[T]["gait_symmetry"] == pytest.approx(1.0)


def test_reset_clears_the_history(plen):
    weights = RewardWeights(gait_symmetry=1.0, joint_motion=1.0, feet_air_time=1.0)
    computer = RewardComputer(weights, RewardParams(), plen)
    states = walking_states(T + 30)
    outputs, _ = run(computer, states)
    history = computer.history
    assert history.full and outputs[-1]["gait_symmetry"] != 0.0
    computer.reset(states[0])
    assert history.count == 0 and not history.full
    assert history.air_time == (0.0, 0.0) and history.touchdown == (False, False)
    assert computer.context is None
    terms = computer(states[1], states[0], np.zeros(N_JOINTS), np.zeros(N_JOINTS), False, 1, DT, False)
    assert terms == {"gait_symmetry": 0.0, "joint_motion": 0.0, "feet_air_time": 0.0}
    assert history.count == 1
    replay, _ = run(computer, states)  # an episode after a reset is the same as the first one
    assert replay == outputs


def test_computer_heights_and_robot_requirements(plen):
    assert RewardComputer(RewardWeights(height=1.0), RewardParams(), plen, nominal_height=0.15).nominal_height == 0.15
    assert RewardComputer(RewardWeights(height=1.0), RewardParams(nominal_height=0.14), plen,
                          nominal_height=0.15).nominal_height == 0.14
    computer = RewardComputer(RewardWeights(forward_progress=1.0), RewardParams(), plen, fall_height=0.09)
    low = make_state(time_s=DT, position=(0.01, 0.0, 0.05))
    assert computer(low, make_state(), np.zeros(N_JOINTS), np.zeros(N_JOINTS), False, 1, DT, False) == \
        {"forward_progress": pytest.approx(-1.9)}
    assert RewardComputer(RewardWeights(alive=1.0)).nominal_height is None  # no robot: fine without history terms
    with pytest.raises(ValueError, match="need the robot"):
        RewardComputer(RewardWeights(gait_symmetry=1.0))
    with pytest.raises(ValueError, match="max_double_support"):
        RewardComputer(RewardWeights(alive=1.0), RewardParams(max_double_support=2.0), plen)


def test_terms_without_history_ignore_it(plen):
    _, contexts = run(RewardComputer(ALL_WEIGHTS, RewardParams(), plen), walking_states(T + 5))
    ctx = contexts[-1]
    bare = dataclasses.replace(ctx, history=None)
    for name, term in REWARD_TERMS.items():
        if name not in R.HISTORY_TERMS:
            assert term(bare) == term(ctx), name


# -- task YAMLs ----------------------------------------------------------------------------------------------------
TASK_FILES = {
    "op3_dqn_forward": {"forward_progress": 1.0},
    "plen_shaping": {"plen_velocity": 1.0, "height": 1.0, "lateral": 1.0, "posture": 1.0, "fall": 100.0},
    "plen_bio": None,
    "zmp_tracking": {"zmp_tracking": 1.0, "fall_after_steps": 1.0, "success": 200.0},
    "velocity_tracking": None,
}


@pytest.mark.parametrize("name", sorted(TASK_FILES))
def test_task_reward_sections_load_and_run(name, plen):
    data = load_yaml(os.path.join(CONFIG_DIR, "tasks", name + ".yaml"))
    weights = from_dict(RewardWeights, data["reward"])
    params = from_dict(RewardParams, data.get("reward_params"))
    expected = TASK_FILES[name]
    if expected is not None:
        assert dict(weights.active()) == expected
    assert all(w > 0.0 for _, w in weights.active())  # penalties are negative terms, so weights are positive
    outputs, _ = run(RewardComputer(weights, params, plen), walking_states(T + 10))
    assert all(math.isfinite(v) for o in outputs for v in o.values())


def test_velocity_tracking_weights_follow_the_prior_work():
    weights = from_dict(RewardWeights, load_yaml(os.path.join(CONFIG_DIR, "tasks", "velocity_tracking.yaml"))["reward"])
    assert 1.0 <= weights.lin_vel_tracking <= 1.5 and 0.5 <= weights.yaw_rate_tracking <= 0.8
    assert (weights.lin_vel_z, weights.ang_vel_xy, weights.orientation) == (2.0, 0.05, 5.0)
    assert 1e-4 <= weights.torques <= 2e-4 and isinstance(weights.torques, float)
    assert (weights.action_rate, weights.feet_air_time, weights.fall) == (0.01, 1.0, 1.0)


def test_walk_task_terms_keep_their_meaning():
    weights = from_dict(RewardWeights, load_yaml(os.path.join(CONFIG_DIR, "tasks", "walk.yaml"))["reward"])
    assert [name for name, _ in weights.active()] == ["forward_velocity", "alive", "tilt", "action_rate", "fall"]
