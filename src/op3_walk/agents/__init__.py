"""Learning agents (torch only): replay memory, networks and the DQN, DDPG, TD3 and SAC agents.

``AGENTS`` maps an algorithm name (``agent.algo``, the ``algo`` in checkpoint metadata) to its agent and config
classes, so entry points can build any agent from a name and ``config/agents/<algo>.yaml``.  Every agent has the
step-by-step interface of :class:`~op3_walk.agents.base.OffPolicyAgent` (``act``, ``observe``, ``updates_due``,
``update``, ``set_exploration``, ``state_dict``...).  DQN is for discrete action spaces (``act_dim`` = number of
actions, ``act`` returns an int); the others for continuous actions in [-1, 1].
"""
from typing import Dict, Tuple

from op3_walk.agents.base import OffPolicyAgent, OffPolicyConfig
from op3_walk.agents.ddpg import DDPGAgent, DDPGConfig
from op3_walk.agents.dqn import DQNAgent, DQNConfig
from op3_walk.agents.replay import Batch, ReplayMemory
from op3_walk.agents.sac import SACAgent, SACConfig
from op3_walk.agents.td3 import TD3Agent, TD3Config

AGENTS: Dict[str, Tuple[type, type]] = {
    DQNAgent.algo: (DQNAgent, DQNConfig),
    DDPGAgent.algo: (DDPGAgent, DDPGConfig),
    TD3Agent.algo: (TD3Agent, TD3Config),
    SACAgent.algo: (SACAgent, SACConfig),
}

DISCRETE_ALGOS = ("dqn",)   # algorithms whose act_dim is a number of actions (gymnasium Discrete spaces)


def agent_classes(algo: str) -> Tuple[type, type]:
    """``(AgentClass, ConfigClass)`` for ``algo``; ValueError listing the known names otherwise."""
    try:
        return AGENTS[algo]
    except KeyError:
        raise ValueError("unknown algorithm %r; known: %s" % (algo, ", ".join(sorted(AGENTS)))) from None


__all__ = ["AGENTS", "Batch", "DDPGAgent", "DDPGConfig", "DISCRETE_ALGOS", "DQNAgent", "DQNConfig",
           "OffPolicyAgent", "OffPolicyConfig", "ReplayMemory", "SACAgent", "SACConfig", "TD3Agent", "TD3Config",
           "agent_classes"]
