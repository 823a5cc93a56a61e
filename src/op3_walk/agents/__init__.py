"""Learning agents (torch only): replay memory, networks and the TD3 agent.

``AGENTS`` maps an algorithm name (``agent.algo``, the ``algo`` in checkpoint metadata) to its agent and config
classes, so entry points can build any agent from a name and ``config/agents/<algo>.yaml``.
"""
from typing import Dict, Tuple

from op3_walk.agents.replay import Batch, ReplayMemory
from op3_walk.agents.td3 import TD3Agent, TD3Config

AGENTS: Dict[str, Tuple[type, type]] = {
    TD3Agent.algo: (TD3Agent, TD3Config),
}


def agent_classes(algo: str) -> Tuple[type, type]:
    """``(AgentClass, ConfigClass)`` for ``algo``; ValueError listing the known names otherwise."""
    try:
        return AGENTS[algo]
    except KeyError:
        raise ValueError("unknown algorithm %r; known: %s" % (algo, ", ".join(sorted(AGENTS)))) from None


__all__ = ["AGENTS", "Batch", "ReplayMemory", "TD3Agent", "TD3Config", "agent_classes"]
