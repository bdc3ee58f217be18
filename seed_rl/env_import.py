"""``--env-import``: run the code that registers a user's environments, in every process.

gymnasium 1.x does not load environment plugins by itself: MinAtar registers its ids in
``minatar.gym.register_envs()``, a custom package when its module is imported. Each entry
of ``Config.env_import`` is ``module`` (imported) or ``module:function`` (imported, then the
function is called with no arguments). The learner, every actor process and ``seed-rl
eval`` run the same list before they make an environment; actors that were not given one
take the learner's from the handshake. gymnasium's own ``module:EnvId`` form of ``--env``
keeps working without it. Torch-free.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable


class EnvImportError(RuntimeError):
    """An ``--env-import`` entry failed; the text says which process, entry and why."""


def run_env_imports(entries: Iterable[str], process: str) -> None:
    """Import (and call) every entry, in order. ``process`` names this process in errors
    ("learner", "actor host-0", "eval"); imports are idempotent, calls happen every time."""
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        module_name, _, function_name = entry.partition(":")
        where = f"{process} (pid {os.getpid()}, {sys.executable})"
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            missing = getattr(error, "name", None) or module_name
            raise EnvImportError(
                f"--env-import {entry}: {where} cannot import {module_name!r}: {error}. "
                f"Install the package that provides {missing!r} in this environment (e.g. "
                f"pip install {missing.split('.')[0]}) on every machine that runs an actor "
                "or the learner, or fix the name") from error
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
