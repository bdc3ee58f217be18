"""``--env-import``: run the code that registers a user's environments, in every process.

gymnasium 1.x does not load environment plugins by itself: MinAtar registers its ids in
``minatar.gym.register_envs()``, a custom package when its module is imported. Each entry
of ``Config.env_import`` is ``module`` (imported) or ``module:function`` (imported, then the
function is called with no arguments). The learner, every actor process and ``seed-rl
eval`` run the same list before they make an environment; actors that were not given one
take the learner's from the handshake. gymnasium's own ``module:EnvId`` form of ``--env``
keeps working without it. :func:`make_env` is the one way every process makes its
environments. Torch-free.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

import gymnasium as gym

#: Modules of --env-import that an extra of seed-rl brings.
_IMPORT_EXTRAS = {"minatar": "minatar", "popgym": "popgym"}
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


def make_env(env_id: str, env_kwargs: dict[str, Any], env_import: Iterable[str],
             process: str, **extra_kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **env_kwargs, **extra_kwargs)`` after ``env_import``, the one way
    every process makes its environments. EnvImportError or EnvironmentUnavailable say
    what went wrong in words a person can act on (``process`` is named in the
    ``--env-import`` errors; a role's CLI prefixes the line with the role)."""
    run_env_imports(env_import, process)
    try:
        return gym.make(env_id, **env_kwargs, **extra_kwargs)
    except (gym.error.NamespaceNotFound, gym.error.NameNotFound) as error:
        raise EnvironmentUnavailable(
            f"gymnasium does not know the environment {env_id!r} ({error}). If a "
            "package provides it, register it in every process with --env-import MODULE or "
            "MODULE:FUNCTION (e.g. --env-import minatar.gym:register_envs, --env-import "
            "popgym), or name it as MODULE:EnvId") from None
    except (gym.error.DependencyNotInstalled, ImportError) as error:
        hint = extra_hint(env_id) or "install the package named above"
        raise EnvironmentUnavailable(
            f"environment {env_id} needs a package that is not installed: "
            f"{error}\n  fix: {hint}") from None
    except (gym.error.Error, TypeError, ValueError) as error:
        raise EnvironmentUnavailable(
            f"cannot make environment {env_id!r} with kwargs {env_kwargs} (--env, "
            f"--env-kwargs): {type(error).__name__}: {error}") from None


def run_env_imports(entries: Iterable[str], process: str) -> None:
    """Import (and call) every entry, in order. ``process`` names this process in errors
    ("learner", "actor host-0", "eval"); imports are idempotent, calls happen every time.
    Modules are found on ``sys.path`` and, last, in the current directory (a ``my_env.py``
    next to where you run the command)."""
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        module_name, _, function_name = entry.partition(":")
        where = f"{process} (pid {os.getpid()}, {sys.executable})"
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            missing = (getattr(error, "name", None) or module_name).split(".")[0]
            install = (f"pip install 'seed-rl[{_IMPORT_EXTRAS[missing]}]'"
                       if missing in _IMPORT_EXTRAS else f"pip install {missing}")
            raise EnvImportError(
                f"--env-import {entry}: {where} cannot import {module_name!r}: {error}. "
                f"Install the package that provides {missing!r} in this environment (e.g. "
                f"{install}) on every machine that runs an actor or the learner, or fix the "
                "name") from error
        except Exception as error:  # the module itself failed while importing
            raise EnvImportError(
                f"--env-import {entry}: importing {module_name!r} in {where} raised "
                f"{type(error).__name__}: {error}") from error
        if not function_name:
            continue
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
