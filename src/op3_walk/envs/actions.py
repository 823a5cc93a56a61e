"""Action mappings: from what the agent outputs to joint position targets.

* ``joint_targets`` — ``Box(-1, 1, (n_joints,))``: ``stance + scale * a``.
* ``residual`` — the same box: ``reference_gait(t) + scale * a`` (the agent learns a correction to an open-loop gait).
* ``postures`` — ``Discrete(n)``: action ``k`` holds posture primitive ``k`` (``config/postures/<robot>.yaml``: foot
  displacements solved with the leg IK, plus joint offsets), in the style of the OP3 DQN's motion set.
* ``gait_scaling`` — ``Discrete(27)``: 3 joint groups (hip pitch, knee, ankle pitch) x {-step, 0, +step}; each group's
  offset from stance in the reference gait is multiplied by ``1 + choice`` (the ZMP-tracking DQN's action set).

Each mapping also says what the observation's ``previous_action`` block holds and what the reward's ``action_rate``
term compares (``encode``): the clipped action for the boxes, a one-hot vector for postures, the 3 group choices in
{-1, 0, 1} for gait scaling.
"""
import dataclasses
import itertools
import os
from typing import Any, Dict, List, Optional

import numpy as np
from gymnasium import spaces

from op3_walk import CONFIG_DIR
from op3_walk.config import doc, load
from op3_walk.robots.description import RobotConfig, find_config

POSTURES_DIR = os.path.join(CONFIG_DIR, "postures")
GAIT_GROUPS = ("hip_pitch", "knee", "ankle_pitch")  # leg joint roles scaled together by gait_scaling actions


@dataclasses.dataclass
class PostureConfig:
    """One posture primitive: sole displacements (solved by leg IK) and joint offsets, relative to the stance."""

    name: str = doc("posture name, shown in logs")
    feet: Dict[str, List[float]] = doc("leg name -> [dx, dy, dz] displacement of that sole from its stance position "
                                       "in the torso frame, m", default_factory=dict)
    joints: Dict[str, float] = doc("joint name -> offset added to the joint's target, rad (after the IK)",
                                   default_factory=dict)

    def validate(self) -> None:
        for leg, delta in self.feet.items():
            if len(delta) != 3:
                raise ValueError("posture %s: feet.%s needs 3 values [dx, dy, dz], got %s" % (self.name, leg, delta))


@dataclasses.dataclass
class PostureSetConfig:
    """A robot's discrete posture primitives (``config/postures/<robot>.yaml``)."""

    robot: str = doc("robot this set is written for (checked)")
    postures: List[PostureConfig] = doc("the primitives; action k selects postures[k]")

    def validate(self) -> None:
        if len(self.postures) < 2:
            raise ValueError("a posture set needs at least 2 postures")
        names = [p.name for p in self.postures]
        if len(set(names)) != len(names):
            raise ValueError("duplicate posture names: %s" % names)


def load_postures(robot: RobotConfig, name_or_path: str = "") -> PostureSetConfig:
    cfg = load(PostureSetConfig, find_config(name_or_path or robot.name, POSTURES_DIR))
    if cfg.robot != robot.name:
        raise ValueError("posture set is written for robot %r, not %r" % (cfg.robot, robot.name))
    return cfg


def posture_targets(robot: RobotConfig, postures: PostureSetConfig) -> np.ndarray:
    """Joint targets (n_postures, n_joints), rad, clipped to the limits; IK errors name the posture."""
    from op3_walk.robots.kinematics import BipedKinematics
    kin = BipedKinematics(robot)
    legs = {leg.name: leg for leg in robot.legs}
    stance_feet = [position for position, _ in kin.foot_poses(robot.stance)]
    rows = []
    for posture in postures.postures:
        unknown = sorted(set(posture.feet) - set(legs)) + sorted(set(posture.joints) - set(robot.joint_names))
        if unknown:
            raise ValueError("posture %s names unknown legs/joints: %s" % (posture.name, ", ".join(unknown)))
        feet = [stance_feet[i] + np.asarray(posture.feet.get(leg.name, (0.0, 0.0, 0.0)))
                for i, leg in enumerate(robot.legs)]
        try:
            q = kin.joint_vector(feet, base=robot.stance)
        except ValueError as exc:
            raise ValueError("posture %s: %s" % (posture.name, exc)) from None
        for joint, offset in posture.joints.items():
            q[robot.joint_index(joint)] += offset
        rows.append(np.clip(q, robot.lower, robot.upper))
    return np.array(rows)


class ActionMap:
    """Turns an action into joint targets; ``space`` is the env's action space."""

    space: spaces.Space
    encoded_size: int

    def check(self, action: Any) -> Any:
        """The action validated (and clipped, for boxes); ValueError on a malformed one."""
        raise NotImplementedError

    def targets(self, action: Any, time_s: float) -> np.ndarray:
        """Joint position targets (rad, robot order, not yet clipped) for a checked action at ``time_s``."""
        raise NotImplementedError

    def encode(self, action: Optional[Any]) -> np.ndarray:
        """The action as a float vector (``None``: no action yet): observation block and action-rate input."""
        raise NotImplementedError


class BoxActions(ActionMap):
    """Continuous actions in [-1, 1]^n added (times ``scale``) to the stance or to a reference gait."""

    def __init__(self, robot: RobotConfig, scale: float, gait: Any = None):
        self.robot, self.scale, self.gait = robot, scale, gait
        self.space = spaces.Box(-1.0, 1.0, shape=(robot.n_joints,), dtype=np.float32)
        self.encoded_size = robot.n_joints

    def check(self, action: Any) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.robot.n_joints,):
            raise ValueError("action must have shape (%d,), got %s" % (self.robot.n_joints, a.shape))
        finite = np.isfinite(a)
        if not finite.all():
            bad = [self.robot.joint_names[i] for i in np.flatnonzero(~finite)]
            raise ValueError("action has non-finite values for joint(s): %s" % ", ".join(bad))
        return np.clip(a, -1.0, 1.0)

    def targets(self, action: np.ndarray, time_s: float) -> np.ndarray:
        base = self.robot.stance if self.gait is None else self.gait.joint_targets(time_s)
        return base + self.scale * action

    def encode(self, action: Optional[np.ndarray]) -> np.ndarray:
        return np.zeros(self.robot.n_joints) if action is None else action


class DiscreteActions(ActionMap):
    """``Discrete(n)`` actions; subclasses say what action ``k`` does."""

    def __init__(self, n: int):
        self.space = spaces.Discrete(n)
        self.n = n

    def check(self, action: Any) -> int:
        value = np.asarray(action)
        if value.shape not in ((), (1,)) or value.dtype.kind not in "iu":
            raise ValueError("discrete action must be one integer in [0, %d), got %r" % (self.n, action))
        k = int(value.reshape(()))
        if not 0 <= k < self.n:
            raise ValueError("discrete action %d outside [0, %d)" % (k, self.n))
        return k


class PostureActions(DiscreteActions):
    """Action ``k`` targets posture primitive ``k``; encoded one-hot."""

    def __init__(self, robot: RobotConfig, postures: PostureSetConfig):
        self.names = [p.name for p in postures.postures]
        self.table = posture_targets(robot, postures)
        super().__init__(len(self.names))
        self.encoded_size = self.n

    def targets(self, action: int, time_s: float) -> np.ndarray:
        return self.table[action].copy()

    def encode(self, action: Optional[int]) -> np.ndarray:
        onehot = np.zeros(self.n)
        if action is not None:
            onehot[action] = 1.0
        return onehot


class GaitScalingActions(DiscreteActions):
    """27 actions: each of 3 joint groups scales its reference-gait offset by 1 - step, 1 or 1 + step."""

    def __init__(self, gait: Any, step: float):
        self.gait, self.step = gait, step
        self.choices = np.array(list(itertools.product((-1.0, 0.0, 1.0), repeat=len(GAIT_GROUPS))))
        super().__init__(len(self.choices))
        self.encoded_size = len(GAIT_GROUPS)

    def scales(self, action: int) -> np.ndarray:
        """The 3 factors (hip pitch, knee, ankle pitch) of action ``action``."""
        return 1.0 + self.step * self.choices[action]

    def targets(self, action: int, time_s: float) -> np.ndarray:
        return self.gait.joint_targets(time_s, scales=self.scales(action))

    def encode(self, action: Optional[int]) -> np.ndarray:
        return np.zeros(len(GAIT_GROUPS)) if action is None else self.choices[action].copy()


def make_action_map(robot: RobotConfig, action_cfg: Any, gait: Any = None) -> ActionMap:
    """The mapping for ``action_cfg.mode``; ``gait`` (a ReferenceGait) is required by residual and gait_scaling."""
    if action_cfg.uses_gait and gait is None:
        raise ValueError("action mode %s needs a reference gait" % action_cfg.mode)
    if action_cfg.mode == "joint_targets":
        return BoxActions(robot, action_cfg.scale)
    if action_cfg.mode == "residual":
        return BoxActions(robot, action_cfg.scale, gait)
    if action_cfg.mode == "postures":
        return PostureActions(robot, load_postures(robot, action_cfg.postures))
    return GaitScalingActions(gait, action_cfg.scaling_step)
