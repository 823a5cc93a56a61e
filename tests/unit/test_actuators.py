"""Actuator models (op3_walk.backends.actuators) against analytical step responses, and their PyBullet hook."""
import math
import os

import numpy as np
import pytest

from op3_walk.backends.actuators import (ServoActuator, make_actuator, rise_time, second_order_step,
                                         simulate_joint)
from op3_walk.config import ConfigError
from op3_walk.robots.description import load_robot

DT = 0.005           # s, the OP3's physics step
KP, KD = 21.1, 1.084  # OP3 XM430 model
STALL, NO_LOAD, LIMIT = 4.1, 4.8, 5.0


def servo(**kw):
    params = dict(kp=KP, kd=KD, torque_limit=LIMIT, stall_torque=STALL, no_load_speed=NO_LOAD)
    params.update(kw)
    return ServoActuator(1, **params)


def step(actuator, inertia, size, seconds, **kw):
    return simulate_joint(actuator, inertia, np.full(int(round(seconds / DT)), size), DT, **kw)


@pytest.mark.parametrize("armature", [0.0, 0.045])
@pytest.mark.parametrize("inertia", [0.01, 0.05])
def test_small_step_matches_the_second_order_response(inertia, armature):
    """No saturation: rise time (10-90 %) and overshoot of J_total x'' + Kd x' + Kp x = Kp x*, J_total = J + J_a,
    with the armature in the torque law (as in PyBullet) or in the joint's inertia."""
    size = 0.05
    total = inertia + armature
    for in_dynamics in (False, True):
        sim = step(servo(armature=armature), inertia, size, 1.5, armature_in_dynamics=in_dynamics)
        assert np.abs(sim["velocity"]).max() < 0.5 * NO_LOAD        # far from any saturation
        t = np.linspace(0.0, 1.5, 30001)
        expected = size * second_order_step(KP, KD, total, t)
        tr_sim, tr_exp = rise_time(sim["time"], sim["position"], size), rise_time(t, expected, size)
        assert abs(tr_sim - tr_exp) <= 0.05 * tr_exp + 2 * DT, (tr_sim, tr_exp)
        overshoot_sim = sim["position"].max() / size - 1.0
        overshoot_exp = expected.max() / size - 1.0
        assert abs(overshoot_sim - overshoot_exp) < 0.03
        assert abs(sim["position"][-1] - size) < 1e-3 * size


def test_the_armature_changes_the_response():
    """The armature term is not a no-op: a light link (J = 0.005) alone is overdamped under the XM430 PD
    (zeta 1.67), with the 0.045 kg·m² armature underdamped (zeta 0.53, ~14 % overshoot)."""
    with_armature = step(servo(armature=0.045), 0.005, 0.05, 1.0)
    without = step(servo(armature=0.0), 0.005, 0.05, 1.0)
    assert with_armature["position"].max() > 1.08 * 0.05
    assert without["position"].max() < 1.005 * 0.05


def test_a_large_step_runs_at_most_at_the_no_load_speed():
    sim = step(servo(armature=0.045), 0.02, 2.0, 2.0)
    speed = np.abs(sim["velocity"])
    assert speed.max() <= NO_LOAD * (1.0 + 1e-6)
    assert speed.max() >= 0.9 * NO_LOAD                 # it does get close: the speed-torque line, not the PD
    assert abs(sim["position"][-1] - 2.0) < 0.01


def test_torque_saturates_at_stall_and_falls_with_speed():
    sim = step(servo(), 0.05, 1.0, 0.5)
    assert sim["torque"][0] == pytest.approx(STALL)                       # Kp * 1 rad = 21 N·m asked for
    v, tau = sim["velocity"][:-1], sim["torque"][1:]                     # torque computed from the previous speed
    driving = (tau > 0) & (v > 0)
    assert np.all(tau[driving] <= STALL * (1.0 - v[driving] / NO_LOAD) + 1e-9)
    assert np.abs(sim["torque"]).max() <= LIMIT + 1e-9
    a = servo()
    braking = a.motor_torque(np.array([0.0]), np.array([0.0]), np.array([2.0]), DT)   # moving away: brake
    assert braking[0] == pytest.approx(-min(LIMIT, KD * 2.0))


@pytest.mark.parametrize("load", [0.5, -1.5])
def test_steady_state_error_under_a_constant_load_is_load_over_kp(load):
    sim = step(servo(armature=0.045), 0.02, 0.0, 3.0, load=load)
    error = 0.0 - sim["position"][-1]
    assert error == pytest.approx(-load / KP, rel=0.01)
    assert abs(sim["velocity"][-1]) < 1e-6


def test_dead_band_adds_to_the_error_and_holds_inside_it():
    band = 0.006
    loaded = step(servo(armature=0.045, dead_band=band), 0.02, 0.0, 3.0, load=0.5)
    assert loaded["position"][-1] == pytest.approx(band + 0.5 / KP, rel=0.01)   # pushed out past the band
    for size in (0.004, 0.1, -0.1):      # inside the band: never moves; outside: stops at most a band away
        sim = step(servo(armature=0.045, dead_band=band, coulomb=0.03), 0.02, size, 3.0)
        error = abs(size - sim["position"][-1])
        assert error <= band + 0.03 / KP + 1e-9    # (plus the friction's stick band)
        if abs(size) < band:
            assert np.all(sim["position"] == 0.0)
    plain = step(servo(armature=0.045, coulomb=0.03), 0.02, 0.004, 3.0)
    assert abs(0.004 - plain["position"][-1]) < 0.004     # without a dead band the same small step is followed


def test_coulomb_friction_sticks_within_its_band():
    friction = 0.5
    sim = step(servo(armature=0.045, coulomb=friction), 0.02, 0.3, 3.0)
    error = abs(0.3 - sim["position"][-1])
    assert error <= friction / KP + 1e-9
    assert abs(sim["velocity"][-1]) == 0.0
    held = step(servo(armature=0.045, coulomb=friction), 0.02, 0.0, 1.0, load=0.8 * friction)
    assert np.all(held["position"] == 0.0)            # a load below the friction never moves it
    slips = step(servo(armature=0.045, coulomb=friction), 0.02, 0.0, 1.0, load=1.5 * friction)
    assert slips["position"][-1] > 0.0


def test_viscous_friction_adds_to_the_damping():
    b = 1.5
    sim = step(servo(armature=0.045, viscous=b), 0.02, 0.05, 2.0)
    t = np.linspace(0.0, 2.0, 40001)
    expected = 0.05 * second_order_step(KP, KD + b, 0.065, t)
    tr_sim, tr_exp = rise_time(sim["time"], sim["position"], 0.05), rise_time(t, expected, 0.05)
    assert abs(tr_sim - tr_exp) <= 0.05 * tr_exp + 2 * DT


def test_backlash_delays_the_torque_until_the_play_is_taken_up():
    play, speed, dt = 0.0175, 8.0, 0.001
    a = ServoActuator(1, kp=1.7, kd=0.019, torque_limit=0.15, stall_torque=0.15, no_load_speed=speed,
                      backlash=play)
    a.reset(np.zeros(1))                   # play centred: half of it to take up either way
    zero = np.zeros(1)
    torques = [a.torque(np.array([0.05]), zero, zero, dt)[0] for _ in range(10)]
    idle = sum(1 for t in torques if t == 0.0)
    assert idle == math.ceil(0.5 * play / (speed * dt) - 1e-9)
    assert torques[-1] == pytest.approx(min(0.15, 1.7 * 0.05))
    tight = ServoActuator(1, kp=1.7, kd=0.019, torque_limit=0.15, stall_torque=0.15, no_load_speed=speed)
    assert tight.torque(np.array([0.05]), zero, zero, dt)[0] > 0.0


def test_robot_configs_load_the_servo_model():
    for name in ("op3", "plen"):
        robot = load_robot(name)
        act = make_actuator("servo", robot)
        assert act.n == robot.n_joints
        assert np.all(act.stall_torque <= act.torque_limit)
        assert make_actuator("ideal", robot) is None
    assert make_actuator("servo", load_robot("op3")).kp[0] == pytest.approx(21.1)
    with pytest.raises(ValueError):
        make_actuator("magic", load_robot("plen"))
    with pytest.raises(ConfigError, match="unknown key"):
        load_robot("plen", {"actuator": {"servo": {"kp_nm_per_rad": 1.0, "kd_nm_s_per_rad": 0.0,
                                                   "torque_limit_nm": 1.0, "stall_torque_nm": 1.0,
                                                   "no_load_speed_rad_s": 1.0, "gain": 2.0}}})
    with pytest.raises(ConfigError):
        load_robot("plen", {"actuator": {"servo": {"kp_nm_per_rad": -1.0, "kd_nm_s_per_rad": 0.0,
                                                   "torque_limit_nm": 1.0, "stall_torque_nm": 1.0,
                                                   "no_load_speed_rad_s": 1.0}}})


def test_task_default_is_ideal_and_unknown_models_are_refused():
    from op3_walk.envs.task import load_task
    assert load_task("walk").actuator_model == "ideal"
    assert load_task("walk", {"actuator_model": "servo"}).actuator_model == "servo"
    with pytest.raises(ConfigError):
        load_task("walk", {"actuator_model": "magic"})


# ---------------------------------------------------------------------------------------------------- PyBullet
PENDULUM_URDF = """<robot name="pendulum">
  <link name="base"><inertial><mass value="0"/><inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/></inertial>
  </link>
  <link name="arm"><inertial><origin xyz="0 0 0"/><mass value="1.0"/>
    <inertia ixx="{j}" ixy="0" ixz="0" iyy="{j}" iyz="0" izz="{j}"/></inertial></link>
  <joint name="hinge" type="continuous"><parent link="base"/><child link="arm"/><axis xyz="0 0 1"/></joint>
</robot>
"""


@pytest.mark.sim
@pytest.mark.parametrize("armature", [0.0, 0.045])
def test_pybullet_one_link_matches_the_analytical_response(tmp_path, armature):
    """A one-link body about its centre of mass in zero gravity, driven through TORQUE_CONTROL by the servo
    model every physics step, the armature via the simulator's mass matrix: rise time of J + J_a."""
    import pybullet
    from pybullet_utils import bullet_client
    inertia, size = 0.02, 0.05
    urdf = os.path.join(str(tmp_path), "pendulum.urdf")
    with open(urdf, "w") as fh:
        fh.write(PENDULUM_URDF.format(j=inertia))
    c = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
    try:
        c.setGravity(0, 0, 0)
        c.setPhysicsEngineParameter(fixedTimeStep=DT, numSubSteps=0)
        body = c.loadURDF(urdf, useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        c.changeDynamics(body, 0, linearDamping=0.0, angularDamping=0.0, jointDamping=0.0)
        c.setJointMotorControl2(body, 0, pybullet.VELOCITY_CONTROL, targetVelocity=0.0, force=0.0)
        a = servo(armature=armature)
        a.reset(np.zeros(1))
        positions = []
        for k in range(int(1.5 / DT)):
            if k % 4 == 0:
                mass = c.calculateMassMatrix(body, [c.getJointState(body, 0)[0]])
                a.set_joint_mobility(np.linalg.inv(np.array(mass)))
            q, v = c.getJointState(body, 0)[:2]
            tau = a.torque(np.array([size]), np.array([q]), np.array([v]), DT)
            c.setJointMotorControl2(body, 0, pybullet.TORQUE_CONTROL, force=float(tau[0]))
            c.stepSimulation()
            positions.append(c.getJointState(body, 0)[0])
    finally:
        c.disconnect()
    times = DT * np.arange(1, len(positions) + 1)
    t = np.linspace(0.0, 1.5, 30001)
    expected = size * second_order_step(KP, KD, inertia + armature, t)
    tr_sim, tr_exp = rise_time(times, np.array(positions), size), rise_time(t, expected, size)
    assert abs(tr_sim - tr_exp) <= 0.05 * tr_exp + 2 * DT, (tr_sim, tr_exp)
    assert abs(positions[-1] - size) < 1e-3 * size


@pytest.mark.sim
def test_pybullet_backend_servo_model():
    """PLEN under the servo model: it stands, its joint efforts obey the speed-torque line, Coulomb friction
    rides on the velocity motors, kp_scales reach the model; the default stays ideal."""
    from op3_walk.backends.pybullet_backend import PyBulletBackend
    robot = load_robot("plen")
    with PyBulletBackend(robot) as ideal:
        assert ideal.actuator_model == "ideal"
    with pytest.raises(ValueError):
        PyBulletBackend(robot, actuator_model="magic").close()
    with PyBulletBackend(robot, actuator_model="servo") as b:
        s = b.reset(robot.stance, (0.0, 0.0, robot.spawn_height))
        start = s.base_position[2]
        efforts, speeds = [], []
        for _ in range(100):         # 2 s
            b.apply(robot.stance)
            s = b.step()
            efforts.append(s.joint_efforts)
            speeds.append(s.joint_velocities)
        assert s.base_position[2] > 0.9 * start and s.tilt() < 0.3
        assert np.abs(s.joint_positions - robot.stance).max() < 0.1
        assert np.abs(np.array(efforts)).max() > 0.0
        # A big step on one arm joint: the effort never exceeds what the speed-torque line allows (plus the
        # armature's share, which can only pass the rotor's momentum on), and the joint stays under no-load speed.
        targets = robot.stance.copy()
        j = robot.joint_index("l_shoulder_pitch")
        targets[j] += 1.0
        top = 0.0
        for _ in range(25):
            b.apply(targets)
            s = b.step()
            top = max(top, abs(s.joint_velocities[j]))
        assert top <= 8.0 * 1.05
        assert s.joint_positions[j] == pytest.approx(targets[j], abs=0.1)
        b.set_dynamics(kp_scales=np.full(robot.n_joints, 0.5))
        assert np.all(b._actuator.kp_scale == 0.5)
