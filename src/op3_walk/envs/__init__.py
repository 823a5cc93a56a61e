"""Gymnasium environments.  Importing this package registers them (idempotently):

    import gymnasium, op3_walk.envs
    env = gymnasium.make("op3_walk/Op3Walk-v0")

Every id is ``WalkEnv`` with a robot (``config/robots``) and a task (``config/tasks``); ``ENV_IDS`` lists them.
No ``max_episode_steps`` is registered: ``WalkEnv`` truncates itself after the task's ``max_episode_steps``.
Any other robot/task pair works too: ``WalkEnv(robot="op3", task="plen_bio")``.
"""
from typing import Dict, Tuple

import gymnasium

from op3_walk.envs.rewards import REWARD_TERMS, RewardParams, RewardWeights
from op3_walk.envs.task import TaskConfig, load_task
from op3_walk.envs.walk_env import WalkEnv, make_spaces, observation_layout

# id -> (robot, task)
ENV_IDS: Dict[str, Tuple[str, str]] = {
    "op3_walk/PlenWalk-v0": ("plen", "walk"),                  # joint targets, forward velocity
    "op3_walk/Op3Walk-v0": ("op3", "walk"),
    "op3_walk/PlenResidualWalk-v0": ("plen", "residual_walk"),  # residual on the reference gait
    "op3_walk/Op3ResidualWalk-v0": ("op3", "residual_walk"),
    "op3_walk/Op3ForwardDQN-v0": ("op3", "op3_dqn_forward"),   # posture primitives, forward progress
    "op3_walk/PlenForwardDQN-v0": ("plen", "op3_dqn_forward"),
    "op3_walk/PlenShaping-v0": ("plen", "plen_shaping"),        # the PLEN TD3 project's shaped reward
    "op3_walk/PlenBioGait-v0": ("plen", "plen_bio"),            # shaping + bio-inspired gait terms
    "op3_walk/PlenZmp-v0": ("plen", "zmp_tracking"),            # 27 gait-scaling actions, ZMP tracking
    "op3_walk/Op3Zmp-v0": ("op3", "zmp_tracking"),
    "op3_walk/PlenVelocity-v0": ("plen", "velocity_tracking"),  # velocity-command tracking
    "op3_walk/Op3Velocity-v0": ("op3", "velocity_tracking"),
}
PLEN_WALK_ID = "op3_walk/PlenWalk-v0"

for _id, (_robot, _task) in ENV_IDS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point="op3_walk.envs.walk_env:WalkEnv",
                           kwargs={"robot": _robot, "task": _task})

__all__ = ["ENV_IDS", "PLEN_WALK_ID", "REWARD_TERMS", "RewardParams", "RewardWeights", "TaskConfig", "WalkEnv",
           "load_task", "make_spaces", "observation_layout"]
