"""Neural networks of the agents, and the small torch helpers they share.

Export contract (what a torch-free numpy exporter walks): every deterministic policy is reachable as
``<module>.net``, a plain ``nn.Sequential`` of ``nn.Linear`` and activation modules (``nn.ReLU`` between layers,
``nn.Tanh`` last for continuous actions):

- TD3/DDPG: ``agent.actor.net`` = ``Linear, ReLU, ..., Linear, Tanh``;
- SAC: ``agent.actor.net`` = ``Linear, ReLU, ..., Linear, ReLU`` (the trunk), then the ``mean`` head ``Linear`` and
  ``Tanh``: the deterministic policy ``tanh(mean(trunk(obs)))``.  It is built on demand from the actor's own
  layers (no copy, not a separate set of weights); the ``log_std`` head is not needed to act;
- DQN: ``agent.q_net`` = ``Linear, ReLU, ..., Linear``; the action is the argmax of its output.

Critics of the actor-critic agents are one :class:`EnsembleQ` module: the ``n_critics`` Q-networks' weights are
stacked along a leading ensemble dimension and evaluated together with ``torch.baddbmm``, one kernel per layer for the
whole ensemble instead of one per network.
"""
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN = -20.0   # SAC: clamp of the policy's log standard deviation (before tanh), as in Haarnoja et al.
LOG_STD_MAX = 2.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def mlp(in_dim: int, out_dim: int, hidden_sizes: Sequence[int],
        output_activation: Optional[nn.Module] = None) -> nn.Sequential:
    """``Linear -> ReLU`` for each hidden size, then a final ``Linear`` to ``out_dim`` and ``output_activation``."""
    layers: List[nn.Module] = []
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


class GaussianActor(nn.Module):
    """SAC's squashed Gaussian policy: ``u ~ N(mean(h), exp(log_std(h)))``, ``action = tanh(u)``, ``h = trunk(obs)``.

    ``trunk`` is ``Linear, ReLU, ..., Linear, ReLU``; ``mean`` and ``log_std`` are ``Linear`` heads on it.  The
    deterministic policy ``tanh(mean(trunk(obs)))`` is :meth:`forward` and, for the exporter, :attr:`net`.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        hidden = list(hidden_sizes)
        self.trunk = mlp(obs_dim, hidden[-1], hidden[:-1], output_activation=nn.ReLU())
        self.mean = nn.Linear(hidden[-1], act_dim)
        self.log_std = nn.Linear(hidden[-1], act_dim)

    @property
    def net(self) -> nn.Sequential:
        """The deterministic policy as ``Linear, ReLU, ..., Linear, ReLU, Linear, Tanh`` sharing this actor's layers."""
        return nn.Sequential(*self.trunk, self.mean, nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean(self.trunk(obs)))

    def sample(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None,
               std_scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action sample and its log-probability (tanh change of variables included).

        ``std_scale`` multiplies the standard deviation (exploration control when acting); the returned
        log-probability is that of the unscaled policy and only meaningful for ``std_scale == 1``.
        """
        h = self.trunk(obs)
        mean = self.mean(h)
        log_std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + log_std.exp() * (eps * std_scale if std_scale != 1.0 else eps)
        action = torch.tanh(u)
        # log N(u; mean, std) - sum log(1 - tanh(u)^2), the latter written stably as 2 (log 2 - u - softplus(-2u)).
        log_prob = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
        log_prob = log_prob - (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)
        return action, log_prob


class EnsembleLinear(nn.Module):
    """``n`` independent affine maps applied at once: ``(n, B, in) -> (n, B, out)``.

    ``weight`` is ``(n, in, out)`` (transposed with respect to ``nn.Linear``) and ``bias`` ``(n, 1, out)``, so the
    forward pass is one ``torch.baddbmm``.  Initialised like ``nn.Linear`` (uniform in +-1/sqrt(in)).
    """

    def __init__(self, n: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """``n_critics`` Q-networks ``(obs, action) -> Q`` with stacked weights (one module, one optimiser, one target).

    ``forward`` returns every member's estimate, shape ``(n_critics, B)``; ``first`` evaluates member 0 only
    (TD3's actor objective).  ``frozen=True`` uses detached weights: gradients still flow to the action (the
    actor's update) but none reach the critic's parameters, with no ``requires_grad`` toggling.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int], n_critics: int = 2):
        super().__init__()
        self.n_critics = int(n_critics)
        sizes = [obs_dim + act_dim] + list(hidden_sizes) + [1]
        self.layers = nn.ModuleList(EnsembleLinear(n_critics, a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def _run(self, x: torch.Tensor, members: int, frozen: bool) -> torch.Tensor:
        h = x.unsqueeze(0).expand(members, -1, -1)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            w, b = layer.weight, layer.bias
            if members != self.n_critics:
                w, b = w[:members], b[:members]
            if frozen:
                w, b = w.detach(), b.detach()
            if i < last:
                h = torch.relu_(torch.baddbmm(b, h, w))
            else:   # width-1 output: a multiply-and-sum beats a degenerate batched matmul on the CPU
                h = (h * w.transpose(1, 2)).sum(-1) + b[:, :, 0]
        return h

    def forward(self, obs: torch.Tensor, action: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        return self._run(torch.cat([obs, action], dim=-1), self.n_critics, frozen)

    def first(self, obs: torch.Tensor, action: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        return self._run(torch.cat([obs, action], dim=-1), 1, frozen)[0]

    @staticmethod
    def is_legacy_twin_state(state: Dict[str, Any]) -> bool:
        """Whether ``state`` is the state dict of the former two-``nn.Sequential`` ``TwinQ`` critic."""
        return any(key.startswith("q1_net.") for key in state)

    @staticmethod
    def legacy_param_pairs(n_layers: int) -> List[Tuple[str, str]]:
        """Old (``TwinQ``) parameter names per new parameter, in ``parameters()`` order: ``(q1 name, q2 name)``."""
        pairs = []
        for i in range(n_layers):
            for kind in ("weight", "bias"):
                pairs.append(("q1_net.%d.%s" % (2 * i, kind), "q2_net.%d.%s" % (2 * i, kind)))
        return pairs

    @staticmethod
    def stack_legacy(kind: str, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Two ``nn.Linear`` tensors (``weight`` ``(out, in)`` or ``bias`` ``(out,)``) as one ensemble tensor."""
        if kind == "weight":
            return torch.stack([first.t(), second.t()]).contiguous()
        return torch.stack([first, second]).unsqueeze(1).contiguous()

    @classmethod
    def convert_legacy_state(cls, state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """A ``TwinQ`` state dict (checkpoints written before the ensemble critic) as an ``EnsembleQ`` state dict."""
        n_layers = sum(1 for key in state if key.startswith("q1_net.") and key.endswith(".weight"))
        out = {}
        for i, (a, b) in enumerate(cls.legacy_param_pairs(n_layers)):
            kind = "weight" if i % 2 == 0 else "bias"
            out["layers.%d.%s" % (i // 2, kind)] = cls.stack_legacy(kind, state[a], state[b])
        return out


def adam(params: Iterable[torch.Tensor], lr: float, fused: bool) -> torch.optim.Adam:
    """``torch.optim.Adam``; with ``fused`` the single-kernel implementation where this torch/device supports it.

    Falls back to the default implementation (silently: same maths, only slower) when ``fused=True`` is refused.
    """
    params = list(params)
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=lr)


def load_optimizer_state(optim: torch.optim.Optimizer, state: Dict[str, Any], lr: float) -> None:
    """Load ``state`` into ``optim`` keeping this optimiser's implementation flags and taking ``lr`` from the config.

    ``Optimizer.load_state_dict`` copies the saved hyper-parameters, ``fused``/``foreach`` included; a checkpoint
    written by a non-fused optimiser would silently switch a fused one back.
    """
    keep = [{k: group.get(k) for k in ("fused", "foreach", "capturable", "differentiable")}
            for group in optim.param_groups]
    optim.load_state_dict(state)
    for group, flags in zip(optim.param_groups, keep):
        group.update(flags)
        group["lr"] = lr


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """In place: ``target <- (1 - tau) * target + tau * online`` for every parameter (``tau = 1``: a copy)."""
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    if tau >= 1.0:
        torch._foreach_copy_(target_params, online_params)
        return
    torch._foreach_mul_(target_params, 1.0 - tau)
    torch._foreach_add_(target_params, online_params, alpha=tau)
