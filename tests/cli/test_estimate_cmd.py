"""The CLI as a person runs it: a subprocess, its stdout, stderr and exit code."""

import json
import subprocess
import sys

import pytest

from tests.helpers.cli import llmops

DOC_KEYS = {"inference_bytes", "model_state_bytes", "activation_bytes", "peak_bytes",
            "gpus_training", "gpus_inference", "max_batch_size", "oom_risk"}


def test_json_schema():
    r = llmops("estimate", "--params", "7B", "--layers", "32", "--heads", "32", "--hidden", "4096",
               "--seq-len", "2048", "--batch-size", "1", "--gpu-memory", "24GB", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"inputs", "document", "refined"}
    assert set(out["document"]) == DOC_KEYS
    assert DOC_KEYS <= set(out["refined"])
    doc = out["document"]
    assert doc["inference_bytes"] == 14 * 10**9 and doc["model_state_bytes"] == 112 * 10**9
    assert doc["gpus_training"] == 7 and doc["gpus_inference"] == 1
    L, s, h, a = 32, 2048, 4096, 32
    assert doc["activation_bytes"] == L * s * h * (34 + 5 * a * s // h)
    assert doc["peak_bytes"] == doc["model_state_bytes"] + doc["activation_bytes"]
    assert doc["oom_risk"] is True and doc["max_batch_size"] == 0
    assert all(isinstance(doc[k], int) for k in ("inference_bytes", "peak_bytes"))


def test_json_nulls_where_inputs_missing():
    out = json.loads(llmops("estimate", "--params", "7e9", "--json").stdout)
    assert out["document"]["activation_bytes"] is None and out["document"]["oom_risk"] is None
    assert out["document"]["model_state_bytes"] == 112 * 10**9


def test_human_table_shows_both_models():
    r = llmops("estimate", "--model", "llama-2-7b", "--seq-len", "4096", "--batch-size", "1",
               "--gpu-memory", "80GB")
    assert r.returncode == 0, r.stderr
    for text in ("document (GB)", "refined (GB)", "peak per device", "OOM risk", "largest safe micro-batch",
                 "13.48", "6,738,415,616"):
        assert text in r.stdout
    assert r.stderr == ""


def test_table_says_what_it_could_not_compute():
    r = llmops("estimate", "--params", "7e9")
    assert "not computed" in r.stdout and "layers" in r.stdout


def test_a_small_model_reads_in_mb():
    r = llmops("estimate", "--params", "1e6", "--layers", "2", "--heads", "2", "--hidden", "64", "--seq-len", "64",
               "--batch-size", "4", "--gpu-memory", "1GB", "--device", "cpu")
    assert "document (MB)" in r.stdout and "900.00" in r.stdout  # the budget, 0.9 × 1 GB


def test_gib_flag():
    r = llmops("estimate", "--params", "7e9", "--gib")
    assert "document (GiB)" in r.stdout and "13.04" in r.stdout  # 14e9 / 2**30


@pytest.mark.parametrize("args,flag", [
    (["--params", "-5"], "--params"), (["--params", "0"], "--params"), (["--params", "lots"], "--params"),
    (["--gpu-memory", "abc"], "--gpu-memory"), (["--gpu-memory", "-1GB"], "--gpu-memory"),
    (["--layers", "0"], "--layers"), (["--seq-len", "x"], "--seq-len"),
    (["--precision", "fp8"], "--precision"), (["--model", "lama-2-7b"], "--model"),
    (["--heads", "7", "--hidden", "64"], "--heads"), (["--safety", "0"], "--safety"),
    (["--safety", "1.01"], "--safety"), (["--strategy", "zero9"], "--strategy"),
    (["--overhead", "-1"], "--overhead")])
def test_bad_input_one_line_exit_2(args, flag):
    r = llmops("estimate", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in r.stderr
    assert r.stdout == ""


FULL = ["--params", "7B", "--layers", "32", "--heads", "32", "--hidden", "4096", "--seq-len", "2048",
        "--batch-size", "1", "--gpu-memory", "80GB"]


@pytest.mark.parametrize("flag,value,says", [
    ("--params", "1,5B", "commas only separate thousands"), ("--params", "1,5,0B", "commas only separate thousands"),
    ("--params", "1e400", "allowed: 1 to 1e18"), ("--gpu-memory", "1e400", "allowed: 1 to 1e18 bytes"),
    ("--overhead", "1e400", "allowed: 0 to 1e18 bytes"), ("--layers", "9" * 320, "at most 1e9"),
    ("--seq-len", str(10**9 + 1), "at most 1e9"), ("--world-size", str(10**10), "from 1 to 1e9"),
    ("--batch-size", "1" + "0" * 30, "at most 1e9")])
def test_values_past_the_allowed_range_name_the_flag_the_value_and_the_range(flag, value, says):
    r = llmops("estimate", *FULL, flag, value)  # a full spec: the figures are computed and formatted
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and value[:20] in lines[0] and says in lines[0]


def test_the_largest_allowed_values_compute_without_overflow():
    top = str(10**9)
    r = llmops("estimate", "--params", "1e18", "--layers", top, "--heads", top, "--hidden", top, "--seq-len", top,
               "--batch-size", top, "--world-size", top, "--gpu-memory", "1e18B", "--overhead", "1e18B", "--what-if")
    assert r.returncode == 0 and "peak per device" in r.stdout, r.stderr


def test_params_with_thousands_separators():
    out = json.loads(llmops("estimate", "--params", "7,000,000,000", "--json").stdout)
    assert out["inputs"]["params"] == 7 * 10**9 and out["document"]["model_state_bytes"] == 112 * 10**9


def test_overhead_zero_is_allowed():
    r = llmops("estimate", *FULL, "--overhead", "0", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["inputs"]["overhead_bytes"] == 0 and out["refined"]["components"]["overhead"] == 0


def test_unknown_preset_suggests_closest():
    r = llmops("estimate", "--model", "lama-2-7b")
    assert "did you mean llama-2-7b" in r.stderr


def test_models_lists_presets():
    r = llmops("models", "--json")
    names = json.loads(r.stdout)
    assert {"gpt2-small", "gpt-3-175b", "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3-8b",
            "llama-3-70b", "mistral-7b", "grok-1"} <= set(names)


def test_what_if_lists_a_change_that_fits():
    r = llmops("estimate", "--model", "llama-2-7b", "--seq-len", "4096", "--batch-size", "4", "--gpu-memory",
               "80GB", "--world-size", "8", "--precision", "bf16-mixed", "--what-if", "--json")
    rows = json.loads(r.stdout)["what_if"]
    assert any(row["fits"] for row in rows) and json.loads(r.stdout)["refined"]["oom_risk"] is True
    table = llmops("estimate", "--model", "llama-2-7b", "--seq-len", "4096", "--batch-size", "4", "--gpu-memory",
                   "80GB", "--world-size", "8", "--what-if").stdout
    assert "what would fit" in table and "full checkpointing" in table


@pytest.mark.parametrize("source,says", [
    ("def make(:\n", "SyntaxError"),
    ("raise RuntimeError('broken\\nat import')\n", "RuntimeError: broken at import"),
    ("import sys\nsys.exit(4)\n", "SystemExit"),
    ("import sys\ndef make():\n    sys.exit(3)\n", "SystemExit: 3"),
    ("def make():\n    raise ValueError('two\\nlines')\n", "ValueError: two lines"),
])
def test_a_broken_dry_run_module_is_one_line_and_exit_2(tmp_path, source, says):
    (tmp_path / "usermod.py").write_text(source)
    code = "import sys; from llmops.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "estimate", "--dry-run", "usermod:make"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--dry-run" in lines[0] and "usermod" in lines[0] and says in lines[0]


def test_document_model_states_are_per_device_under_sharding():
    def states(*args):
        out = llmops("estimate", "--params", "7e9", "--world-size", "8", *args, "--json").stdout
        return json.loads(out)["document"]

    assert states()["model_state_bytes"] == 112 * 10**9  # ddp, the default, replicates them
    assert states("--strategy", "fsdp")["model_state_bytes"] == 14 * 10**9
    assert states("--strategy", "zero1")["model_state_bytes"] == (2 + 2) * 7 * 10**9 + 12 * 7 * 10**9 // 8


@pytest.mark.parametrize("memory,expected", [("24GB", 3), ("80GB", 0)])
def test_fail_on_oom_gates_on_the_verdict(memory, expected):
    """A 7B full fine-tune with AdamW needs ~16 bytes a parameter: OOM on 24 GB, fits on 80 GB under zero3
    over 8 ranks; exit 3 only for the OOM, and the table is printed either way."""
    args = ["estimate", "--model", "llama-2-7b", "--batch-size", "1", "--seq-len", "1024", "--gpu-memory", memory]
    if expected == 0:
        args += ["--strategy", "zero3", "--world-size", "8"]
    r = llmops(*args, "--fail-on-oom")
    assert r.returncode == expected, r.stdout[-2000:] + r.stderr
    assert "OOM risk" in r.stdout
    plain = llmops(*args)  # without the flag the verdict never changes the exit code
    assert plain.returncode == 0


def test_model_and_precision_complete_in_the_shell():
    import os
    import subprocess

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_LLMOPS_COMPLETE": "bash_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        out = subprocess.run([sys.executable, "-c", "from llmops.cli import main; main()"], env=env,
                             capture_output=True, text=True, timeout=60).stdout
        return [line.split(",", 1)[1] for line in out.splitlines()]

    assert "llama-2-7b" in complete("llmops estimate --model llama") and "gpt2" not in complete(
        "llmops estimate --model llama")
    assert complete("llmops estimate --precision bf16") == ["bf16", "bf16-mixed", "bf16-true", "bf16-fsdp"]
