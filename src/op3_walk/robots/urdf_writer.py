"""Robot-independent URDF writing, shared by the robot generators (``plen_urdf``, ``op3_urdf``).

A generator describes its robot as a torso plus one ``Segment`` per kind of joint (the joint and the link it moves),
written for the left side; ``UrdfModel`` turns that and the robot's YAML (joint names, order, limits, effort,
velocity) into URDF text, mirroring the left-side geometry (y -> -y) for joints named ``r_<kind>``.  Joints named
``<kind>`` without a side prefix (e.g. a head) are written as given.

Mirroring a rotation axis through the x-z plane flips its x and z parts (it is an axial vector).  Two conventions:

* ``right_negated=False`` (PLEN): the right axis is the mirror image, so a symmetric pose has the same angle on both
  sides and one set of limit numbers serves both;
* ``right_negated=True`` (ROBOTIS OP3): the right axis is the mirror image negated, so a symmetric pose has opposite
  angles on the two sides (r = -l) and the right limits are the left ones negated and swapped.

Each link's frame is at its parent joint; collision geometry is one primitive per link (box or cylinder), the visual
is the same shape and the inertia is the solid shape's, about its centre (the link's centre of mass).

The root link is ``base_link`` (REP 105): massless (no ``<inertial>``, so KDL / robot_state_publisher do not warn about
an inertia on the root), fixed to the torso link with an identity origin, so ``base_link`` *is* the body frame that
``RobotState.base_position``/``base_orientation`` report and the controller publishes as ``odom -> base_link``.
PyBullet would take a massless root for a static base; ``op3_walk.backends.pybullet_backend`` therefore loads the
model without it (``torso_rooted_urdf``): the torso stays the simulated floating base, with the same physics.
"""
import argparse
import dataclasses
import os
import sys
import xml.etree.ElementTree as ElementTree
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from op3_walk.robots.description import RobotConfig, load_robot

Vec3 = Tuple[float, float, float]
SIDES = ("l", "r")
BASE_LINK = "base_link"    # REP 105 body frame: the massless root link, fixed to the torso link
BASE_JOINT = "base_joint"  # the fixed joint base_link -> torso link (identity origin)


def fmt(values: Sequence[float]) -> str:
    """Space-separated numbers, 6 significant digits, no negative zero."""
    return " ".join("%.6g" % (0.0 if v == 0.0 else v) for v in values)


def mirror_point(p: Vec3) -> Vec3:
    """Mirror a point (or polar vector) through the x-z plane."""
    return (p[0], -p[1], p[2])


def mirror_axis(a: Vec3) -> Vec3:
    """Mirror an axial vector (a rotation axis) through the x-z plane."""
    return (-a[0], a[1], -a[2])


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
        return '<box size="%s"/>' % fmt(self.size)

    def mirrored(self) -> "Box":
        return Box(self.size, mirror_point(self.xyz))


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
        return '<cylinder radius="%s" length="%s"/>' % (fmt([self.radius]), fmt([self.length]))

    def mirrored(self) -> "Cylinder":
        return Cylinder(self.radius, self.length, mirror_point(self.xyz))


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
    material: str          # key of the model's materials


def link_xml(name: str, shape: Shape, mass: float, material: str) -> List[str]:
    """A ``<link>`` with inertial, visual and collision from one solid shape."""
    ixx, iyy, izz = shape.inertia(mass)
    origin = '<origin xyz="%s" rpy="0 0 0"/>' % fmt(shape.xyz)
    return [
        '  <link name="%s">' % name,
        "    <inertial>",
        "      " + origin,
        '      <mass value="%s"/>' % fmt([mass]),
        '      <inertia ixx="%s" ixy="0" ixz="0" iyy="%s" iyz="0" izz="%s"/>' % (fmt([ixx]), fmt([iyy]), fmt([izz])),
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


def base_xml(torso_link: str) -> List[str]:
    """The massless root ``base_link`` and the fixed, identity joint that carries the torso link."""
    return [
        '  <link name="%s"/>' % BASE_LINK,
        '  <joint name="%s" type="fixed">' % BASE_JOINT,
        '    <parent link="%s"/>' % BASE_LINK,
        '    <child link="%s"/>' % torso_link,
        '    <origin xyz="0 0 0" rpy="0 0 0"/>',
        "  </joint>",
    ]


def root_link(urdf_path: str) -> str:
    """Name of the root link of a URDF file (the one link that is no joint's child); ValueError if none or several."""
    try:
        root = ElementTree.parse(urdf_path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise ValueError("cannot read URDF %s: %s" % (urdf_path, exc)) from None
    children = {j.find("child").get("link") for j in root.iter("joint")}
    roots = [link.get("name") for link in root.findall("link") if link.get("name") not in children]
    if len(roots) != 1:
        raise ValueError("URDF %s: expected one root link, found %s" % (urdf_path, roots or "none"))
    return roots[0]


def joint_xml(name: str, parent: str, child: str, origin: Vec3, axis: Vec3,
              lower: float, upper: float, effort: float, velocity: float) -> List[str]:
    """A revolute ``<joint>``."""
    return [
        '  <joint name="%s" type="revolute">' % name,
        '    <parent link="%s"/>' % parent,
        '    <child link="%s"/>' % child,
        '    <origin xyz="%s" rpy="0 0 0"/>' % fmt(origin),
        '    <axis xyz="%s"/>' % fmt(axis),
        '    <limit lower="%s" upper="%s" effort="%s" velocity="%s"/>' % (
            fmt([lower]), fmt([upper]), fmt([effort]), fmt([velocity])),
        "  </joint>",
    ]


@dataclasses.dataclass(frozen=True)
class UrdfModel:
    """One robot's geometry (torso + left-side segments by joint kind) and the command line that writes its URDF."""

    module: str                          # generator module, for the header comment and messages
    doc: str                             # the generator's docstring; its first line is the --help description
    default_robot: str                   # robot name or YAML path used when --robot is not given
    torso: Tuple[Shape, float, str]      # torso link shape (centred on its centre of mass), mass (kg), material
    segments: Mapping[str, Segment]      # joint kind -> Segment (left side for sided joints)
    materials: Mapping[str, Tuple[float, float, float, float]]  # name -> RGBA
    right_negated: bool = False          # see the module docstring

    def split(self, joint_name: str) -> Tuple[str, str]:
        """``(side, kind)`` of a joint name: ``l_<kind>``, ``r_<kind>`` or ``<kind>`` (side ``""``)."""
        side, _, kind = joint_name.partition("_")
        if side in SIDES and kind in self.segments:
            return side, kind
        if joint_name in self.segments:
            return "", joint_name
        raise ValueError("joint %r: expected '<l|r>_<kind>' or '<kind>' with kind in %s"
                         % (joint_name, ", ".join(self.segments)))

    def link_name(self, side: str, kind: str) -> str:
        link = self.segments[kind].link
        return "%s_%s" % (side, link) if side else link

    def link_masses(self, robot: RobotConfig) -> Dict[str, float]:
        """Link name -> mass (kg) of the model generated for ``robot``."""
        masses = {robot.torso_link: self.torso[1]}
        for name in robot.joint_names:
            side, kind = self.split(name)
            masses[self.link_name(side, kind)] = self.segments[kind].mass
        return masses

    def generate(self, robot: RobotConfig) -> str:
        """The URDF text for ``robot``; joints appear in the YAML order (parents must precede children)."""
        lines = [
            '<?xml version="1.0"?>',
            "<!-- Generated by %s from config/robots/%s.yaml. Do not edit: regenerate. -->" % (self.module, robot.name),
            '<robot name="%s">' % robot.name,
        ]
        for material, rgba in self.materials.items():
            lines += ['  <material name="%s">' % material, '    <color rgba="%s"/>' % fmt(rgba), "  </material>"]
        lines += base_xml(robot.torso_link)
        lines += link_xml(robot.torso_link, *self.torso)
        placed = set()
        for joint in robot.joints:
            side, kind = self.split(joint.name)
            seg = self.segments[kind]
            if seg.parent is None:
                parent_link = robot.torso_link
            elif (side, seg.parent) in placed:
                parent_link = self.link_name(side, seg.parent)
            else:
                raise ValueError("joint %s must come after %s in the joint list"
                                 % (joint.name, "%s_%s" % (side, seg.parent) if side else seg.parent))
            placed.add((side, kind))
            shape, origin, axis = seg.shape, seg.origin, seg.axis
            if side == "r":
                shape, origin, axis = shape.mirrored(), mirror_point(origin), mirror_axis(axis)
                if self.right_negated:
                    axis = (-axis[0], -axis[1], -axis[2])
            child = self.link_name(side, kind)
            lines += link_xml(child, shape, seg.mass, seg.material)
            lines += joint_xml(joint.name, parent_link, child, origin, axis,
                               joint.lower, joint.upper, joint.effort, joint.velocity)
        missing = [f for f in robot.foot_links if f not in self.link_masses(robot)]
        if missing:
            raise ValueError("foot link(s) %s are not in the generated model" % ", ".join(missing))
        lines.append("</robot>")
        return "\n".join(lines) + "\n"

    def main(self, argv: Optional[Sequence[str]] = None) -> int:
        """``[--robot R] [--output PATH] [--check]``: write the URDF, or exit 1 if the file on disk differs."""
        parser = argparse.ArgumentParser(prog="python -m " + self.module, description=self.doc.strip().split("\n")[0])
        parser.add_argument("--robot", default=self.default_robot,
                            help="robot name or YAML path (default: %s)" % self.default_robot)
        parser.add_argument("--output", help="URDF path (default: the robot's urdf entry)")
        parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the file differs")
        args = parser.parse_args(argv)
        robot = load_robot(args.robot)
        path = args.output or robot.urdf_path
        text = self.generate(robot)
        summary = "(%d joints, %.3f kg)" % (robot.n_joints, sum(self.link_masses(robot).values()))
        if args.check:
            current = None
            if os.path.isfile(path):
                with open(path) as fh:
                    current = fh.read()
            if current != text:
                print("%s is %s; run: python -m %s"
                      % (path, "missing" if current is None else "out of date", self.module), file=sys.stderr)
                return 1
            print("%s is up to date %s" % (path, summary))
            return 0
        with open(path, "w") as fh:
            fh.write(text)
        print("wrote %s %s" % (path, summary))
        return 0
