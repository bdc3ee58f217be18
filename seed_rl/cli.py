"""The ``seed-rl`` command: one subcommand per role.

``seed-rl learner`` serves a learner, ``seed-rl actors`` runs actor processes against one,
``seed-rl train`` runs both locally, ``seed-rl eval`` plays a checkpoint, ``seed-rl export``
writes its policy as a graph, ``seed-rl serve`` answers actors from a checkpoint with training
off, ``seed-rl conformance -- COMMAND...`` checks an actor client in any language. Every
flag comes from :class:`seed_rl.config.Config`; each role's module is imported only when that
role runs, so ``seed-rl actors`` never imports torch. :func:`seed_rl.config.resolve` turns the
flags, ``SEED_RL_*`` variables, ``--config`` file and preset into the role's config; a few
flags say what to do rather than how to train (``eval --checkpoint``, ``export --format``,
``serve --follow``, every flag of ``conformance``, which reads no knob) and live here.
``--help`` shows the flags in one group per topic of :data:`seed_rl.config.TOPICS`.

A role that cannot start says why on one line, ``seed-rl ROLE: error: WHAT TO DO``: the
code that finds the problem raises ``SystemExit(message)`` or
:class:`~seed_rl.config.ConfigError` without the prefix (much of it runs under more than
one role: the learner's code under ``learner`` and ``train``), and :func:`main` adds it,
exactly once (:func:`error_line`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from seed_rl import __version__, config

#: subcommand -> (module with ``main(resolved: config.Resolved, args) -> int``, summary)
ROLES: dict[str, tuple[str, str]] = {
    "learner": ("learner.running.main", "serve a learner: central batched inference and V-trace "
                "training for remote actors"),
    "actors": ("actors.supervisor", "run and supervise actor processes that step gymnasium "
               "environments for a learner"),
    "train": ("learner.running.local_run", "train locally: a learner and actor processes on this "
              "machine (CartPole-v1 by default)"),
    "eval": ("learner.running.evaluate", "play episodes with a checkpoint; print returns, write a "
             "video"),
    "serve": ("learner.deploying.serve", "serve a trained policy to actors with training off: "
              "a checkpoint, or the newest of a running job (--follow); episode returns "
              "logged like a run's"),
    "conformance": ("learner.conformance.scenario", "check an actor client in any language "
                    "against the actor protocol: run it against a checking learner, one "
                    "verdict per rule (docs/protocol.md)"),
    "export": ("learner.deploying.export", "write a checkpoint's policy as an ONNX or torch.export "
               "graph (dynamic batch, named inputs and outputs) with a JSON sidecar"),
}

#: the usage line's "what to do" part, for the roles that have one
USAGE = {"eval": "--checkpoint PATH ", "serve": "--checkpoint RUN_OR_FILE | --follow RUN ",
         "export": "--checkpoint PATH --format onnx|torch-export --out FILE "}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seed-rl",
        description="SEED RL in PyTorch: a central learner batches inference for remote "
        "gRPC actors and trains with V-trace.",
    )
    parser.add_argument("--version", action="version", version=f"seed-rl {__version__}")
    sub = parser.add_subparsers(dest="role", metavar="COMMAND")
    for role, (_module, summary) in ROLES.items():
        if role == "conformance":  # no Config knobs: flags of its own, then the client
            role_parser = sub.add_parser(role, help=summary, description=summary,
                                         usage="seed-rl conformance [flags] -- COMMAND...",
                                         epilog=CONFORMANCE_EPILOG)
            add_conformance_arguments(role_parser)
            continue
        # the usage line names the shape, not all ~70 flags: --help lists them by topic
        usage = f"seed-rl {role} {USAGE.get(role, '')}[--config FILE] [flags]"
        role_parser = sub.add_parser(role, help=summary, description=summary, usage=usage)
        groups = add_arguments(role_parser, role)
        groups.get(config.fields.LOGGING, role_parser).add_argument(
            "--log-level", default="INFO", help="logging level: DEBUG, INFO, WARNING")
        if role == "eval":
            add_eval_arguments(role_parser)
        elif role == "serve":
            add_serve_arguments(role_parser)
        elif role == "export":
            add_export_arguments(role_parser)
        elif role == "actors":
            role_parser.add_argument("--actor-index", type=int, default=None,
                                     help=argparse.SUPPRESS)  # one child (the supervisor's)
    return parser


def add_arguments(parser: argparse.ArgumentParser,
                  role: str) -> dict[str, argparse._ArgumentGroup]:
    """Add one flag per field that ``role`` reads, plus ``--config FILE``. Flags default
    to None so that :func:`seed_rl.config.resolve` can tell which were given.

    The flags go into one argument group per topic (:data:`seed_rl.config.TOPICS`, RL
    hyper-parameters first), so ``--help`` reads by topic; a role gets only the groups it
    has fields for. Returns the groups by topic, for flags a role adds of its own."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="TOML config file (a preset); flags override it")
    fields = config.fields_for(role)
    groups = {topic: parser.add_argument_group(topic) for topic in config.TOPICS
              if any(config.topic_of(f.name) == topic for f in fields)}
    for f in fields:
        group = groups[config.topic_of(f.name)]
        kind = config.field_type(f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} [default: {default}; env {config.env_var_name(f.name)}]"
        if kind is bool:
            group.add_argument(config.flag_name(f.name), dest=f.name, default=None,
                               action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(config.flag_name(f.name), dest=f.name, default=None,
                               metavar=f.name.upper(), help=help_text)
    return groups


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``seed-rl eval`` plays; the model's own config comes from the checkpoint."""
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, or a logdir (its latest checkpoint)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to play")
    parser.add_argument("--greedy", action="store_true",
                        help="take the most likely action instead of sampling")
    parser.add_argument("--video", default=None,
                        help="write the episodes to FILE.mp4 or FILE.gif")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``seed-rl serve`` serves and when it stops; the model's own config (and the
    environment) come from the checkpoint, the serving knobs from serve's flags."""
    parser.add_argument("--checkpoint", default=None, metavar="RUN_OR_FILE",
                        help="a checkpoint file, or a logdir (its latest checkpoint)")
    parser.add_argument("--follow", default=None, metavar="RUN",
                        help="serve the newest checkpoint of this run's logdir as it appears "
                        "(every --follow-every s); without --checkpoint, wait for its first")
    parser.add_argument("--greedy", action="store_true",
                        help="answer the most likely action (argmax, Gaussian mean) instead "
                        "of a sample")
    parser.add_argument("--episodes", type=int, default=0,
                        help="stop after this many completed episodes and print their "
                        "return statistics (0: no limit)")


CONFORMANCE_EPILOG = (
    "COMMAND, after --, is the client: it runs with SEED_RL_LEARNER=127.0.0.1:PORT (the "
    "checking learner, CartPole-v1) and SEED_RL_AUTH_TOKEN (a fresh token) in its "
    "environment, in a process group of its own that is killed at the end. The report has "
    "one verdict per rule (held, BROKEN with the evidence, not reached); the exit code is 0 "
    "when every rule held, 1 otherwise. docs/protocol.md, \"Checking a client\", says what "
    "each rule checks.")


def add_conformance_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``seed-rl conformance`` checks and how long it waits for each phase
    (learner/conformance/scenario.py); everything after ``--`` is the client's command."""
    parser.add_argument("--connect-timeout", type=float, default=60.0, metavar="S",
                        help="seconds for the client's first step message [default: 60]")
    parser.add_argument("--steps", type=int, default=3000, metavar="N",
                        help="most step messages before the learner restart (it comes "
                        "sooner once a termination and a truncation were judged) "
                        "[default: 3000]")
    parser.add_argument("--step-timeout", type=float, default=120.0, metavar="S",
                        help="most seconds of stepping before the restart, and after it "
                        "[default: 120]")
    parser.add_argument("--reconnect-timeout", type=float, default=30.0, metavar="S",
                        help="seconds for every actor id to open a new session after the "
                        "learner restarts [default: 30]")
    parser.add_argument("--steps-after-restart", type=int, default=20, metavar="N",
                        help="step messages after the restart, before training_over "
                        "[default: 20]")
    parser.add_argument("--exit-timeout", type=float, default=30.0, metavar="S",
                        help="seconds for the client to exit 0 once told training_over "
                        "[default: 30]")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the checker's actions [default: a new one each run]")
    parser.add_argument("--log-level", default="WARNING",
                        help="the checker's logging level: DEBUG, INFO, WARNING")
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``seed-rl export`` writes; the model's own config comes from the checkpoint."""
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, or a logdir (its latest checkpoint)")
    parser.add_argument("--format", required=True, metavar="onnx|torch-export",
                        help="onnx (onnxruntime and any ONNX runtime; needs pip install "
                        "'seed-rl[export]') or torch-export (a .pt2 torch.export program)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="the graph file to write; its sidecar goes to FILE.json")
    parser.add_argument("--sampled", action="store_true",
                        help="sample the action with a noise input instead of taking the most "
                        "likely one (greedy, the default)")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def error_line(role: str, message: str) -> str:
    """``seed-rl ROLE: error: MESSAGE``: the one form of a role's fatal error. A message
    that already starts with the prefix (``seed-rl ROLE:``, with or without ``error:``)
    keeps one copy of it, so whoever raised it, the line carries the prefix exactly once."""
    prefix, text = f"seed-rl {role}: ", message.strip()
    while text.startswith(prefix) or text.startswith("error: "):
        text = text.removeprefix(prefix).removeprefix("error: ").lstrip()
    return f"{prefix}error: {text}"


def run_role(role: str, run: Callable[[], int | None]) -> int:
    """``run()`` (a role's main), its exit code; a ``SystemExit`` with a message leaves as
    :func:`error_line` (exit code 1), a ConfigError likewise with exit code 2 (as a bad
    flag does)."""
    try:
        return int(run() or 0)
    except config.ConfigError as error:
        sys.stderr.write(error_line(role, str(error)) + "\n")
        raise SystemExit(2) from None
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            raise SystemExit(error_line(role, exit_.code)) from None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.role is None:
        parser.print_help()
        return 0
    setup_logging(args.log_level)

    def run() -> int | None:
        resolved = config.resolve(args, args.role)  # before the role's (maybe heavy) imports
        return importlib.import_module(ROLES[args.role][0]).main(resolved, args)

    return run_role(args.role, run)


if __name__ == "__main__":
    sys.exit(main())
