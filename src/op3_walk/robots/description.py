"""Robot description: joints, limits, gains and rates, loaded from ``config/robots/<name>.yaml``.

The YAML file is the single source of the joint list; the URDF generator and every backend read it from here.
"""
import dataclasses
import os
from typing import Any, List, Mapping, Optional, Tuple

import numpy as np

from op3_walk import CONFIG_DIR, PACKAGE_ROOT
from op3_walk.config import ConfigError, doc, from_dict, load, to_dict

ROBOTS_DIR = os.path.join(CONFIG_DIR, "robots")


@dataclasses.dataclass
class JointConfig:
    """One revolute joint (angles in rad, REP 103 frames)."""

    name: str = doc("joint name (URDF joint and ROS JointState name)")
    lower: float = doc("lower position limit, rad")
    upper: float = doc("upper position limit, rad")
    stance: float = doc("position in the standing pose used at reset and as action offset, rad")
    effort: float = doc("maximum motor torque, N·m")
    velocity: float = doc("maximum joint speed, rad/s")

    def validate(self) -> None:
        if not self.name:
            raise ValueError("joint name must not be empty")
        if not self.lower < self.upper:
            raise ValueError("joint %s: lower (%g) must be below upper (%g)" % (self.name, self.lower, self.upper))
        if not self.lower <= self.stance <= self.upper:
            raise ValueError("joint %s: stance %g outside limits [%g, %g]"
                             % (self.name, self.stance, self.lower, self.upper))
        if self.effort <= 0.0 or self.velocity <= 0.0:
            raise ValueError("joint %s: effort and velocity must be positive" % self.name)


@dataclasses.dataclass
class ServoActuatorConfig:
    """The ``servo`` actuator model (``op3_walk.backends.actuators``), the same for every joint; SI units."""

    kp_nm_per_rad: float = doc("position gain of the servo's PD on the output angle, N·m/rad")
    kd_nm_s_per_rad: float = doc("velocity gain of the servo's PD, N·m·s/rad")
    torque_limit_nm: float = doc("absolute torque limit (driving and braking), N·m")
    stall_torque_nm: float = doc("driving torque available at zero speed (speed-torque line start), N·m")
    no_load_speed_rad_s: float = doc("speed at which the driving torque reaches zero (speed-torque line end), rad/s")
    armature_kg_m2: float = doc("armature: rotor inertia reflected through the gears, kg·m²", 0.0)
    coulomb_friction_nm: float = doc("Coulomb (dry) friction torque of the gear train, N·m", 0.0)
    viscous_friction_nm_s_per_rad: float = doc("viscous friction, N·m·s/rad", 0.0)
    dead_band_rad: float = doc("position error the servo ignores (each side), rad; 0 = none", 0.0)
    backlash_rad: float = doc("total gear play, rad; 0 = none", 0.0)

    def validate(self) -> None:
        for name in ("kp_nm_per_rad", "torque_limit_nm", "stall_torque_nm", "no_load_speed_rad_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError("%s must be positive" % name)
        for name in ("kd_nm_s_per_rad", "armature_kg_m2", "coulomb_friction_nm", "viscous_friction_nm_s_per_rad",
                     "dead_band_rad", "backlash_rad"):
            if getattr(self, name) < 0.0:
                raise ValueError("%s must not be negative" % name)


@dataclasses.dataclass
class ActuatorConfig:
    """Parameters of the physical actuator models a task can select (``TaskConfig.actuator_model``)."""

    servo: Optional[ServoActuatorConfig] = doc("the servo model (PD, speed-torque line, armature, friction, dead "
                                               "band, backlash); absent = the robot cannot use it", None)


LEG_JOINT_ROLES = ("hip_yaw", "hip_roll", "hip_pitch", "knee", "ankle_pitch", "ankle_roll")


@dataclasses.dataclass
class LegConfig:
    """One leg: its joints from hip to foot (in ``LEG_JOINT_ROLES`` order) and its sole link.

    The kinematics (``op3_walk.robots.kinematics``) reads the geometry of this chain from the URDF; it expects the
    hip yaw, roll and pitch axes to meet in one point and the ankle pitch and roll axes to meet in another.
    """

    name: str = doc("leg name, e.g. left or right")
    joints: List[str] = doc("the leg's joint names in order: hip yaw, hip roll, hip pitch, knee, ankle pitch, "
                            "ankle roll")
    foot: str = doc("URDF link of the sole (the link whose ground contact counts as this foot's)")

    def role(self, role: str) -> str:
        """Name of this leg's joint playing ``role`` (one of ``LEG_JOINT_ROLES``)."""
        return self.joints[LEG_JOINT_ROLES.index(role)]


@dataclasses.dataclass
class RobotConfig:
    """A legged robot as the simulators and the controllers see it."""

    name: str = doc("robot name")
    urdf: str = doc("URDF file, relative to the package root (or absolute)")
    torso_link: str = doc("URDF link whose frame is the body frame (IMU frame)")
    legs: List[LegConfig] = doc("the legs, left first: joint chain and sole link of each")
    joints: List[JointConfig] = doc("actuated joints, in the robot's joint order")
    kp: float = doc("PyBullet POSITION_CONTROL positionGain (dimensionless)")
    kd: float = doc("PyBullet POSITION_CONTROL velocityGain (dimensionless)")
    control_rate_hz: float = doc("policy / servo command rate, Hz")
    physics_rate_hz: float = doc("simulator physics step rate, Hz")
    spawn_height: float = doc("torso origin height above the ground at reset, m")
    actuator: Optional[ActuatorConfig] = doc("physical actuator model parameters (the ideal model uses kp/kd, "
                                             "effort and velocity above)", None)

    def validate(self) -> None:
        names = [j.name for j in self.joints]
        if not names:
            raise ValueError("robot %s has no joints" % self.name)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError("duplicate joint name(s): %s" % ", ".join(duplicates))
        for joint in self.joints:
            joint.validate()
        if not self.legs:
            raise ValueError("robot %s has no legs" % self.name)
        leg_joints = [j for leg in self.legs for j in leg.joints]
        for leg in self.legs:
            if len(leg.joints) != len(LEG_JOINT_ROLES):
                raise ValueError("leg %s: needs %d joints (%s), got %d"
                                 % (leg.name, len(LEG_JOINT_ROLES), ", ".join(LEG_JOINT_ROLES), len(leg.joints)))
            unknown = [j for j in leg.joints if j not in names]
            if unknown:
                raise ValueError("leg %s names unknown joint(s): %s" % (leg.name, ", ".join(unknown)))
        if len(set(leg_joints)) != len(leg_joints):
            raise ValueError("a joint belongs to more than one leg (or twice to one)")
        for what, values in (("leg names", [leg.name for leg in self.legs]), ("foot links", self.foot_links)):
            if len(set(values)) != len(values):
                raise ValueError("duplicate %s: %s" % (what, values))
        if self.control_rate_hz <= 0.0 or self.physics_rate_hz <= 0.0:
            raise ValueError("rates must be positive")
        ratio = self.physics_rate_hz / self.control_rate_hz
        if ratio < 1.0 or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError("physics_rate_hz (%g) must be an integer multiple of control_rate_hz (%g)"
                             % (self.physics_rate_hz, self.control_rate_hz))
        if self.kp <= 0.0 or self.kd < 0.0:
            raise ValueError("kp must be positive and kd non-negative")
        if not self.spawn_height > 0.0:
            raise ValueError("spawn_height must be positive")

    @property
    def joint_names(self) -> Tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def foot_links(self) -> List[str]:
        """Sole links, in leg order (left first)."""
        return [leg.foot for leg in self.legs]

    def joint_index(self, name: str) -> int:
        """Position of joint ``name`` in the robot joint order (KeyError if absent)."""
        try:
            return self.joint_names.index(name)
        except ValueError:
            raise KeyError(name) from None

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    def _per_joint(self, field: str) -> np.ndarray:
        return np.array([getattr(j, field) for j in self.joints], dtype=np.float64)

    @property
    def lower(self) -> np.ndarray:
        """Lower joint limits, rad."""
        return self._per_joint("lower")

    @property
    def upper(self) -> np.ndarray:
        """Upper joint limits, rad."""
        return self._per_joint("upper")

    @property
    def stance(self) -> np.ndarray:
        """Standing pose, rad."""
        return self._per_joint("stance")

    @property
    def effort(self) -> np.ndarray:
        """Maximum joint torques, N·m."""
        return self._per_joint("effort")

    @property
    def velocity(self) -> np.ndarray:
        """Maximum joint speeds, rad/s."""
        return self._per_joint("velocity")

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def physics_period_s(self) -> float:
        return 1.0 / self.physics_rate_hz

    @property
    def substeps(self) -> int:
        """Physics steps per control period."""
        return int(round(self.physics_rate_hz / self.control_rate_hz))

    @property
    def urdf_path(self) -> str:
        """Absolute path of the URDF file."""
        return self.urdf if os.path.isabs(self.urdf) else os.path.join(PACKAGE_ROOT, self.urdf)

    def joint(self, name: str) -> JointConfig:
        """The joint called ``name`` (KeyError if absent)."""
        for j in self.joints:
            if j.name == name:
                return j
        raise KeyError(name)


def find_config(name_or_path: str, folder: str) -> str:
    """A bare name (no separator, no .yaml) means ``<folder>/<name>.yaml``; anything else is a path."""
    if os.sep not in name_or_path and "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")):
        path = os.path.join(folder, name_or_path + ".yaml")
        if not os.path.isfile(path):
            known = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []
            raise ConfigError("unknown name %r: no %s (known: %s)" % (name_or_path, path, ", ".join(known) or "none"))
        return path
    return name_or_path


def load_robot(name_or_path: Any, overrides: Optional[Mapping[str, Any]] = None) -> RobotConfig:
    """Load a robot by name ("plen" -> ``config/robots/plen.yaml``) or YAML path; a ``RobotConfig`` passes through.

    ``overrides`` replace top-level keys and are validated like the file.
    """
    if isinstance(name_or_path, RobotConfig):
        if not overrides:
            return name_or_path
        return from_dict(RobotConfig, dict(to_dict(name_or_path), **overrides))
    return load(RobotConfig, find_config(str(name_or_path), ROBOTS_DIR), overrides)
