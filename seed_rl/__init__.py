"""seed-rl: SEED RL in PyTorch.

The shared core: the functional V-trace and losses (``seed_rl.functional``, needs torch),
the wire contract and codec (``seed_rl.wire``), environment specs (``seed_rl.envs``) and the
typed configuration (``seed_rl.config``). Everything an actor imports from here is torch-free.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("seed-rl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
