"""V-trace speed: seed_rl.functional.vtrace vs TorchRL vs a plain reverse loop.

Times ``seed_rl.functional.vtrace.from_importance_weights`` against TorchRL's
``torchrl.objectives.value.functional.vtrace_advantage_estimate`` and against the textbook torch
implementation (a Python loop over time steps, ``acc = delta_t + gamma_t c_t acc``, then
``torch.stack``), on float32 inputs of shape [T, B] = [20, 32], [80, 256], [100, 1024], on CPU and
on CUDA when available. It checks that all three agree and prints a table of median times.

The comparison is like for like:

* the same numbers: importance weights pi/mu from ``log_rhos`` (TorchRL: ``log_pi = log_rhos``,
  ``log_mu = 0``), rho_bar = c_bar = 1 (TorchRL clips its policy-gradient rho with rho_bar too, so
  ours runs with clip_pg_rho_threshold = rho_bar), one gamma, and episode ends where
  ``discounts == 0`` (TorchRL: ``done = terminated = True`` there);
* each function gets its native layout, converted once outside the timed region: ours and the
  loop are time-major [T, B]; TorchRL wants [B, T, 1] and the next state's value as a tensor;
* calls are interleaved (ours, TorchRL, loop, ours, ...) so that machine noise hits all alike;
  the median of ``--repeats`` calls after ``--warmup`` calls is reported, and the ratio of the
  fastest calls too ("min" column): on a busy machine the median absorbs other jobs'
  preemptions, the minimum approximates an unloaded machine;
* ``torch.set_num_threads`` is the machine's core count unless ``--threads`` says otherwise.

Allocator note: on Linux, glibc returns freed memory above a threshold to the kernel, and a
function that allocates a few MB of temporaries can then pay for page faults on every call
(seen here at up to 1000+ faults and 2x time per call, for every contender, depending on what the
process did before). A long-running learner has long since raised glibc's thresholds by freeing
large tensors; to measure that steady state the script first allocates and frees one 16 MiB
tensor. ``--no-heap-warmup`` skips it; the "faults" column reports minor page faults per call.

Usage:
    python benchmarks/vtrace.py [--repeats 300] [--device cpu|cuda|all]

TorchRL is optional: ``pip install --no-deps torchrl tensordict pyvers`` (``--no-deps`` keeps
pip from replacing the installed torch); without it the script still times the other columns.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seed_rl.functional import vtrace  # noqa: E402

try:
    from torchrl.objectives.value.functional import vtrace_advantage_estimate
except ImportError as error:  # optional
    vtrace_advantage_estimate = None
    TORCHRL_ERROR = f"{type(error).__name__}: {error}"
else:
    TORCHRL_ERROR = ""

SHAPES = [(20, 32), (80, 256), (100, 1024)]
GAMMA = 0.99
RHO_BAR = 1.0
C_BAR = 1.0


def make_inputs(num_steps: int, batch: int, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (num_steps, batch)
    terminated = torch.rand(shape, generator=gen) < 0.01
    inputs = {
        "log_rhos": torch.randn(shape, generator=gen) * 0.5,
        "discounts": torch.where(terminated, 0.0, GAMMA),
        "rewards": torch.randn(shape, generator=gen),
        "values": torch.randn(shape, generator=gen),
        "bootstrap_value": torch.randn(batch, generator=gen),
    }
    return {k: v.to(device) for k, v in inputs.items()}


def ours(inputs: dict[str, torch.Tensor]) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    def run():
        out = vtrace.from_importance_weights(
            inputs["log_rhos"],
            inputs["discounts"],
            inputs["rewards"],
            inputs["values"],
            inputs["bootstrap_value"],
            clip_rho_threshold=RHO_BAR,
            clip_pg_rho_threshold=RHO_BAR,
            clip_c_threshold=C_BAR,
        )
        return out.vs, out.pg_advantages

    return run


def plain_loop(inputs: dict[str, torch.Tensor]) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """The textbook torch implementation: one Python iteration of torch ops per time step."""
    log_rhos, discounts, rewards = inputs["log_rhos"], inputs["discounts"], inputs["rewards"]
    values, bootstrap_value = inputs["values"], inputs["bootstrap_value"]

    def run():
        with torch.no_grad():
            rhos = torch.exp(log_rhos)
            clipped_rhos = torch.clamp(rhos, max=RHO_BAR)
            cs = torch.clamp(rhos, max=C_BAR)
            values_t_plus_1 = torch.cat([values[1:], bootstrap_value[None]])
            deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)
            acc = torch.zeros_like(bootstrap_value)
            result = []
            for t in reversed(range(len(deltas))):
                acc = deltas[t] + discounts[t] * cs[t] * acc
                result.append(acc)
            vs = values + torch.stack(result[::-1])
            vs_t_plus_1 = torch.cat([vs[1:], bootstrap_value[None]])
            pg_advantages = clipped_rhos * (rewards + discounts * vs_t_plus_1 - values)
        return vs, pg_advantages

    return run


def torchrl(inputs: dict[str, torch.Tensor]) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """TorchRL's vtrace_advantage_estimate on the same numbers, in its [B, T, 1] layout."""

    def batch_major(x: torch.Tensor) -> torch.Tensor:  # [T, B] -> [B, T, 1]
        return x.transpose(0, 1).unsqueeze(-1).contiguous()

    values, bootstrap_value = inputs["values"], inputs["bootstrap_value"]
    log_pi = batch_major(inputs["log_rhos"])
    log_mu = torch.zeros_like(log_pi)
    state_value = batch_major(values)
    next_state_value = batch_major(torch.cat([values[1:], bootstrap_value[None]]))
    reward = batch_major(inputs["rewards"])
    done = batch_major(inputs["discounts"] == 0)

    def run():
        with torch.no_grad():
            advantages, vs = vtrace_advantage_estimate(
                GAMMA,
                log_pi,
                log_mu,
                state_value,
                next_state_value,
                reward,
                done,
                done,  # terminated: every episode end here is a termination
                rho_thresh=RHO_BAR,
                c_thresh=C_BAR,
            )
        return vs.squeeze(-1).transpose(0, 1), advantages.squeeze(-1).transpose(0, 1)

    return run


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: str, warmup: int, repeats: int
) -> dict[str, tuple[float, float, float]]:
    """(median ms, min ms, minor page faults) per call, calls interleaved round-robin."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    faults = dict.fromkeys(fns, 0)
    names = list(fns)
    for i in range(repeats):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            fns[name]()
            sync()
            times[name].append(time.perf_counter() - start)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return {
        name: (1e3 * statistics.median(times[name]), 1e3 * min(times[name]), faults[name] / repeats)
        for name in fns
    }


def max_abs_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--no-heap-warmup", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if not args.no_heap_warmup:
        torch.empty(16 << 20, dtype=torch.uint8).fill_(0)  # see "Allocator note" above

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, float32, "
        f"median of {args.repeats} interleaved calls"
    )
    if vtrace_advantage_estimate is None:
        print(
            f"TorchRL not importable ({TORCHRL_ERROR}); its column is skipped. Install it without "
            "touching torch: pip install --no-deps torchrl tensordict pyvers"
        )
    else:
        import torchrl as torchrl_module

        print(f"torchrl {torchrl_module.__version__}")
    if "cuda" in devices:
        print(f"cuda: {torch.cuda.get_device_name()}")

    header = (
        "| device | [T, B] | ours ms | torchrl ms | loop ms | torchrl/ours | loop/ours "
        "| torchrl/ours (min) | max abs diff vs torchrl | max abs diff vs loop "
        "| faults/call (ours, torchrl, loop) |"
    )
    print()
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for device in devices:
        for num_steps, batch in SHAPES:
            inputs = make_inputs(num_steps, batch, device)
            fns = {"ours": ours(inputs), "loop": plain_loop(inputs)}
            if vtrace_advantage_estimate is not None:
                fns["torchrl"] = torchrl(inputs)
            reference = fns["ours"]()
            diff_loop = max_abs_diff(reference, fns["loop"]())
            diff_torchrl = (
                max_abs_diff(reference, fns["torchrl"]()) if "torchrl" in fns else float("nan")
            )
            result = time_interleaved(fns, device, args.warmup, args.repeats)
            ours_ms, ours_min, ours_faults = result["ours"]
            loop_ms, _, loop_faults = result["loop"]
            torchrl_ms, torchrl_min, torchrl_faults = result.get("torchrl", (float("nan"),) * 3)
            print(
                f"| {device} | [{num_steps}, {batch}] | {ours_ms:.3f} | {torchrl_ms:.3f} "
                f"| {loop_ms:.3f} | {torchrl_ms / ours_ms:.1f}x | {loop_ms / ours_ms:.1f}x "
                f"| {torchrl_min / ours_min:.1f}x "
                f"| {diff_torchrl:.1e} | {diff_loop:.1e} "
                f"| {ours_faults:.0f}, {torchrl_faults:.0f}, {loop_faults:.0f} |"
            )


if __name__ == "__main__":
    main()
