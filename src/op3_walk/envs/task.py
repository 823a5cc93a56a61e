"""Walking task configuration (``config/tasks/<name>.yaml``): episode, actions, observations, command, falls,
reward terms and domain randomisation.

Every section has defaults, so a task file lists only what it changes; unknown keys are refused.  A task is robot-
independent: heights are fractions of the robot's standing height, gaits and posture sets default to the robot's own.
"""
import dataclasses
import math
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from op3_walk import CONFIG_DIR
from op3_walk.config import doc, from_dict, load, to_dict
from op3_walk.envs.rewards import RewardParams, RewardWeights
from op3_walk.robots.description import find_config

TASKS_DIR = os.path.join(CONFIG_DIR, "tasks")

ACTION_MODES = ("joint_targets", "residual", "postures", "gait_scaling")
ORIENTATIONS = ("gravity", "quaternion")


def _check_range(name: str, bounds: Tuple[float, float], low: float = -math.inf) -> None:
    if not (low <= bounds[0] <= bounds[1]):
        raise ValueError("%s must be [min, max] with %g <= min <= max, got %s" % (name, low, list(bounds)))


@dataclasses.dataclass
class ActionConfig:
    """How an action becomes joint position targets."""

    mode: str = doc("joint_targets: stance + scale * a, a in [-1, 1]^n; residual: reference gait + scale * a; "
                    "postures: Discrete, one posture primitive per action; gait_scaling: Discrete(27), 3 joint groups "
                    "x {-step, 0, +step} scaling the reference gait", "joint_targets")
    scale: float = doc("rad of joint target per unit action (joint_targets, residual)", 0.5)
    gait: str = doc("reference gait (residual, gait_scaling, phase observation, ZMP reference): a name in "
                    "config/gaits/ or a YAML path; empty = the robot's name", "")
    postures: str = doc("posture primitives (mode postures): a name in config/postures/ or a YAML path; empty = "
                        "the robot's name", "")
    scaling_step: float = doc("gait_scaling: each joint group's reference offset from stance is multiplied by "
                              "1 - step, 1 or 1 + step", 0.1)

    def validate(self) -> None:
        if self.mode not in ACTION_MODES:
            raise ValueError("action mode %r is not one of %s" % (self.mode, ", ".join(ACTION_MODES)))
        if not self.scale > 0.0:
            raise ValueError("action scale must be positive")
        if not 0.0 < self.scaling_step < 1.0:
            raise ValueError("scaling_step must lie in (0, 1)")

    @property
    def discrete(self) -> bool:
        return self.mode in ("postures", "gait_scaling")

    @property
    def uses_gait(self) -> bool:
        return self.mode in ("residual", "gait_scaling")


@dataclasses.dataclass
class ObservationConfig:
    """What the policy sees: by default only what the real robot senses."""

    orientation: str = doc("torso orientation block: gravity (unit gravity vector in the torso frame, 3 values) "
                           "or quaternion (x, y, z, w torso->world, 4 values)", "gravity")
    joint_velocity_scale: float = doc("joint velocities are multiplied by this, s/rad", 0.1)
    phase: bool = doc("add sin and cos of the reference gait phase (2 values)", False)
    command: bool = doc("add the velocity command: forward m/s, lateral m/s, yaw rate rad/s (3 values)", False)
    privileged: bool = doc("add SIM-ONLY torso linear velocity (torso frame, m/s) and torso height (m), 4 values: "
                           "a policy using them cannot run on the real robot", False)

    def validate(self) -> None:
        if self.orientation not in ORIENTATIONS:
            raise ValueError("orientation %r is not one of %s" % (self.orientation, ", ".join(ORIENTATIONS)))
        if not self.joint_velocity_scale > 0.0:
            raise ValueError("joint_velocity_scale must be positive")


@dataclasses.dataclass
class CommandRanges:
    """One robot's command ranges (replacing the task's own for that robot)."""

    forward: Tuple[float, float] = doc("range [min, max] of the commanded forward speed, m/s", (0.0, 0.0))
    lateral: Tuple[float, float] = doc("range [min, max] of the commanded lateral speed (+y left), m/s", (0.0, 0.0))
    yaw_rate: Tuple[float, float] = doc("range [min, max] of the commanded yaw rate (+ counter-clockwise), rad/s",
                                        (0.0, 0.0))

    def validate(self) -> None:
        for name in ("forward", "lateral", "yaw_rate"):
            _check_range(name, getattr(self, name))


@dataclasses.dataclass
class CommandConfig:
    """Velocity command (REP 103 base frame: x forward, y left, yaw counter-clockwise) drawn per episode and every
    ``resample_s`` (for velocity-tracking tasks; op3_walk.envs.command); all ranges zero = no command.  The same
    ranges bound an external command (cmd_vel on the controller): a policy is never asked for more than it learned."""

    forward: Tuple[float, float] = doc("range [min, max] of the commanded forward speed, m/s", (0.0, 0.0))
    lateral: Tuple[float, float] = doc("range [min, max] of the commanded lateral speed (+y left), m/s", (0.0, 0.0))
    yaw_rate: Tuple[float, float] = doc("range [min, max] of the commanded yaw rate (+ counter-clockwise), rad/s",
                                        (0.0, 0.0))
    resample_s: float = doc("draw a new command every this many seconds; 0 = once per episode", 0.0)
    zero_probability: float = doc("probability that a drawn command is zero (stand still), in [0, 1]", 0.0)
    robots: Dict[str, CommandRanges] = doc("per-robot ranges replacing forward, lateral and yaw_rate for the robot "
                                           "named by the key (robots differ in size and speed)", default_factory=dict)

    def validate(self) -> None:
        for name in ("forward", "lateral", "yaw_rate"):
            _check_range(name, getattr(self, name))
        if self.resample_s < 0.0:
            raise ValueError("resample_s must not be negative")
        if not 0.0 <= self.zero_probability <= 1.0:
            raise ValueError("zero_probability must lie in [0, 1]")

    @property
    def active(self) -> bool:
        return any(bounds != (0.0, 0.0) for bounds in (self.forward, self.lateral, self.yaw_rate))

    def for_robot(self, robot: str) -> "CommandConfig":
        """This command for ``robot``: its own ranges when ``robots`` has them, without the per-robot table."""
        ranges = self.robots.get(robot)
        if ranges is None:
            return dataclasses.replace(self, robots={})
        return dataclasses.replace(self, forward=tuple(ranges.forward), lateral=tuple(ranges.lateral),
                                   yaw_rate=tuple(ranges.yaw_rate), robots={})


@dataclasses.dataclass
class RandomizationConfig:
    """Domain randomisation and disturbances, drawn per episode from the env's seeded RNG (off by default)."""

    enabled: bool = doc("master switch; false = the nominal model, no noise, no latency, no pushes", False)
    friction: Tuple[float, float] = doc("range of the ground friction coefficient", (0.4, 1.25))
    mass_scale: Tuple[float, float] = doc("range of the factor on each link's mass and inertia", (0.9, 1.1))
    kp_scale: Tuple[float, float] = doc("range of the factor on each joint's position gain", (0.8, 1.2))
    latency_steps: Tuple[int, int] = doc("range [min, max] of whole control periods between an action and its "
                                         "application", (0, 2))
    joint_position_noise: float = doc("std of Gaussian noise on observed joint positions, rad", 0.01)
    joint_velocity_noise: float = doc("std of Gaussian noise on observed joint velocities, rad/s", 0.2)
    gyro_noise: float = doc("std of Gaussian noise on the observed gyro, rad/s", 0.05)
    orientation_noise: float = doc("std of Gaussian noise on the observed gravity vector / quaternion entries", 0.02)
    push_interval_s: float = doc("mean time between random horizontal pushes on the torso, s; 0 = no pushes", 0.0)
    push_force: Tuple[float, float] = doc("range of the push force magnitude, N", (0.0, 0.0))
    push_duration_s: float = doc("duration of one push, s", 0.1)

    def validate(self) -> None:
        _check_range("friction", self.friction, 0.0)
        _check_range("mass_scale", self.mass_scale, 1e-3)
        _check_range("kp_scale", self.kp_scale, 1e-3)
        _check_range("latency_steps", self.latency_steps, 0)
        _check_range("push_force", self.push_force, 0.0)
        for name in ("joint_position_noise", "joint_velocity_noise", "gyro_noise", "orientation_noise",
                     "push_interval_s", "push_duration_s"):
            if getattr(self, name) < 0.0:
                raise ValueError("%s must not be negative" % name)


@dataclasses.dataclass
class TaskConfig:
    """A walking task: episode length, action mapping, observation, command, falls, reward, randomisation."""

    max_episode_steps: int = doc("control steps per episode before truncation")
    reward: RewardWeights = doc("weight of each reward term (0 or absent = off); see op3_walk.envs.rewards")
    reward_params: RewardParams = doc("parameters of the reward terms", default_factory=RewardParams)
    action: ActionConfig = doc("action mapping", default_factory=ActionConfig)
    observation: ObservationConfig = doc("observation blocks", default_factory=ObservationConfig)
    command: CommandConfig = doc("velocity command ranges", default_factory=CommandConfig)
    randomization: RandomizationConfig = doc("domain randomisation and disturbances",
                                             default_factory=RandomizationConfig)
    reset_noise: float = doc("half-width of the uniform noise on the initial joint angles, rad", 0.02)
    min_height_ratio: float = doc("the robot fell when its torso origin is below this fraction of its standing "
                                  "height", 0.6)
    max_tilt: float = doc("the robot fell when the torso tilts more than this from vertical (any direction), rad",
                          0.8)
    actuator_model: str = doc("simulated actuators: ideal (PyBullet position motors with the robot's kp/kd, as "
                              "before) or servo (the robot's actuator.servo model through torque control, see "
                              "op3_walk.backends.actuators); backends with real actuators ignore it", "ideal")

    def validate(self) -> None:
        if self.max_episode_steps < 1:
            raise ValueError("max_episode_steps must be at least 1")
        if self.reset_noise < 0.0:
            raise ValueError("reset_noise must not be negative")
        if not 0.0 < self.min_height_ratio < 1.0:
            raise ValueError("min_height_ratio must lie in (0, 1)")
        if not 0.0 < self.max_tilt < math.pi:
            raise ValueError("max_tilt must lie in (0, pi)")
        if self.actuator_model not in ("ideal", "servo"):
            raise ValueError("actuator_model must be ideal or servo, got %r" % self.actuator_model)


def load_task(name_or_path: Any, overrides: Optional[Mapping[str, Any]] = None) -> TaskConfig:
    """Load a task by name ("walk" -> ``config/tasks/walk.yaml``) or YAML path; a ``TaskConfig`` passes through.

    ``overrides`` replace top-level keys (whole sections) and are validated like the file.
    """
    if isinstance(name_or_path, TaskConfig):
        if not overrides:
            return name_or_path
        return from_dict(TaskConfig, dict(to_dict(name_or_path), **overrides))
    return load(TaskConfig, find_config(str(name_or_path), TASKS_DIR), overrides)
