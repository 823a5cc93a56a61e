"""Actuator models: (target position, joint position, joint velocity, dt) -> joint torque, every physics step.

No ROS, no torch, no simulator here: numpy only, vectorised over the joints.  Two models, selected per task
(``TaskConfig.actuator_model``):

- ``ideal``: PyBullet's POSITION_CONTROL motors with the robot's dimensionless ``kp``/``kd``, torque limited to each
  joint's effort and speed capped at its velocity (the simulator does it; :func:`make_actuator` returns None).  This
  is what every task used before actuator models existed, and stays the default.
- ``servo``: a physical servo through TORQUE_CONTROL, from ``RobotConfig.actuator.servo`` (SI units):

  * PD on the output position: ``tau = kp * e - kd * v`` with ``e = target - q`` (less the dead band: inside it the
    servo does nothing, outside it drives ``e - sign(e) * dead_band``);
  * torque limit ``|tau| <= torque_limit`` and the DC motor's speed-torque line: driving torque (same sign as the
    speed) is at most ``stall_torque * (1 - |v| / no_load_speed)`` (negative past the no-load speed: the motor
    brakes, so the joint never runs above its no-load speed under its own torque); braking torque up to the limit;
  * viscous friction ``-viscous * v`` (explicit) and Coulomb friction ``coulomb`` (N·m): the latter is not in
    :meth:`ServoActuator.torque` but applied implicitly by the simulator (PyBullet: a velocity motor with target 0
    and that force; :func:`simulate_joint`: exact stick/slip), because an explicit ``-c * sign(v)`` chatters;
  * armature (reflected rotor inertia, kg·m²).  PyBullet has no armature for multibody joints (``changeDynamics``
    offers jointDamping, jointLowerLimit/UpperLimit, jointLimitForce, maxJointVelocity, but nothing that adds
    inertia to a joint coordinate only), so it is modelled in the torque law: with ``J`` the joints' apparent
    inertia matrix (the simulator supplies its inverse ``G``, ``set_joint_mobility``: the joint block of the inverse
    mass matrix, floating base free) and ``tau_ext`` the rest of the torque on the joints (gravity, contacts,
    Coriolis, friction; estimated from the previous physics step as ``J qdd - tau_link``), the links receive
    ``tau_link = J (J + A)^-1 (tau_m + tau_ext) - tau_ext`` so that ``(J + A) qdd = tau_m + tau_ext``: the motor
    torque drives link plus rotor, and a static load is held by the full motor torque.  The one-step lag of
    ``tau_ext`` is stable (weights ``W = A (J + A)^-1`` below 1) and exact for free limbs, but a ground contact
    enters through that lag: a stance joint whose motor torque rises gets it only as ``1 - W^k`` after k physics
    steps.  Where the rotor dwarfs the link (OP3: A = 0.045 kg·m² against ~2e-4, W ~ 0.99) that is ~0.5 s, and
    the OP3 falls over from its stance under ``servo``; PLEN (W ~ 0.9) stands.  Two fixes tried and dropped: a
    contact-pinned G (feet held via their Jacobians) and no armature on stance legs both blow up, as the explicit
    PD on a light foot link (Kd dt / J ~ 27 for the OP3 at 200 Hz) is unstable wherever the armature is missing.
  * backlash (gear play, rad): the motor side sits within +-backlash/2 of the output; the servo's torque reaches the
    output only once the play is taken up on its side (the motor crossing the play at its no-load speed relative
    to the output meanwhile, the output getting no torque); engaged, the motor moves with the output.  The
    output's own motion while disengaged does not move the gap (a simplification).

``python -m op3_walk.backends.actuators --plot FILE`` draws the step responses of each robot's servo model (and, for
PLEN, of the simulated hardware plant in ``op3_walk.hardware.simbus``).
"""
import argparse
import math
from typing import Dict, Optional, Sequence

import numpy as np

ACTUATOR_MODELS = ("ideal", "servo")


class ServoActuator:
    """The ``servo`` model for ``n`` joints (parameters: scalars or per-joint arrays, SI units)."""

    def __init__(self, n: int, kp: float, kd: float, torque_limit: float, stall_torque: float, no_load_speed: float,
                 armature: float = 0.0, coulomb: float = 0.0, viscous: float = 0.0, dead_band: float = 0.0,
                 backlash: float = 0.0):
        def vec(x):
            out = np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)).copy()
            if not np.all(np.isfinite(out)):
                raise ValueError("actuator parameters must be finite")
            return out
        self.n = int(n)
        self.kp, self.kd = vec(kp), vec(kd)
        self.torque_limit, self.stall_torque, self.no_load_speed = vec(torque_limit), vec(stall_torque), \
            vec(no_load_speed)
        self.armature, self.coulomb, self.viscous = vec(armature), vec(coulomb), vec(viscous)
        self.dead_band, self.backlash = vec(dead_band), vec(backlash)
        if np.any(self.kp <= 0) or np.any(self.kd < 0) or np.any(self.torque_limit <= 0) \
                or np.any(self.stall_torque <= 0) or np.any(self.no_load_speed <= 0):
            raise ValueError("kp, torque_limit, stall_torque, no_load_speed must be > 0 and kd >= 0")
        if min(self.armature.min(), self.coulomb.min(), self.viscous.min(), self.dead_band.min(),
               self.backlash.min()) < 0:
            raise ValueError("armature, friction, dead band and backlash must be >= 0")
        self.kp_scale = np.ones(self.n)
        self.joint_mobility = None   # type: Optional[np.ndarray]
        self._w_tau = self._w_acc = None  # type: Optional[np.ndarray]
        self.reset()

    def reset(self, q: Optional[np.ndarray] = None) -> None:
        """Forget the history (previous velocity and torque); the gear play starts centred (``q`` unused)."""
        self._gap = np.zeros(self.n)
        self._prev_v = None
        self._prev_tau = np.zeros(self.n)
        self.last_motor_torque = np.zeros(self.n)
        self.last_torque = np.zeros(self.n)

    def set_joint_inertia(self, inertia) -> None:
        """The joints' link inertia without the armature, for the armature term: n values (kg·m², joints
        independent) or an n x n joint-space inertia matrix.  None: no armature term (the caller's dynamics
        include the armature itself)."""
        if inertia is None:
            self.set_joint_mobility(None)
            return
        j = np.asarray(inertia, dtype=np.float64)
        self.set_joint_mobility(np.diag(1.0 / j) if j.ndim == 1 else np.linalg.inv(j))

    def set_joint_mobility(self, mobility) -> None:
        """The joints' apparent inverse inertia G (n x n, may be singular): joint accelerations per joint torque
        with the rest of the body free (a floating base free too).  A simulator
        supplies it once per control step; None: no armature term."""
        if mobility is None:
            self.joint_mobility, self._w_tau, self._w_acc = None, None, None
            return
        g = np.asarray(mobility, dtype=np.float64)
        if g.shape != (self.n, self.n) or not np.all(np.isfinite(g)):
            raise ValueError("joint mobility must be a %dx%d matrix" % (self.n, self.n))
        a = np.diag(self.armature)
        eye = np.eye(self.n)
        self.joint_mobility = g
        # With J = G^-1: W = A (J + A)^-1 = A G (I + A G)^-1 (share of torque spent on the rotors) and
        # W J = A (I + G A)^-1 (rotor torque per joint acceleration); no inverse of a singular G needed.
        self._w_tau = np.linalg.solve((eye + a.dot(g)).T, a.dot(g).T).T
        self._w_acc = np.linalg.solve((eye + g.dot(a)).T, a.T).T

    def motor_torque(self, target: np.ndarray, q: np.ndarray, v: np.ndarray, dt: float) -> np.ndarray:
        """The motor's torque on link + rotor (PD, dead band, saturation, viscous friction, backlash), N·m."""
        e = target - q
        if np.any(self.dead_band > 0):
            e = np.sign(e) * np.maximum(np.abs(e) - self.dead_band, 0.0)
        tau = self.kp * self.kp_scale * e - self.kd * v
        # Speed-torque line: driving torque falls linearly to 0 at the no-load speed; braking up to the limit.
        upper = np.minimum(np.where(v >= 0, self.stall_torque * (1.0 - v / self.no_load_speed), np.inf),
                           self.torque_limit)
        lower = np.maximum(np.where(v <= 0, -self.stall_torque * (1.0 + v / self.no_load_speed), -np.inf),
                           -self.torque_limit)
        tau = np.minimum(np.maximum(tau, lower), upper)
        tau = tau - self.viscous * v
        if np.any(self.backlash > 0):
            # Gear play: gap = motor side - output, within +-backlash/2.  Torque reaches the output only with the
            # gap closed on the torque's side (the motor then moves with the output); otherwise the motor crosses
            # the play at its no-load speed (relative to the output) and the output gets nothing meanwhile.
            half = 0.5 * self.backlash
            side = np.sign(tau)
            engaged = (half == 0) | ((side != 0) & (np.abs(self._gap - side * half) <= 1e-12))
            self._gap = np.where(engaged, self._gap,
                                 np.clip(self._gap + side * self.no_load_speed * dt, -half, half))
            tau = np.where(engaged, tau, 0.0)
        return tau

    def torque(self, target: np.ndarray, q: np.ndarray, v: np.ndarray, dt: float) -> np.ndarray:
        """The torque to apply to the joints this physics step (the armature term included when the joint
        inertia is known), N·m."""
        target = np.asarray(target, dtype=np.float64)
        q = np.asarray(q, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        tau_m = self.motor_torque(target, q, v, dt)
        tau = tau_m
        if self.joint_mobility is not None and np.any(self.armature > 0):
            # (J + A) qdd = tau_m + tau_ext wanted; the simulator does J qdd = tau + tau_ext, so
            # tau = J (J + A)^-1 (tau_m + tau_ext) - tau_ext = tau_m - W (tau_m + tau_ext), with tau_ext from the last
            # step (J qdd - tau_prev): tau = tau_m - W (tau_m - tau_prev) - W J qdd.
            qdd = np.zeros(self.n) if self._prev_v is None else (v - self._prev_v) / dt
            tau = tau_m - self._w_tau.dot(tau_m - self._prev_tau) - self._w_acc.dot(qdd)
        self._prev_v = v.copy()
        self._prev_tau = tau.copy()
        self.last_motor_torque = tau_m
        self.last_torque = tau
        return tau


def make_actuator(model: str, robot) -> Optional[ServoActuator]:
    """The actuator model ``model`` for ``robot`` (a ``RobotConfig``); None for ``ideal`` (the simulator's motors)."""
    if model not in ACTUATOR_MODELS:
        raise ValueError("actuator model must be one of %s, got %r" % (", ".join(ACTUATOR_MODELS), model))
    if model == "ideal":
        return None
    if robot.actuator is None or robot.actuator.servo is None:
        raise ValueError("robot %s has no actuator.servo section in its config: the servo model needs one"
                         % robot.name)
    s = robot.actuator.servo
    return ServoActuator(robot.n_joints, kp=s.kp_nm_per_rad, kd=s.kd_nm_s_per_rad, torque_limit=s.torque_limit_nm,
                         stall_torque=s.stall_torque_nm, no_load_speed=s.no_load_speed_rad_s,
                         armature=s.armature_kg_m2, coulomb=s.coulomb_friction_nm,
                         viscous=s.viscous_friction_nm_s_per_rad, dead_band=s.dead_band_rad, backlash=s.backlash_rad)


def simulate_joint(actuator: ServoActuator, inertia: float, targets: Sequence[float], dt: float,
                   q0: float = 0.0, load: float = 0.0, armature_in_dynamics: bool = False) -> Dict[str, np.ndarray]:
    """One joint of link inertia ``inertia`` (kg·m²) driven by ``actuator`` (n == 1) through ``targets`` (one per
    step of ``dt``), with a constant external ``load`` torque (N·m), integrated like Bullet (semi-implicit Euler;
    Coulomb friction as an implicit stick/slip constraint).  ``armature_in_dynamics``: put the armature in the
    joint's inertia instead of the torque law.  Returns time, target, position, velocity, torque arrays."""
    if actuator.n != 1:
        raise ValueError("simulate_joint drives one joint")
    arm = float(actuator.armature[0])
    inertia_total = inertia + arm if armature_in_dynamics else inertia
    actuator.set_joint_inertia(None if armature_in_dynamics else [inertia])
    actuator.reset(np.array([q0]))
    q, v = float(q0), 0.0
    n = len(targets)
    out = {k: np.zeros(n) for k in ("time", "target", "position", "velocity", "torque")}
    coulomb = float(actuator.coulomb[0])
    for k, target in enumerate(targets):
        tau = float(actuator.torque(np.array([target]), np.array([q]), np.array([v]), dt)[0])
        v_free = v + dt * (tau + load) / inertia_total
        slip = dt * coulomb / inertia_total
        v = 0.0 if abs(v_free) <= slip else v_free - math.copysign(slip, v_free)
        q += dt * v
        out["time"][k], out["target"][k], out["position"][k] = (k + 1) * dt, target, q
        out["velocity"][k], out["torque"][k] = v, tau
    return out


def second_order_step(kp: float, kd: float, inertia: float, t: np.ndarray) -> np.ndarray:
    """Unit step response of J x'' + kd x' + kp x = kp (under-, critically or over-damped)."""
    wn = math.sqrt(kp / inertia)
    zeta = kd / (2.0 * math.sqrt(kp * inertia))
    t = np.asarray(t, dtype=np.float64)
    if zeta < 1.0 - 1e-9:
        wd = wn * math.sqrt(1.0 - zeta ** 2)
        return 1.0 - np.exp(-zeta * wn * t) * (np.cos(wd * t) + zeta / math.sqrt(1.0 - zeta ** 2) * np.sin(wd * t))
    if zeta <= 1.0 + 1e-9:
        return 1.0 - np.exp(-wn * t) * (1.0 + wn * t)
    s = wn * math.sqrt(zeta ** 2 - 1.0)
    r1, r2 = -zeta * wn + s, -zeta * wn - s
    return 1.0 + (r2 * np.exp(r1 * t) - r1 * np.exp(r2 * t)) / (r1 - r2)


def rise_time(t: np.ndarray, x: np.ndarray, final: float, low: float = 0.1, high: float = 0.9) -> float:
    """Time from ``low`` to ``high`` of ``final`` (first crossings), s; nan if never reached."""
    x = np.asarray(x) / final
    above_low, above_high = np.flatnonzero(x >= low), np.flatnonzero(x >= high)
    if not len(above_low) or not len(above_high):
        return float("nan")
    return float(t[above_high[0]] - t[above_low[0]])


# ---------------------------------------------------------------------------------------------------------- plot
PLOT_JOINTS = {"op3": ("r_knee", 0.02), "plen": ("l_knee", 2e-5)}   # joint drawn, assumed link inertia (kg·m²)
PLOT_STEP_RAD = 0.5


def plen_plant_step(joint: str, start: float, size: float, dt: float, steps: int) -> np.ndarray:
    """Positions of ``joint`` in the simulated PLEN hardware plant (``op3_walk.hardware.simbus.SimulatedPlen``,
    stepped with ``advance``) after its PCA9685 channel is set to the pulse of ``start + size``, one per ``dt``."""
    from op3_walk.hardware.plen_config import load_hardware_config
    from op3_walk.hardware.simbus import SimulatedPlen
    plant = SimulatedPlen(load_hardware_config(), time_driven=False, initial_positions={joint: start})
    servo = plant.config.servo(joint)
    pca = plant.pca
    pca.poke(pca.MODE1, pca.regs[pca.MODE1] & ~pca.SLEEP & 0xFF)     # awake (oscillator settled at power-on)
    pca.set_channel_counts(servo.channel, 0, int(round(servo.pulse_for(start + size) / pca.count_us)))
    index = plant.robot.joint_index(joint)
    out = np.zeros(steps)
    for k in range(steps):
        plant.advance(dt)
        out[k] = plant.positions[index]
    return out


def plot_step_responses(path: str) -> None:
    """Commanded vs simulated step response of one joint per robot under ``servo`` (the joint alone, its link
    inertia assumed, driven by the same model the PyBullet backend applies), and for PLEN the simulated hardware
    plant's response to the same command."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from op3_walk.robots.description import load_robot
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, name in zip(axes, ("op3", "plen")):
        robot = load_robot(name)
        joint, inertia = PLOT_JOINTS[name]
        dt = robot.physics_period_s
        n = int(round(0.4 / dt))
        start = robot.joint(joint).stance
        targets = np.full(n, start + PLOT_STEP_RAD)
        full = make_actuator("servo", robot)
        i = robot.joint_index(joint)
        one = ServoActuator(1, kp=full.kp[i], kd=full.kd[i], torque_limit=full.torque_limit[i],
                            stall_torque=full.stall_torque[i], no_load_speed=full.no_load_speed[i],
                            armature=full.armature[i], coulomb=full.coulomb[i], viscous=full.viscous[i],
                            dead_band=full.dead_band[i], backlash=full.backlash[i])
        sim = simulate_joint(one, inertia, targets, dt, q0=start)
        t = np.concatenate([[0.0], sim["time"]])
        ax.step(t, np.concatenate([[start], targets]), where="post", color="k", lw=1, label="commanded")
        ax.plot(t, np.concatenate([[start], sim["position"]]),
                label="servo model (link %g + armature %g kg·m²)" % (inertia, full.armature[i]))
        if name == "plen":
            plant = plen_plant_step(joint, start, PLOT_STEP_RAD, dt, n)
            ax.plot(t, np.concatenate([[start], plant]), "--",
                    label="simulated hardware plant (simbus: slews at %g rad/s)" % robot.joint(joint).velocity)
        ax.set_title("%s %s: %.1f rad step" % (name.upper(), joint, PLOT_STEP_RAD))
        ax.set_xlabel("time, s")
        ax.set_ylabel("joint position, rad")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m op3_walk.backends.actuators",
                                     description="Actuator models: draw each robot's servo step response.")
    parser.add_argument("--plot", metavar="PNG", required=True, help="write the step-response figure here")
    args = parser.parse_args(argv)
    plot_step_responses(args.plot)
    print("wrote %s" % args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
