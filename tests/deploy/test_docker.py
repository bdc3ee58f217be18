"""docker/: the compose file, the images' inputs and the learner healthcheck.

Always run: docker/compose.yaml validates with ``docker-compose config -q`` (v1.29, the
Compose Specification; .ci/run installs docker-compose) and every command flag and SEED_RL_*
variable it sets is one the CLI reads for that role, with values the config accepts; the
Dockerfile's build inputs match pyproject.toml; the healthcheck talks to a real learner.

``-m docker``: docker/smoke.sh builds the images and runs the cluster on a real engine.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seed_rl import cli, config

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
ROLE_OF_IMAGE = {"seed-rl-learner": "learner", "seed-rl-actor": "actors"}
#: compose-level variables that are not config knobs (documented in compose.yaml's header)
COMPOSE_VARIABLES = {
    "RUN_NAME",
    "ACTOR_REPLICAS",
    "LEARNER_PORT",
    "TENSORBOARD_PORT",
    "SERVE_PORT",
    "IMAGE_TAG",
    "BASE_IMAGE",
    "PIP_INDEX_OPTIONS",
    "TORCH_REQUIREMENT",
    "IMAGE_EXTRAS",
}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


def docker_compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run docker-compose on docker/compose.yaml with only PATH and ``env`` set, so the
    caller's SEED_RL_* variables cannot leak in."""
    exe = shutil.which("docker-compose")
    assert exe is not None, (
        "docker-compose is not installed: `apt-get install -y docker-compose` (.ci/run does "
        "this) — the compose file must validate on every run"
    )
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    return subprocess.run(
        [exe, "-f", str(COMPOSE_FILE), *args],
        env=clean,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved_compose(env: dict[str, str] | None = None) -> dict:
    """The compose file as docker-compose resolves it (variables filled in)."""
    result = docker_compose("config", env=env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def volumes_of(service: dict) -> list[dict]:
    """A service's volumes as {"source", "target"} whatever the syntax (short or long)."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            volume = {"source": source, "target": target}
        out.append(volume)
    return out


def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def seed_rl_services(compose: dict) -> dict[str, tuple[str, dict]]:
    """service name -> (the CLI role it runs, its service definition)."""
    out = {}
    for name, service in compose["services"].items():
        image = service["image"].split(":")[0]
        if image in ROLE_OF_IMAGE and "entrypoint" not in service:
            role = ROLE_OF_IMAGE[image]
            if role == "learner" and service.get("command", [None])[0] == "serve":
                role = "serve"  # the learner image runs `seed-rl serve` too
            out[name] = (role, service)
    return out


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


# -- the compose file ----------------------------------------------------------------------


def test_compose_file_validates_with_docker_compose():
    result = docker_compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q rejected the file:\n{result.stderr}"
    # v1.29 rejects a top-level `name:`; Compose v2 calls `version:` obsolete
    assert set(raw_compose()) <= {"services", "volumes", "networks", "x-seed-rl"}


def test_compose_variables_change_the_cluster():
    compose = resolved_compose(
        {
            "ACTOR_REPLICAS": "5",
            "IMAGE_TAG": "t1",
            "LEARNER_PORT": "6001",
            "RUN_NAME": "exp",
            "SEED_RL_ENVS_PER_ACTOR": "3",
        }
    )
    services = compose["services"]
    assert services["actor"]["deploy"]["replicas"] == 5
    assert services["actor"]["image"] == "seed-rl-actor:t1"
    assert services["learner"]["image"] == services["tensorboard"]["image"] == "seed-rl-learner:t1"
    assert any(
        str(p).startswith("6001") or (isinstance(p, dict) and p.get("published") == 6001)
        for p in services["learner"]["ports"]
    ), services["learner"]["ports"]
    assert environment_of(services["learner"])["SEED_RL_LOGDIR"] == "/runs/exp"
    assert environment_of(services["actor"])["SEED_RL_ENVS_PER_ACTOR"] == "3"


def test_compose_commands_and_variables_exist_in_the_cli():
    raw = raw_compose()
    services = seed_rl_services(raw)
    assert {role for role, _ in services.values()} == {"learner", "actors", "serve"}
    parser = cli.build_parser()
    for name, (role, service) in services.items():
        command = service.get("command", [])
        assert command and command[0] == role, f"service {name} must run `seed-rl {role}`"
        try:
            parser.parse_args([str(part) for part in command])
        except SystemExit:
            pytest.fail(f"service {name}: `seed-rl {' '.join(command)}` is not a valid command")
        knobs = {config.env_var_name(f.name) for f in config.fields_for(role)}
        knobs.add(config.ENV_PREFIX + "CONFIG")
        for variable in environment_of(service):
            assert variable in knobs, (
                f"service {name} sets {variable}, which `seed-rl {role}` does not read "
                f"(see seed_rl/config/fields.py)"
            )
    # every ${VARIABLE} is a knob of some role or one of the documented compose variables
    all_knobs = {config.env_var_name(name) for name in config.FIELDS} | {"SEED_RL_CONFIG"}
    for variable in INTERPOLATION.findall(COMPOSE_FILE.read_text()):
        assert variable in all_knobs | COMPOSE_VARIABLES, f"${{{variable}}} is not a knob"


def test_resolved_environment_is_a_valid_config_for_each_role():
    compose = resolved_compose()
    for name, (role, service) in seed_rl_services(compose).items():
        env = environment_of(service)
        try:
            resolved = config.resolve(None, role, environ=env).config
        except config.ConfigError as error:
            pytest.fail(f"service {name}: its environment is not a valid config: {error}")
        if role == "learner":
            learner_config = resolved
        elif role == "serve":
            serve_config, serve_service = resolved, service
        else:
            actor_config, actor_service = resolved, service
    # the actors reach the learner by its service name and container port
    host, port = actor_config.learner.rsplit(":", 1)
    assert host == "learner" and port == learner_config.address.rsplit(":", 1)[1]
    assert learner_config.address.startswith("0.0.0.0:")
    # the learner image trains like `seed-rl learner` and `seed-rl train`: the env's preset
    assert learner_config.preset == "cartpole" and learner_config.optimizer == "adam"
    assert actor_service["depends_on"]["learner"]["condition"] == "service_healthy"
    learner = compose["services"]["learner"]
    published = learner["ports"][0]
    target = published["target"] if isinstance(published, dict) else published.split(":")[-1]
    assert str(target) == port
    # the run lives on the named volume that TensorBoard reads and that survives `down`
    volume = next(v for v in volumes_of(learner) if v["target"] == "/runs")
    assert volume["source"] in compose["volumes"], "the run must live on a named volume"
    assert learner_config.logdir.startswith("/runs/")
    tensorboard = compose["services"]["tensorboard"]
    assert tensorboard["command"][tensorboard["command"].index("--logdir") + 1] == "/runs"
    assert any(
        v["source"] == volume["source"] and v["target"] == "/runs" for v in volumes_of(tensorboard)
    )
    # serve (profile serve) follows the learner's run on the same volume, writes its metrics
    # beside it (never into it), answers on its own host port with the learner's healthcheck
    assert serve_service["profiles"] == ["serve"]
    command = serve_service["command"]
    assert command[command.index("--follow") + 1] == learner_config.logdir
    assert serve_config.logdir != learner_config.logdir
    assert serve_config.address == learner_config.address
    assert [v["target"] for v in volumes_of(serve_service)] == ["/runs"]
    assert serve_service["healthcheck"]["test"] == learner["healthcheck"]["test"]
    serve_published = serve_service["ports"][0]
    assert str(serve_published["target"] if isinstance(serve_published, dict)
               else serve_published.split(":")[-1]) == port
    # PID 1 forwards SIGTERM (init) and the healthcheck is the script the image ships
    assert learner["init"] is True and compose["services"]["actor"]["init"] is True
    assert learner["healthcheck"]["test"][-1] == "/opt/seed-rl/healthcheck.py"
    assert (
        "COPY docker/healthcheck.py /opt/seed-rl/healthcheck.py"
        in (DOCKER / "Dockerfile").read_text()
    )


# -- the images' inputs --------------------------------------------------------------------


def requirements(role: str, *extras: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DOCKER / "requirements.py"), str(REPO / "pyproject.toml"), role]
        + list(extras),
        capture_output=True,
        text=True,
        timeout=30,
    )


def lines(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:-1]


def test_image_requirements_come_from_pyproject_and_the_actor_has_no_torch():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dependencies = project["dependencies"]
    declared = project["optional-dependencies"]
    actor, learner = lines(requirements("actor")), lines(requirements("learner"))
    assert set(dependencies) <= set(actor)
    assert set(dependencies) | set(declared["learner"]) <= set(learner)
    assert not any(line.startswith("torch") for line in actor), actor
    assert any(line.startswith("torch") for line in learner)
    # EXTRAS (build argument): more extras, e.g. environment families, for both images
    others = sorted(set(declared) - {"learner", "test"})
    if others:
        with_extras = lines(requirements("actor", ",".join(others)))
        for name in others:
            assert set(declared[name]) <= set(with_extras), name
    unknown = requirements("actor", "no-such-extra")
    assert unknown.returncode != 0
    assert "has no [no-such-extra] extra" in unknown.stderr


def test_dockerfile_targets_base_and_build_context():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "ARG BASE=python:3.11-slim" in dockerfile
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, flags=re.MULTILINE)
    assert {"actor", "learner"} <= set(stages)
    for stage in ("actor", "learner"):
        body = dockerfile.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "USER seedrl" in body, f"the {stage} image must not run as root"
    # the build context is an allowlist: every package pyproject installs, never .venv/
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :].count("*") == 1
    for needed in (
        "pyproject.toml",
        "seed_rl",
        "actors",
        "learner",
        "docker/wheelhouse",
        "docker/requirements.py",
        "docker/healthcheck.py",
    ):
        assert f"!{needed}" in ignore, f".dockerignore must let {needed} into the context"


# -- the healthcheck -----------------------------------------------------------------------


def run_healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_healthcheck_against_a_real_learner(tmp_path):
    from support.learner_harness import make_config, running_learner

    with running_learner(make_config(tmp_path), train=False) as learner:
        port = learner.port
        serving = run_healthcheck(env={"SEED_RL_ADDRESS": f"0.0.0.0:{port}"})
        assert serving.returncode == 0, serving.stderr
        assert f"127.0.0.1:{port}: seed_rl.v1.Learner is SERVING" in serving.stdout
        learner.server.set_serving(False)
        draining = run_healthcheck(f"127.0.0.1:{port}")
        assert draining.returncode == 1
        assert "NOT_SERVING" in draining.stderr
    gone = run_healthcheck(f"127.0.0.1:{port}")
    assert gone.returncode == 1
    assert "did not answer the health check: UNAVAILABLE" in gone.stderr


def test_healthcheck_carries_the_auth_token(tmp_path):
    from support.learner_harness import make_config, running_learner

    with running_learner(make_config(tmp_path, auth_token="s3cret"), train=False) as learner:
        target = f"127.0.0.1:{learner.port}"
        refused = run_healthcheck(target, env={"SEED_RL_AUTH_TOKEN": ""})
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
        serving = run_healthcheck(target, env={"SEED_RL_AUTH_TOKEN": "s3cret"})
        assert serving.returncode == 0, serving.stderr
        assert "s3cret" not in serving.stdout + serving.stderr


def test_healthcheck_rejects_an_address_without_a_port():
    result = run_healthcheck(env={"SEED_RL_ADDRESS": "0.0.0.0:0"})
    assert result.returncode != 0
    assert "pass HOST:PORT as the argument" in result.stderr


# -- the real cluster ----------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_smoke_script_runs_the_cluster():
    """docker/smoke.sh end to end (root; a few minutes): see its header for the steps."""
    assert os.geteuid() == 0, "docker/smoke.sh needs root: it installs packages and starts dockerd"
    process = subprocess.Popen(
        ["bash", str(DOCKER / "smoke.sh")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # its trap removes the cluster and stops dockerd
        output, _ = process.communicate(timeout=180)
        pytest.fail(f"docker/smoke.sh did not finish within 1800 s:\n{output}")
    print(output)
    assert process.returncode == 0, output
    assert "SMOKE OK" in output
