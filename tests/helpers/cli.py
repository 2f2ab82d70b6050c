"""Running the ``llmops`` command as a person does: a fresh process, its exit code and its stderr."""

from __future__ import annotations

import subprocess
import sys


def llmops(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    code = "import sys; from llmops.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def one_line_exit_2(r: subprocess.CompletedProcess, *says: str) -> None:
    """Exit code 2 and one line on stderr holding each of ``says``; never a traceback."""
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and all(s in lines[0] for s in says), lines
