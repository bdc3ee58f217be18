"""Actor-critic networks, chosen from the observation space.

Every model maps a time-major batch to policy logits and values:

    model(observations [T, B, *obs_shape], episode_start [T, B] bool, core_state)
        -> ModelOutput(logits [T, B, A], values [T, B], core_state)

``episode_start[t]`` marks x_t as the first observation of an episode: a recurrent core
zeroes its state before it reads x_t (slot convention, docs/architecture.md). Inference calls the
same model with T = 1, so acting and learning share one code path. Feed-forward models take
and return an empty ``core_state`` tuple.

Torsos: an MLP for vector observations; for images ``[H, W, C]`` (uint8 stays uint8 until
the model divides by 255) the Nature-DQN conv net (Mnih et al. 2015) or the IMPALA ResNet
(Espeholt et al. 2018, Fig. 3).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import torch
from torch import Tensor, nn

from seed_rl.config import Config

CoreState = tuple[Tensor, ...]


class ModelOutput(NamedTuple):
    logits: Tensor  # [T, B, A]
    values: Tensor  # [T, B]
    core_state: CoreState  # per layer [B, H]; () for feed-forward models


def is_image(space: gym.spaces.Box) -> bool:
    return len(space.shape) == 3


class MLPTorso(nn.Module):
    def __init__(self, obs_size: int, hidden_sizes: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        size = obs_size
        for width in hidden_sizes:
            layers += [nn.Linear(size, width), nn.Tanh()]
            size = width
        self.net = nn.Sequential(*layers)
        self.output_size = size

    def forward(self, x: Tensor) -> Tensor:  # [N, *obs_shape] -> [N, H]
        return self.net(x.flatten(1).float())


class NatureTorso(nn.Module):
    """Nature-DQN conv net on [N, H, W, C] images (uint8 or float in [0, 255])."""

    def __init__(self, obs_shape: tuple[int, ...]):
        super().__init__()
        height, width, channels = obs_shape
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, channels, height, width)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, 512), nn.ReLU())
        self.output_size = 512

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return self.fc(self.convs(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaTorso(nn.Module):
    """The IMPALA ResNet: three stages of (conv, max-pool, 2 residual blocks)."""

    def __init__(self, obs_shape: tuple[int, ...], stage_channels=(16, 32, 32)):
        super().__init__()
        height, width, channels = obs_shape
        stages: list[nn.Module] = []
        for out_channels in stage_channels:
            stages += [
                nn.Conv2d(channels, out_channels, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                ResidualBlock(out_channels),
                ResidualBlock(out_channels),
            ]
            channels = out_channels
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(channels * height * width,
                                                                    256), nn.ReLU())
        self.output_size = 256

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return self.fc(self.stages(x))


class ActorCritic(nn.Module):
    """Torso -> optional LSTM core -> policy logits and value heads."""

    def __init__(self, observation_space: gym.spaces.Box, num_actions: int, config: Config):
        super().__init__()
        obs_shape = tuple(observation_space.shape)
        if is_image(observation_space):
            self.torso = (ImpalaTorso(obs_shape) if config.conv_net == "impala"
                          else NatureTorso(obs_shape))
        else:
            self.torso = MLPTorso(math.prod(obs_shape), list(config.hidden_sizes))
        features = self.torso.output_size
        self.core = nn.LSTM(features, config.lstm_size) if config.lstm else None
        if self.core is not None:
            features = config.lstm_size
        self.policy = nn.Linear(features, num_actions)
        self.value = nn.Linear(features, 1)
        self.num_actions = num_actions
        # Small initial logits: a near-uniform first policy explores evenly.
        nn.init.orthogonal_(self.policy.weight, gain=0.01)
        nn.init.zeros_(self.policy.bias)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> CoreState:
        """Zero core state for ``batch_size`` environments: (h [B, H], c [B, H]) or ()."""
        if self.core is None:
            return ()
        size = self.core.hidden_size
        return (torch.zeros(batch_size, size, device=device),
                torch.zeros(batch_size, size, device=device))

    def forward(self, observations: Tensor, episode_start: Tensor,
                core_state: CoreState = ()) -> ModelOutput:
        time, batch = observations.shape[:2]
        features = self.torso(observations.reshape(time * batch, *observations.shape[2:]))
        features = features.view(time, batch, -1)
        if self.core is not None:
            h, c = core_state
            keep = (~episode_start).to(features.dtype).unsqueeze(-1)  # [T, B, 1]
            outputs = []
            for t in range(time):
                h, c = h * keep[t], c * keep[t]
                out, (h1, c1) = self.core(features[t : t + 1], (h.unsqueeze(0), c.unsqueeze(0)))
                h, c = h1.squeeze(0), c1.squeeze(0)
                outputs.append(out)
            features = torch.cat(outputs)
            core_state = (h, c)
        logits = self.policy(features)
        values = self.value(features).squeeze(-1)
        return ModelOutput(logits, values, core_state)


def build_model(observation_space: gym.Space, action_space: gym.Space,
                config: Config) -> ActorCritic:
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ValueError(f"seed-rl needs Discrete actions, the environment has {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (
        1, 2, 3
    ):
        raise ValueError("seed-rl needs Box observations (vectors or [H, W, C] images), the "
                         f"environment has {observation_space}")
    return ActorCritic(observation_space, int(action_space.n), config)


def sample_actions(logits: Tensor, greedy: bool = False) -> Tensor:
    """One action per row of ``logits [N, A]``: a Gumbel-max sample (or the argmax)."""
    if greedy:
        return logits.argmax(-1)
    noise = torch.empty_like(logits).exponential_().log_()  # -Gumbel noise
    return (logits - noise).argmax(-1)
