"""Prediction accuracy against the real peak: document, refined and dry run, per configuration.

Two families of rows, each trained in Lightning's order (forward with the previous step's
gradients alive, ``zero_grad``, backward, optimizer step), the last step measured:

- the project's GPT (``bench/gpt.py``): layers, widths, precision, attention, dropout,
  checkpointing and optimizer varied;
- real architectures built from Hugging Face configs with random weights (``bench/zoo.py``:
  GPT-2, Llama with GQA, Qwen2 with a tied 152k vocabulary, Mistral, Phi, BERT MLM, Llama with
  gradient checkpointing, Llama + LoRA through PEFT, Mixtral, Qwen2-MoE) in 32-true, bf16-mixed
  and bf16-true; the spec is read from the model as the monitor reads it.

The ground truth does not come from the code under test. CPU: ``torch.profiler``'s allocation
and free events over the real step on top of what was alive before it (``bench/truth.py``,
validated on a hand-computed Linear + AdamW case to 12 bytes and against PyTorch's
``MemTracker``). CUDA: ``torch.cuda.max_memory_allocated()`` of the step, its peak reset before
the step, minus what was allocated before the model existed.

The predictions are made for the same device with ``overhead_bytes=0``. Error is
(predicted − measured) / measured. Then the largest safe batch: under a budget, the refined
model's b_max is run (it must fit) and b_max + 1 (it must not). Ends with
``max_abs_error document=… refined=… dryrun=…``.

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
from bench import zoo  # noqa: E402
from bench.gpt import GPT, BenchConfig, lm_loss  # noqa: E402
from bench.truth import real_peak  # noqa: E402
from llmops.dryrun.factory import spec_from_model
from llmops.dryrun.result import to_estimate
from llmops.dryrun.run import dry_run  # noqa: E402
from llmops.estimate import TrainingSpec, document, refined  # noqa: E402
from llmops.spec.live import LIGHTNING_PRECISION, count_parameters, largest_trainable_param  # noqa: E402

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

    @property
    def label(self) -> str:
        return (f"gpt L{self.L} h{self.h} a{self.a} s{self.s} b{self.b} V{self.V} {self.precision} {self.attention} "
                f"drop-{'on' if self.dropout else 'off'} recompute-{self.recompute} {self.optimizer}")

    def config(self) -> BenchConfig:
        return BenchConfig(n_layer=self.L, n_head=self.a, n_embd=self.h, vocab_size=self.V, block_size=self.s,
                           dropout=0.1 if self.dropout else 0.0, attention=self.attention, recompute=self.recompute)


@dataclass(frozen=True)
class HFCase:
    """A ``bench/zoo.py`` architecture in one Lightning precision, trained with AdamW."""

    name: str
    precision: str = "32-true"  # Lightning's: 32-true, bf16-mixed, bf16-true
    b: int | None = None  # None: the zoo's default (2)

    @property
    def label(self) -> str:
        return f"hf {self.name} {self.precision}" + (f" b{self.b}" if self.b else "")


@dataclass(frozen=True)
class Row:
    case: Case | HFCase
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


HF_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")


def hf_matrix(quick: bool) -> list[HFCase]:
    """Every zoo entry in every precision; ``quick``: each entry once, the precisions taken in turn."""
    if quick:
        return [HFCase(name, HF_PRECISIONS[i % 3]) for i, name in enumerate(zoo.NAMES)]
    return [HFCase(name, p) for name in zoo.NAMES for p in HF_PRECISIONS]


def matrix(device: str, quick: bool) -> list[Case | HFCase]:
    shapes = SHAPES[device]
    hf: list[Case | HFCase] = list(hf_matrix(quick)) if device == "cpu" else []
    if quick:
        return [*one_at_a_time(shapes[0]), *hf]
    if device == "cpu":
        return [c for shape in shapes for c in every_combination(shape)] + hf
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


def autocast_dtype(precision: str) -> torch.dtype | None:
    return torch.bfloat16 if precision == "bf16-mixed" else None


def autocast(case: Case, device: str):  # type: ignore[no-untyped-def]
    dtype = autocast_dtype(case.precision)
    return torch.autocast(device, dtype=dtype) if dtype is not None else nullcontext()


def measure(case: Case, device: str) -> int:
    """The real peak of the third training step (module docstring): the profiler on the CPU, the
    allocator on CUDA."""
    if device == "cpu":
        net, tokens = build(case, device)
        opt = make_optimizer(case.optimizer, net.parameters())
        return real_peak(net, tokens, lm_loss, opt, autocast_dtype=autocast_dtype(case.precision)).peak_bytes
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    net, tokens = build(case, device)
    opt = make_optimizer(case.optimizer, net.parameters())
    for _ in range(3):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with autocast(case, device):
            loss = lm_loss(net, tokens)
        opt.zero_grad(set_to_none=True)  # Lightning zeroes after the forward: last step's grads live through it
        loss.backward()
        del loss
        opt.step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def spec_for(case: Case, device: str) -> TrainingSpec:
    with torch.device("meta"):
        largest = largest_trainable_param(GPT(case.config()))
    return TrainingSpec(
        params=params_of(case), layers=case.L, heads=case.a, hidden=case.h, vocab=case.V, seq_len=case.s,
        batch_size=case.b, precision=case.precision, optimizer=case.optimizer, strategy="single",
        attention=case.attention, recompute=case.recompute, dropout=case.dropout, device=device, overhead_bytes=0,
        loss_upcast=False, largest_param=largest)  # bench/gpt.py's cross-entropy takes the logits as they are


def params_of(case: Case) -> int:
    """N as the monitor reads it: every parameter, the tied embedding once."""
    with torch.device("meta"):
        return count_parameters(GPT(case.config()))[0]


def run_case(case: Case | HFCase, device: str) -> Row:
    if isinstance(case, HFCase):
        return run_hf_case(case, device)
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


def hf_build(case: HFCase) -> zoo.Case:
    built = zoo.build(case.name, batch_size=case.b)
    if case.precision == "bf16-true":
        built.model.to(torch.bfloat16)
    return built


def hf_spec(case: HFCase, built: zoo.Case, device: str) -> TrainingSpec:
    """What the monitor reads from the run: the model's config and parameters, the batch, the precision."""
    base = TrainingSpec(precision=LIGHTNING_PRECISION[case.precision], optimizer="adamw", strategy="single",
                        device=device, overhead_bytes=0)
    return spec_from_model(built.model, built.batch, base, set())[0]


def hf_measure(case: HFCase) -> int:
    built = hf_build(case)
    opt = torch.optim.AdamW([p for p in built.model.parameters() if p.requires_grad], lr=1e-4)
    return real_peak(built.model, built.batch, built.loss_fn, opt,
                     autocast_dtype=autocast_dtype(case.precision)).peak_bytes


def run_hf_case(case: HFCase, device: str) -> Row:
    t0 = time.perf_counter()
    measured = hf_measure(case)
    built = hf_build(case)
    spec = hf_spec(case, built, device)
    result = dry_run(built.model, built.batch, loss=built.loss_fn, precision=case.precision)
    row = Row(case, measured, document(spec).peak_bytes or 0, refined(spec).peak_bytes or 0,
              to_estimate(result, spec).peak_bytes or 0, time.perf_counter() - t0)
    gc.collect()
    return row


def warm_up(device: str) -> None:
    """Allocate the cuBLAS workspaces and kernels' caches before any row measures."""
    if device != "cuda":
        return
    run_case(Case(L=1, h=64, a=2, s=32, b=2, V=64, precision="bf16-mixed", attention="sdpa"), device)
    run_case(Case(L=1, h=64, a=2, s=32, b=2, V=64), device)


def table(rows: list[Row]) -> str:
    lines = ["| configuration | real peak MB | document MB (err) | refined MB (err) | dryrun MB (err) |",
             "|---|---|---|---|---|"]
    for r in rows:
        cells = [r.case.label, f"{r.measured / 1e6:.3f}"]
        cells += [f"{getattr(r, m) / 1e6:.3f} ({r.error(m):+.1%})" for m in ("document", "refined", "dryrun")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def max_abs_errors(rows: list[Row]) -> dict[str, float]:
    return {m: max(abs(r.error(m)) for r in rows) for m in ("document", "refined", "dryrun")}


@dataclass(frozen=True)
class SafeRow:
    """The largest safe batch under ``budget`` bytes (safety 1): predicted, and run."""

    case: Case | HFCase
    budget: int
    predicted: dict[str, int]  # model → b_max
    true_max: int  # the largest b whose real peak is within the budget, found by running b = 1, 2, …
    peaks: dict[int, int]  # b → real peak, every b run

    def fits(self, b: int) -> bool:
        return self.peaks[b] <= self.budget


SAFE_CASES: list[Case | HFCase] = [HFCase("gpt2", "32-true"), HFCase("qwen2-tied", "bf16-true"),
                                   Case(L=4, h=128, a=4, s=128, b=1, V=512, precision="bf16-mixed")]


def real_peak_at(case: Case | HFCase, b: int) -> int:
    return hf_measure(replace(case, b=b)) if isinstance(case, HFCase) else measure(replace(case, b=b), "cpu")


def predicted_at(case: Case | HFCase, b: int, budget: int) -> dict[str, int]:
    """b_max of the refined model and of the dry run (made at ``b``), for ``budget`` with safety 1."""
    if isinstance(case, HFCase):
        built = hf_build(replace(case, b=b))
        spec = hf_spec(case, built, "cpu").with_(gpu_memory=budget, safety=1.0)
        result = dry_run(built.model, built.batch, loss=built.loss_fn, precision=case.precision)
    else:
        spec = spec_for(replace(case, b=b), "cpu").with_(gpu_memory=budget, safety=1.0)
        net, tokens = build(replace(case, b=b), "cpu")
        result = dry_run(net, tokens, loss=lm_loss, optimizer=lambda p: make_optimizer(case.optimizer, p),
                         precision=case.precision)
    return {"refined": refined(spec).max_batch_size or 0, "dryrun": to_estimate(result, spec).max_batch_size or 0}


def safe_batch_row(case: Case | HFCase, budget_b: int = 3, margin: float = 1.05) -> SafeRow:
    """Budget: ``margin`` × the real peak at ``budget_b`` (a figure no model saw); then run b_max and
    b_max + 1 of each model, and b = 1, 2, … to the first that does not fit."""
    peaks = {budget_b: real_peak_at(case, budget_b)}
    budget = int(peaks[budget_b] * margin)
    predicted = predicted_at(case, 2, budget)
    b = 1
    while True:  # the true largest batch
        peaks.setdefault(b, real_peak_at(case, b))
        if peaks[b] > budget:
            break
        b += 1
    for b_max in predicted.values():
        for n in (b_max, b_max + 1):
            if n >= 1:
                peaks.setdefault(n, real_peak_at(case, n))
    return SafeRow(case, budget, predicted, b - 1, peaks)


def safe_batch_table(rows: list[SafeRow]) -> str:
    lines = ["| configuration | budget MB | true largest b | refined b_max: fits / b_max+1 over | "
             "dryrun b_max: fits / b_max+1 over |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [r.case.label, f"{r.budget / 1e6:.1f}", str(r.true_max)]
        for m in ("refined", "dryrun"):
            b = r.predicted[m]
            cells.append(f"{b}: {'yes' if b == 0 or r.fits(b) else 'NO'} / {'yes' if not r.fits(b + 1) else 'NO'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    if args.device == "cpu":
        safe = [safe_batch_row(c) for c in (SAFE_CASES[-1:] if args.quick else SAFE_CASES)]
        print("\nlargest safe batch under a budget (safety 1), each b run for its real peak:\n")
        print(safe_batch_table(safe))
    errors = max_abs_errors(rows)
    print(f"\nmax_abs_error document={errors['document']:.3f} refined={errors['refined']:.3f} "
          f"dryrun={errors['dryrun']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
