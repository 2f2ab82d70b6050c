"""The dry run: one real training step of the user's model on fake tensors, measured exactly.

The model is copied onto ``FakeTensorMode`` tensors (shapes, dtypes and devices, no memory), and
three training steps run as Lightning runs them (forward with the last step's gradients alive,
``zero_grad``, backward, optimizer step); the third is measured by ``LiveBytes``, the monitor's own
live-bytes count: the real peak of the step (what ``max_memory_allocated`` reads on a GPU) and
what it held at that moment, by category. The same step also counts what the forward saves for
backward. A CPU-only build cannot run a step on fake CUDA tensors, so there the fake tensors are
CPU tensors and the refined model supplies what CUDA's kernels keep differently.
"""

from __future__ import annotations

import copy
import inspect
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import saved_tensors_hooks
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from llmops.probes.live import LiveBytes
from llmops.probes.tensors import local

DEFAULT_TIMEOUT_S = 120.0  # a 1.3B-parameter GPT takes about 6 s on a 2-core CPU (README)


LossFn = Callable[[nn.Module, Any], torch.Tensor]


class DryRunSkipped(RuntimeError):
    """The dry run was stopped or could not run; the message says why and what to change."""


@dataclass(frozen=True)
class DryRun:
    """What one fake training step held, in bytes; ``categories`` sum to ``peak_bytes``."""

    device: str  # where the fake tensors lived: "cpu" or "cuda"
    batch_size: int | None
    peak_bytes: int  # live tensors at the step's peak (what CUDA's max_memory_allocated reads)
    categories: dict[str, int]  # LIVE_CATEGORIES at that peak (llmops.vocabulary)
    phase: str  # where the peak fell: forward, backward or optimizer
    saved_bytes: int  # tensors the forward saved for backward, parameters excluded
    state: dict[str, int]  # params, grads, optimizer_states after the step
    seconds: float
    attention: str = "plain"  # "sdpa" when the step ran F.scaled_dot_product_attention
    dropout: bool = False  # whether the step dropped anything


@dataclass
class _Deadline(TorchDispatchMode):
    """Notes every operator the step runs; ``check`` stops the step once ``limit_s`` seconds have passed.

    The check runs before each module's forward (forward and recomputation) and before the optimizer
    step, never inside an operator: an exception raised from within dispatch aborts the process.
    """

    limit_s: float
    started: float = field(default_factory=time.perf_counter)
    ops: set[str] = field(default_factory=set)  # operators seen, to tell which kernels the model uses

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.add(func.__name__)
        if func.__name__.startswith("_grouped_mm") and any(
                isinstance(a, torch.Tensor) and a.dtype == torch.float32 for a in args):
            # MoE experts (transformers' grouped_mm): the CPU kernel takes fp32, but the fake-tensor
            # (meta) kernel checks for bf16. Same shapes through bf16, the result cast back: the
            # step above this mode sees one fp32 output, as the real kernel makes.
            cast = [a.to(torch.bfloat16) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                    for a in args]
            return func(*cast, **(kwargs or {})).to(torch.float32)
        return func(*args, **(kwargs or {}))

    def check(self, *_: Any) -> None:
        if time.perf_counter() - self.started > self.limit_s:
            raise DryRunSkipped(f"dry run skipped: it ran past its limit of {self.limit_s:g} s "
                                f"(dry_run_timeout={self.limit_s:g}); raise the limit to let it finish")

    @contextmanager
    def hooks(self) -> Iterator[None]:
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        handles = [register_module_forward_pre_hook(self.check), register_optimizer_step_pre_hook(self.check)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


class _SavedBytes:
    """Bytes of the unique storages saved for backward, excluding ``exclude``'s storages.

    The monitor's ``ActivationMeter`` keys storages by address, which fake tensors do not have;
    this keys them by the storage object, held weakly so that backward still frees them.
    """

    def __init__(self, exclude: Iterable[torch.Tensor]) -> None:
        self._exclude = {id(local(t).untyped_storage()) for t in exclude}
        self._seen: dict[int, weakref.ref[Any]] = {}
        self.bytes = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        st = local(t).untyped_storage()
        key = id(st)
        ref = self._seen.get(key)
        if key not in self._exclude and (ref is None or ref() is None):  # a dead one: the id was reused
            self._seen[key] = weakref.ref(st)
            self.bytes += st.nbytes()
        return t

    def hooks(self) -> saved_tensors_hooks:
        return saved_tensors_hooks(self.pack, lambda t: t)


def _storage_bytes(tensors: Iterable[torch.Tensor], seen: set[int]) -> int:
    total = 0
    for t in tensors:
        st = local(t).untyped_storage()
        if id(st) not in seen:
            seen.add(id(st))
            total += st.nbytes()
    return total


def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """The monitor's state count (``probes.tensors.state_bytes``), by storage object."""
    seen: set[int] = set()
    params = list(model.parameters())
    out = {"params": _storage_bytes(params, seen),
           "grads": _storage_bytes([p.grad for p in params if p.grad is not None], seen)}
    states = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    out["optimizer_states"] = _storage_bytes(states, seen)
    return out


def fake_copy(model: nn.Module, mode: Any, device: torch.device | None = None) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are fake (no memory); the model is untouched. A model
    built on the meta device (any size, no data) becomes fake tensors that claim ``device``."""
    from torch._subclasses.fake_tensor import FakeTensor

    def fake(t: torch.Tensor) -> torch.Tensor:
        return FakeTensor(mode, t, device) if device is not None else mode.from_tensor(t)

    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(fake(p.detach()), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = fake(b)
    return copy.deepcopy(model, memo)


def _cast(model: nn.Module, dtype: torch.dtype) -> None:
    """``model.to(dtype)`` for fake parameters (``Module.to`` cannot swap a fake tensor in place)."""
    done: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module.named_parameters(recurse=False)):
            if p.is_floating_point() and p.dtype != dtype:
                if id(p) not in done:  # tied weights stay tied
                    done[id(p)] = nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad)
                setattr(module, name, done[id(p)])


def default_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """``training_step(batch, 0)`` of a LightningModule; else ``model(x)``: a scalar is the loss,
    logits get cross-entropy against ``y`` (a ``(x, y)`` batch) or against ``x`` itself."""
    step = getattr(model, "training_step", None)
    if callable(step):
        out = step(batch, 0)
        return out["loss"] if isinstance(out, dict) else out
    x, y = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (batch, None)
    out = model(x)
    if out.dim() == 0:
        return out
    target = y if y is not None else x
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))


def _optimizer_factory(optimizer: Any) -> Callable[[list[nn.Parameter]], torch.optim.Optimizer]:
    if optimizer is None:
        return lambda params: torch.optim.AdamW(params)
    if isinstance(optimizer, torch.optim.Optimizer):  # the run's own: same class, same settings
        accepted = inspect.signature(type(optimizer).__init__).parameters
        # defaults can hold settings the constructor derives (AdamW's decoupled_weight_decay)
        defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
        return lambda params: type(optimizer)(params, **defaults)
    return optimizer  # type: ignore[no-any-return]


def _autocast(precision: str, device: str) -> Any:
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    return torch.autocast(device, dtype=dtype) if dtype is not None else nullcontext()


def _batch_size(batch: Any) -> int | None:
    from llmops.spec.live import batch_shape

    return batch_shape(batch)[0]


def _batch_field(batch: Any, name: str) -> Any:
    return batch.get(name) if isinstance(batch, dict) else getattr(batch, name, None)


def unpadded(batch: Any) -> tuple[bool, bool]:
    """``(no padding, no packing)`` of a real batch: no ``attention_mask`` or one of all ones; no
    ``position_ids`` or ones that restart nowhere (one sequence per row). A fake batch carries no values:
    taken as neither (equal-length sequences, the usual training batch)."""
    from torch._subclasses.fake_tensor import is_fake

    def real(t: Any) -> bool:
        return isinstance(t, torch.Tensor) and not is_fake(t)

    mask, pos = _batch_field(batch, "attention_mask"), _batch_field(batch, "position_ids")
    no_padding = not real(mask) or bool(mask.all())
    no_packing = not real(pos) or bool((torch.diff(pos, dim=-1) == 1).all())
    return no_padding, no_packing


def hf_masks(model: nn.Module, batch: Any, s: int | None) -> bool:
    """Hugging Face's SDPA gets a mask for this batch, and then repeats K and V to the query heads
    (``use_gqa_in_sdpa``): the batch is padded or packed (``unpadded``), or a sliding window is no longer than
    the sequence. Without one it leaves causality to the kernel, which reads K and V as they are."""
    cfg = next((m.config for m in model.modules() if getattr(getattr(m, "config", None), "model_type", None)), None)
    if cfg is None:
        return False
    window = getattr(cfg, "sliding_window", None)
    return not all(unpadded(batch)) or bool(isinstance(window, int) and s and s >= window)


@contextmanager
def _hf_sdpa_mask(no_padding: bool, no_packing: bool) -> Iterator[None]:
    """Let Hugging Face skip the causal mask under fake tensors as it does on real ones. Before SDPA it
    checks whether the mask can be left to ``is_causal`` (no padding, no packed sequences, the query as
    long as the keys); on a fake tensor it cannot read the values, so it builds the s×s mask and each layer
    saves a float copy: +3% to +8% of a small Llama's peak that the real step never holds. Here both checks
    are answered from the real batch (``unpadded``), by Hugging Face's rules."""
    masking = sys.modules.get("transformers.masking_utils")
    ignore_mask = getattr(masking, "_ignore_causal_mask_sdpa", None)
    find_packed = getattr(masking, "find_packed_sequence_indices", None)
    if ignore_mask is None or find_packed is None:
        yield
        return

    def ignore(padding_mask: Any, q_length: int, kv_length: int, q_offset: Any = 0, kv_offset: Any = 0,
               local_attention_size: int | None = None) -> bool:
        if local_attention_size is not None and kv_length >= local_attention_size:
            return False  # a sliding window needs its mask
        return (q_length == 1 or kv_length == q_length) and no_padding

    def packed(position_ids: Any) -> Any:
        return None if no_packing else find_packed(position_ids)

    masking._ignore_causal_mask_sdpa, masking.find_packed_sequence_indices = ignore, packed  # type: ignore[union-attr]
    try:
        yield
    finally:
        masking._ignore_causal_mask_sdpa, masking.find_packed_sequence_indices = ignore_mask, find_packed  # type: ignore[union-attr]


def dry_run(model: nn.Module, batch: Any, *, loss: LossFn | None = None, optimizer: Any = None,
            precision: str = "fp32", timeout_s: float = DEFAULT_TIMEOUT_S,
            fake_mode: Any = None, fsdp_world_size: int = 1) -> DryRun:
    """Three training steps of ``model`` on ``batch`` with fake tensors; the third one measured.

    ``loss(model, batch)`` returns the loss (default ``default_loss``); ``optimizer`` is the run's
    optimizer (copied: class and settings), a factory ``params -> Optimizer``, or None for AdamW.
    ``precision`` is Lightning's name: ``*-mixed`` runs under autocast, ``*-true`` casts the copy.
    Pass ``fake_mode`` when ``model`` and ``batch`` were built under it (``from_factory`` does).
    ``fsdp_world_size > 1`` shards the copy with FSDP2 over a fake process group of that size
    (``llmops.dryrun.fsdp``): the step is rank 0's. Raises ``DryRunSkipped`` past ``timeout_s`` seconds.
    """
    from llmops.dryrun.fsdp import ShardingSkipped, fake_group, is_sharded, shard

    if is_sharded(model):
        raise DryRunSkipped("dry run skipped: the module is already sharded (DTensor parameters); "
                            "the refined model counts FSDP2 (strategy='fsdp')")
    if fsdp_world_size > 1:
        try:
            with fake_group(fsdp_world_size) as mesh:
                return _dry_run(model, batch, loss, optimizer, precision, timeout_s, fake_mode,
                                lambda m: shard(m, mesh, precision))
        except ShardingSkipped as e:
            raise DryRunSkipped(f"dry run skipped: {e}") from None
    return _dry_run(model, batch, loss, optimizer, precision, timeout_s, fake_mode, None)


def _dry_run(model: nn.Module, batch: Any, loss: LossFn | None, optimizer: Any, precision: str, timeout_s: float,
             fake_mode: Any, shard: Callable[[nn.Module], nn.Module] | None) -> DryRun:
    """``dry_run``'s step; ``shard`` wraps the fake model before the optimizer is made."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    t0 = time.perf_counter()
    mode = fake_mode or FakeTensorMode(allow_non_fake_inputs=False)
    deadline = _Deadline(timeout_s)
    with warnings.catch_warnings(), _hf_sdpa_mask(*unpadded(batch)):
        warnings.simplefilter("ignore")  # self.log without a trainer
        if fake_mode is None:
            model = fake_copy(model, mode)
            batch = tree_map_only(torch.Tensor, mode.from_tensor, batch)
        first = next(model.parameters(), None)
        device = first.device.type if first is not None else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise DryRunSkipped("dry run skipped: the model is on CUDA but this build of PyTorch has no CUDA")
        # *-true, and the document's bf16/fp16, keep the weights themselves in the 2-byte type
        true_dtype = {"bf16-true": torch.bfloat16, "16-true": torch.float16, "bf16": torch.bfloat16,
                      "fp16": torch.float16}.get(str(precision))
        loss_fn = loss or default_loss
        model.train()
        with mode, deadline, deadline.hooks():
            if true_dtype is not None:
                _cast(model, true_dtype)
            if shard is not None:
                model = shard(model)
            params = list(model.parameters())
            opt = _optimizer_factory(optimizer)([p for p in params if p.requires_grad])
            for _ in range(2):  # the first creates the optimizer states, the second a step's gradients
                lightning_step(model, batch, loss_fn, opt, precision, device, None, None)
            live = LiveBytes.for_step(params, [opt], batch, model.buffers())
            saved = _SavedBytes(params)
            try:
                lightning_step(model, batch, loss_fn, opt, precision, device, saved, live)
            except BaseException:
                live.abort()  # leave the dispatch-mode stack as it was
                raise
            peak = live.finish(params, [opt])
            state = _state(model, opt)
    return DryRun(device=device, batch_size=_batch_size(batch), peak_bytes=peak.peak_bytes,
                  categories=dict(peak.categories), phase=peak.phase, saved_bytes=saved.bytes, state=state,
                  seconds=time.perf_counter() - t0,
                  attention="sdpa" if any("scaled_dot_product" in op for op in deadline.ops) else "plain",
                  dropout=any(op.startswith(("native_dropout", "bernoulli")) for op in deadline.ops))


def lightning_step(model: nn.Module, batch: Any, loss_fn: LossFn, opt: torch.optim.Optimizer, precision: str,
                   device: str, saved: _SavedBytes | None, live: LiveBytes | None) -> None:
    """One step in Lightning's order: forward, zero_grad (last step's gradients live until here), backward, step."""
    with _autocast(precision, device), saved.hooks() if saved is not None else nullcontext():
        loss = loss_fn(model, batch)
    opt.zero_grad(set_to_none=True)
    if live is not None:
        live.phase("backward")
    loss.backward()
    del loss
    if live is not None:
        live.phase("optimizer")
    opt.step()
