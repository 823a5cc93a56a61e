"""Walk forward on flat ground: a gymnasium environment over any ``Backend`` (PyBullet by default)."""
import dataclasses
import math
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import gymnasium
import numpy as np
from gymnasium import spaces

from op3_walk import CONFIG_DIR
from op3_walk.backends.base import Backend, RobotState
from op3_walk.config import doc, from_dict, load, to_dict
from op3_walk.robots.description import RobotConfig, find_config, load_robot

TASKS_DIR = os.path.join(CONFIG_DIR, "tasks")
RENDER_WIDTH = 320   # px, rgb_array frames
RENDER_HEIGHT = 240  # px
UPRIGHT = (0.0, 0.0, 0.0, 1.0)  # quaternion x, y, z, w
OBS_LIMIT = 100.0    # bound of the observation blocks without a natural one; observations are clipped to it


@dataclasses.dataclass
class RewardWeights:
    """Weight of each reward term (see ``REWARD_TERMS``); 0 disables a term."""

    forward_velocity: float = doc("per m/s of torso forward (world x) speed over the control period")
    alive: float = doc("per control step that ends upright")
    tilt: float = doc("times -tilt², tilt = torso angle from vertical in rad")
    action_rate: float = doc("times -‖a_t - a_(t-1)‖² (actions in [-1, 1])")
    fall: float = doc("times -1 on the step the robot falls")


@dataclasses.dataclass
class TaskConfig:
    """Walking task: episode length, action mapping, reset randomisation, fall detection, reward weights."""

    max_episode_steps: int = doc("control steps per episode before truncation")
    action_scale: float = doc("joint target offset from stance per unit action, rad")
    reset_noise: float = doc("half-width of the uniform noise added to the stance joint angles at reset, rad")
    fall_height: float = doc("the robot fell when the torso origin is below this height, m")
    max_tilt: float = doc("the robot fell when the torso tilts more than this from vertical, rad")
    joint_velocity_scale: float = doc("joint velocities are multiplied by this in the observation, s/rad")
    reward: RewardWeights = doc("reward term weights")

    def validate(self) -> None:
        if self.max_episode_steps < 1:
            raise ValueError("max_episode_steps must be at least 1")
        if self.action_scale <= 0.0 or self.joint_velocity_scale <= 0.0:
            raise ValueError("action_scale and joint_velocity_scale must be positive")
        if self.reset_noise < 0.0:
            raise ValueError("reset_noise must not be negative")
        if self.fall_height <= 0.0:
            raise ValueError("fall_height must be positive")
        if not 0.0 < self.max_tilt < math.pi:
            raise ValueError("max_tilt must lie in (0, pi)")


def load_task(name_or_path: Any, overrides: Optional[Mapping[str, Any]] = None) -> TaskConfig:
    """Load a task by name ("walk" -> ``config/tasks/walk.yaml``) or YAML path; a ``TaskConfig`` passes through.

    ``overrides`` replace top-level keys and are validated like the file.
    """
    if isinstance(name_or_path, TaskConfig):
        if not overrides:
            return name_or_path
        return from_dict(TaskConfig, dict(to_dict(name_or_path), **overrides))
    return load(TaskConfig, find_config(str(name_or_path), TASKS_DIR), overrides)


# -- rewards -------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a reward term may look at: the step's start and end states and the actions."""

    state: RobotState
    previous_state: RobotState
    action: np.ndarray           # this step's action, clipped to [-1, 1]
    previous_action: np.ndarray  # the step before's (zeros after reset)
    fell: bool


def forward_velocity(ctx: StepContext) -> float:
    """Mean forward (world x) torso speed over the step, m/s."""
    dt = ctx.state.time - ctx.previous_state.time
    return float(ctx.state.base_position[0] - ctx.previous_state.base_position[0]) / dt if dt > 0.0 else 0.0


def alive(ctx: StepContext) -> float:
    """1 while upright, 0 on the falling step."""
    return 0.0 if ctx.fell else 1.0


def tilt(ctx: StepContext) -> float:
    """Minus the squared torso tilt, rad²."""
    return -ctx.state.tilt() ** 2


def action_rate(ctx: StepContext) -> float:
    """Minus the squared change of action."""
    delta = ctx.action - ctx.previous_action
    return -float(np.dot(delta, delta))


def fall(ctx: StepContext) -> float:
    """-1 on the step the robot falls."""
    return -1.0 if ctx.fell else 0.0


# name -> term; each name is also a RewardWeights field. Add a term by adding both.
REWARD_TERMS: Dict[str, Callable[[StepContext], float]] = {
    "forward_velocity": forward_velocity,
    "alive": alive,
    "tilt": tilt,
    "action_rate": action_rate,
    "fall": fall,
}


def weighted_terms(weights: RewardWeights, ctx: StepContext) -> Dict[str, float]:
    """Weighted value of every reward term; the reward is their sum."""
    return {name: getattr(weights, name) * term(ctx) for name, term in REWARD_TERMS.items()}


# -- spaces --------------------------------------------------------------------------------------------------------
def observation_layout(robot: RobotConfig) -> List[Tuple[str, int]]:
    """Names and sizes of the observation blocks, in order."""
    n = robot.n_joints
    return [
        ("joint_positions", n),       # rad, minus stance
        ("joint_velocities", n),      # rad/s times joint_velocity_scale
        ("gravity", 3),               # unit gravity direction, body frame
        ("gyro", 3),                  # torso angular velocity, body frame, rad/s
        ("foot_contacts", len(robot.foot_links)),  # 1 = touching the ground
        ("previous_action", n),       # last action applied, in [-1, 1]
    ]


_BLOCK_BOUNDS = {  # block -> (low, high); other blocks are bounded by +-OBS_LIMIT
    "gravity": (-1.0, 1.0),
    "foot_contacts": (0.0, 1.0),
    "previous_action": (-1.0, 1.0),
}


def make_spaces(robot_cfg: RobotConfig, task_cfg: TaskConfig) -> Tuple[spaces.Box, spaces.Box]:
    """(observation_space, action_space) of ``WalkEnv`` for this robot and task; needs no simulator."""
    del task_cfg  # the spaces do not depend on the task today; kept so callers need not change if they do
    low, high = [], []
    for name, size in observation_layout(robot_cfg):
        lo, hi = _BLOCK_BOUNDS.get(name, (-OBS_LIMIT, OBS_LIMIT))
        low += [lo] * size
        high += [hi] * size
    observation_space = spaces.Box(np.array(low, dtype=np.float32), np.array(high, dtype=np.float32),
                                   dtype=np.float32)
    action_space = spaces.Box(-1.0, 1.0, shape=(robot_cfg.n_joints,), dtype=np.float32)
    return observation_space, action_space


# -- environment ---------------------------------------------------------------------------------------------------
class WalkEnv(gymnasium.Env):
    """A biped learns to walk forward (+x) on flat ground.

    ## Action
    ``Box(-1, 1, (n_joints,), float32)``: joint position targets ``stance + action_scale * action``, clipped to the
    joint limits, held for one control period (1/60 s for PLEN).  A non-finite or wrong-size action raises
    ``ValueError`` without advancing the simulation.

    ## Observation
    float32 vector, blocks from ``observation_layout``: joint positions minus stance (rad), joint velocities times
    ``joint_velocity_scale``, unit gravity direction in the torso frame, torso angular velocity in the torso frame
    (rad/s, a gyro), foot contacts (0/1, left first), the previous action.  PLEN: 18 + 18 + 3 + 3 + 2 + 18 = 62.
    Blocks without natural bounds are clipped to ±``OBS_LIMIT``.

    ## Rewards
    Sum of weighted terms (weights in the task YAML, values per step in ``info["reward_terms"]``):
    ``forward_velocity`` (torso x speed, m/s), ``alive`` (1 per upright step), ``tilt`` (-tilt²),
    ``action_rate`` (-‖Δaction‖²), ``fall`` (-1 once on falling).

    ## Starting State
    Stance plus uniform joint noise of ±``reset_noise`` rad, torso origin at (0, 0, ``spawn_height``), upright and at
    rest.  ``reset(options={"base_orientation": (x, y, z, w)})`` starts with another torso orientation.

    ## Episode End
    Terminated when the robot falls: torso origin below ``fall_height`` or torso tilt above ``max_tilt`` (any
    direction).  Truncated after ``max_episode_steps`` steps (the environment counts itself, so no TimeLimit wrapper
    is needed and in-process and ROS runs end alike).

    ``info``: ``reward_terms`` (dict), ``fell`` (bool), ``distance`` (m, torso x progress since reset),
    ``state`` (the backend's ``RobotState``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 60}

    def __init__(self, robot: Union[str, RobotConfig] = "plen", task: Union[str, TaskConfig] = "walk",
                 backend: Optional[Backend] = None, gui: bool = False, render_mode: Optional[str] = None):
        self.robot = load_robot(robot)
        self.task = load_task(task)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError("render_mode must be one of %s or None, got %r" % (self.metadata["render_modes"],
                                                                                 render_mode))
        self.render_mode = render_mode
        self.metadata = dict(self.metadata, render_fps=int(round(self.robot.control_rate_hz)))
        self._owns_backend = backend is None
        if backend is None:
            from op3_walk.backends.pybullet_backend import PyBulletBackend  # pybullet only when simulating here
            backend = PyBulletBackend(self.robot, gui=gui)
        elif tuple(backend.robot.joint_names) != self.robot.joint_names:
            raise ValueError("backend robot joints differ from the environment's robot %s" % self.robot.name)
        self.backend = backend
        self.observation_space, self.action_space = make_spaces(self.robot, self.task)
        self._n = self.robot.n_joints
        self._stance = self.robot.stance
        self._lower, self._upper = self.robot.lower, self.robot.upper
        self._obs_low = self.observation_space.low.astype(np.float64)
        self._obs_high = self.observation_space.high.astype(np.float64)
        self.state = None  # type: Optional[RobotState]
        self.step_count = 0
        self._previous_action = np.zeros(self._n)
        self._start_x = 0.0

    # -- gymnasium API -------------------------------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        super().reset(seed=seed)
        options = dict(options or {})
        orientation = options.pop("base_orientation", UPRIGHT)
        if options:
            raise ValueError("unknown reset option(s): %s" % ", ".join(sorted(options)))
        noise = self.np_random.uniform(-self.task.reset_noise, self.task.reset_noise, self._n)
        joints = np.clip(self._stance + noise, self._lower, self._upper)
        self.state = self.backend.reset(joints, (0.0, 0.0, self.robot.spawn_height), tuple(orientation))
        self.step_count = 0
        self._previous_action = np.zeros(self._n)
        self._start_x = float(self.state.base_position[0])
        return self._observe(self.state, self._previous_action), {"state": self.state, "distance": 0.0, "fell": False}

    def step(self, action):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        action = self._check_action(action)
        targets = np.clip(self._stance + self.task.action_scale * action, self._lower, self._upper)
        self.backend.apply(targets)
        previous_state, state = self.state, self.backend.step()
        self.state = state
        self.step_count += 1
        fell = self.fell(state)
        terms = weighted_terms(self.task.reward, StepContext(state, previous_state, action,
                                                             self._previous_action, fell))
        self._previous_action = action
        truncated = not fell and self.step_count >= self.task.max_episode_steps
        info = {
            "reward_terms": terms,
            "fell": fell,
            "distance": float(state.base_position[0]) - self._start_x,
            "state": state,
        }
        return self._observe(state, action), float(sum(terms.values())), fell, truncated, info

    def render(self):
        if self.render_mode == "rgb_array":
            return self.backend.render_rgb(RENDER_WIDTH, RENDER_HEIGHT)
        return None

    def close(self):
        """Close the backend if this environment created it."""
        if self._owns_backend:
            self.backend.close()

    # -- helpers -------------------------------------------------------------------------------------------------
    def fell(self, state: RobotState) -> bool:
        """Torso origin below ``fall_height`` or tilted beyond ``max_tilt`` (or the state is not finite)."""
        height = float(state.base_position[2])
        if not math.isfinite(height):
            return True
        return height < self.task.fall_height or state.tilt() > self.task.max_tilt

    def _check_action(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self._n,):
            raise ValueError("action must have shape (%d,), got %s" % (self._n, a.shape))
        finite = np.isfinite(a)
        if not finite.all():
            bad = [self.robot.joint_names[i] for i in np.flatnonzero(~finite)]
            raise ValueError("action has non-finite values for joint(s): %s" % ", ".join(bad))
        return np.clip(a, -1.0, 1.0)

    def _observe(self, state: RobotState, previous_action: np.ndarray) -> np.ndarray:
        obs = np.concatenate([
            state.joint_positions - self._stance,
            state.joint_velocities * self.task.joint_velocity_scale,
            state.gravity_body(),
            state.base_angular_velocity,
            state.foot_contacts.astype(np.float64),
            previous_action,
        ])
        return np.clip(obs, self._obs_low, self._obs_high).astype(np.float32)
