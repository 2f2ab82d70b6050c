"""Prediction accuracy: the document model, the refined model and the dry run against a measured step.

A matrix of GPT configurations (layers, hidden size, heads, sequence length, micro-batch,
precision, attention, dropout, activation checkpointing, optimizer). Each row trains two steps
in Lightning's order (forward, ``zero_grad``, backward, optimizer step) and measures the second,
when the optimizer states exist:

- CPU: what the monitor measures there, allocator-independent: parameters + gradients +
  optimizer states counted from the tensors (``state_bytes``) + the bytes the forward pass saved
  for backward (``ActivationMeter``, bracketing the forward only, so that checkpointing's
  recomputation in backward is not counted a second time).
- CUDA: ``torch.cuda.max_memory_allocated()`` of the step, its peak reset before the step, minus
  what was allocated before the model existed (the cuBLAS workspace; the overhead term covers it).

The predictions are made for the same device with ``overhead_bytes=0``. Error is
(predicted − measured) / measured. Ends with ``max_abs_error document=… refined=… dryrun=…``.

    .venv/bin/python bench/accuracy.py [--quick] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.gpt import GPT, BenchConfig, lm_loss  # noqa: E402
from llmops.dryrun import dry_run, to_estimate  # noqa: E402
from llmops.estimate import TrainingSpec, document, refined  # noqa: E402
from llmops.introspect import count_parameters  # noqa: E402
from llmops.probes import ActivationMeter, state_bytes  # noqa: E402

PRECISIONS = ("fp32", "bf16-mixed", "bf16-true")
OPTIMIZERS = ("adamw", "sgd-momentum")


@dataclass(frozen=True)
class Case:
    L: int
    h: int
    a: int
    s: int
    b: int
    V: int
    precision: str = "fp32"
    attention: str = "plain"
    dropout: bool = True
    recompute: str = "none"
    optimizer: str = "adamw"

    def config(self) -> BenchConfig:
        return BenchConfig(n_layer=self.L, n_head=self.a, n_embd=self.h, vocab_size=self.V, block_size=self.s,
                           dropout=0.1 if self.dropout else 0.0, attention=self.attention, recompute=self.recompute)


@dataclass(frozen=True)
class Row:
    case: Case
    measured: int
    document: int
    refined: int
    dryrun: int
    seconds: float

    def error(self, model: str) -> float:
        return getattr(self, model) / self.measured - 1


# CPU shapes are small enough for two cores; CUDA ones are GPT-2 small / medium sized.
SHAPES = {
    "cpu": [Case(L=2, h=64, a=4, s=64, b=4, V=256), Case(L=4, h=128, a=4, s=128, b=2, V=512)],
    "cuda": [Case(L=4, h=256, a=4, s=256, b=8, V=1024), Case(L=12, h=768, a=12, s=1024, b=4, V=50257),
             Case(L=24, h=1024, a=16, s=1024, b=2, V=50257)],
}


def one_at_a_time(base: Case) -> list[Case]:
    """The base case and each variant changed alone, plus the combinations most runs use."""
    cases = [base]
    cases += [replace(base, precision=p) for p in PRECISIONS[1:]]
    cases += [replace(base, attention="sdpa"), replace(base, dropout=False), replace(base, recompute="full"),
              replace(base, optimizer="sgd-momentum")]
    cases += [replace(base, precision="bf16-mixed", attention="sdpa", dropout=False),
              replace(base, precision="bf16-mixed", attention="sdpa", recompute="full"),
              replace(base, precision="bf16-true", attention="sdpa", dropout=False, optimizer="sgd-momentum")]
    return cases


def every_combination(base: Case) -> list[Case]:
    return [replace(base, precision=p, attention=at, dropout=d, recompute=r, optimizer=o)
            for p, at, d, r, o in itertools.product(PRECISIONS, ("plain", "sdpa"), (True, False), ("none", "full"),
                                                    OPTIMIZERS)]


def matrix(device: str, quick: bool) -> list[Case]:
    shapes = SHAPES[device]
    if quick:
        return one_at_a_time(shapes[0])
    if device == "cpu":
        return [c for shape in shapes for c in every_combination(shape)]
    return every_combination(shapes[0]) + [c for shape in shapes[1:] for c in one_at_a_time(shape)]


def make_optimizer(name: str, params) -> torch.optim.Optimizer:  # type: ignore[no-untyped-def]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4)
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def build(case: Case, device: str) -> tuple[GPT, torch.Tensor]:
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a GPT-2 medium in milliseconds on a GPU
        net = GPT(case.config())
    if case.precision == "bf16-true":
        net = net.to(torch.bfloat16)
    tokens = torch.randint(0, case.V, (case.b, case.s + 1), device=device)
    return net, tokens


def autocast(case: Case, device: str):  # type: ignore[no-untyped-def]
    return torch.autocast(device, dtype=torch.bfloat16) if case.precision == "bf16-mixed" else nullcontext()


def measure(case: Case, device: str) -> int:
    """Bytes of the second training step, as described in the module docstring."""
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
    net, tokens = build(case, device)
    opt = make_optimizer(case.optimizer, net.parameters())
    meter = ActivationMeter(net.parameters())
    for step in range(2):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if step == 1 and not cuda:
            meter.start()
        with autocast(case, device):
            loss = lm_loss(net, tokens)
        meter.stop()
        opt.zero_grad(set_to_none=True)  # Lightning zeroes after the forward: last step's grads live through it
        loss.backward()
        opt.step()
        del loss
    if cuda:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    counted = state_bytes(net, [opt])
    return counted["params"] + counted["grads"] + counted["optimizer_states"] + meter.activation_bytes


def spec_for(case: Case, device: str) -> TrainingSpec:
    return TrainingSpec(
        params=params_of(case), layers=case.L, heads=case.a, hidden=case.h, vocab=case.V, seq_len=case.s,
        batch_size=case.b, precision=case.precision, optimizer=case.optimizer, strategy="single",
        attention=case.attention, recompute=case.recompute, dropout=case.dropout, device=device, overhead_bytes=0)


def params_of(case: Case) -> int:
    """N as the monitor reads it: every parameter, the tied embedding once."""
    with torch.device("meta"):
        return count_parameters(GPT(case.config()))[0]


def run_case(case: Case, device: str) -> Row:
    t0 = time.perf_counter()
    measured = measure(case, device)
    spec = spec_for(case, device)
    net, tokens = build(case, device)  # the dry run copies it onto fake tensors
    result = dry_run(net, tokens, loss=lm_loss, optimizer=lambda p: make_optimizer(case.optimizer, p),
                     precision=case.precision)
    del net, tokens
    row = Row(case, measured, document(spec).peak_bytes or 0, refined(spec).peak_bytes or 0,
              to_estimate(result, spec).peak_bytes or 0, time.perf_counter() - t0)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def warm_up(device: str) -> None:
    """Allocate the cuBLAS workspaces and kernels' caches before any row measures."""
    if device != "cuda":
        return
    run_case(Case(L=1, h=64, a=2, s=32, b=2, V=64, precision="bf16-mixed", attention="sdpa"), device)
    run_case(Case(L=1, h=64, a=2, s=32, b=2, V=64), device)


def table(rows: list[Row]) -> str:
    head = ("| L | h | a | s | b | V | precision | attention | dropout | recompute | optimizer | measured MB "
            "| document MB (err) | refined MB (err) | dryrun MB (err) |")
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        c = r.case
        cells = [c.L, c.h, c.a, c.s, c.b, c.V, c.precision, c.attention, "on" if c.dropout else "off", c.recompute,
                 c.optimizer, f"{r.measured / 1e6:.3f}"]
        cells += [f"{getattr(r, m) / 1e6:.3f} ({r.error(m):+.1%})" for m in ("document", "refined", "dryrun")]
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(lines)


def max_abs_errors(rows: list[Row]) -> dict[str, float]:
    return {m: max(abs(r.error(m)) for r in rows) for m in ("document", "refined", "dryrun")}


def run_matrix(device: str = "cpu", quick: bool = False) -> list[Row]:
    warm_up(device)
    return [run_case(case, device) for case in matrix(device, quick)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one variant at a time on the smallest shape")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    rows = run_matrix(args.device, args.quick)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"accuracy matrix on {name}: {len(rows)} configurations in {time.perf_counter() - t0:.0f} s, "
          f"torch {torch.__version__}\n")
    print(table(rows))
    errors = max_abs_errors(rows)
    print(f"\nmax_abs_error document={errors['document']:.3f} refined={errors['refined']:.3f} "
          f"dryrun={errors['dryrun']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
