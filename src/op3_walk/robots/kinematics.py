"""Leg kinematics read from the robot's URDF: generic forward kinematics and closed-form inverse kinematics.

Every leg (``RobotConfig.legs``) is the URDF chain from the torso link to the foot (sole) link.  Forward kinematics
(``LegKinematics.fk``) multiplies the URDF joint transforms along that chain, whatever its geometry.  The inverse
kinematics (``LegKinematics.ik``) is closed-form and relies on a kinematic contract, checked when the leg is built
(a URDF that breaks it raises ``ValueError`` naming the violation):

* at zero joint angles, in the torso frame, the hip yaw axis is parallel to z, the hip roll axis to x and the hip
  pitch, knee and ankle pitch axes to y; the ankle roll axis is parallel to x;
* the hip yaw, roll and pitch axes meet in one point, the hip point ``H``;
* the ankle pitch and roll axes meet in one point, the ankle point ``A``;
* the leg hangs straight down: the knee axis and the ankle point lie on the vertical line through ``H``, below it;
* only fixed joints may sit between the leg's six joints (and between the torso and the hip yaw joint).

The foot link frame may sit anywhere on the foot (the models put it at the ankle point); its pose at zero angles is
what "flat" means: ``ik(position, yaw)`` returns the joint angles that put the foot frame origin at ``position``
(torso frame) with the foot rotated by ``yaw`` about the torso z axis relative to that zero-angle orientation.

Canonical angles.  The IK solves for six canonical angles: yaw about +z, roll about +x, then hip pitch, knee and
ankle pitch about +y (REP 103: a positive pitch swings the limb backward), then ankle roll about +x, all in the
zero-angle torso frame.  Each URDF joint angle is ``sign * canonical`` with ``sign`` = +1 or -1 read from the joint
axis, so no sign is written per robot.  The knee always bends forward (canonical knee angle >= 0).

Unreachable targets raise ``ValueError`` (no clamping): a target out of the leg's reach, above the hip, or needing a
joint beyond its limit in ``RobotConfig`` (the last check can be turned off with ``check_limits=False``).

No ROS, no torch: this runs on the robot's computer too.
"""
import math
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from op3_walk.backends.base import matrix_to_quaternion
from op3_walk.robots.description import LEG_JOINT_ROLES, LegConfig, RobotConfig

CONTRACT_TOL = 1e-6  # m (distances) and rad-ish (unit-vector differences) allowed by the contract checks
REACH_TOL = 1e-9     # m: a target this far beyond full extension is treated as fully extended

X, Y, Z = np.eye(3)


# -- small rotation helpers ----------------------------------------------------------------------------------------
def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation by ``angle`` about the unit vector ``axis`` (Rodrigues)."""
    x, y, z = axis
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * k.dot(k)


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF ``rpy``: fixed-axis roll about x, then pitch about y, then yaw about z."""
    return rot_z(yaw).dot(rot_y(pitch)).dot(rot_x(roll))


# -- URDF ----------------------------------------------------------------------------------------------------------
class UrdfJoint:
    """One URDF joint: type, parent and child links, origin (translation, rotation) and unit axis."""

    def __init__(self, name: str, kind: str, parent: str, child: str, xyz: np.ndarray, rotation: np.ndarray,
                 axis: np.ndarray):
        self.name, self.kind, self.parent, self.child = name, kind, parent, child
        self.xyz, self.rotation, self.axis = xyz, rotation, axis

    @property
    def moves(self) -> bool:
        return self.kind != "fixed"

    def transform(self, angle: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
        """Child link frame in the parent link frame at joint angle ``angle``: (translation, rotation)."""
        if not self.moves or angle == 0.0:
            return self.xyz, self.rotation
        return self.xyz, self.rotation.dot(axis_angle(self.axis, angle))


def _floats(text: Optional[str], default: Sequence[float], where: str) -> np.ndarray:
    if text is None:
        return np.array(default, dtype=np.float64)
    try:
        values = np.array([float(v) for v in text.split()], dtype=np.float64)
    except ValueError:
        raise ValueError("%s: not numbers: %r" % (where, text)) from None
    if values.shape != (len(default),):
        raise ValueError("%s: expected %d numbers, got %r" % (where, len(default), text))
    return values


class Urdf:
    """The parts of a URDF file the kinematics needs: joints by name and by child link, links' collision shapes."""

    def __init__(self, path: str):
        self.path = path
        root = ET.parse(path).getroot()
        self.joints: Dict[str, UrdfJoint] = {}
        self.by_child: Dict[str, UrdfJoint] = {}  # joint by its child link
        self.collisions: Dict[str, List[ET.Element]] = {}  # <collision> elements by link
        for link in root.findall("link"):
            self.collisions[link.get("name")] = link.findall("collision")
        for element in root.findall("joint"):
            name = element.get("name")
            kind = element.get("type")
            where = "%s: joint %s" % (path, name)
            if kind not in ("revolute", "continuous", "fixed"):
                raise ValueError("%s: type %r is not supported (revolute, continuous or fixed)" % (where, kind))
            origin = element.find("origin")
            xyz = _floats(origin.get("xyz") if origin is not None else None, (0.0, 0.0, 0.0), where + " origin xyz")
            rpy = _floats(origin.get("rpy") if origin is not None else None, (0.0, 0.0, 0.0), where + " origin rpy")
            axis_el = element.find("axis")
            axis = _floats(axis_el.get("xyz") if axis_el is not None else None, (1.0, 0.0, 0.0), where + " axis")
            norm = float(np.linalg.norm(axis))
            if kind != "fixed" and not norm > 0.0:
                raise ValueError("%s: zero axis" % where)
            joint = UrdfJoint(name, kind, element.find("parent").get("link"), element.find("child").get("link"),
                              xyz, rpy_matrix(*rpy), axis / norm if norm > 0.0 else axis)
            self.joints[name] = joint
            self.by_child[joint.child] = joint

    def chain(self, base: str, tip: str) -> List[UrdfJoint]:
        """Joints from link ``base`` down to link ``tip``, base first (ValueError if ``tip`` does not hang from it)."""
        joints = []
        link = tip
        while link != base:
            joint = self.by_child.get(link)
            if joint is None:
                raise ValueError("%s: link %s is not below link %s" % (self.path, tip, base))
            joints.append(joint)
            link = joint.parent
        return joints[::-1]


def _extent(element: ET.Element, frame_rotation: np.ndarray, where: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Axis-aligned bounds (low (3,), high (3,)) of one <collision> shape in axes ``frame_rotation`` · (link axes),
    relative to the link origin; None for meshes (extent unknown here)."""
    origin = element.find("origin")
    xyz = _floats(origin.get("xyz") if origin is not None else None, (0.0, 0.0, 0.0), where)
    rpy = _floats(origin.get("rpy") if origin is not None else None, (0.0, 0.0, 0.0), where)
    rotation = frame_rotation.dot(rpy_matrix(*rpy))
    centre = frame_rotation.dot(xyz)
    geometry = element.find("geometry")
    if geometry is None:
        return None
    box, cylinder, sphere = geometry.find("box"), geometry.find("cylinder"), geometry.find("sphere")
    if box is not None:
        half = np.abs(rotation).dot(_floats(box.get("size"), (0.0, 0.0, 0.0), where + " box size") / 2.0)
    elif cylinder is not None:
        radius, length = float(cylinder.get("radius")), float(cylinder.get("length"))
        axis = np.abs(rotation[:, 2])
        half = axis * length / 2.0 + radius * np.sqrt(np.maximum(0.0, 1.0 - axis * axis))
    elif sphere is not None:
        half = np.full(3, float(sphere.get("radius")))
    else:
        return None
    return centre - half, centre + half


# -- one leg -------------------------------------------------------------------------------------------------------
class LegKinematics:
    """Forward and closed-form inverse kinematics of one leg, in the torso frame (see the module docstring).

    Attributes read from the URDF at zero angles (torso frame, m): ``hip`` (hip point), ``ankle`` (ankle point),
    ``thigh`` (hip point to knee axis) and ``shin`` (knee axis to ankle point) lengths, ``signs`` (URDF angle =
    sign * canonical angle, per joint in ``LEG_JOINT_ROLES`` order), ``foot_position0`` / ``foot_rotation0``
    (the foot frame at zero angles).
    """

    def __init__(self, robot: RobotConfig, leg: LegConfig, urdf: Optional[Urdf] = None):
        self.robot, self.leg = robot, leg
        self.name = leg.name
        self.joint_names = tuple(leg.joints)
        urdf = urdf if urdf is not None else Urdf(robot.urdf_path)
        self._urdf_path = urdf.path
        self.chain = urdf.chain(robot.torso_link, leg.foot)
        moving = [j.name for j in self.chain if j.moves]
        if moving != list(leg.joints):
            raise ValueError("%s: leg %s: the moving joints from %s to %s are %s, expected %s (leg joint order)"
                             % (urdf.path, leg.name, robot.torso_link, leg.foot, moving, list(leg.joints)))
        self.indices = np.array([robot.joint_index(n) for n in leg.joints])  # positions in the robot joint order
        self.lower = np.array([robot.joint(n).lower for n in leg.joints])
        self.upper = np.array([robot.joint(n).upper for n in leg.joints])
        self.stance = np.array([robot.joint(n).stance for n in leg.joints])
        self.foot_link = leg.foot
        self._collisions = urdf.collisions.get(leg.foot, [])
        self._read_geometry()

    # -- geometry and contract ---------------------------------------------------------------------------------
    def _violation(self, text: str) -> ValueError:
        return ValueError("%s: leg %s breaks the kinematic contract: %s" % (self._urdf_path, self.name, text))

    def _read_geometry(self) -> None:
        points, axes = [], []  # per moving joint, at zero angles in the torso frame
        position, rotation = np.zeros(3), np.eye(3)
        for joint in self.chain:
            position = position + rotation.dot(joint.xyz)
            rotation = rotation.dot(joint.rotation)
            if joint.moves:
                points.append(position.copy())
                axes.append(rotation.dot(joint.axis))
        self.foot_position0, self.foot_rotation0 = position, rotation
        canonical = (Z, X, Y, Y, Y, X)
        signs = []
        for role, axis, want in zip(LEG_JOINT_ROLES, axes, canonical):
            sign = 1.0 if axis.dot(want) > 0.0 else -1.0
            if np.linalg.norm(axis - sign * want) > CONTRACT_TOL:
                raise self._violation("%s axis is %s at zero angles, not parallel to %s (torso frame)"
                                      % (role, np.round(axis, 6).tolist(), "xyz"[int(np.argmax(want))]))
            signs.append(sign)
        self.signs = np.array(signs)
        yaw_p, roll_p, pitch_p, knee_p, ankle_pitch_p, ankle_roll_p = points
        # Hip point: on the yaw axis (vertical), the roll axis (along x) and the pitch axis (along y).
        hip = np.array([yaw_p[0], yaw_p[1], roll_p[2]])
        gaps = {"hip roll axis misses the hip yaw axis by": abs(roll_p[1] - yaw_p[1]),
                "hip pitch axis misses the hip yaw axis by": abs(pitch_p[0] - yaw_p[0]),
                "hip pitch axis misses the hip roll axis by": abs(pitch_p[2] - roll_p[2]),
                "ankle roll axis misses the ankle pitch axis by": abs(ankle_roll_p[2] - ankle_pitch_p[2]),
                "knee axis misses the vertical through the hip point by": abs(knee_p[0] - hip[0]),
                "ankle pitch axis misses the vertical through the hip point by": abs(ankle_pitch_p[0] - hip[0]),
                "ankle roll axis misses the vertical through the hip point by": abs(ankle_roll_p[1] - hip[1])}
        for text, gap in gaps.items():
            if gap > CONTRACT_TOL:
                raise self._violation("%s %.3g m" % (text, gap))
        ankle = np.array([hip[0], hip[1], ankle_pitch_p[2]])
        self.hip, self.ankle = hip, ankle
        self.thigh = float(hip[2] - knee_p[2])
        self.shin = float(knee_p[2] - ankle[2])
        if not (self.thigh > CONTRACT_TOL and self.shin > CONTRACT_TOL):
            raise self._violation("the knee axis must lie between the hip point and the ankle point, below the hip "
                                  "(thigh %.4g m, shin %.4g m)" % (self.thigh, self.shin))
        # The ankle point is fixed in the foot frame (it lies on the ankle roll axis, which the foot carries).
        self.ankle_in_foot = self.foot_rotation0.T.dot(ankle - self.foot_position0)

    @property
    def length(self) -> float:
        """Hip point to ankle point at full extension, m."""
        return self.thigh + self.shin

    def _sole_bounds(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """Bounds of the foot's collision shapes, flat foot, torso axes, relative to the foot frame origin."""
        bounds = []
        for i, element in enumerate(self._collisions):
            extent = _extent(element, self.foot_rotation0, "%s: link %s collision %d"
                             % (self._urdf_path, self.foot_link, i))
            if extent is not None:
                bounds.append(extent)
        if not bounds:
            return None
        return np.min([b[0] for b in bounds], axis=0), np.max([b[1] for b in bounds], axis=0)

    def sole_depth(self) -> Optional[float]:
        """Distance (m) from the foot frame origin down to the lowest point of the foot's collision shapes when the
        foot is flat; None if the foot has no box/cylinder/sphere collision shape (meshes are not measured)."""
        bounds = self._sole_bounds()
        return None if bounds is None else float(-bounds[0][2])

    def sole_centre(self) -> np.ndarray:
        """(2,) x, y of the centre of the foot's collision shapes (their bounding box) relative to the foot frame
        origin, flat foot, torso axes, m; zeros when the shapes are unknown (meshes)."""
        bounds = self._sole_bounds()
        return np.zeros(2) if bounds is None else (bounds[0][:2] + bounds[1][:2]) / 2.0

    # -- canonical <-> URDF angles -----------------------------------------------------------------------------
    def to_joint(self, canonical: Sequence[float]) -> np.ndarray:
        """URDF joint angles (leg order) of canonical angles."""
        return self.signs * np.asarray(canonical, dtype=np.float64)

    def to_canonical(self, q6: Sequence[float]) -> np.ndarray:
        """Canonical angles of URDF joint angles (leg order)."""
        return self.signs * np.asarray(q6, dtype=np.float64)

    # -- forward kinematics ------------------------------------------------------------------------------------
    def fk(self, q6: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
        """Foot link frame in the torso frame: (position (3,), rotation (3, 3)), from the URDF transforms."""
        q = np.asarray(q6, dtype=np.float64)
        if q.shape != (6,):
            raise ValueError("leg %s: expected 6 joint angles, got shape %s" % (self.name, q.shape))
        position, rotation = np.zeros(3), np.eye(3)
        k = 0
        for joint in self.chain:
            if joint.moves:
                xyz, rot = joint.transform(float(q[k]))
                k += 1
            else:
                xyz, rot = joint.transform()
            position = position + rotation.dot(xyz)
            rotation = rotation.dot(rot)
        return position, rotation

    # -- inverse kinematics ------------------------------------------------------------------------------------
    def ik(self, position: Sequence[float], yaw: float = 0.0, rotation: Optional[np.ndarray] = None,
           check_limits: bool = True) -> np.ndarray:
        """URDF joint angles (leg order) putting the foot frame at ``position`` (torso frame, m), flat.

        Flat means the foot's zero-angle orientation turned by ``yaw`` (rad) about the torso z axis.  ``rotation``
        (3, 3), if given, replaces that: the foot frame orientation is then ``rotation · foot_rotation0`` (used for a
        leaning torso).  Raises ValueError if the target is out of reach, or (``check_limits``) needs a joint
        beyond its limit.
        """
        p = np.asarray(position, dtype=np.float64)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ValueError("leg %s: position must be 3 finite numbers, got %r" % (self.name, position))
        chain_rot = rot_z(float(yaw)) if rotation is None else np.asarray(rotation, dtype=np.float64)
        # Ankle point target, then the hip point seen from the ankle in the (rotated) foot frame.
        ankle = p + chain_rot.dot(self.foot_rotation0.dot(self.ankle_in_foot))
        d = chain_rot.T.dot(ankle - self.hip)  # ankle relative to hip, foot axes
        reach = float(np.linalg.norm(d))
        l1, l2 = self.thigh, self.shin
        if reach > l1 + l2 + REACH_TOL or reach < abs(l1 - l2) + REACH_TOL:
            raise ValueError("leg %s: target %s is out of reach (hip-to-ankle %.4f m, reachable %.4f..%.4f m)"
                             % (self.name, np.round(p, 5).tolist(), reach, abs(l1 - l2), l1 + l2))
        vz_sq = d[1] * d[1] + d[2] * d[2]
        if d[2] >= 0.0 or vz_sq < 1e-18:
            raise ValueError("leg %s: target %s is not below the hip point" % (self.name, np.round(p, 5).tolist()))
        cos_knee = (reach * reach - l1 * l1 - l2 * l2) / (2.0 * l1 * l2)
        knee = math.acos(min(1.0, max(-1.0, cos_knee)))  # >= 0: the knee bends forward
        ankle_roll = math.atan2(-d[1], -d[2])
        vx, vz = d[0], -math.sqrt(vz_sq)  # the leg vector in its own pitch plane
        ankle_pitch = math.atan2(vx, -vz) - math.atan2(l1 * math.sin(knee), l1 * math.cos(knee) + l2)
        # Hip: Rz(yaw) Rx(roll) Ry(pitch) = chain_rot · Rx(ankle_roll)^T · Ry(knee + ankle_pitch)^T
        m = chain_rot.dot(rot_x(-ankle_roll)).dot(rot_y(-(knee + ankle_pitch)))
        hip_yaw = math.atan2(-m[0, 1], m[1, 1])
        hip_roll = math.atan2(m[2, 1], math.hypot(m[0, 1], m[1, 1]))
        hip_pitch = math.atan2(-m[2, 0], m[2, 2])
        q = self.to_joint((hip_yaw, hip_roll, hip_pitch, knee, ankle_pitch, ankle_roll))
        if check_limits:
            self.check_limits(q)
        return q

    def check_limits(self, q6: Sequence[float], tol: float = 1e-9) -> None:
        """ValueError naming the first joint of ``q6`` outside its limits."""
        q = np.asarray(q6, dtype=np.float64)
        for name, value, lo, hi in zip(self.joint_names, q, self.lower, self.upper):
            if not lo - tol <= value <= hi + tol:
                raise ValueError("leg %s: joint %s would need %.4f rad, outside its limits [%.4f, %.4f]"
                                 % (self.name, name, value, lo, hi))


# -- both legs -----------------------------------------------------------------------------------------------------
class BipedKinematics:
    """The legs of ``robot`` (left first, as in ``robot.legs``) and the full robot joint vector."""

    def __init__(self, robot: RobotConfig):
        self.robot = robot
        urdf = Urdf(robot.urdf_path)
        self.legs = [LegKinematics(robot, leg, urdf) for leg in robot.legs]
        self.urdf = urdf

    def leg_fk(self, leg: int, q6: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
        """Foot frame of leg number ``leg`` in the torso frame: (position, rotation)."""
        return self.legs[leg].fk(q6)

    def leg_ik(self, leg: int, position: Sequence[float], yaw: float = 0.0,
               rotation: Optional[np.ndarray] = None, check_limits: bool = True) -> np.ndarray:
        """Joint angles of leg number ``leg`` (see ``LegKinematics.ik``)."""
        return self.legs[leg].ik(position, yaw, rotation, check_limits)

    def joint_vector(self, foot_positions: Sequence[Sequence[float]], yaws: Optional[Sequence[float]] = None,
                     rotations: Optional[Sequence[np.ndarray]] = None, base: Optional[np.ndarray] = None,
                     check_limits: bool = True) -> np.ndarray:
        """Robot-order joint vector with each leg's foot at ``foot_positions[i]`` (torso frame, m).

        ``yaws`` (rad) or ``rotations`` as in ``LegKinematics.ik``; the other joints keep their value in ``base``
        (default: the robot's stance).
        """
        q = (self.robot.stance if base is None else np.array(base, dtype=np.float64)).copy()
        if q.shape != (self.robot.n_joints,):
            raise ValueError("base must have %d joint values, got shape %s" % (self.robot.n_joints, q.shape))
        if len(foot_positions) != len(self.legs):
            raise ValueError("expected %d foot positions, got %d" % (len(self.legs), len(foot_positions)))
        for i, leg in enumerate(self.legs):
            yaw = 0.0 if yaws is None else float(yaws[i])
            rotation = None if rotations is None else rotations[i]
            q[leg.indices] = leg.ik(foot_positions[i], yaw, rotation, check_limits)
        return q

    def foot_poses(self, q: Sequence[float]) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Foot frames (position, rotation) in the torso frame for the robot-order joint vector ``q``."""
        q = np.asarray(q, dtype=np.float64)
        return [leg.fk(q[leg.indices]) for leg in self.legs]

    def joint_axis(self, name: str) -> np.ndarray:
        """Unit axis of joint ``name`` in the torso frame at zero angles (any joint, e.g. an arm's)."""
        joint = self.urdf.joints.get(name)
        if joint is None:
            raise KeyError(name)
        rotation = np.eye(3)
        for link_joint in self.urdf.chain(self.robot.torso_link, joint.child):
            rotation = rotation.dot(link_joint.rotation)
        return rotation.dot(joint.axis)


def sole_corners(urdf: Urdf, link: str) -> np.ndarray:
    """(k, 3) corners, in the frame of ``link``, of the boxes bounding its collision shapes (a box is exact; a
    cylinder or sphere is replaced by its bounding box).  A link with only mesh shapes gives its frame origin."""
    corners = []
    for element in urdf.collisions.get(link, []):
        origin = element.find("origin")
        xyz = _floats(origin.get("xyz") if origin is not None else None, (0.0, 0.0, 0.0), link + " collision xyz")
        rotation = rpy_matrix(*_floats(origin.get("rpy") if origin is not None else None, (0.0, 0.0, 0.0),
                                       link + " collision rpy"))
        geometry = element.find("geometry")
        if geometry is None:
            continue
        box, cylinder, sphere = geometry.find("box"), geometry.find("cylinder"), geometry.find("sphere")
        if box is not None:
            half = _floats(box.get("size"), (0.0, 0.0, 0.0), link + " collision box size") / 2.0
        elif cylinder is not None:
            radius = float(cylinder.get("radius"))
            half = np.array([radius, radius, float(cylinder.get("length")) / 2.0])
        elif sphere is not None:
            half = np.full(3, float(sphere.get("radius")))
        else:
            continue
        for sx in (-1.0, 1.0):
            for sy in (-1.0, 1.0):
                for sz in (-1.0, 1.0):
                    corners.append(xyz + rotation.dot(half * (sx, sy, sz)))
    return np.array(corners) if corners else np.zeros((1, 3))


class GroundEstimate(NamedTuple):
    """Where the ground is, from the joint angles and the IMU alone (no base position sensor)."""

    height: float                  # m: torso origin above the ground (the lowest sole corner rests at z = 0)
    contacts: np.ndarray           # (n_feet,) bool: feet whose lowest corner is within contact_height of the ground
    foot_positions: np.ndarray     # (n_feet, 3) m: foot frame origins in a world frame at the torso's x, y
    foot_orientations: np.ndarray  # (n_feet, 4) quaternions x, y, z, w, foot -> world


class GroundEstimator:
    """Torso height and foot contacts of a real robot on flat ground, from leg kinematics and the IMU orientation.

    The feet are placed by forward kinematics in a frame at the torso origin, rotated by the IMU's orientation; the
    lowest corner of any sole's collision box is taken as the ground (z = 0).  So at least one foot always reads as
    touching; a fall shows in the tilt, not in the contacts.  Assumes flat, level ground and the URDF's sole boxes.
    """

    def __init__(self, robot: Any, contact_height: float = 0.01):
        self.kinematics = BipedKinematics(robot)
        self.soles = [sole_corners(self.kinematics.urdf, foot) for foot in robot.foot_links]
        self.contact_height = float(contact_height)

    def estimate(self, q: Sequence[float], rotation: np.ndarray) -> GroundEstimate:
        """``rotation``: torso -> world rotation matrix (from the IMU quaternion)."""
        feet = []
        for (foot_position, foot_rotation), corners in zip(self.kinematics.foot_poses(q), self.soles):
            world_rotation = rotation.dot(foot_rotation)
            world_position = rotation.dot(foot_position)
            feet.append((world_position, world_rotation,
                         float(np.min(world_position[2] + corners.dot(world_rotation[2])))))
        ground = min(lowest for _, _, lowest in feet)
        height = -ground
        base = np.array([0.0, 0.0, height])
        return GroundEstimate(
            height=height,
            contacts=np.array([lowest - ground < self.contact_height for _, _, lowest in feet], dtype=bool),
            foot_positions=np.array([base + position for position, _, _ in feet]),
            foot_orientations=np.array([matrix_to_quaternion(r) for _, r, _ in feet]))
