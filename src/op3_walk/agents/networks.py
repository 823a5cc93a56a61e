"""Neural networks for the actor-critic agents.

Plain ``nn.Sequential`` stacks of ``nn.Linear`` + ReLU, so a trained actor exports layer by layer to the numpy
policy runtime (``op3_walk.policy``) without torch.
"""
from typing import Optional, Sequence

import torch
from torch import nn


def mlp(in_dim: int, out_dim: int, hidden_sizes: Sequence[int],
        output_activation: Optional[nn.Module] = None) -> nn.Sequential:
    """``Linear -> ReLU`` for each hidden size, then a final ``Linear`` to ``out_dim`` and ``output_activation``."""
    layers = []
    last = in_dim
    for width in hidden_sizes:
        layers += [nn.Linear(last, width), nn.ReLU()]
        last = width
    layers.append(nn.Linear(last, out_dim))
    if output_activation is not None:
        layers.append(output_activation)
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Deterministic policy ``obs -> action`` in [-1, 1] (tanh output).

    ``net`` is ``Linear, ReLU, ..., Linear, Tanh``: what the exporter walks.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden_sizes, output_activation=nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class TwinQ(nn.Module):
    """Two independent Q-networks ``(obs, action) -> Q`` in one module (one optimiser, one target copy).

    ``forward`` returns both estimates stacked, shape ``(2, B)``; ``q1`` evaluates only the first one (the actor's
    objective in TD3).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        self.q1_net = mlp(obs_dim + act_dim, 1, hidden_sizes)
        self.q2_net = mlp(obs_dim + act_dim, 1, hidden_sizes)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([self.q1_net(x).squeeze(-1), self.q2_net(x).squeeze(-1)])

    def q1(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q1_net(torch.cat([obs, action], dim=-1)).squeeze(-1)
