"""FSDP2 for the dry run on one machine: a fake process group of the run's world size, and
``fully_shard`` on each block and the root, as torchtitan's estimator does.

Collectives on the fake group return at once and move nothing, so each "rank" holds its own shards and
gathers real-sized unsharded layers: one process runs rank 0's step of an n-rank run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from llmops.units import get_precision

_PARAM_DTYPE = {"bf16-fsdp": torch.bfloat16, "16-fsdp": torch.float16}


class ShardingSkipped(RuntimeError):
    """FSDP2 cannot run here; the message says why."""


@contextmanager
def fake_group(world_size: int) -> Iterator[Any]:
    """A fake default process group of ``world_size`` ranks (this process is rank 0) and its 1-D CPU
    device mesh, torn down on exit."""
    import torch.distributed as dist

    if not dist.is_available():
        raise ShardingSkipped("this build of PyTorch has no torch.distributed")
    if dist.is_initialized():
        raise ShardingSkipped("a process group already exists in this process; the dry run needs its own")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    dist.init_process_group("fake", rank=0, world_size=world_size, store=FakeStore())
    try:
        yield init_device_mesh("cpu", (world_size,))  # outside fake tensors: the mesh reads real values
    finally:
        dist.destroy_process_group()


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks: the children of the largest ``nn.ModuleList`` (Hugging Face's
    ``model.layers``, nanoGPT's ``transformer.h``, LitGPT's ``transformer.h``)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def shard(model: nn.Module, mesh: Any, precision: str) -> nn.Module:
    """``fully_shard`` each block, then the root; ``*-fsdp`` precisions give the mixed-precision policy
    (parameters gathered in the 2-byte type, gradients reduced in fp32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = _PARAM_DTYPE.get(get_precision(precision).name)
    kwargs: dict[str, Any] = {"mesh": mesh}
    if dtype is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in blocks(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether the model's parameters are already DTensors (a live FSDP2 or tensor-parallel run)."""
    return any(hasattr(p, "_local_tensor") for p in model.parameters())
