"""DDPG: Deep Deterministic Policy Gradient (Lillicrap et al., 2016, arXiv:1509.02971).

The TD3 machinery with TD3's three additions switched off: one critic (``n_critics=1``), the actor and targets
updated on every critic update (``policy_delay=1``), no target policy smoothing (``target_noise=0``).  Exploration
is Gaussian action noise (as in TD3 and most modern DDPG implementations) rather than the paper's
Ornstein-Uhlenbeck process.  Setting those three keys in ``config/agents/ddpg.yaml`` moves it back towards TD3.
"""
from dataclasses import dataclass

from op3_walk.agents.td3 import TD3Agent, TD3Config
from op3_walk.config import doc


@dataclass
class DDPGConfig(TD3Config):
    """DDPG hyper-parameters (``config/agents/ddpg.yaml``): TD3's keys with DDPG's defaults."""

    n_critics: int = doc("critics in the ensemble; the TD target takes the minimum over them (DDPG: 1)", default=1)
    policy_delay: int = doc("critic updates per actor (and target) update (DDPG: 1)", default=1)
    target_noise: float = doc("std of the Gaussian noise on target actions (DDPG: 0, no smoothing)", default=0.0)


class DDPGAgent(TD3Agent):
    """DDPG: :class:`TD3Agent` driven by a :class:`DDPGConfig`; same interface, networks and checkpoint layout."""

    algo = "ddpg"
