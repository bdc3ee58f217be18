"""Action distributions: what the policy head's parameters mean, per kind of action space.

The model's policy head outputs ``params [..., P]`` per step; an :class:`ActionDistribution`
turns them into actions, log-probabilities and entropies. Inference samples from the
*behaviour* parameters mu and stores them with the action; the trainer recomputes the
*target* parameters pi and needs only log pi(a|x) - log mu(a|x) (V-trace's importance
weights) and the entropy, so one interface serves every kind:

* Discrete(n): :class:`Categorical`; params the logits ``[..., n]`` (P = n); actions
  int64 ``[...]``, 0-based.
* MultiDiscrete(nvec), one-dimensional: :class:`MultiCategorical`; params the logits of
  each head side by side ``[..., sum(nvec)]``; actions int64 ``[..., m]``, 0-based.
* float Box(shape) of n values: :class:`DiagGaussian`; params the mean and the log-std of
  each component ``[..., 2n]``; actions float32 ``[..., *shape]``.

Categorical indices are 0-based: ``seed_rl.spaces.ActionLayout.to_wire`` adds the space's
``start`` before sending. A Gaussian action is the raw, unclipped sample: the actor clips
it to the Box bounds just before ``env.step`` (``ActionLayout.to_env``, like gymnasium's
ClipAction). Clipping there, not here, keeps the stored action the one whose density
V-trace uses (a clipped action would need the probability mass beyond the bounds), and a
tanh squash instead would need a change-of-variables term and pushes the mean towards
saturation. seed_rl/spaces.py says the same from the wire's side.

Every method is a pure function of its tensors (no state, no gradient of its own): the
Gaussian's learned log-std lives in the model, which writes it into ``params``.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import Tensor

from seed_rl.functional import categorical
from seed_rl.spaces import ActionLayout, action_layout

__all__ = [
    "ActionDistribution",
    "Categorical",
    "DiagGaussian",
    "MultiCategorical",
    "for_action_layout",
    "for_action_space",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class ActionDistribution:
    """One kind of action distribution. ``params`` are ``[..., P]``, any leading dims.

    Attributes:
        num_params: P, the policy parameters per step.
        action_shape: the shape of one action (``()`` for Discrete).
        action_dtype: torch.int64 (categorical kinds) or torch.float32 (Box).
    """

    num_params: int
    action_shape: tuple[int, ...]
    action_dtype: torch.dtype

    def sample(self, params: Tensor, greedy: bool = False) -> Tensor:
        """One action per position of ``params [..., P]`` -> ``[..., *action_shape]``;
        ``greedy``: the most likely action (argmax, or the Gaussian's mean)."""
        raise NotImplementedError

    #: The noise a sample is made of: "gumbel" (categorical kinds: argmax(logits + noise))
    #: or "normal" (Gaussian: mean + std * noise); ``noise_size`` values per position.
    noise_kind: str = "gumbel"

    @property
    def noise_size(self) -> int:
        return self.num_params

    def sample_with_noise(self, params: Tensor, noise: Tensor) -> Tensor:
        """The sample that ``noise [..., noise_size]`` (standard Gumbel or normal values, as
        ``noise_kind`` says) makes of ``params [..., P]``: the same draw as :meth:`sample`,
        with the randomness given (deterministic mode: noise keyed by seed, env and step)."""
        raise NotImplementedError

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        """log p(actions) ``[...]`` for ``actions [..., *action_shape]``."""
        return self.log_prob_and_entropy(params, actions)[0]

    def entropy(self, params: Tensor) -> Tensor:
        """The entropy ``[...]`` (nats) of the distribution at each position."""
        raise NotImplementedError

    def log_prob_and_entropy(self, params: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`log_prob` and :meth:`entropy` from one normalisation of ``params`` (the
        trainer's path: one log-softmax of the target logits per update)."""
        raise NotImplementedError


class Categorical(ActionDistribution):
    """Softmax over ``n`` actions; params are the logits ``[..., n]``."""

    action_shape = ()
    action_dtype = torch.int64

    def __init__(self, n: int):
        self.n = self.num_params = int(n)

    def sample(self, params: Tensor, greedy: bool = False) -> Tensor:
        if greedy:
            return params.argmax(-1)
        noise = torch.empty_like(params).exponential_().log_()  # minus Gumbel noise
        return (params - noise).argmax(-1)  # Gumbel-max: a sample of softmax(params)

    def sample_with_noise(self, params: Tensor, noise: Tensor) -> Tensor:
        return (params + noise).argmax(-1)

    def entropy(self, params: Tensor) -> Tensor:
        return categorical.entropy(params)

    def log_prob_and_entropy(self, params: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        return categorical.log_prob_and_entropy(params, actions)


class MultiCategorical(ActionDistribution):
    """Independent softmax heads, one per MultiDiscrete component: params are the heads'
    logits side by side ``[..., sum(nvec)]``, actions ``[..., m]`` (m = len(nvec));
    log-probabilities and entropies are sums over the heads."""

    action_dtype = torch.int64

    def __init__(self, nvec: tuple[int, ...] | list[int]):
        self.nvec = tuple(int(n) for n in nvec)
        self.heads = [Categorical(n) for n in self.nvec]
        self.num_params = sum(self.nvec)
        self.action_shape = (len(self.nvec),)

    def _split(self, params: Tensor) -> tuple[Tensor, ...]:
        return torch.split(params, self.nvec, dim=-1)

    def sample(self, params: Tensor, greedy: bool = False) -> Tensor:
        return torch.stack([head.sample(p, greedy)
                            for head, p in zip(self.heads, self._split(params), strict=True)],
                           dim=-1)

    def sample_with_noise(self, params: Tensor, noise: Tensor) -> Tensor:
        return torch.stack([head.sample_with_noise(p, z) for head, p, z in zip(
            self.heads, self._split(params), self._split(noise), strict=True)], dim=-1)

    def entropy(self, params: Tensor) -> Tensor:
        return sum(head.entropy(p)
                   for head, p in zip(self.heads, self._split(params), strict=True))

    def log_prob_and_entropy(self, params: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        parts = [head.log_prob_and_entropy(p, actions[..., i])
                 for i, (head, p) in enumerate(zip(self.heads, self._split(params),
                                                   strict=True))]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)


class DiagGaussian(ActionDistribution):
    """A Gaussian with independent components for a float Box of ``shape`` (n values):
    params are ``[..., 2n]``, the mean then the log standard deviation of each component;
    log-probabilities and entropies are sums over the components. Actions are the raw
    samples (see the module docstring for why the actor clips, not the learner)."""

    action_dtype = torch.float32
    noise_kind = "normal"

    def __init__(self, shape: tuple[int, ...]):
        self.action_shape = tuple(int(d) for d in shape)
        self.size = math.prod(self.action_shape)
        self.num_params = 2 * self.size

    def mean_and_log_std(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """``params [..., 2n]`` -> mean, log-std, each ``[..., n]``."""
        return params[..., :self.size], params[..., self.size:]

    def sample(self, params: Tensor, greedy: bool = False) -> Tensor:
        mean, log_std = self.mean_and_log_std(params)
        action = mean if greedy else mean + log_std.exp() * torch.randn_like(mean)
        return action.reshape(*params.shape[:-1], *self.action_shape)

    @property
    def noise_size(self) -> int:
        return self.size

    def sample_with_noise(self, params: Tensor, noise: Tensor) -> Tensor:
        mean, log_std = self.mean_and_log_std(params)
        return (mean + log_std.exp() * noise).reshape(*params.shape[:-1], *self.action_shape)

    def entropy(self, params: Tensor) -> Tensor:
        _, log_std = self.mean_and_log_std(params)
        return (0.5 + _HALF_LOG_2PI + log_std).sum(-1)

    def log_prob_and_entropy(self, params: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.mean_and_log_std(params)
        flat = actions.reshape(*actions.shape[:actions.dim() - len(self.action_shape)],
                               self.size)
        z = (flat - mean) * torch.exp(-log_std)
        log_prob = (-0.5 * z.square() - log_std - _HALF_LOG_2PI).sum(-1)
        return log_prob, (0.5 + _HALF_LOG_2PI + log_std).sum(-1)


def for_action_layout(layout: ActionLayout) -> ActionDistribution:
    """The distribution of an action layout's kind."""
    if layout.kind == "discrete":
        return Categorical(layout.nvec[0])
    if layout.kind == "multi_discrete":
        return MultiCategorical(layout.nvec)
    if layout.kind == "box":
        return DiagGaussian(layout.shape)
    raise ValueError(f"no action distribution for kind {layout.kind!r}")


def for_action_space(space: gym.Space) -> ActionDistribution:
    """The distribution of ``space`` (seed_rl.spaces.UnsupportedSpace names what is not)."""
    return for_action_layout(action_layout(space))
