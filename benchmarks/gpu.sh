#!/usr/bin/env bash
# The GPU checks, as one script a lent GPU machine runs as is (under 8 minutes):
#   1. the CUDA test subset (every test parametrized over devices, on cuda), among them
#      tests/unit/test_weights.py: forward passes on the batcher's CUDA stream racing the
#      trainer's weight copies (the events of learner/training/weights.py order them);
#   2. the V-trace CUDA rows (benchmarks/vtrace.py --device cuda);
#   3. the Pong preset (ALE, the IMPALA ResNet) on cuda for PONG_SECONDS, reporting env
#      steps/s, inference batch sizes, GPU utilisation and the return trend;
#   4. the serving tier with inference on cuda (its own thread and CUDA stream, so a
#      backward pass never delays it): benchmarks/serving.py at 64 x 1 and 1000 x 32,
#      learner training and idle, reply latency against the echo server;
#   5. deterministic mode on cuda: two `seed-rl train --deterministic --device cuda` runs of
#      CartPole (200 updates) must write the same updates.jsonl (docs/reliability.md).
#
#   bash benchmarks/gpu.sh            # results and logs in $OUT (or benchmarks/results/gpu)
#
# The machine needs the project installed with its learner, test and atari extras. Where it
# has no network, install from wheels carried along (WHEELS=dir: pip --no-index). Nothing in
# CI runs this script.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
PONG_SECONDS=${PONG_SECONDS:-180}
mkdir -p "$OUT"
if [[ -n ${WHEELS:-} ]]; then
    python3 -m pip install -q --no-index --find-links "$WHEELS" -e '.[learner,test,atari]'
fi
export PYTHONUNBUFFERED=1

python3 - <<'PY' | tee "$OUT/device.txt"
import torch
assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"device: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}")
PY

echo "== 1. CUDA tests"
python3 -m pytest -q -k cuda tests/unit/test_vtrace.py tests/unit/test_loss.py tests/unit/test_policies.py \
    tests/unit/test_weights.py \
    2>&1 | tee "$OUT/tests.txt" | tail -3

echo "== 2. V-trace on CUDA"
python3 benchmarks/vtrace.py --device cuda --repeats 200 2>&1 | tee "$OUT/vtrace.txt"

echo "== 3. Pong on CUDA for ${PONG_SECONDS} s"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 \
    > "$OUT/gpu_util.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null || true' EXIT
CORES=$(nproc)
python3 -m seed_rl train --preset pong --device cuda --max-time "$PONG_SECONDS" \
    --num-actors $((CORES > 4 ? CORES - 2 : 2)) --envs-per-actor 16 --log-every 10 \
    --logdir "$OUT/pong" --no-resume --status-every 30 2>&1 | tail -25 | tee "$OUT/pong.txt"
kill $SMI 2>/dev/null || true

python3 - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
records = [json.loads(l) for l in (out / "pong" / "metrics.jsonl").read_text().splitlines()]
util = [float(l.split(",")[0]) for l in (out / "gpu_util.csv").read_text().splitlines()
        if l.strip() and l.split(",")[0].strip().replace(".", "").isdigit()]
late = records[len(records) // 2:]
def mean(key):
    values = [r[key] for r in late if isinstance(r.get(key), (int, float))]
    return statistics.fmean(values) if values else float("nan")
print("| env steps/s | inference batch (mean) | train steps/s | GPU util (mean) | "
      "return: first -> last |")
print("|---:|---:|---:|---:|---|")
returns = [r["episode_return_mean"] for r in records if r.get("episode_return_mean") is not None]
trend = f"{returns[0]:.1f} -> {returns[-1]:.1f}" if returns else "-"
elapsed = records[-1]["elapsed"]
print(f"| {mean('sps'):,.0f} | {mean('batch_size_mean'):.0f} | "
      f"{records[-1]['train_steps'] / elapsed:.1f} | "
      f"{statistics.fmean(util) if util else float('nan'):.0f} % | {trend} |")
PY

echo "== 4. Serving with inference on CUDA"
python3 benchmarks/serving.py --points 64x1 1000x32 --warmup 20 --seconds 8 \
    --learner-flags "--device cuda" 2>/dev/null | tee "$OUT/serving.txt"

echo "== 5. Deterministic mode on CUDA: two runs, one seed"
for run in a b; do
    CUBLAS_WORKSPACE_CONFIG=:4096:8 python3 -m seed_rl train --env CartPole-v1 --preset none \
        --deterministic --device cuda --num-actors 2 --envs-per-actor 8 --batch-size 8 \
        --unroll-length 20 --total-steps 32000 --seed 1 --no-resume --status-every 0 \
        --logdir "$OUT/deterministic-$run" > "$OUT/deterministic-$run.log" 2>&1 \
        || echo "deterministic run $run failed: see $OUT/deterministic-$run.log"
done
if cmp -s "$OUT/deterministic-a/updates.jsonl" "$OUT/deterministic-b/updates.jsonl"; then
    echo "deterministic on cuda: the two runs' updates.jsonl are identical" | tee "$OUT/deterministic.txt"
else
    echo "deterministic on cuda: the runs DIFFER" | tee "$OUT/deterministic.txt"
fi
