"""LoRA on fused mixtures under each PEFT release the suite installs: what the live reader sees and what the plan
counts equal PEFT's own trainable count. ``make venv`` installs the current release into the environment and the
previous one beside it (``$VENV/peft-<version>``), so both are run on every machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parents[2]
BESIDE = sorted(Path(sys.prefix).glob("peft-*"))  # earlier releases installed with --target


def _run(path: Path | None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(path) if path else None, str(ROOT)]))}
    out = subprocess.run([sys.executable, "-m", "tests.estimate.peft_release"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2])


@pytest.mark.parametrize("path", [None, *BESIDE], ids=lambda p: "installed" if p is None else p.name)
def test_all_linear_on_fused_mixtures_counts_what_this_peft_release_adapts(path):
    """PEFT 0.22 adapts Qwen2-MoE's fused expert stacks and router under all-linear; 0.21 leaves both alone (its
    v4 → v5 conversion knows Mixtral only) and adapts the shared expert and its gate. Mixtral is adapted by both.
    The reading (``lora_experts``) follows the release, and the plan from it equals PEFT's count."""
    got = _run(path)
    if path is not None:
        assert path.name == f"peft-{got['peft']}"  # the release beside the environment is the one that ran
    assert got["qwen2_moe"]["lora_experts"] is (_version(got["peft"]) >= (0, 22))
    assert got["mixtral"]["lora_experts"] is True
    for name in ("qwen2_moe", "mixtral"):
        row = got[name]
        assert row["planned_from_reading"] == row["planned_all_linear"] == row["peft_trainable"], (got["peft"], name)


def test_the_suite_runs_two_peft_releases():
    """A previous release is installed beside the current one (make venv): one release alone would let a
    behaviour change between them pass unseen, as it once did."""
    assert BESIDE, f"no earlier PEFT release beside {sys.prefix}: run `make venv`"
    assert {_run(p)["peft"] for p in BESIDE} != {_run(None)["peft"]}


def test_planning_says_which_peft_behaviour_it_assumes_and_the_flag_picks_the_other(tmp_path):
    """``llmops estimate`` cannot know the user's PEFT: all-linear on fused experts is planned as PEFT 0.22 runs
    it, said once, and ``--no-lora-experts`` plans PEFT 0.21's reading of Qwen2-MoE (each count is the one the
    release test above checks against PEFT)."""
    from tests.estimate.peft_release import MIXTURES, RANK
    from tests.helpers.cli import llmops

    config = tmp_path / "config.json"
    config.write_text(json.dumps(MIXTURES["qwen2_moe"]))
    args = ("estimate", "--config", str(config), "--lora-rank", str(RANK), "--lora-targets", "all-linear",
            "--seq-len", "64", "--batch-size", "1", "--gpu-memory", "24GB")
    counts = {}
    for flag in ((), ("--no-lora-experts",), ("--lora-experts",)):
        shown = llmops(*args, *flag)
        as_json = llmops(*args, *flag, "--json")
        assert shown.returncode == as_json.returncode == 0, shown.stderr + as_json.stderr
        said = " ".join(shown.stdout.split()).count("as PEFT 0.22 does; PEFT 0.21 leaves Qwen2-MoE's alone")
        assert said == (0 if flag else 1), shown.stdout
        counts[flag] = json.loads(as_json.stdout)["inputs"]["trainable_params"]
    assert counts[()] == counts[("--lora-experts",)] == 82000  # PEFT 0.22's count of this model
    assert counts[("--no-lora-experts",)] == 34832  # PEFT 0.21's
