"""seed-rl against Sample Factory 2.1.1 (APPO) on a MinAtar game, side by side in one run.

Both systems get the same machine, the same wall-time budget, the same seed, the same 64
environments (2 processes x 32) and the same network: the MinAtar paper's (3x3 conv, 16
channels, 128 units, no recurrent core), with Adam at 1e-3, unrolls of 20 steps, 640
samples (32 x 20) per update, discount 0.99 and value loss weight 0.5. What differs is the
system and its algorithm: seed-rl runs ``seed-rl train --preset minatar-<game>`` (V-trace
actor-critic, central inference, summed losses, two passes of four minibatches per batch,
with most of Sample Factory's own defaults on top: lambda 0.95, PopArt, per-batch
advantage normalisation, PPO clip 0.1, observation normalisation, entropy cost 0.01, and
no gradient clip; the preset says what each was measured to buy); Sample Factory runs its
APPO (PPO clipping, one epoch per batch, normalised advantages and returns, its own
inference and learner processes, mean losses) with exploration coefficient 0.01 (its
default is 0.003), gradient norm clipped at 40 (on its mean losses) and its defaults
otherwise (``sample_factory_flags`` below lists its flags).

Sample Factory pins gymnasium < 1.0, so it runs in its own virtual environment, created by
this script the first time (``--peer-venv``, default ``~/.cache/seed-rl/peers/
sample-factory-2.1.1``; a few minutes, and the torch pin of ``constraints-ci.txt`` keeps
it on the CPU wheel). It is never a dependency of seed-rl.

Each run is timed from launching its command, and Sample Factory is stopped when it has run
as long as seed-rl did (launch to its last record; ``--budget`` is seed-rl's ``--max-time``,
which counts training, not start-up). With ``--seeds 0,1,2`` the seeds run one after the
other; each finished seed's two curves are kept in ``--out`` and read back when the same
command runs again, so an interrupted comparison resumes. The curves (mean return of the
last 100 episodes; over several seeds each system's median with the seeds' range as a band)
go on one figure, against wall time and against env steps (``--out``/peer.png), and Markdown
tables give each seed's run and the median return each system reached by the same wall
time.

Usage:
    python benchmarks/peer_sample_factory.py [--game breakout] [--budget 600] [--seeds 0,1,2]
                                             [--out benchmarks/results/peer]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from learning_suite import run_entry  # noqa: E402
from suite_report import Spread, plot_median, style_axis  # noqa: E402

from seed_rl import presets  # noqa: E402
from seed_rl.config import load_toml  # noqa: E402

PEER = "sample-factory==2.1.1"
PEER_REQUIREMENTS = [PEER, "gymnasium<1.0", "minatar==1.0.15", "numpy<2"]
RUNNER = REPO / "benchmarks" / "peers" / "sample_factory_minatar.py"
GAMES = {"asterix": "Asterix", "breakout": "Breakout", "freeway": "Freeway",
         "seaquest": "Seaquest", "spaceinvaders": "SpaceInvaders"}
CHECKPOINTS_S = (60, 120, 180, 300, 450, 600, 900)


@dataclass
class PeerCurve:
    """One system's run: points of (seconds since launch, env steps, mean return)."""

    system: str
    wall_s: float = 0.0  # the whole command, launch to exit
    seconds: list[float] = field(default_factory=list)
    env_steps: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    total_steps: int = 0
    train_s: float = 0.0  # launch to the last record

    def return_at(self, second: float) -> float:
        """The last mean return recorded by ``second`` s after launch (nan before any)."""
        seen = [r for s, r in zip(self.seconds, self.returns, strict=True) if s <= second]
        return seen[-1] if seen else math.nan

    def time_to(self, target: float) -> float:
        return next((s for s, r in zip(self.seconds, self.returns, strict=True) if r >= target),
                    math.nan)


def torch_pin() -> str:
    for line in (REPO / "constraints-ci.txt").read_text().splitlines():
        if line.strip().startswith("torch=="):
            return line.strip()
    raise SystemExit("constraints-ci.txt has no torch== pin")


def ensure_peer_venv(venv: Path) -> Path:
    """The peer's interpreter; the venv is (re)built when its requirements changed."""
    requirements = [*PEER_REQUIREMENTS, torch_pin()]
    marker = venv / "seed-rl-peer-requirements.txt"
    python = venv / "bin" / "python"
    if python.is_file() and marker.is_file() and marker.read_text().split() == requirements:
        return python
    print(f"creating Sample Factory's virtual environment in {venv} (one time, a few "
          f"minutes): {' '.join(requirements)}", file=sys.stderr, flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"could not install {PEER} into {venv}:\n{done.stderr[-3000:]}")
    marker.write_text("\n".join(requirements) + "\n")
    return python


def run_seed_rl(game: str, seed: int, budget: float, workdir: Path) -> PeerCurve:
    launched = time.time()
    run, _ = run_entry(f"minatar-{game}", seed, budget, workdir, past_target=True)
    curve = PeerCurve("seed-rl", wall_s=run.wall_s)
    for line in run.metrics.read_text().splitlines():
        record = json.loads(line)
        if record.get("episode_return_mean") is not None:
            curve.seconds.append(record["wall_time"] - launched)
            curve.env_steps.append(int(record["env_steps"]))
            curve.returns.append(float(record["episode_return_mean"]))
        curve.total_steps = int(record.get("env_steps") or curve.total_steps)
        curve.train_s = record["wall_time"] - launched
    return curve


def sample_factory_flags(seed: int, train_dir: Path) -> list[str]:
    """The layout and agent of seed-rl's MinAtar preset in Sample Factory's terms."""
    return ["--algo", "APPO", "--env", "minatar", "--experiment", f"seed{seed}",
            "--train_dir", str(train_dir), "--device", "cpu", "--seed", str(seed),
            "--num_workers", "2", "--num_envs_per_worker", "32", "--worker_num_splits", "2",
            "--rollout", "20", "--batch_size", "640", "--num_batches_per_epoch", "1",
            "--num_epochs", "1", "--use_rnn", "False", "--learning_rate", "1e-3",
            "--gamma", "0.99", "--exploration_loss_coeff", "0.01", "--max_grad_norm", "40",
            "--value_loss_coeff", "0.5", "--train_for_env_steps", "10000000", "--experiment_summaries_interval", "5",
            "--save_every_sec", "100000", "--with_wandb", "False"]


def run_sample_factory(python: Path, game: str, seed: int, budget: float,
                       workdir: Path) -> PeerCurve:
    """Sample Factory for ``budget`` seconds from its launch (its interpreter start
    included, as ``budget`` is for seed-rl's ``run_seed_rl``)."""
    curve_file = workdir / f"sample-factory-seed{seed}.jsonl"
    log_file = workdir / f"sample-factory-seed{seed}.log"
    command = [str(python), str(RUNNER), "--minatar_id", f"MinAtar/{GAMES[game]}-v1",
               "--curve", str(curve_file),
               *sample_factory_flags(seed, workdir / "sample-factory")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEED_RL_", "PYTHONPATH"))}
    launched = time.time()
    command += ["--stop_at", str(launched + budget)]
    with open(log_file, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=workdir, start_new_session=True)
        try:
            code = process.wait(timeout=budget + 300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            code = process.wait()
    curve = PeerCurve("Sample Factory 2.1.1", wall_s=time.time() - launched)
    if code != 0 or not curve_file.is_file():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"Sample Factory exited with code {code}; its log ends:\n{tail}")
    for line in curve_file.read_text().splitlines():
        record = json.loads(line)
        curve.total_steps = max(curve.total_steps, int(record["env_steps"]))
        curve.train_s = max(curve.train_s, record["wall_time"] - launched)
        if "episode_return_mean" in record:
            curve.seconds.append(record["wall_time"] - launched)
            curve.env_steps.append(int(record["env_steps"]))
            curve.returns.append(float(record["episode_return_mean"]))
    return curve


def save_seed(curves: list[PeerCurve], path: Path) -> None:
    path.write_text(json.dumps([asdict(c) for c in curves]) + "\n")


def load_seed(path: Path) -> list[PeerCurve] | None:
    """A seed's two finished curves from an earlier invocation (None: run it)."""
    if not path.is_file():
        return None
    return [PeerCurve(**fields) for fields in json.loads(path.read_text())]


def by_system(seeds: dict[int, list[PeerCurve]]) -> dict[str, list[PeerCurve]]:
    """Each system's curves over the seeds, the systems in the order they ran."""
    systems: dict[str, list[PeerCurve]] = {}
    for curves in seeds.values():
        for curve in curves:
            systems.setdefault(curve.system, []).append(curve)
    return systems


def plot(seeds: dict[int, list[PeerCurve]], target: float, title: str, path: Path) -> None:
    """Each system's median curve over the seeds, with the seeds' min-max range as a band,
    against wall time since launch and against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for system, mine in by_system(seeds).items():
        mine = [c for c in mine if c.returns]
        label = f"{system} ({len(mine)} seed{'s' if len(mine) > 1 else ''})"
        for axis, attribute in zip(axes, ("seconds", "env_steps"), strict=True):
            plot_median(axis, [getattr(c, attribute) for c in mine], [c.returns for c in mine],
                        label)
    for axis, xlabel in zip(axes, ("wall time since launch, s", "env steps"), strict=True):
        style_axis(axis, xlabel, title, target)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def report(seeds: dict[int, list[PeerCurve]], budget: float, target: float) -> None:
    """Per seed and system: env steps, rate, time to target, final and best return; then the
    median (and range) over seeds of the return each system had by the same wall time."""
    print("| seed | system | env steps | env steps/s | time to target, s | final return | "
          "best return | wall time, s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for seed, curves in sorted(seeds.items()):
        for c in curves:
            sps = c.total_steps / c.train_s if c.train_s > 0 else math.nan
            final = c.returns[-1] if c.returns else math.nan
            print(f"| {seed} | {c.system} | {c.total_steps:,} | {sps:,.0f} | "
                  f"{c.time_to(target):.0f} | {final:.2f} | "
                  f"{max(c.returns, default=math.nan):.2f} | {c.wall_s:.0f} |"
                  .replace(" nan |", " - |"))
    print()
    seconds = [s for s in CHECKPOINTS_S if s <= budget + 30]
    if not seconds:
        return
    print(f"Mean return by wall time since launch, median (range) over {len(seeds)} seed(s):")
    print()
    print("| system | " + " | ".join(f"{s} s" for s in seconds) + " |")
    print("|---|" + "---:|" * len(seconds))
    systems = by_system(seeds)
    for system, mine in systems.items():
        print(f"| {system} | " + " | ".join(Spread.of([c.return_at(s) for c in mine]).text(len(mine))
                                            for s in seconds) + " |")
    if len(systems) == 2:
        cells = []
        for second in seconds:
            pairs = [(a.return_at(second), b.return_at(second)) for a, b in seeds.values()]
            ahead = sum(a > b or (math.isnan(b) and not math.isnan(a)) for a, b in pairs)
            seen = any(not (math.isnan(a) and math.isnan(b)) for a, b in pairs)
            cells.append(f"{ahead} of {len(pairs)}" if seen else "-")
        print(f"| seeds where {next(iter(systems))} is ahead | " + " | ".join(cells) + " |")


def run_seed(python: Path, game: str, seed: int, budget: float, out: Path) -> list[PeerCurve]:
    """seed-rl for ``budget`` s of training, then Sample Factory for as long from launch;
    both runs' own records are copied to ``out`` whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix="seed-rl-peer-"))
    try:
        ours = run_seed_rl(game, seed, budget, workdir)
        # equal wall time from launch: seed-rl's --max-time counts training, not start-up
        peer = run_sample_factory(python, game, seed, ours.train_s, workdir)
    finally:
        for name in workdir.glob("sample-factory-seed*.*"):
            shutil.copyfile(name, out / name.name)
        for name in workdir.glob("minatar-*/metrics.jsonl"):
            shutil.copyfile(name, out / f"seed-rl-seed{seed}-metrics.jsonl")
        shutil.rmtree(workdir, ignore_errors=True)
    for curve in (ours, peer):
        print(f"  seed {seed}, {curve.system}: {curve.total_steps:,} env steps, final return "
              f"{curve.returns[-1] if curve.returns else math.nan:.2f}",
              file=sys.stderr, flush=True)
    return [ours, peer]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", choices=sorted(GAMES), default="breakout")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per system")
    parser.add_argument("--seeds", default="1",
                        help="comma-separated seeds, run one after the other (e.g. 0,1,2)")
    parser.add_argument("--out", default="benchmarks/results/peer",
                        help="where each seed's curves are kept; a seed found there is "
                             "read back, not run again (the same command resumes)")
    parser.add_argument("--peer-venv", default=str(Path.home() / ".cache" / "seed-rl" / "peers"
                                                   / "sample-factory-2.1.1"))
    args = parser.parse_args(argv)
    try:
        seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = float(load_toml(presets.named(f"minatar-{args.game}")).get("target_return",
                                                                        math.nan))
    seeds: dict[int, list[PeerCurve]] = {}
    for seed in seed_list:
        kept = out / f"{args.game}-{args.budget:g}s-seed{seed}.json"
        curves = load_seed(kept)
        if curves is None:
            print(f"seed {seed}: seed-rl, then Sample Factory, {args.budget:g} s each",
                  file=sys.stderr, flush=True)
            curves = run_seed(ensure_peer_venv(Path(args.peer_venv)), args.game, seed,
                              args.budget, out)
            save_seed(curves, kept)
        else:
            print(f"seed {seed}: read back from {kept}", file=sys.stderr, flush=True)
        seeds[seed] = curves
    print(f"MinAtar {GAMES[args.game]}, seeds {args.seeds}, {args.budget:g} s per system, "
          f"one after the other on this machine ({os.cpu_count()} cores); target {target:g}")
    print()
    report(seeds, args.budget, target)
    plot(seeds, target, f"MinAtar {GAMES[args.game]}", out / "peer.png")
    print(f"\nfigure {out / 'peer.png'}, curves in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
