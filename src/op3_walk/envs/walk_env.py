"""Walk on flat ground: a gymnasium environment over any ``Backend`` (PyBullet by default), for any robot and task.

The task (``config/tasks/<name>.yaml``, see ``op3_walk.envs.task``) chooses the action mapping, the observation
blocks, the velocity command, the reward terms (``op3_walk.envs.rewards``) and the domain randomisation.
"""
import collections
import math
from typing import Any, Dict, List, Optional, Tuple, Union

import gymnasium
import numpy as np
from gymnasium import spaces

from op3_walk.backends.base import Backend, RobotState
from op3_walk.envs.actions import ActionMap, make_action_map
from op3_walk.envs.command import draw_command
from op3_walk.envs.rewards import REFERENCE_TERMS, REWARD_TERMS, Reference, RewardComputer
from op3_walk.envs.task import TASKS_DIR, TaskConfig, load_task
from op3_walk.robots.description import RobotConfig, load_robot

RENDER_WIDTH = 320   # px, rgb_array frames
RENDER_HEIGHT = 240  # px
UPRIGHT = (0.0, 0.0, 0.0, 1.0)  # quaternion x, y, z, w
SPAWN_CLEARANCE = 0.001  # m between the soles and the ground at reset, for gait-based starts
OBS_LIMIT = 100.0    # bound of the observation blocks without a natural one; observations are clipped to it
NEEDS_REFERENCE = REFERENCE_TERMS  # reward terms that compare the robot with the reference gait

__all__ = ["OBS_LIMIT", "REWARD_TERMS", "TASKS_DIR", "TaskConfig", "WalkEnv", "load_reference_gait", "load_task",
           "make_spaces", "observation_layout"]


def load_reference_gait(robot: RobotConfig, task: TaskConfig) -> Any:
    """The task's reference gait for ``robot``, or None when nothing in the task uses one."""
    weights = task.reward
    if not (task.action.uses_gait or task.observation.phase or any(getattr(weights, t) for t in NEEDS_REFERENCE)):
        return None
    from op3_walk.robots.gait import ReferenceGait, load_gait
    return ReferenceGait(robot, load_gait(task.action.gait or robot.name))


# -- spaces --------------------------------------------------------------------------------------------------------
def observation_layout(robot: RobotConfig, task: TaskConfig, action_map: Optional[ActionMap] = None
                       ) -> List[Tuple[str, int]]:
    """Names and sizes of the observation blocks, in order (``action_map``: pass one already built to save work)."""
    n = robot.n_joints
    obs = task.observation
    if action_map is None:
        action_map = make_action_map(robot, task.action, load_reference_gait(robot, task))
    layout = [
        ("joint_positions", n),       # rad, minus stance
        ("joint_velocities", n),      # rad/s times joint_velocity_scale
        (obs.orientation, 3 if obs.orientation == "gravity" else 4),  # body-frame gravity or quaternion
        ("gyro", 3),                  # torso angular velocity, body frame, rad/s
        ("foot_contacts", len(robot.legs)),  # 1 = touching the ground
        ("previous_action", action_map.encoded_size),  # see op3_walk.envs.actions
    ]
    if obs.phase:
        layout.append(("phase", 2))           # sin, cos of the reference gait phase
    if obs.command:
        layout.append(("command", 3))         # forward m/s, lateral m/s, yaw rate rad/s
    if obs.privileged:
        layout.append(("privileged", 4))      # SIM ONLY: torso velocity in the torso frame (m/s), height (m)
    return layout


_BLOCK_BOUNDS = {  # block -> (low, high); other blocks are bounded by +-OBS_LIMIT
    "gravity": (-1.0, 1.0),
    "quaternion": (-1.0, 1.0),
    "foot_contacts": (0.0, 1.0),
    "previous_action": (-1.0, 1.0),
    "phase": (-1.0, 1.0),
}


def make_spaces(robot_cfg: RobotConfig, task_cfg: TaskConfig, action_map: Optional[ActionMap] = None
                ) -> Tuple[spaces.Box, spaces.Space]:
    """(observation_space, action_space) of ``WalkEnv`` for this robot and task; needs no simulator."""
    if action_map is None:
        action_map = make_action_map(robot_cfg, task_cfg.action, load_reference_gait(robot_cfg, task_cfg))
    low, high = [], []
    for name, size in observation_layout(robot_cfg, task_cfg, action_map):
        lo, hi = _BLOCK_BOUNDS.get(name, (-OBS_LIMIT, OBS_LIMIT))
        low += [lo] * size
        high += [hi] * size
    observation_space = spaces.Box(np.array(low, dtype=np.float32), np.array(high, dtype=np.float32),
                                   dtype=np.float32)
    return observation_space, action_map.space


# -- environment ---------------------------------------------------------------------------------------------------
class WalkEnv(gymnasium.Env):
    """A biped walks on flat ground (forward, or as the velocity command says).

    ## Action
    Set by the task's ``action.mode`` (``op3_walk.envs.actions``): ``joint_targets`` and ``residual`` take
    ``Box(-1, 1, (n_joints,), float32)`` (joint targets ``stance + scale * a`` or ``reference_gait(t) + scale * a``);
    ``postures`` takes ``Discrete(n_postures)`` and ``gait_scaling`` ``Discrete(27)``.  Targets are clipped to the joint
    limits and held for one control period.  A malformed action (NaN, wrong size, out-of-range index) raises
    ``ValueError`` without advancing the simulation.

    ## Observation
    float32 vector, blocks from ``observation_layout``: joint positions minus stance (rad), joint velocities times
    ``joint_velocity_scale``, the torso orientation (gravity direction in the torso frame, or the quaternion), torso
    angular velocity in the torso frame (rad/s, a gyro), foot contacts (0/1, left first), the previous action
    (encoded), then optionally the gait phase (sin, cos), the velocity command and sim-only privileged values.  Only
    what the real robot senses is included unless the task asks for ``privileged``.

    ## Rewards
    Sum of the task's weighted terms (``op3_walk.envs.rewards``); each step's weighted values are in
    ``info["reward_terms"]``.

    ## Starting State
    Stance (or the reference gait's first pose, for gait-based actions) plus uniform joint noise of ±``reset_noise``
    rad, soles just above the ground, upright and at rest.  ``reset(options={"base_orientation": (x, y, z, w)})``
    starts with another torso orientation.  With randomisation on, friction, link masses, gains, latency and pushes are
    drawn from the env's seeded RNG at each reset.

    ## Episode End
    Terminated when the robot falls: torso origin below ``min_height_ratio`` of the standing height, or torso tilt
    above ``max_tilt`` in any direction.  Truncated after ``max_episode_steps`` steps (the env counts itself: no
    TimeLimit wrapper is needed, so in-process and ROS runs end alike).

    ``info``: ``reward_terms`` (dict), ``fell`` (bool), ``distance`` (m, torso x progress since reset), ``state``
    (the backend's ``RobotState``), ``command`` (the velocity command, when the task has one).

    ## Velocity command
    Drawn from the task's ranges for this robot (``command.robots``) at reset and every ``resample_s``
    (``op3_walk.envs.command``).  A controller steering the robot (cmd_vel) sets ``command_override``; while it is
    not None it replaces the drawn command in the observation, the reward and ``info["command"]``.
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
        self.gait = load_reference_gait(self.robot, self.task)
        self.action_map = make_action_map(self.robot, self.task.action, self.gait)
        self.observation_space, self.action_space = make_spaces(self.robot, self.task, self.action_map)
        self.layout = observation_layout(self.robot, self.task, self.action_map)
        self._owns_backend = backend is None
        if backend is None:
            from op3_walk.backends.pybullet_backend import PyBulletBackend  # pybullet only when simulating here
            backend = PyBulletBackend(self.robot, gui=gui, actuator_model=self.task.actuator_model)
        elif tuple(backend.robot.joint_names) != self.robot.joint_names:
            raise ValueError("backend robot joints differ from the environment's robot %s" % self.robot.name)
        elif hasattr(backend, "set_actuator_model"):   # a simulator: the task picks its actuator model
            backend.set_actuator_model(self.task.actuator_model)
        self.backend = backend
        self._n = self.robot.n_joints
        self._dt = self.robot.control_period_s
        self._stance = self.robot.stance
        self._lower, self._upper = self.robot.lower, self.robot.upper
        self._obs_low = self.observation_space.low.astype(np.float64)
        self._obs_high = self.observation_space.high.astype(np.float64)
        if self.task.action.uses_gait:  # start in the gait's first pose, lean and height
            self._initial_pose = self.gait.joint_targets(0.0)
            self._initial_orientation = tuple(self.gait.base_orientation())
            self.standing_height = self.gait.standing_height + SPAWN_CLEARANCE
        else:
            self._initial_pose = self._stance
            self._initial_orientation = UPRIGHT
            self.standing_height = self.robot.spawn_height
        self.fall_height = self.task.min_height_ratio * self.standing_height
        self.rewards = RewardComputer(self.task.reward, self.task.reward_params, self.robot,
                                      nominal_height=self.standing_height, fall_height=self.fall_height)
        self.state = None  # type: Optional[RobotState]
        self.step_count = 0
        self.command_config = self.task.command.for_robot(self.robot.name)   # this robot's command ranges
        self.command = np.zeros(3)        # the task's drawn command
        self.command_override = None      # type: Optional[np.ndarray]  # set by a controller (cmd_vel): replaces it
        self.latency_steps = 0
        self._pending = collections.deque()  # joint targets waiting out the action latency
        self._previous_action = None  # type: Any
        self._start_x = 0.0
        self._next_push_s = math.inf
        self._next_command_s = math.inf

    # -- gymnasium API -------------------------------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        super().reset(seed=seed)
        options = dict(options or {})
        orientation = options.pop("base_orientation", self._initial_orientation)
        if options:
            raise ValueError("unknown reset option(s): %s" % ", ".join(sorted(options)))
        rng = self.np_random
        noise = rng.uniform(-self.task.reset_noise, self.task.reset_noise, self._n)
        joints = np.clip(self._initial_pose + noise, self._lower, self._upper)
        self._randomize(rng)
        self.state = self.backend.reset(joints, (0.0, 0.0, self.standing_height), tuple(orientation))
        self.step_count = 0
        self._previous_action = None
        self._pending.clear()
        self._start_x = float(self.state.base_position[0])
        self.command = draw_command(self.command_config, rng)
        cmd = self.command_config
        self._next_command_s = cmd.resample_s if cmd.active and cmd.resample_s > 0.0 else math.inf
        self.rewards.reset(self.state)
        info = {"state": self.state, "distance": 0.0, "fell": False}
        if self._has_command():
            info["command"] = self.active_command().copy()
        return self._observe(self.state), info

    def step(self, action):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        action = self.action_map.check(action)
        time_s = self.step_count * self._dt  # targets are for the end of this control period (as the gait player's)
        targets = np.clip(self.action_map.targets(action, time_s + self._dt), self._lower, self._upper)
        if self.latency_steps:
            self._pending.append(targets)
            targets = self._pending.popleft() if len(self._pending) > self.latency_steps else None
        if targets is not None:
            self.backend.apply(targets)
        if time_s >= self._next_push_s:
            self._push(self.np_random)
        previous_state, state = self.state, self.backend.step()
        self.state = state
        self.step_count += 1
        fell = self.fell(state)
        truncated = not fell and self.step_count >= self.task.max_episode_steps
        encoded = self.action_map.encode(action)
        terms = self.rewards(state, previous_state, encoded, self.action_map.encode(self._previous_action), fell,
                             self.step_count, self._dt, truncated, command=self._command_or_none(),
                             reference=self._reference(state, self.step_count * self._dt))
        self._previous_action = action
        info = {
            "reward_terms": terms,
            "fell": fell,
            "distance": float(state.base_position[0]) - self._start_x,
            "state": state,
        }
        if self._has_command():
            info["command"] = self.active_command().copy()
            if state.time >= self._next_command_s:
                self.command = draw_command(self.command_config, self.np_random)
                self._next_command_s += self.command_config.resample_s
        return self._observe(state), float(sum(terms.values())), fell, truncated, info

    def current_observation(self) -> Tuple[np.ndarray, Dict[str, Any]]:
        """The observation of the latest state and an info dict (``state``, ``distance``, no reward terms), without
        stepping: what a real-time controller reports when it ends an episode itself (its watchdog)."""
        if self.state is None:
            raise RuntimeError("call reset() before current_observation()")
        info = {"state": self.state, "reward_terms": {}, "fell": False,
                "distance": float(self.state.base_position[0]) - self._start_x}
        return self._observe(self.state), info

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
        """Torso origin below the fall height or tilted beyond ``max_tilt`` (or the state is not finite)."""
        height = float(state.base_position[2])
        if not math.isfinite(height):
            return True
        return height < self.fall_height or state.tilt() > self.task.max_tilt

    def _randomize(self, rng: np.random.Generator) -> None:
        """Draw this episode's physics, latency and push schedule (nominal when randomisation is off)."""
        rand = self.task.randomization
        self.latency_steps = 0
        self._next_push_s = math.inf
        if not rand.enabled:
            return
        try:
            self.backend.set_dynamics(
                ground_friction=rng.uniform(*rand.friction),
                mass_scales=rng.uniform(*rand.mass_scale, size=len(self.backend.link_names)),
                kp_scales=rng.uniform(*rand.kp_scale, size=self._n))
        except NotImplementedError:
            pass  # a real robot: its physics is what it is
        self.latency_steps = int(rng.integers(rand.latency_steps[0], rand.latency_steps[1] + 1))
        if rand.push_interval_s > 0.0 and rand.push_force[1] > 0.0:
            self._next_push_s = rng.uniform(0.5, 1.5) * rand.push_interval_s

    def _push(self, rng: np.random.Generator) -> None:
        rand = self.task.randomization
        heading = rng.uniform(-math.pi, math.pi)
        magnitude = rng.uniform(*rand.push_force)
        self.backend.push((magnitude * math.cos(heading), magnitude * math.sin(heading), 0.0), rand.push_duration_s)
        self._next_push_s += rng.uniform(0.5, 1.5) * rand.push_interval_s

    def active_command(self) -> np.ndarray:
        """The command the policy is given: ``command_override`` when set (cmd_vel through the controller), else the
        task's drawn command."""
        return self.command if self.command_override is None else np.asarray(self.command_override, dtype=float)

    def _has_command(self) -> bool:
        return self.command_config.active or (self.task.observation.command and self.command_override is not None)

    def _command_or_none(self) -> Optional[np.ndarray]:
        return self.active_command() if self._has_command() else None

    def _reference(self, state: RobotState, time_s: float) -> Optional[Reference]:
        """Where the ZMP should be: the feet the reference gait stands on (their mean in double support)."""
        if self.gait is None:
            return None
        support = np.asarray(self.gait.support(time_s), dtype=bool)
        feet = state.foot_positions
        if feet is None:
            return Reference(zmp=None, support=support, phase=float(self.gait.phase(time_s)))
        chosen = feet[support] if support.any() else feet
        return Reference(zmp=chosen[:, :2].mean(axis=0), support=support, phase=float(self.gait.phase(time_s)))

    def _observe(self, state: RobotState) -> np.ndarray:
        obs_cfg = self.task.observation
        rand = self.task.randomization
        orientation = state.gravity_body() if obs_cfg.orientation == "gravity" else state.base_orientation
        blocks = [
            state.joint_positions - self._stance,
            state.joint_velocities,
            orientation,
            state.base_angular_velocity,
        ]
        if rand.enabled:  # sensor noise on what the robot senses (not on contacts or the previous action)
            rng = self.np_random
            stds = (rand.joint_position_noise, rand.joint_velocity_noise, rand.orientation_noise, rand.gyro_noise)
            blocks = [b + rng.normal(0.0, std, b.shape) if std > 0.0 else b for b, std in zip(blocks, stds)]
        blocks[1] = blocks[1] * obs_cfg.joint_velocity_scale
        blocks += [state.foot_contacts.astype(np.float64), self.action_map.encode(self._previous_action)]
        if obs_cfg.phase:
            angle = 2.0 * math.pi * float(self.gait.phase(self.step_count * self._dt))
            blocks.append(np.array([math.sin(angle), math.cos(angle)]))
        if obs_cfg.command:
            blocks.append(self.active_command())
        if obs_cfg.privileged:
            velocity_body = state.rotation().T.dot(state.base_linear_velocity)
            blocks.append(np.append(velocity_body, state.base_position[2]))
        return np.clip(np.concatenate(blocks), self._obs_low, self._obs_high).astype(np.float32)
