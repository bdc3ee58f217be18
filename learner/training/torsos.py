"""The torsos: what turns one observation part into features. The MLP for flat parts and,
for images ``[H, W, C]`` (channels last), the Nature-DQN conv net (Mnih et al. 2015), the
IMPALA ResNet (Espeholt et al. 2018, Fig. 3) and MinAtar's one-layer net (Young & Tian
2019); ``--conv-net`` picks one, and :func:`check_image` says when an image is too small for
it. learner/training/models.py puts them together into the actor-critic."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import Tensor, nn

from seed_rl.spaces import Leaf, UnsupportedSpace


def is_image(leaf: Leaf) -> bool:
    return isinstance(leaf.space, gym.spaces.Box) and len(leaf.shape) == 3


def image_to_float(x: Tensor) -> Tensor:
    """[N, H, W, C] -> [N, C, H, W] float: uint8 scaled to [0, 1], anything else cast."""
    x = x.permute(0, 3, 1, 2)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


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
        return self.net(x.reshape(x.shape[0], -1).float())  # shape[0]: a dynamic batch exports


class NatureTorso(nn.Module):
    """Nature-DQN conv net (Mnih et al. 2015) on [N, H, W, C] images."""

    min_size = 36  # 8x8 stride 4, 4x4 stride 2, 3x3 stride 1

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
        return self.fc(self.convs(image_to_float(x)))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ImpalaTorso(nn.Module):
    """The IMPALA ResNet: three stages of (conv, max-pool, 2 residual blocks)."""

    min_size = 1  # padded convs and pools: any size works

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
        return self.fc(self.stages(image_to_float(x)))


class MinAtarTorso(nn.Module):
    """MinAtar's network for small images (Young & Tian 2019, "MinAtar: An Atari-Inspired
    Testbed for Thorough and Reproducible Reinforcement Learning Experiments",
    arXiv:1903.03176): one 3x3 conv, 16 channels, stride 1, ReLU, then a fully connected
    layer of 128 units, ReLU. Made for MinAtar's 10x10 boolean frames."""

    min_size = 3

    def __init__(self, obs_shape: tuple[int, ...]):
        super().__init__()
        height, width, channels = obs_shape
        self.conv = nn.Sequential(nn.Conv2d(channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(16 * (height - 2) * (width - 2), 128), nn.ReLU())
        self.output_size = 128

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(image_to_float(x)))


CONV_TORSOS: dict[str, type[nn.Module]] = {
    "nature": NatureTorso, "impala": ImpalaTorso, "minatar": MinAtarTorso}


def describe(leaf: Leaf) -> str:
    return f"observation part {leaf.path!r}" if leaf.path else "observation"


def check_image(leaf: Leaf, conv_net: str) -> None:
    """UnsupportedSpace when the ``conv_net`` torso cannot read the image ``leaf``."""
    torso = CONV_TORSOS.get(conv_net)
    if torso is None:
        raise ValueError(f"--conv-net must be one of {sorted(CONV_TORSOS)}, got {conv_net!r}")
    height, width, _ = leaf.shape
    if min(height, width) < torso.min_size:
        fits = [name for name, t in CONV_TORSOS.items() if min(height, width) >= t.min_size]
        raise UnsupportedSpace(
            f"{describe(leaf)} {leaf.space}: the {conv_net} conv net needs images of at "
            f"least {torso.min_size}x{torso.min_size} pixels, [H, W, C] with the channels "
            f"last; use --conv-net {' or '.join(fits)} for small images (or move the "
            "channels last if they come first)")


def conv_torso(leaf: Leaf, conv_net: str) -> nn.Module:
    """The ``conv_net`` torso for the image ``leaf`` (UnsupportedSpace if too small)."""
    check_image(leaf, conv_net)
    return CONV_TORSOS[conv_net](leaf.shape)
