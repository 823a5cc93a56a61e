"""Gymnasium environments.  Importing this package registers them (idempotently):

    import gymnasium, op3_walk.envs
    env = gymnasium.make("op3_walk/PlenWalk-v0")

No ``max_episode_steps`` is registered: ``WalkEnv`` truncates itself after the task's ``max_episode_steps``.
"""
import gymnasium

from op3_walk.envs.walk_env import (REWARD_TERMS, RewardWeights, StepContext, TaskConfig, WalkEnv, load_task,
                                    make_spaces, observation_layout, weighted_terms)

PLEN_WALK_ID = "op3_walk/PlenWalk-v0"

if PLEN_WALK_ID not in gymnasium.registry:
    gymnasium.register(id=PLEN_WALK_ID, entry_point="op3_walk.envs.walk_env:WalkEnv", kwargs={"robot": "plen"})

__all__ = ["PLEN_WALK_ID", "REWARD_TERMS", "RewardWeights", "StepContext", "TaskConfig", "WalkEnv", "load_task",
           "make_spaces", "observation_layout", "weighted_terms"]
