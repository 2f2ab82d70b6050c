"""Every example runs on the CPU, with few steps, as a user runs it: ``python examples/NAME.py``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(tmp_path: Path, name: str, *args: str, timeout: float = 240) -> str:
    out = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def test_every_example_has_a_test():
    tested = {"minimal.py", "ddp.py", "hf_config.py", "oom_verdict.py", "plan.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_minimal(tmp_path):
    out = run(tmp_path, "minimal.py", "--steps", "3", "--port", "0")
    assert "metrics were served at http://127.0.0.1:" in out and "llmops preflight" in out
    marked = re.findall(r"#\s*([1-5])\b", (EXAMPLES / "minimal.py").read_text())
    assert marked == ["1", "2", "3", "4", "5"]  # the five lines a user adds


def test_ddp_two_cpu_processes(tmp_path):
    out = run(tmp_path, "ddp.py", "--steps", "3", "--port", "0")
    assert "rank 0: served" in out and "rank 1: served" in out and "world_size=2 strategy=ddp" in out


def test_hf_style_config(tmp_path):
    out = run(tmp_path, "hf_config.py", "--steps", "2", "--port", "0")
    assert "layers =     3  (from HFStyleLM.config)" in out and "ffn_hidden =   256" in out


def test_oom_verdict_walkthrough(tmp_path):
    out = run(tmp_path, "oom_verdict.py", "--steps", "2", "--port", "0")
    assert "stopped before step 1: llmops: OOM risk" in out
    safe = re.search(r"largest safe micro-batch (\d+):", out)
    assert safe and 1 <= int(safe.group(1)) < 64, out  # smaller than the 64 that did not fit
    assert "trained 2 optimizer steps" in out and "OOM risk False" in out  # and it ran, measured within budget


@pytest.mark.parametrize("module", ["torch", "lightning"])
def test_plan_needs_no_torch(tmp_path, module):
    out = run(tmp_path, "plan.py")
    assert "zero3: peak" in out and "OOM risk False" in out
    probe = subprocess.run([sys.executable, "-c", f"import runpy, sys; runpy.run_path({str(EXAMPLES / 'plan.py')!r});"
                            f" sys.exit({module!r} in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, f"plan.py imported {module}"
