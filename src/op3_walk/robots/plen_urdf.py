"""Generate ``urdf/plen.urdf`` from ``config/robots/plen.yaml`` and the PLEN geometry below.

Joint names, limits, effort and velocity come from the YAML; this module only knows where each kind of joint sits
and what it carries.  Geometry is written for the left side and mirrored (y -> -y) for the right; mirroring a rotation
axis flips its x and z parts, so roll and yaw axes change sign on the right and pitch axes do not, which keeps one set
of limit numbers and "positive roll/yaw = outward" on both sides.

Frames: torso origin at the centre of the torso box.  Each link's frame is at its parent joint.  Collision geometry is
one primitive per link (box or cylinder); the visual is the same shape; inertia is the solid shape's.

    python -m op3_walk.robots.plen_urdf          # rewrite urdf/plen.urdf
    python -m op3_walk.robots.plen_urdf --check  # exit 1 if the committed file is stale
"""
import argparse
import dataclasses
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

from op3_walk.robots.description import RobotConfig, load_robot

Vec3 = Tuple[float, float, float]

PITCH_AXIS = (0.0, -1.0, 0.0)  # positive pitch swings the limb forward (toward +x)
ROLL_AXIS = (1.0, 0.0, 0.0)    # left side: positive roll moves the limb toward +y (outward)
YAW_AXIS = (0.0, 0.0, 1.0)     # left side: positive yaw turns the toe toward +y (outward)

MATERIALS = {  # name -> RGBA
    "shell": (0.92, 0.92, 0.90, 1.0),
    "servo": (0.22, 0.22, 0.25, 1.0),
    "sole": (0.95, 0.45, 0.10, 1.0),
}


@dataclasses.dataclass(frozen=True)
class Box:
    """Solid box of full edge lengths ``size`` (m), centred at ``xyz`` in the link frame."""

    size: Vec3
    xyz: Vec3 = (0.0, 0.0, 0.0)

    def inertia(self, mass: float) -> Vec3:
        """Principal moments (kg·m²) about the box centre."""
        x, y, z = self.size
        return (mass * (y * y + z * z) / 12.0, mass * (x * x + z * z) / 12.0, mass * (x * x + y * y) / 12.0)

    def geometry_xml(self) -> str:
        return '<box size="%s"/>' % _fmt(self.size)

    def mirrored(self) -> "Box":
        return Box(self.size, _mirror_point(self.xyz))


@dataclasses.dataclass(frozen=True)
class Cylinder:
    """Solid cylinder (m) with its axis along the link z axis, centred at ``xyz``."""

    radius: float
    length: float
    xyz: Vec3 = (0.0, 0.0, 0.0)

    def inertia(self, mass: float) -> Vec3:
        """Principal moments (kg·m²) about the cylinder centre."""
        side = mass * (3.0 * self.radius ** 2 + self.length ** 2) / 12.0
        return (side, side, mass * self.radius ** 2 / 2.0)

    def geometry_xml(self) -> str:
        return '<cylinder radius="%s" length="%s"/>' % (_fmt([self.radius]), _fmt([self.length]))

    def mirrored(self) -> "Cylinder":
        return Cylinder(self.radius, self.length, _mirror_point(self.xyz))


Shape = Union[Box, Cylinder]


@dataclasses.dataclass(frozen=True)
class Segment:
    """A joint (named by its kind, i.e. the YAML name without the ``l_``/``r_`` prefix) and the link it moves."""

    parent: Optional[str]  # kind of the parent joint; None: attached to the torso
    origin: Vec3           # joint position in the parent link frame (left side), m
    axis: Vec3             # joint axis (left side)
    link: str              # child link name without the side prefix
    shape: Shape           # child link collision/visual shape (left side)
    mass: float            # child link mass, kg
    material: str          # key of MATERIALS


# PLEN body: 0.496 kg in total.  The torso carries the shell (44 g), the battery (64 g) and the four servos mounted
# in it (hip yaw and shoulder pitch, 12 g each).
TORSO_SHAPE = Box((0.045, 0.048, 0.075))
TORSO_MASS = 0.156
TORSO_MATERIAL = "shell"

HIP_Y = 0.025          # lateral hip offset, m: 50 mm between leg axes leaves 9 mm between the 41 mm wide feet
TORSO_HALF_Z = 0.0375  # hip yaw axes sit on the torso's bottom face
HIP_DROP = 0.022       # hip yaw joint -> hip point (where the yaw, roll and pitch axes meet), m
THIGH = 0.032          # hip pitch -> knee, m
SHIN = 0.040           # knee -> ankle point (where the ankle pitch and roll axes meet), m
ANKLE_TO_SOLE = 0.030  # ankle point height above the sole, m
SOLE = (0.063, 0.041, 0.010)  # foot plate length (x), width (y), thickness (z), m

# Axes meet in one hip point and one ankle point (as on the OP3), which gives the legs a closed-form inverse
# kinematics (op3_walk.robots.kinematics); the servo blocks still hang where their masses are.
SEGMENTS = {  # kind -> Segment, all left side
    # leg: yaw, roll, pitch at the hip; knee; pitch, roll at the ankle
    "hip_yaw": Segment(None, (0.0, HIP_Y, -TORSO_HALF_Z), YAW_AXIS, "hip_yaw_link",
                       Cylinder(0.010, 0.010, (0.0, 0.0, -0.005)), 0.012, "servo"),
    "hip_roll": Segment("hip_yaw", (0.0, 0.0, -HIP_DROP), ROLL_AXIS, "hip_roll_link",
                        Box((0.022, 0.020, 0.012), (0.0, 0.0, 0.006)), 0.012, "servo"),
    "hip_pitch": Segment("hip_roll", (0.0, 0.0, 0.0), PITCH_AXIS, "thigh",
                         Box((0.022, 0.024, THIGH), (0.0, 0.0, -THIGH / 2)), 0.040, "shell"),
    "knee": Segment("hip_pitch", (0.0, 0.0, -THIGH), PITCH_AXIS, "shin",
                    Box((0.020, 0.024, SHIN), (0.0, 0.0, -SHIN / 2)), 0.024, "shell"),
    "ankle_pitch": Segment("knee", (0.0, 0.0, -SHIN), PITCH_AXIS, "ankle_link",
                           Box((0.022, 0.024, 0.012), (0.0, 0.0, -0.006)), 0.036, "servo"),
    "ankle_roll": Segment("ankle_pitch", (0.0, 0.0, 0.0), ROLL_AXIS, "foot",
                          Box(SOLE, (0.005, 0.0, -ANKLE_TO_SOLE + SOLE[2] / 2)), 0.015, "sole"),
    # arm: shoulder pitch on the torso side, upper-arm roll, elbow
    "shoulder_pitch": Segment(None, (0.0, 0.030, 0.025), PITCH_AXIS, "shoulder_link",
                              Box((0.016, 0.012, 0.016), (0.0, 0.006, 0.0)), 0.012, "servo"),
    "shoulder_roll": Segment("shoulder_pitch", (0.0, 0.012, 0.0), ROLL_AXIS, "upper_arm",
                             Box((0.016, 0.016, 0.035), (0.0, 0.0, -0.0175)), 0.012, "shell"),
    "elbow": Segment("shoulder_roll", (0.0, 0.0, -0.035), PITCH_AXIS, "forearm",
                     Box((0.014, 0.014, 0.035), (0.0, 0.0, -0.0175)), 0.007, "shell"),
}
SIDES = ("l", "r")


def _fmt(values: Sequence[float]) -> str:
    """Space-separated numbers, 6 significant digits, no negative zero."""
    return " ".join("%.6g" % (0.0 if v == 0.0 else v) for v in values)


def _mirror_point(p: Vec3) -> Vec3:
    return (p[0], -p[1], p[2])


def _mirror_axis(a: Vec3) -> Vec3:
    """Mirror an axial vector through the x-z plane."""
    return (-a[0], a[1], -a[2])


def _split(joint_name: str) -> Tuple[str, str]:
    side, _, kind = joint_name.partition("_")
    if side not in SIDES or kind not in SEGMENTS:
        raise ValueError("joint %r: expected '<l|r>_<kind>' with kind in %s" % (joint_name, ", ".join(SEGMENTS)))
    return side, kind


def _link_xml(name: str, shape: Shape, mass: float, material: str) -> List[str]:
    ixx, iyy, izz = shape.inertia(mass)
    origin = '<origin xyz="%s" rpy="0 0 0"/>' % _fmt(shape.xyz)
    return [
        '  <link name="%s">' % name,
        "    <inertial>",
        "      " + origin,
        '      <mass value="%s"/>' % _fmt([mass]),
        '      <inertia ixx="%s" ixy="0" ixz="0" iyy="%s" iyz="0" izz="%s"/>' % (_fmt([ixx]), _fmt([iyy]), _fmt([izz])),
        "    </inertial>",
        "    <visual>",
        "      " + origin,
        "      <geometry>%s</geometry>" % shape.geometry_xml(),
        '      <material name="%s"/>' % material,
        "    </visual>",
        "    <collision>",
        "      " + origin,
        "      <geometry>%s</geometry>" % shape.geometry_xml(),
        "    </collision>",
        "  </link>",
    ]


def _joint_xml(name: str, parent: str, child: str, origin: Vec3, axis: Vec3,
               lower: float, upper: float, effort: float, velocity: float) -> List[str]:
    return [
        '  <joint name="%s" type="revolute">' % name,
        '    <parent link="%s"/>' % parent,
        '    <child link="%s"/>' % child,
        '    <origin xyz="%s" rpy="0 0 0"/>' % _fmt(origin),
        '    <axis xyz="%s"/>' % _fmt(axis),
        '    <limit lower="%s" upper="%s" effort="%s" velocity="%s"/>' % (
            _fmt([lower]), _fmt([upper]), _fmt([effort]), _fmt([velocity])),
        "  </joint>",
    ]


def link_masses(robot: RobotConfig) -> Dict[str, float]:
    """Link name -> mass (kg) of the model generated for ``robot``."""
    masses = {robot.torso_link: TORSO_MASS}
    for name in robot.joint_names:
        side, kind = _split(name)
        masses["%s_%s" % (side, SEGMENTS[kind].link)] = SEGMENTS[kind].mass
    return masses


def generate(robot: RobotConfig) -> str:
    """The URDF text for ``robot``; joints appear in the YAML order (parents must precede children)."""
    lines = [
        '<?xml version="1.0"?>',
        "<!-- Generated by op3_walk.robots.plen_urdf from config/robots/%s.yaml. Do not edit: regenerate. -->"
        % robot.name,
        '<robot name="%s">' % robot.name,
    ]
    for material, rgba in MATERIALS.items():
        lines += ['  <material name="%s">' % material, '    <color rgba="%s"/>' % _fmt(rgba), "  </material>"]
    lines += _link_xml(robot.torso_link, TORSO_SHAPE, TORSO_MASS, TORSO_MATERIAL)
    placed = set()
    for joint in robot.joints:
        side, kind = _split(joint.name)
        seg = SEGMENTS[kind]
        if seg.parent is None:
            parent_link = robot.torso_link
        elif (side, seg.parent) in placed:
            parent_link = "%s_%s" % (side, SEGMENTS[seg.parent].link)
        else:
            raise ValueError("joint %s must come after %s_%s in the joint list" % (joint.name, side, seg.parent))
        placed.add((side, kind))
        shape, origin, axis = seg.shape, seg.origin, seg.axis
        if side == "r":
            shape, origin, axis = shape.mirrored(), _mirror_point(origin), _mirror_axis(axis)
        child = "%s_%s" % (side, seg.link)
        lines += _link_xml(child, shape, seg.mass, seg.material)
        lines += _joint_xml(joint.name, parent_link, child, origin, axis,
                            joint.lower, joint.upper, joint.effort, joint.velocity)
    missing = [f for f in robot.foot_links if f not in link_masses(robot)]
    if missing:
        raise ValueError("foot link(s) %s are not in the generated model" % ", ".join(missing))
    lines.append("</robot>")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--robot", default="plen", help="robot name or YAML path (default: plen)")
    parser.add_argument("--output", help="URDF path (default: the robot's urdf entry)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the file differs")
    args = parser.parse_args(argv)
    robot = load_robot(args.robot)
    path = args.output or robot.urdf_path
    text = generate(robot)
    if args.check:
        current = None
        if os.path.isfile(path):
            with open(path) as fh:
                current = fh.read()
        if current != text:
            print("%s is %s; run: python -m op3_walk.robots.plen_urdf"
                  % (path, "missing" if current is None else "out of date"), file=sys.stderr)
            return 1
        print("%s is up to date (%d joints, %.3f kg)" % (path, robot.n_joints, sum(link_masses(robot).values())))
        return 0
    with open(path, "w") as fh:
        fh.write(text)
    print("wrote %s (%d joints, %.3f kg)" % (path, robot.n_joints, sum(link_masses(robot).values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
