"""Time and peak memory of ``llmops report`` on run logs of 10k to 10M steps (synthetic, written here).

Each size is a ``rank0.jsonl`` as the monitor writes it: a start and a preflight record, one ``step``
record per step, a ``metrics`` record every 10 steps (step gauge, step-time histogram, samples, and the
measured peak every 100 steps, growing slowly) and an end record. Each size is reported in a fresh
process, so its peak RSS is its own.

    .venv/bin/python bench/report_scaling.py [--sizes 10000,100000,1000000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_log(path: Path, steps: int) -> None:
    t0 = 1.7e9
    models = {"refined": {"model": "refined", "peak_bytes": 60 * 10**6, "overhead_bytes": 0, "budget_bytes": 9 * 10**8,
                          "params_bytes": 3 * 10**6, "max_batch_size": 200, "oom_risk": False}}
    with open(path, "w", encoding="utf-8") as f:
        start = {"kind": "start", "t": t0, "run": "scale", "rank": 0, "device": "cpu", "interval": 1}
        f.write(json.dumps(start) + "\n")
        f.write(json.dumps({"kind": "preflight", "t": t0, "text": "", "spec": {"batch_size": 16}, "sources": {},
                            "models": models}) + "\n")
        hist = 0.0
        for s in range(1, steps + 1):
            t = t0 + s * 0.05
            f.write(f'{{"kind": "step", "t": {t:.3f}, "step": {s}, "seconds": 0.05}}\n')
            hist += 0.05
            if s % 10 == 0:
                values = [["llmops_train_step", {}, s], ["llmops_samples_total", {}, 16 * s],
                          ["llmops_step_duration_seconds", {}, {"sum": hist, "count": s}]]
                if s % 100 == 0:
                    values.append(["llmops_memory_actual_bytes", {"component": "peak"}, 6.7e7 + s])
                f.write(json.dumps({"kind": "metrics", "t": t, "step": s, "values": values}) + "\n")
        f.write(json.dumps({"kind": "end", "t": t0 + steps * 0.05 + 1, "status": "ok"}) + "\n")


def measure_one(run_dir: str) -> None:
    """In a child process: read and report ``run_dir``; print seconds and peak RSS as JSON."""
    sys.path.insert(0, str(ROOT))
    from llmops.report import write_report

    t0 = time.perf_counter()
    write_report(Path(run_dir))
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "rss_bytes": rss}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="steps per log, comma-separated")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure_one(args.measure)
        return
    print("| steps | log MB | report s | peak RSS MB | s per 100k steps |\n|---|---|---|---|---|")
    for steps in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as d:
            run = Path(d) / "scale"
            run.mkdir()
            write_log(run / "rank0.jsonl", steps)
            size = (run / "rank0.jsonl").stat().st_size
            out = subprocess.run([sys.executable, __file__, "--measure", str(run)], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(f"| {steps:,} | {size / 1e6:.1f} | {r['seconds']:.2f} | {r['rss_bytes'] / 1e6:.0f} | "
                  f"{r['seconds'] / steps * 1e5:.3f} |", flush=True)


if __name__ == "__main__":
    main()
