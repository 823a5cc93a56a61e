"""PyBullet simulation of a robot on flat ground, behind the ``Backend`` interface.

Each backend owns a ``BulletClient`` (several can live in one process).  ``reset`` rebuilds the world from scratch
(``resetSimulation`` + ``loadURDF``) so that an episode never depends on the previous one: the same calls give
bit-identical states.  With the ``ideal`` actuator model (the default) joints are driven by PyBullet's
POSITION_CONTROL motor with the robot's kp/kd gains, torque limited to each joint's effort and speed limited to its
velocity.  With a physical model (``servo``, ``op3_walk.backends.actuators``) the velocity motors only carry the
gear train's Coulomb friction and the model's torque is applied with TORQUE_CONTROL before every physics step.

The robot's URDF has a massless root ``base_link`` (REP 105) fixed to the torso; PyBullet would make a massless base
static, so the backend loads the model without that root (``torso_rooted_urdf``): the torso is the floating base,
as it always was, and ``base_link`` coincides with it (``RobotState`` base pose = torso link frame = base_link).
"""
import dataclasses
import os
import tempfile
import weakref
import xml.etree.ElementTree as ElementTree
from typing import Optional, Sequence, Tuple

import numpy as np
import pybullet
from pybullet_utils import bullet_client

from op3_walk.backends.actuators import make_actuator
from op3_walk.backends.base import STANDARD_GRAVITY, Backend, RobotState, clamp_targets
from op3_walk.robots.description import RobotConfig

GRAVITY = (0.0, 0.0, -STANDARD_GRAVITY)  # world gravity, m/s^2
GROUND_FRICTION = 0.8       # lateral (Coulomb) friction coefficient of the ground
ROBOT_FRICTION = 1.0        # of every robot link; Bullet multiplies the two, so contacts get GROUND_FRICTION
GROUND_RESTITUTION = 0.0    # no bouncing
CONE_FRICTION = 0           # 0: pyramid friction; Bullet's cone friction lets a standing robot creep ~1 mm/s
GROUND_VISUAL_HALF_SIZE = 5.0  # m, half side of the drawn ground square (the collision plane is infinite)
GROUND_COLOR = (0.55, 0.62, 0.55, 1.0)
CAMERA_DISTANCE = 0.6       # m, render_rgb camera distance from the torso
CAMERA_YAW_DEG = 45.0       # deg, camera azimuth about world z
CAMERA_PITCH_DEG = -20.0    # deg, camera elevation (negative looks down)
CAMERA_FOV_DEG = 60.0       # deg, vertical field of view


def _is_identity_origin(joint: ElementTree.Element) -> bool:
    origin = joint.find("origin")
    if origin is None:
        return True
    values = (origin.get("xyz", "0 0 0") + " " + origin.get("rpy", "0 0 0")).split()
    try:
        return len(values) == 6 and all(float(v) == 0.0 for v in values)
    except ValueError:
        return False


def torso_rooted_urdf(urdf_path: str, torso_link: str) -> Optional[str]:
    """The URDF text PyBullet must load for ``urdf_path``, or None when the file can be loaded as it is.

    A URDF whose root is ``torso_link`` loads as it is.  A URDF whose root is a massless link (no ``<inertial>``, or a
    zero mass) fixed to ``torso_link`` by an identity joint (REP 105's ``base_link``, as the generators write it) is
    returned without that root link and joint: the torso becomes PyBullet's base again, everything else (order,
    numbers) is unchanged, so the simulation is the same as for a torso-rooted file.  Relative mesh paths are made
    absolute (the text is loaded from a temporary file).  Any other root: ValueError.
    """
    try:
        tree = ElementTree.parse(urdf_path)
    except (OSError, ElementTree.ParseError) as exc:
        raise ValueError("cannot read URDF %s: %s" % (urdf_path, exc)) from None
    robot = tree.getroot()
    joints = robot.findall("joint")
    children = {j.find("child").get("link") for j in joints}
    roots = [link for link in robot.findall("link") if link.get("name") not in children]
    if len(roots) != 1:
        raise ValueError("URDF %s: expected one root link, found %s"
                         % (urdf_path, [r.get("name") for r in roots] or "none"))
    root = roots[0]
    name = root.get("name")
    if name == torso_link:
        return None
    mass = root.find("inertial/mass")
    from_root = [j for j in joints if j.find("parent").get("link") == name]
    if ((root.find("inertial") is not None and (mass is None or float(mass.get("value", "0")) != 0.0))
            or len(from_root) != 1 or from_root[0].get("type") != "fixed"
            or from_root[0].find("child").get("link") != torso_link or not _is_identity_origin(from_root[0])):
        raise ValueError("URDF %s: the root link %s must be the torso link %s, or a massless link fixed to it with an "
                         "identity origin (REP 105 base_link)" % (urdf_path, name, torso_link))
    robot.remove(root)
    robot.remove(from_root[0])
    folder = os.path.dirname(os.path.abspath(urdf_path))
    for mesh in robot.iter("mesh"):
        filename = mesh.get("filename", "")
        if filename and "://" not in filename and not os.path.isabs(filename):
            mesh.set("filename", os.path.join(folder, filename))
    return ElementTree.tostring(robot, encoding="unicode")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class PyBulletBackend(Backend):
    """``robot`` simulated in PyBullet (DIRECT by default, GUI on request)."""

    def __init__(self, robot: RobotConfig, gui: bool = False, actuator_model: str = "ideal"):
        self.robot = robot
        self.actuator_model = "ideal"
        self._actuator = None   # the ServoActuator of a physical model; None: PyBullet's position motors
        self.gui = gui
        self._client = bullet_client.BulletClient(connection_mode=pybullet.GUI if gui else pybullet.DIRECT)
        self._closed = False
        self._names = robot.joint_names
        self._lower, self._upper = robot.lower, robot.upper
        self._effort, self._velocity = robot.effort, robot.velocity
        self._substeps = robot.substeps
        self._period = robot.control_period_s
        self._body = -1
        self._limp = False
        self._limp_mask = None  # joints relax() made limp (servo model: no torque there), None when none
        self._ground = -1
        self._joint_ids = []  # PyBullet joint index of each robot joint
        self._foot_ids = []   # PyBullet link index of each foot link
        self._link_ids = []   # every link but the base
        self._masses = np.zeros(0)  # kg: base, then links in PyBullet order
        self._total_mass = 0.0
        self._targets = robot.stance
        self._sim_urdf = robot.urdf_path   # what PyBullet loads: the torso-rooted model (see torso_rooted_urdf)
        self._sim_urdf_cleanup = None
        text = torso_rooted_urdf(robot.urdf_path, robot.torso_link)
        if text is not None:
            fd, self._sim_urdf = tempfile.mkstemp(prefix="op3_walk_%s_" % robot.name, suffix=".urdf")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            self._sim_urdf_cleanup = weakref.finalize(self, _remove, self._sim_urdf)
        self._link_names = self._read_link_names(self._sim_urdf, robot.torso_link)
        self._friction = GROUND_FRICTION
        self._mass_scales = np.ones(len(self._link_names))
        self._kp_scales = np.ones(robot.n_joints)
        self._push_force = (0.0, 0.0, 0.0)
        self._push_substeps = 0  # physics steps the push still lasts
        self._com_to_link = None  # (position, orientation) of the torso link frame in its inertial frame, if not 0
        self._steps = 0
        self._lin_vel = np.zeros(3)
        self.state = None  # the latest RobotState
        # Bound calls for the per-step path (BulletClient resolves attributes on every access).
        c = self._client
        self._step_simulation = c.stepSimulation
        self._set_motor = c.setJointMotorControl2
        self._set_motors = c.setJointMotorControlArray
        self._forces = self._effort.tolist()
        self._kps = (robot.kp * self._kp_scales).tolist()
        self._kds = [robot.kd] * robot.n_joints
        self._get_joint_states = c.getJointStates
        self._get_base_pose = c.getBasePositionAndOrientation
        self._get_base_velocity = c.getBaseVelocity
        self._get_contacts = c.getContactPoints
        self._get_link_states = c.getLinkStates
        self._matrix_from_quaternion = c.getMatrixFromQuaternion
        self._u_index = []      # index of each robot joint's velocity in PyBullet's mass matrix
        self._movable = []      # PyBullet joint indices with a degree of freedom, in order
        self.set_actuator_model(actuator_model)

    def set_actuator_model(self, model: str) -> None:
        """Select the actuator model (``ideal`` or ``servo``, see ``op3_walk.backends.actuators``); it takes effect
        at the next ``reset`` (ValueError for an unknown model or a robot without its parameters)."""
        self._check_open()
        actuator = make_actuator(model, self.robot)
        if actuator is not None:
            actuator.kp_scale = self._kp_scales.copy()
        self.actuator_model, self._actuator = model, actuator

    # -- world -------------------------------------------------------------------------------------------------
    def _build_world(self, base_position: Sequence[float], base_orientation: Sequence[float]) -> None:
        c = self._client
        if self.gui:
            c.configureDebugVisualizer(pybullet.COV_ENABLE_RENDERING, 0)  # do not draw while loading
        c.resetSimulation()
        c.setGravity(*GRAVITY)
        c.setPhysicsEngineParameter(fixedTimeStep=self.robot.physics_period_s, numSubSteps=0,
                                    deterministicOverlappingPairs=1, enableConeFriction=CONE_FRICTION)
        plane = c.createCollisionShape(pybullet.GEOM_PLANE)
        plane_visual = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=(GROUND_VISUAL_HALF_SIZE,) * 2 + (1e-4,),
                                           visualFramePosition=(0.0, 0.0, -1e-4), rgbaColor=GROUND_COLOR)
        self._ground = c.createMultiBody(0.0, plane, plane_visual)
        c.changeDynamics(self._ground, -1, lateralFriction=self._friction, restitution=GROUND_RESTITUTION)
        self._body = c.loadURDF(self._sim_urdf, list(base_position), list(base_orientation),
                                flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        joints, links = {}, {self._decode(c.getBodyInfo(self._body)[0]): -1}
        u_index, self._movable = {}, []
        for index in range(c.getNumJoints(self._body)):
            info = c.getJointInfo(self._body, index)
            joints[self._decode(info[1])] = index
            links[self._decode(info[12])] = index
            if info[2] != pybullet.JOINT_FIXED:
                u_index[index] = info[4]
                self._movable.append(index)
        missing = [n for n in self._names if n not in joints] + [f for f in self.robot.foot_links if f not in links]
        if missing:
            raise ValueError("%s lacks joint(s)/link(s): %s" % (self.robot.urdf_path, ", ".join(missing)))
        self._joint_ids = [joints[n] for n in self._names]
        self._u_index = [u_index.get(i, -1) for i in self._joint_ids]
        self._foot_ids = [links[f] for f in self.robot.foot_links]
        for link in links.values():
            c.changeDynamics(self._body, link, lateralFriction=ROBOT_FRICTION)
        self._link_ids = list(range(c.getNumJoints(self._body)))
        if sorted(links) != sorted(self._link_names):
            raise ValueError("%s: PyBullet's links differ from the URDF's" % self.robot.urdf_path)
        for name, scale in zip(self._link_names, self._mass_scales):
            if scale != 1.0:
                mass, _, inertia = c.getDynamicsInfo(self._body, links[name])[:3]
                c.changeDynamics(self._body, links[name], mass=mass * scale,
                                 localInertiaDiagonal=[float(i) * scale for i in inertia])
        self._masses = np.array([c.getDynamicsInfo(self._body, link)[0] for link in [-1] + self._link_ids])
        self._total_mass = float(self._masses.sum())
        # PyBullet reports the base's inertial (centre of mass) frame; the body frame is the torso link frame.
        inertial_position, inertial_orientation = c.getDynamicsInfo(self._body, -1)[3:5]
        identity = np.allclose(inertial_position, 0.0, atol=1e-12) and np.allclose(
            inertial_orientation, (0.0, 0.0, 0.0, 1.0), atol=1e-12)
        self._com_to_link = None if identity else c.invertTransform(inertial_position, inertial_orientation)
        if self.gui:
            c.configureDebugVisualizer(pybullet.COV_ENABLE_RENDERING, 1)

    @staticmethod
    def _read_link_names(urdf_path: str, root: str) -> Tuple[str, ...]:
        """Link names: the root link, then each joint's child in URDF file order."""
        try:
            tree = ElementTree.parse(urdf_path)
        except (OSError, ElementTree.ParseError) as exc:
            raise ValueError("cannot read URDF %s: %s" % (urdf_path, exc)) from None
        children = [j.find("child").get("link") for j in tree.getroot().iter("joint")]
        return (root,) + tuple(children)

    @staticmethod
    def _decode(name) -> str:
        return name.decode("utf-8") if isinstance(name, bytes) else str(name)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("PyBulletBackend is closed")

    # -- Backend -----------------------------------------------------------------------------------------------
    def reset(self, joint_positions: np.ndarray, base_position: Sequence[float],
              base_orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> RobotState:
        self._check_open()
        q = clamp_targets(joint_positions, self._lower, self._upper, self._names)
        if len(base_position) != 3 or len(base_orientation) != 4:
            raise ValueError("base_position needs 3 values and base_orientation 4 (x, y, z, w)")
        orientation = np.asarray(base_orientation, dtype=np.float64)
        norm = float(np.linalg.norm(orientation))
        if not np.all(np.isfinite(base_position)) or not np.isfinite(norm) or norm == 0.0:
            raise ValueError("base pose must be finite with a non-zero quaternion")
        self._build_world(base_position, orientation / norm)
        for index, position in zip(self._joint_ids, q):
            self._client.resetJointState(self._body, index, float(position), 0.0)
        self._init_motors(q)
        self._limp = False
        self._limp_mask = None
        self._push_substeps = 0
        self._steps = 0
        self._lin_vel = np.zeros(3)
        self.state = self._read()
        return self.state

    def apply(self, joint_targets: np.ndarray) -> None:
        self._check_open()
        targets = clamp_targets(joint_targets, self._lower, self._upper, self._names)
        if self._limp:   # after relax(): every motor back to position control, speed limit included
            self._limp = False
            self._limp_mask = None
            self._init_motors(targets)
        else:
            self._send(targets)

    def relax(self, joints: Optional[Sequence[bool]] = None, friction_torque: float = 0.0) -> None:
        """Torque off: the joints (all, or those where the mask ``joints`` is true) lose position control and keep
        only ``friction_torque`` (N·m) of resistance, like a servo with its power cut; the next ``apply`` powers
        every joint again."""
        self._check_open()
        if self._body < 0:
            raise RuntimeError("call reset() before relax()")
        mask = np.ones(self.robot.n_joints, dtype=bool) if joints is None else np.asarray(joints, dtype=bool)
        if mask.shape != (self.robot.n_joints,):
            raise ValueError("joints must be a mask of %d values, got shape %s" % (self.robot.n_joints, mask.shape))
        if not (np.isfinite(friction_torque) and friction_torque >= 0.0):
            raise ValueError("friction_torque must be finite and >= 0, got %r" % friction_torque)
        for i in np.flatnonzero(mask):
            self._client.setJointMotorControl2(self._body, self._joint_ids[i], pybullet.VELOCITY_CONTROL,
                                               targetVelocity=0.0, force=float(friction_torque))
        self._limp = bool(mask.any())
        self._limp_mask = mask.copy()

    def step(self) -> RobotState:
        self._check_open()
        if self._body < 0:
            raise RuntimeError("call reset() before step()")
        for _ in range(self._substeps):
            if self._push_substeps > 0:  # external forces last one physics step in Bullet: re-apply each step
                self._push_substeps -= 1
                com = self._get_base_pose(self._body)[0]
                self._client.applyExternalForce(self._body, -1, self._push_force, com, pybullet.WORLD_FRAME)
            if self._actuator is not None:
                self._apply_actuator_torques()
            self._step_simulation()
        self._steps += 1
        self.state = self._read()
        return self.state

    @property
    def link_names(self) -> Tuple[str, ...]:
        return self._link_names

    def set_dynamics(self, ground_friction: Optional[float] = None, mass_scales: Optional[Sequence[float]] = None,
                     kp_scales: Optional[Sequence[float]] = None) -> None:
        self._check_open()
        friction = GROUND_FRICTION if ground_friction is None else float(ground_friction)
        masses = np.ones(len(self._link_names)) if mass_scales is None else np.asarray(mass_scales, dtype=float)
        kps = np.ones(self.robot.n_joints) if kp_scales is None else np.asarray(kp_scales, dtype=float)
        if not (np.isfinite(friction) and friction >= 0.0):
            raise ValueError("ground_friction must be finite and >= 0, got %r" % ground_friction)
        for name, values, size in (("mass_scales", masses, len(self._link_names)),
                                   ("kp_scales", kps, self.robot.n_joints)):
            if values.shape != (size,) or not np.all(np.isfinite(values)) or not np.all(values > 0.0):
                raise ValueError("%s must be %d finite positive factors, got %r" % (name, size, values))
        self._friction, self._mass_scales, self._kp_scales = friction, masses, kps
        self._kps = (self.robot.kp * kps).tolist()
        if self._actuator is not None:
            self._actuator.kp_scale = kps.copy()
        if self._body >= 0:  # the world exists: rebuild it the next reset; gains apply from the next apply()
            self._client.changeDynamics(self._ground, -1, lateralFriction=friction)

    def push(self, force: Sequence[float], duration_s: float) -> None:
        self._check_open()
        force = tuple(float(f) for f in force)
        if len(force) != 3 or not all(np.isfinite(force)) or not duration_s >= 0.0:
            raise ValueError("push needs a finite 3-D force (N) and a duration >= 0 s")
        self._push_force = force
        self._push_substeps = int(round(duration_s * self.robot.physics_rate_hz))

    @property
    def joint_targets(self) -> np.ndarray:
        """The position targets being held (rad, after clamping)."""
        return self._targets.copy()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._client.disconnect()
            except pybullet.error:
                pass
            if self._sim_urdf_cleanup is not None:
                self._sim_urdf_cleanup()

    def render_rgb(self, width: int = 320, height: int = 240) -> np.ndarray:
        """Image (height, width, 3) uint8 from a camera following the torso (TinyRenderer, no GPU needed)."""
        self._check_open()
        c = self._client
        target = self.state.base_position if self.state is not None else (0.0, 0.0, self.robot.spawn_height)
        view = c.computeViewMatrixFromYawPitchRoll(cameraTargetPosition=list(target), distance=CAMERA_DISTANCE,
                                                   yaw=CAMERA_YAW_DEG, pitch=CAMERA_PITCH_DEG, roll=0.0,
                                                   upAxisIndex=2)
        projection = c.computeProjectionMatrixFOV(fov=CAMERA_FOV_DEG, aspect=float(width) / height,
                                                  nearVal=0.01, farVal=10.0)
        _, _, rgba, _, _ = c.getCameraImage(width, height, view, projection, renderer=pybullet.ER_TINY_RENDERER)
        return np.reshape(np.asarray(rgba, dtype=np.uint8), (height, width, 4))[:, :, :3].copy()

    def set_pose(self, joint_positions: Sequence[float], base_position: Sequence[float],
                 base_orientation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> RobotState:
        """Place the robot in this pose, at rest, without simulating: a kinematic pose for drawing (e.g. replaying
        a recorded episode from its states) rather than a start state.

        ``base_position``/``base_orientation`` are the torso link frame in the world (what ``RobotState`` reports),
        ``joint_positions`` rad in robot order.  Unlike :meth:`reset`, the world is kept (built on first use),
        the time does not restart and the positions are not clamped to the limits, so a recorded state slightly
        past a soft limit is drawn as it was; the motors' targets become the (clamped) pose, so a later
        :meth:`step` holds it instead of springing back.  Returns the new reading: velocities zero, and no foot
        contacts or contact forces (no solver ran: the last step's would be stale, so they read zero / NaN).
        ValueError on a wrong size or a non-finite value, and then nothing changes.
        """
        self._check_open()
        q = np.asarray(joint_positions, dtype=np.float64)
        if q.shape != (self.robot.n_joints,):
            raise ValueError("joint_positions must have shape (%d,), got %s" % (self.robot.n_joints, q.shape))
        position = np.asarray(base_position, dtype=np.float64)
        orientation = np.asarray(base_orientation, dtype=np.float64)
        if position.shape != (3,) or orientation.shape != (4,):
            raise ValueError("base_position needs 3 values and base_orientation 4 (x, y, z, w)")
        norm = float(np.linalg.norm(orientation))
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(position)) and np.isfinite(norm) and norm > 0.0):
            raise ValueError("pose must be finite with a non-zero quaternion")
        orientation = orientation / norm
        c = self._client
        if self._body < 0:
            self._build_world(position, orientation)
        com_position, com_orientation = position.tolist(), orientation.tolist()
        if self._com_to_link is not None:  # PyBullet places the base by its centre of mass, not the link frame
            link_to_com = c.invertTransform(*self._com_to_link)
            com_position, com_orientation = c.multiplyTransforms(com_position, com_orientation, *link_to_com)
        c.resetBasePositionAndOrientation(self._body, com_position, com_orientation)
        c.resetBaseVelocity(self._body, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        for index, value in zip(self._joint_ids, q):
            c.resetJointState(self._body, index, float(value), 0.0)
        self._init_motors(np.minimum(np.maximum(q, self._lower), self._upper))
        self._lin_vel = np.zeros(3)
        state = self._read()
        n_feet = len(self._foot_ids)
        self.state = dataclasses.replace(state, foot_contacts=np.zeros(n_feet, dtype=bool),
                                         foot_forces=np.zeros(n_feet), center_of_pressure=np.full(3, np.nan))
        return self.state

    # -- internals ---------------------------------------------------------------------------------------------
    def _init_motors(self, targets: np.ndarray) -> None:
        """Configure every joint motor, including its speed limit (which later array calls leave in place)."""
        self._targets = targets
        if self._actuator is not None:   # torque control: velocity motors carry only the Coulomb friction
            self._set_motors(self._body, self._joint_ids, pybullet.VELOCITY_CONTROL,
                             targetVelocities=[0.0] * len(self._joint_ids), forces=self._actuator.coulomb.tolist())
            q = np.array([j[0] for j in self._get_joint_states(self._body, self._joint_ids)])
            self._actuator.reset(q)
            self._update_joint_inertia()
            return
        for i, index in enumerate(self._joint_ids):
            self._set_motor(self._body, index, pybullet.POSITION_CONTROL, targetPosition=float(targets[i]),
                            force=self._forces[i], maxVelocity=float(self._velocity[i]),
                            positionGain=self._kps[i], velocityGain=self.robot.kd)

    def _send(self, targets: np.ndarray) -> None:
        """New position targets for all joints in one call (setJointMotorControlArray cannot set maxVelocity)."""
        self._targets = targets
        if self._actuator is not None:   # the torques follow the new targets from the next physics step
            self._update_joint_inertia()
            return
        self._set_motors(self._body, self._joint_ids, pybullet.POSITION_CONTROL, targetPositions=targets.tolist(),
                         forces=self._forces, positionGains=self._kps, velocityGains=self._kds)

    def _update_joint_inertia(self) -> None:
        """The actuator's armature term needs the joints' apparent inverse inertia in this pose: the joint block of
        the inverse mass matrix (the floating base free); once per control step."""
        if not np.any(self._actuator.armature > 0):
            return
        c = self._client
        q = [s[0] for s in c.getJointStates(self._body, self._movable)]
        mobility = np.linalg.inv(np.array(c.calculateMassMatrix(self._body, q)))[np.ix_(self._u_index, self._u_index)]
        self._actuator.set_joint_mobility(mobility)

    def _apply_actuator_torques(self) -> None:
        """One physics step of the actuator model: read the joints, apply its torques (TORQUE_CONTROL)."""
        joints = self._get_joint_states(self._body, self._joint_ids)
        q = np.array([j[0] for j in joints])
        v = np.array([j[1] for j in joints])
        tau = self._actuator.torque(self._targets, q, v, self.robot.physics_period_s)
        if self._limp_mask is not None:   # relaxed joints: no servo torque, only the friction relax() set
            tau = np.where(self._limp_mask, 0.0, tau)
            self._actuator.last_torque = tau
        self._set_motors(self._body, self._joint_ids, pybullet.TORQUE_CONTROL, forces=tau.tolist())

    def _read(self) -> RobotState:
        """The current state; the acceleration is the base velocity change since the previous read."""
        joints = self._get_joint_states(self._body, self._joint_ids)
        position, orientation = self._get_base_pose(self._body)
        lin_vel, ang_vel = self._get_base_velocity(self._body)
        lin_vel = np.array(lin_vel)
        if self._com_to_link is not None:  # move from the centre of mass to the torso link origin
            com = np.array(position)
            position, orientation = self._client.multiplyTransforms(position, orientation, *self._com_to_link)
            lin_vel = lin_vel + np.cross(ang_vel, np.array(position) - com)
        rotation = np.reshape(self._matrix_from_quaternion(orientation), (3, 3))
        # Specific force: what an accelerometer reads (a - g), from the base velocity change over one control period.
        accel_world = (lin_vel - self._lin_vel) / self._period if self._steps else np.zeros(3)
        specific_force = accel_world - np.array(GRAVITY)
        body = self._body
        contacts = [p for p in self._get_contacts(body, self._ground) if p[9] > 0.0]
        foot_forces = np.zeros(len(self._foot_ids))
        for point in contacts:
            link = point[3] if point[1] == body else point[4]
            for i, foot in enumerate(self._foot_ids):
                if link == foot:
                    foot_forces[i] += point[9]
        if contacts:
            forces = np.array([p[9] for p in contacts])
            cop = forces.dot(np.array([p[6] if p[1] == body else p[5] for p in contacts])) / forces.sum()
        else:
            cop = np.full(3, np.nan)
        links = self._get_link_states(body, self._link_ids, computeLinkVelocity=1)
        com_positions = np.array([self._get_base_pose(body)[0]] + [link[0] for link in links])
        com_velocities = np.array([self._get_base_velocity(body)[0]] + [link[6] for link in links])
        feet = [links[i] for i in self._foot_ids]
        self._lin_vel = lin_vel
        return RobotState(
            time=self._steps * self._period,
            joint_positions=np.array([j[0] for j in joints]),
            joint_velocities=np.array([j[1] for j in joints]),
            joint_efforts=(np.array([j[3] for j in joints]) if self._actuator is None
                           else self._actuator.last_torque.copy()),
            base_position=np.array(position),
            base_orientation=np.array(orientation),
            base_linear_velocity=lin_vel,
            base_angular_velocity=rotation.T.dot(ang_vel),
            linear_acceleration=rotation.T.dot(specific_force),
            foot_contacts=foot_forces > 0.0,
            com_position=self._masses.dot(com_positions) / self._total_mass,
            com_velocity=self._masses.dot(com_velocities) / self._total_mass,
            foot_positions=np.array([f[4] for f in feet]),
            foot_orientations=np.array([f[5] for f in feet]),
            foot_forces=foot_forces,
            center_of_pressure=cop,
        )
