"""ActivationMeter against a hand count and an independent walk of the autograd graph."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch
from torch import nn

from llmops.probes import ActivationMeter

F32 = 4
B, D_IN, HIDDEN, D_OUT = 8, 16, 32, 4


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, HIDDEN, bias=False), nn.ReLU(), nn.Linear(HIDDEN, D_OUT, bias=False))


def storage_key(t: torch.Tensor) -> tuple[str, int]:
    return str(t.device), t.untyped_storage().data_ptr()


def saved_storages(out: torch.Tensor, exclude: list[torch.Tensor]) -> dict[tuple[str, int], int]:
    """Independent count: every `_saved_*` tensor on the graph's nodes, unique by storage."""
    excluded = {storage_key(t) for t in exclude}
    found: dict[tuple[str, int], int] = {}
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for attr in dir(node):
            if attr.startswith("_saved_"):
                value = getattr(node, attr)
                for t in value if isinstance(value, (tuple, list)) else [value]:
                    if isinstance(t, torch.Tensor) and storage_key(t) not in excluded:
                        found[storage_key(t)] = t.untyped_storage().nbytes()
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def test_mlp_exact_bytes() -> None:
    model, x = mlp(), torch.randn(B, D_IN)
    with ActivationMeter(model.parameters()) as meter:
        model(x).sum()
    # Saved: the input x (for W1's grad) and the ReLU output, which ReLU and the 2nd matmul share.
    assert meter.activation_bytes == B * D_IN * F32 + B * HIDDEN * F32
    assert meter.tensor_count == 2


def test_parameters_are_excluded() -> None:
    model, x = mlp(), torch.randn(B, D_IN)
    with ActivationMeter() as everything:
        model(x).sum()
    with ActivationMeter(model.parameters()) as activations:
        model(x).sum()
    # Without exclusion the 2nd layer's weight (saved for the ReLU output's grad) is counted too;
    # the 1st layer's is not saved at all, since x needs no grad.
    assert everything.activation_bytes - activations.activation_bytes == HIDDEN * D_OUT * F32


def test_mlp_matches_graph_walk() -> None:
    model, x = mlp(), torch.randn(B, D_IN, requires_grad=True)
    with ActivationMeter(model.parameters()) as meter:
        out = model(x).sum()
    walked = saved_storages(out, list(model.parameters()))
    assert (meter.activation_bytes, meter.tensor_count) == (sum(walked.values()), len(walked))


def transformer() -> nn.Module:
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.1, batch_first=True)


def test_transformer_matches_graph_walk() -> None:
    layer, x = transformer(), torch.randn(2, 10, 32)
    with ActivationMeter(layer.parameters()) as meter:
        out = layer(x).sum()
    walked = saved_storages(out, list(layer.parameters()))
    assert meter.activation_bytes == sum(walked.values()) > 0
    assert meter.tensor_count == len(walked)
    params = {storage_key(p) for p in layer.parameters()}
    assert not params & set(walked)


def grads(model: nn.Module, x: torch.Tensor, meter: ActivationMeter | None) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks in both runs
    if meter is not None:
        meter.start()
    loss = model(x).square().mean()
    loss.backward()
    if meter is not None:
        meter.stop()
    return [p.grad.clone() for p in model.parameters()]


def test_gradients_identical_with_and_without_meter() -> None:
    layer, x = transformer(), torch.randn(2, 10, 32)
    without = grads(layer, x, None)
    meter = ActivationMeter(layer.parameters())
    with_meter = grads(layer, x, meter)
    assert meter.activation_bytes > 0
    assert all(torch.equal(a, b) for a, b in zip(without, with_meter, strict=True))


def test_double_backward_unchanged() -> None:
    x = torch.tensor([2.0], requires_grad=True)
    with ActivationMeter():
        y = x.pow(3).sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), x)
    assert (g.item(), g2.item()) == (12.0, 12.0)  # 3x², 6x at x = 2


def test_inplace_modification_still_detected() -> None:
    a = torch.randn(3, requires_grad=True)
    with ActivationMeter():
        b = a.exp()  # exp saves its output
    b.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()


def test_no_reference_cycle_keeps_activations_alive() -> None:
    model, x = mlp(), torch.randn(B, D_IN)
    gc.disable()
    try:
        with ActivationMeter(model.parameters()):
            hidden = model[1](model[0](x))
            out = model[2](hidden).sum()
        ref = weakref.ref(hidden.untyped_storage())
        del hidden, out
        assert ref() is None  # freed by reference counting, as without the meter
    finally:
        gc.enable()


def test_nested_meters_both_count() -> None:
    model = mlp()
    x1, x2 = torch.randn(B, D_IN), torch.randn(2 * B, D_IN)
    per_sample = (D_IN + HIDDEN) * F32
    with ActivationMeter(model.parameters()) as outer:
        out1 = model(x1).sum()
        with ActivationMeter(model.parameters()) as inner:
            out2 = model(x2).sum()
        out3 = model(x1).sum()  # x1 again: its storage is not counted twice
    assert inner.activation_bytes == 2 * B * per_sample
    assert outer.activation_bytes == B * per_sample + 2 * B * per_sample + B * HIDDEN * F32
    del out1, out2, out3


def test_start_stop_across_hooks() -> None:
    model, x = mlp(), torch.randn(B, D_IN)
    meter = ActivationMeter(model.parameters())
    meter.start()  # e.g. on_train_batch_start
    model(x).sum().backward()
    meter.stop()  # e.g. on_train_batch_end
    counted = meter.activation_bytes
    assert counted == B * (D_IN + HIDDEN) * F32
    model(x).sum()  # after stop: not counted, and no hooks left behind
    assert meter.activation_bytes == counted
    meter.stop()  # harmless
    meter.start()  # restarts from zero
    assert (meter.activation_bytes, meter.tensor_count) == (0, 0)
    with pytest.raises(RuntimeError, match="already started"):
        meter.start()
    meter.stop()


def test_other_threads_are_not_counted() -> None:
    model = mlp()
    with ActivationMeter(model.parameters()) as meter:
        worker = threading.Thread(target=lambda: model(torch.randn(B, D_IN)).sum())
        worker.start()
        worker.join()
    assert meter.activation_bytes == 0


def test_reused_addresses_are_counted_again() -> None:
    x = torch.randn(1024, requires_grad=True)
    addresses: list[int] = []
    with ActivationMeter([x]) as meter:
        while len(addresses) < 100 and len(set(addresses)) == len(addresses):
            y = x.exp()  # saves its 4 KiB output; freed with y, before the next iteration
            addresses.append(y.data_ptr())
            del y
    if len(set(addresses)) == len(addresses):
        pytest.skip("the CPU allocator never reused an address")
    assert meter.activation_bytes == len(addresses) * 1024 * F32
