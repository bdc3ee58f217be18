"""Data-parallel learner replicas on ``torch.distributed``.

A :class:`ReplicaGroup` is made from torchrun's standard environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Without it (or with
``WORLD_SIZE=1``) it is the single learner of before: world size 1, rank 0, and not one
``torch.distributed`` call is made.

Each replica is a whole learner (its own gRPC port, batcher, unroll queue and actors) that
keeps an identical copy of the model. Why an explicit all-reduce of gradients, not
``DistributedDataParallel``:

* a replica's local batch may be *empty*: the no-stall rule says a replica whose actors are
  gone (or slow) must not hold up the others. DDP's backward hooks need every rank to run
  a forward/backward on data; here a replica without a batch joins the collective with a
  zero gradient instead;
* the IMPALA losses are *sums* over T x B (seed_rl/functional/loss.py), so the gradient of
  B unrolls is the SUM of the gradients of its parts: the replicas' gradients are all-reduced
  with SUM (not averaged), then the global norm is clipped, then every replica steps its
  own optimizer on identical gradients. Same start, same gradients, same optimizer: the
  weights stay identical and every replica is at the same policy version, with no weight
  traffic after the start. What else an update derives from the whole batch is reduced the
  same way (:meth:`ReplicaGroup.all_reduce_sum`): the advantages' mean and standard
  deviation (``--normalize-advantages``), PopArt's target moments (``--popart``), and the
  minibatches (``--minibatches``) are drawn from the group's batch
  (learner/training/update.py), so N replicas train what one learner with all N shares
  would.

Replicas update in lock-step *ticks* (learner/training/trainer.py): each waits at most
``replica_wait`` seconds for a full local batch, then all exchange a small record (has a
batch, stop requested, connected environments, env steps, episodes and returns since the
last tick) with one ``all_gather_object`` on a gloo *control* group (CPU; the gradients
use the device backend: nccl on CUDA, gloo on the CPU). If no replica had a batch, nobody
steps. The gathered counters make every replica's env steps, episodes and returns the
group's, so the learning-rate schedule, stop criteria and metrics agree everywhere.

At start rank 0 broadcasts its checkpoint (when resuming) and then its weights; only rank 0
writes to the logdir (checkpoints, config.json, metrics).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_TIMEOUT_S = 120.0  # a replica that stops answering fails the others' collectives


@dataclass
class ReplicaGroup:
    """This process's place in the group of learner replicas."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "" when not distributed
    _control: Any = None  # the gloo group for control records
    _collective_since: float | None = None  # time.monotonic() when the one in flight began

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device, environ: dict[str, str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> ReplicaGroup:
        """The group torchrun's environment describes; a single learner without one."""
        env = os.environ if environ is None else environ
        world_size = int(env.get("WORLD_SIZE", "1") or 1)
        if world_size <= 1:
            return cls()
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
        if missing:
            raise SystemExit(f"WORLD_SIZE={world_size} but {', '.join(missing)} unset: start "
                             "replicas with torchrun or seed-rl learner --replicas N")
        rank = int(env["RANK"])
        if not 0 <= rank < world_size:  # e.g. `kubectl scale` beyond the group's size
            raise SystemExit(f"RANK={rank} is not below WORLD_SIZE={world_size}: this replica "
                             "has no place in the group (on Kubernetes: more learner pods "
                             "than WORLD_SIZE; docs/kubernetes.md, \"Learner replicas\")")
        local_rank = int(env.get("LOCAL_RANK", rank))
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device.index if device.index is not None else local_rank)
        timeout = datetime.timedelta(seconds=timeout_s)
        host = env["MASTER_ADDR"]
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        dist.init_process_group(backend, init_method=f"tcp://{host}:{env['MASTER_PORT']}",
                                rank=rank,
                                world_size=world_size, timeout=timeout)
        control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" \
            else dist.group.WORLD
        return cls(rank, world_size, local_rank, backend, control)

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group: wait (at most ``timeout_s``) until every replica is here, so that
        no peer is still inside a collective when the group is torn down (gloo aborts the
        process otherwise), then destroy it. A peer that is gone is not waited for."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                # a replica that died or hangs: nothing left to wait for
                with contextlib.suppress(Exception):
                    dist.monitored_barrier(group=self._control,
                                           timeout=datetime.timedelta(seconds=timeout_s))
                dist.destroy_process_group()

    # -- collectives (no-ops for a single learner) -----------------------------------------
    def collective_wait_s(self) -> float:
        """How long the tick's collective now in flight has waited for the other replicas
        (s; 0 when none is): seconds at most in a healthy group, growing without end when
        a peer hangs. The learner logs it as ``replica_collective_wait_s``."""
        since = self._collective_since
        return 0.0 if since is None else time.monotonic() - since

    def all_gather(self, record: Any) -> list[Any]:
        """Every replica's ``record`` (small, picklable), by rank, on the control group."""
        if not self.distributed:
            return [record]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        self._collective_since = time.monotonic()
        try:
            dist.all_gather_object(out, record, group=self._control)
        finally:
            self._collective_since = None
        return out

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every replica."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers into ``module`` on every replica."""
        if not self.distributed:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (small, on the model's device) summed over the replicas: a new tensor
        on every replica (the tensor itself for a single learner). The update's moments
        (advantage normalisation, PopArt's targets) go through it, so every replica
        normalises with the group's statistics."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        summed = tensor.clone()
        self._collective_since = time.monotonic()
        try:
            dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        finally:
            self._collective_since = None
        return summed

    def all_reduce_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace every gradient by the SUM over replicas (a missing one counts as zero),
        in one flat all-reduce."""
        if not self.distributed:
            return
        import torch.distributed as dist

        params = [p for p in parameters if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._collective_since = time.monotonic()
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        finally:
            self._collective_since = None
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n


def replica_port_address(address: str, local_rank: int) -> str:
    """The address replica ``local_rank`` binds: the port of ``address`` + ``local_rank``
    (port 0, "any free port", stays 0)."""
    host, _, port = address.rpartition(":")
    number = int(port)
    return f"{host}:{number + local_rank if number else 0}"


def advertised_address(template: str, rank: int, local_rank: int, host: str, port: int) -> str:
    """The address replica ``rank`` advertises: what it gives actors in redirects to it.

    With ``--advertise-address`` (``template``, for actors that reach replicas through
    other names, e.g. pods behind a headless service): ``{rank}`` in its host becomes the
    rank, its port + the local rank (replicas on one machine bind port + local rank).
    Without (``template`` empty): ``host:port``, the host of ``--address`` and the bound
    port, or ``:port`` when it listens on every interface (the actor then keeps the host it
    dialled)."""
    if not template:
        return f":{port}" if host in ("", "0.0.0.0", "[::]", "::", "*") else f"{host}:{port}"
    template_host, sep, template_port = template.rpartition(":")
    if not sep or not template_host or not template_port.isdigit():
        raise SystemExit(f"--advertise-address {template!r}: expected HOST:PORT")
    return replica_port_address(f"{template_host.replace('{rank}', str(rank))}:{template_port}",
                                local_rank)
