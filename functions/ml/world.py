"""The processes one training runs in: a rank among ``size`` workers, the device it trains on, and the few collectives
the training loop needs (PyTorch's own process group: gloo on CPU, NCCL on CUDA).

A world of size 1 is a plain single-process training: no process group, no collective, no DistributedDataParallel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place in a training: ``rank`` of ``size``, and ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    gpus_per_worker: int = 0

    @classmethod
    def from_env(cls, gpus_per_worker: int, environ: Mapping[str, str] | None = None) -> World:
        """The world torchrun (or Kubeflow Trainer's torch runtime) describes in RANK, WORLD_SIZE and LOCAL_RANK."""
        env = os.environ if environ is None else environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                   gpus_per_worker)  # fmt: skip

    @property
    def leader(self) -> bool:
        """Rank 0: the one that writes metrics and checkpoints and asks the stopping rule."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def device(self) -> torch.device:
        """This worker's first GPU (its GPUs are ``local_rank * gpus_per_worker`` onwards), else CUDA when a single
        process has one, else the CPU."""
        if self.gpus_per_worker > 0:
            return torch.device("cuda", self.local_rank * self.gpus_per_worker)
        if not self.distributed and torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")

    @property
    def backend(self) -> str:
        return "nccl" if self.gpus_per_worker > 0 else "gloo"

    def join(self) -> None:
        """Join the process group (``env://``: the launcher's MASTER_ADDR/PORT rendezvous)."""
        if not self.distributed or dist.is_initialized():
            return
        if self.gpus_per_worker > 0:
            torch.cuda.set_device(self.device)
        dist.init_process_group(self.backend, init_method="env://", rank=self.rank, world_size=self.size)

    def leave(self, clean: bool = True) -> None:
        """Leave the process group. ``clean`` (this rank finished its work): first wait until every rank is done, so
        none tears its connections down while another still uses them (gloo aborts the process that sees that)."""
        if self.distributed and dist.is_initialized():
            if clean:
                dist.barrier()
            dist.destroy_process_group()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the optimizer steps through: DistributedDataParallel when there are several workers."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # knflow's buffers are the featurize step's constants (Normalize's mean and std), the same on every rank:
        # broadcasting them before every forward pass cost a collective per step (25 % of an epoch, bench/training)
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (a decision only the leader can take, such as stopping early)."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def total(self, values: Sequence[float] | torch.Tensor) -> list[float]:
        """The sum of ``values`` over all ranks."""
        tensor = torch.as_tensor(values, dtype=torch.float64, device=self.device).reshape(-1)
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor.tolist()
