"""The largest safe micro-batch: predicted (refined model, dry run) against a trial search.

The trial search is what Lightning's ``BatchSizeFinder(mode="binsearch")`` does: train a few steps
at b = 1, 2, 4, … until one does not fit, then bisect between the last fit and the first failure.
Each prediction is then checked by running its batch: it must fit (never an OOM), and should be at
least 90% of the largest batch the search found.

- CUDA: "fits" means two training steps at b raise no ``torch.cuda.OutOfMemoryError``, on the
  whole GPU; the predictions get ``gpu_memory`` = the GPU's memory and ``--safety`` (default 0.95).
- CPU: there is no allocator to run out of, so "fits" means the real peak of the step (the
  profiler's allocation events, ``bench/truth.py`` via ``bench/accuracy.py``'s ``measure``) is within
  ``--budget``, and the predictions get that budget with safety 1. This checks the model's fixed
  and per-sample parts and the moment the peak falls in; an allocator's fragmentation only the CUDA
  run tests.

    .venv/bin/python bench/safe_batch.py [--device cpu|cuda] [--budget 60MB] [--safety 0.95]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.accuracy import Case, autocast, build, make_optimizer, measure, spec_for  # noqa: E402
from bench.gpt import lm_loss  # noqa: E402
from llmops.dryrun.result import to_estimate
from llmops.dryrun.run import dry_run  # noqa: E402
from llmops.estimate import refined  # noqa: E402
from llmops.units import parse_size  # noqa: E402

CASES = {
    "cpu": [Case(L=4, h=128, a=4, s=128, b=1, V=512),
            Case(L=4, h=128, a=4, s=128, b=1, V=512, precision="bf16-mixed", attention="sdpa", dropout=False),
            Case(L=4, h=128, a=4, s=128, b=1, V=512, precision="bf16-true", recompute="full",
                 optimizer="sgd-momentum")],
    "cuda": [Case(L=24, h=1024, a=16, s=1024, b=1, V=50257, precision="bf16-mixed", attention="sdpa", dropout=False),
             Case(L=12, h=768, a=12, s=1024, b=1, V=50257, precision="fp32", attention="plain")],
}


def binsearch(fits: Callable[[int], bool], limit: int = 4096) -> tuple[int, int]:
    """``(largest b that fits, trials)``: double from 1 until a failure, then bisect (BatchSizeFinder)."""
    trials, good, bad = 0, 0, None
    b = 1
    while b <= limit:
        trials += 1
        if not fits(b):
            bad = b
            break
        good, b = b, b * 2
    if bad is None:
        return good, trials
    while bad - good > 1:
        mid = (good + bad) // 2
        trials += 1
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good, trials


def cuda_fits(case: Case) -> bool:
    """Two training steps at ``case.b`` on the GPU without an out-of-memory error."""
    try:
        net, tokens = build(case, "cuda")
        opt = make_optimizer(case.optimizer, net.parameters())
        for _ in range(2):
            with autocast(case, "cuda"):
                loss = lm_loss(net, tokens)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            del loss
        torch.cuda.synchronize()
        return True
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        net = opt = tokens = loss = None  # noqa: F841 - drop every reference before freeing the cache
        gc.collect()
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Result:
    case: Case
    true_max: int
    trials: int
    search_seconds: float
    refined_max: int
    refined_seconds: float
    refined_fits: bool
    dryrun_max: int
    dryrun_seconds: float
    dryrun_fits: bool


def compare(case: Case, device: str, budget: int, safety: float) -> Result:
    fits: Callable[[int], bool] = ((lambda b: cuda_fits(replace(case, b=b))) if device == "cuda"
                                   else (lambda b: measure(replace(case, b=b), "cpu") <= budget))
    t0 = time.perf_counter()
    true_max, trials = binsearch(fits)
    search = time.perf_counter() - t0
    spec = spec_for(case, device).with_(gpu_memory=budget, safety=safety,
                                        overhead_bytes=None if device == "cuda" else 0)
    t0 = time.perf_counter()
    ref_max = refined(spec).max_batch_size or 0
    ref_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    net, tokens = build(replace(case, b=1), device)
    result = dry_run(net, tokens, loss=lm_loss, optimizer=lambda p: make_optimizer(case.optimizer, p),
                     precision=case.precision)
    del net, tokens
    dry_max = to_estimate(result, spec.with_(batch_size=1)).max_batch_size or 0
    dry_seconds = time.perf_counter() - t0
    return Result(case, true_max, trials, search, ref_max, ref_seconds, ref_max == 0 or fits(ref_max),
                  dry_max, dry_seconds, dry_max == 0 or fits(dry_max))


def table(results: list[Result]) -> str:
    lines = ["| L | h | s | V | precision | attention | recompute | optimizer | true max (trials, s) "
             "| refined max (% of true, fits, s) | dryrun max (% of true, fits, s) |", "|" + "---|" * 11]
    for r in results:
        c = r.case
        cells = [c.L, c.h, c.s, c.V, c.precision, c.attention, c.recompute, c.optimizer,
                 f"{r.true_max} ({r.trials} trials, {r.search_seconds:.1f} s)"]
        for m, fits, secs in ((r.refined_max, r.refined_fits, r.refined_seconds),
                              (r.dryrun_max, r.dryrun_fits, r.dryrun_seconds)):
            cells.append(f"{m} ({m / r.true_max:.0%}, {'fits' if fits else 'OOM'}, {secs:.3g} s)")
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", default="60MB", help="CPU only: the memory budget (default 60MB)")
    parser.add_argument("--safety", type=float, default=0.95, help="CUDA only: fraction of the GPU predicted into")
    parser.add_argument("--quick", action="store_true", help="the first case only")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    budget = torch.cuda.get_device_properties(0).total_memory if cuda else parse_size(args.budget)
    safety = args.safety if cuda else 1.0
    cases = CASES[args.device][:1] if args.quick else CASES[args.device]
    results = [compare(c, args.device, budget, safety) for c in cases]
    where = torch.cuda.get_device_name() if cuda else "CPU (measured peak ≤ budget)"
    print(f"largest safe micro-batch on {where}, budget {budget / 1e9:.3f} GB, safety {safety}\n")
    print(table(results))
    ok = all(r.refined_fits and r.refined_max >= 0.9 * r.true_max for r in results)
    print(f"\nrefined never OOM and ≥ 90% of the true maximum: {'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
