"""Making environments in every process: ``--env-import``, ``gymnasium.make``, ``--env-wrapper``.

gymnasium 1.x does not load environment plugins by itself: MinAtar registers its ids in
``minatar.gym.register_envs()``, a custom package when its module is imported. Each entry
of ``Config.env_import`` is ``module`` (imported) or ``module:function`` (imported, then the
function is called with no arguments). Each entry of ``Config.env_wrapper`` is
``module:callable``: the callable takes the made environment and returns the wrapped one
(a gymnasium wrapper class such as ``minigrid.wrappers:ImgObsWrapper`` is one), applied in
order, the first innermost. The learner, every actor process and ``seed-rl eval`` run the
same lists; actors that ask the learner which environment to make and have none of their
own take the learner's from the handshake. gymnasium's own ``module:EnvId`` form of
``--env`` keeps working without ``--env-import``. :func:`make_env` is the one way every
process makes its environments, so all of them see the same spaces. Torch-free.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import gymnasium as gym

#: Modules of --env-import that an extra of seed-rl brings.
_IMPORT_EXTRAS = {"minatar": "minatar", "popgym": "popgym", "ale_py": "atari"}
#: Packages an environment family needs, and the extra that brings them.
_EXTRAS = (
    (re.compile(r"^(ALE/|seed_rl\.envs:Atari)"), "atari", "ale-py"),
    (re.compile(r"^(LunarLander|BipedalWalker|CarRacing)"), "box2d", "gymnasium[box2d]"),
)


class EnvImportError(RuntimeError):
    """An ``--env-import`` entry failed; the text says which process, entry and why."""


class EnvironmentUnavailable(RuntimeError):
    """The environment cannot be made here; the text says why and what to install or set."""


def extra_hint(env_id: str) -> str:
    """The install command for the optional dependencies of ``env_id`` ("" if none)."""
    for pattern, extra, what in _EXTRAS:
        if pattern.search(env_id):
            return f"pip install 'seed-rl[{extra}]' (brings {what})"
    return ""


def unknown_env_hint(env_id: str, env_import: Iterable[str]) -> str:
    """What to do about an id gymnasium does not know: ``--env-import`` in general; for
    ``ALE/...`` ids the module that registers them (ale-py 0.9+ registers on import), how
    to install it when it is missing here, and the shipped preset that plays Atari."""
    if not env_id.startswith("ALE/"):
        return ("If a package provides it, register it in every process with --env-import "
                "MODULE or MODULE:FUNCTION (e.g. --env-import minatar.gym:register_envs, "
                "--env-import popgym), or name it as MODULE:EnvId")
    if importlib.util.find_spec("ale_py") is None:
        install = " (ale-py is not installed here: pip install 'seed-rl[atari]')"
    else:
        install = ""
    if "ale_py" in [entry.strip().partition(":")[0] for entry in env_import]:
        step = f"ale_py is imported but has no {env_id}: check the game's name (ALE/Pong-v5)"
    else:
        step = f"ALE ids are registered by importing ale-py: add --env-import ale_py{install}"
    return (f"{step}. Or train the shipped preset with the DQN / IMPALA Atari preprocessing "
            "instead of --env: --preset pong (seed_rl.envs:Atari-v0; another game with "
            "--env-kwargs '{\"game\":\"ALE/Breakout-v5\"}')")


def make_env(env_id: str, env_kwargs: dict[str, Any], env_import: Iterable[str],
             env_wrapper: Iterable[str], process: str, **extra_kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **env_kwargs, **extra_kwargs)`` after ``env_import``, wrapped by
    each ``env_wrapper`` entry in order: the one way every process makes its environments.
    ``process`` names this process in errors ("learner", "actor host-0", "eval").
    EnvImportError or EnvironmentUnavailable say what went wrong in words a person can
    act on."""
    run_env_imports(env_import, process)
    wrappers = [(entry.strip(), load_wrapper(entry, process)) for entry in env_wrapper
                if entry.strip()]
    try:
        env = gym.make(env_id, **env_kwargs, **extra_kwargs)
    except (gym.error.NamespaceNotFound, gym.error.NameNotFound) as error:
        raise EnvironmentUnavailable(
            f"gymnasium does not know the environment {env_id!r} ({error}). "
            + unknown_env_hint(env_id, env_import)) from None
    except (gym.error.DependencyNotInstalled, ImportError) as error:
        hint = extra_hint(env_id) or "install the package named above"
        raise EnvironmentUnavailable(
            f"environment {env_id} needs a package that is not installed: "
            f"{error}\n  fix: {hint}") from None
    except (gym.error.Error, TypeError, ValueError) as error:
        raise EnvironmentUnavailable(
            f"cannot make environment {env_id!r} with kwargs {env_kwargs} (--env, "
            f"--env-kwargs): {type(error).__name__}: {error}") from None
    for entry, wrap in wrappers:
        env = _wrap(env, entry, wrap, process)
    return env


def load_wrapper(entry: str, process: str) -> Callable[[gym.Env], gym.Env]:
    """The callable an ``--env-wrapper`` entry ``module:callable`` names (``callable`` may
    be dotted: ``module:Class.method``), imported like ``--env-import`` modules (on
    ``sys.path``, then the current directory); EnvironmentUnavailable says what is wrong."""
    entry = entry.strip()
    module_name, _, attribute = entry.partition(":")
    if not module_name or not attribute:
        raise EnvironmentUnavailable(
            f"--env-wrapper {entry}: expected MODULE:CALLABLE, a callable that takes the made "
            "environment and returns the wrapped one (e.g. minigrid.wrappers:ImgObsWrapper)")
    found: Any = _import_module(module_name, f"--env-wrapper {entry}", process,
                                EnvironmentUnavailable)
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not callable(found):
        raise EnvironmentUnavailable(
            f"--env-wrapper {entry}: {process}: module {module_name!r} has no callable "
            f"{attribute!r}")
    return found


def _wrap(env: gym.Env, entry: str, wrap: Callable[[gym.Env], gym.Env],
          process: str) -> gym.Env:
    """``wrap(env)``, checked to be an environment; ``env`` is closed when it fails."""
    try:
        wrapped = wrap(env)
    except Exception as error:
        env.close()
        raise EnvironmentUnavailable(
            f"--env-wrapper {entry}: in {process}, wrapping {env.spec.id if env.spec else env} "
            f"raised {type(error).__name__}: {error}") from None
    if not isinstance(wrapped, gym.Env):
        env.close()
        raise EnvironmentUnavailable(
            f"--env-wrapper {entry}: returned {type(wrapped).__name__}, not a gymnasium.Env: "
            "the callable takes the made environment and returns the wrapped one")
    return wrapped


def run_env_imports(entries: Iterable[str], process: str) -> None:
    """Import (and call) every entry, in order. ``process`` names this process in errors
    ("learner", "actor host-0", "eval"); imports are idempotent, calls happen every time.
    Modules are found on ``sys.path`` and, last, in the current directory (a ``my_env.py``
    next to where you run the command)."""
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        module_name, _, function_name = entry.partition(":")
        module = _import_module(module_name, f"--env-import {entry}", process, EnvImportError)
        if not function_name:
            continue
        where = f"{process} (pid {os.getpid()}, {sys.executable})"
        function = getattr(module, function_name, None)
        if not callable(function):
            raise EnvImportError(
                f"--env-import {entry}: {where}: module {module_name!r} has no function "
                f"{function_name!r}")
        try:
            function()
        except Exception as error:
            raise EnvImportError(
                f"--env-import {entry}: {module_name}.{function_name}() in {where} raised "
                f"{type(error).__name__}: {error}") from error


def _import_module(module_name: str, what: str, process: str,
                   error_type: type[Exception]) -> ModuleType:
    """``importlib.import_module(module_name)`` for ``what`` (the flag and entry), found
    on ``sys.path`` or in the current directory; ``error_type`` says what is missing and
    which process lacks it."""
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    where = f"{process} (pid {os.getpid()}, {sys.executable})"
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        missing = (getattr(error, "name", None) or module_name).split(".")[0]
        install = (f"pip install 'seed-rl[{_IMPORT_EXTRAS[missing]}]'"
                   if missing in _IMPORT_EXTRAS else f"pip install {missing}")
        raise error_type(
            f"{what}: {where} cannot import {module_name!r}: {error}. Install the package "
            f"that provides {missing!r} in this environment (e.g. {install}) on every "
            "machine that runs an actor or the learner, or fix the name") from error
    except Exception as error:  # the module itself failed while importing
        raise error_type(
            f"{what}: importing {module_name!r} in {where} raised "
            f"{type(error).__name__}: {error}") from error
