"""``seed-rl ROLE --help`` reads by topic, RL hyper-parameters first, and no knob lacks one.

The help is read from the real command (``python -m seed_rl``, as the console script runs
it) in a subprocess, so what is checked is what a person sees.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from seed_rl import cli
from seed_rl import config as cfg
from seed_rl.config import fields

DOCUMENTED_TOPICS = ("RL hyper-parameters", "model", "environment", "serving",
                     "run and checkpoints", "logging", "security")
HEADING = re.compile(r"^(\S[^:]*):$")
FLAG = re.compile(r"^  (--[a-z][a-z-]*)")


def help_sections(role: str) -> dict[str, list[str]]:
    """Heading -> the flags listed under it, in the order ``seed-rl ROLE --help`` shows."""
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "seed_rl", role, "--help"], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    sections: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if heading := HEADING.match(line):
            current = sections.setdefault(heading.group(1), [])
        elif (flag := FLAG.match(line)) and current is not None:
            current.append(flag.group(1))
    return sections


def test_the_topics_are_the_documented_ones_in_order() -> None:
    assert cfg.TOPICS == DOCUMENTED_TOPICS


def test_every_field_has_a_known_topic() -> None:
    for name in cfg.FIELDS:
        assert cfg.topic_of(name) in cfg.TOPICS, name
    assert {cfg.topic_of(name) for name in cfg.FIELDS} == set(cfg.TOPICS)  # none is empty


def test_a_knob_without_a_known_topic_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown topic"):
        fields.knob(1, "a knob filed nowhere", fields.LEARNER, "misc")


def test_learner_help_lists_the_topics_in_order_rl_first() -> None:
    sections = help_sections("learner")
    topics = [heading for heading in sections if heading in cfg.TOPICS]
    assert topics == list(cfg.TOPICS)  # the learner reads a knob of every topic
    assert next(iter(sections)) == "options"  # -h and --config, then the topics
    assert list(sections)[1] == "RL hyper-parameters"
    assert "--learning-rate" in sections["RL hyper-parameters"]
    assert "--discount" in sections["RL hyper-parameters"]
    assert "--auth-token" in sections["security"]
    assert "--address" in sections["serving"]


@pytest.mark.parametrize("role", list(cli.ROLES))
def test_every_role_lists_each_flag_under_its_topic(role: str) -> None:
    sections = help_sections(role)
    topics = [heading for heading in sections if heading in cfg.TOPICS]
    assert topics == [t for t in cfg.TOPICS if t in topics], f"{role}: {topics}"
    assert set(sections) <= {"options", *cfg.TOPICS}, f"{role}: {list(sections)}"
    for f in cfg.fields_for(role):
        topic = cfg.topic_of(f.name)
        assert cfg.flag_name(f.name) in sections.get(topic, []), f"{role}: {f.name}"
    assert all(sections[topic] for topic in topics)  # no empty group


def test_the_config_and_the_cli_load_without_torch() -> None:
    code = "import sys, seed_rl.config, seed_rl.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
