"""What the dry run of a config costs: wall time and the host memory it adds, for Llama-shaped configs of
1B, 8B and 70B parameters (fake tensors hold no data, so the cost is the modules and the step's graph).

Each size runs in a process of its own; the extra memory is that process's peak resident set (getrusage) less
its resident set after importing torch and transformers, before building anything.

    .venv/bin/python -m bench.dryrun_cost [--markdown]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# Llama 3.2 1B, Llama 3.1 8B and 70B shapes (their published config.json figures), bf16-mixed full fine-tuning
CONFIGS = {
    "1B": {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256, "tie_word_embeddings": True},
    "8B": {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256},
    "70B": {"model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
            "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256},
}
SEQ, BATCH, PRECISION = 2048, 1, "bf16-mixed"


def one(size: str) -> dict:
    """In this process: build the config's model on fake tensors and run its step; time and memory."""
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from llmops.dryrun.hf import build_config
    from llmops.spec.hf_config import spec_fields
    from llmops.spec.training import TrainingSpec

    base_rss = _rss_bytes_now()
    spec = TrainingSpec(**spec_fields(CONFIGS[size])).with_(seq_len=SEQ, batch_size=BATCH, precision=PRECISION)
    t0 = time.perf_counter()
    built = build_config(CONFIGS[size], spec, None, None)
    built_s = time.perf_counter() - t0
    run = built.run(PRECISION, 600.0)
    total_s = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"size": size, "params": spec.params, "build_s": round(built_s, 1), "total_s": round(total_s, 1),
            "extra_host_bytes": peak_rss - base_rss, "planned_peak_bytes": run.peak_bytes}


def _rss_bytes_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one)))
        return []
    rows = []
    for size in CONFIGS:
        out = subprocess.run([sys.executable, "-m", "bench.dryrun_cost", "--one", size], capture_output=True,
                             text=True, check=True, timeout=900)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    lines = ["| shape | parameters | build (s) | build + step (s) | extra host memory | planned peak (fake CPU step) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| Llama {r['size']} | {r['params'] / 1e9:.2f}B | {r['build_s']} | {r['total_s']} | "
              f"{r['extra_host_bytes'] / 2**20:,.0f} MiB | {r['planned_peak_bytes'] / 1e9:,.1f} GB |" for r in rows]
    print("\n".join(lines) if args.markdown else json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
