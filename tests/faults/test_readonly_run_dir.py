"""A run directory nobody may write: the run trains to the end, serves metrics, and counts the run log's
failure once under probe="runlog". As root (who writes anywhere) the folder is made immutable
(``chattr +i``), otherwise read-only by its mode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.distributed.test_ddp import ROOT, SCRIPT
from tests.helpers.scrape import value


def make_read_only(path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o500)
        return
    chattr = shutil.which("chattr")
    made = chattr and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0
    if not made:
        pytest.skip("running as root on a file system without chattr +i: no folder is read-only to root")


def test_read_only_run_dir_is_counted_and_the_run_goes_on(tmp_path):
    readonly = tmp_path / "runs"
    readonly.mkdir()
    make_read_only(readonly)
    try:
        with pytest.raises(OSError):
            (readonly / "probe").mkdir()  # the fault is real before the run meets it
        env = {**os.environ, "LLMOPS_RUN_DIR": str(readonly), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--steps", "4"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(readonly)], capture_output=True)
        readonly.chmod(0o755)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "rank0.json").read_text())
    assert result["global_step"] == 4
    assert value(result["samples"], "llmops_monitor_errors_total", probe="runlog") == 1
    assert list(readonly.iterdir()) == []
    said = [line for line in proc.stderr.splitlines() if str(readonly) in line]
    assert len(said) == 1, proc.stderr[-3000:]  # logged once, naming the folder
