"""Session-wide test settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _run_logs_in_tmp(tmp_path_factory):
    """Run logs of every fit in the tests (and their subprocesses) go to a temporary folder, not the repo."""
    old = os.environ.get("LLMOPS_RUN_DIR")
    os.environ["LLMOPS_RUN_DIR"] = str(tmp_path_factory.mktemp("llmops_runs"))
    yield
    if old is None:
        os.environ.pop("LLMOPS_RUN_DIR", None)
    else:
        os.environ["LLMOPS_RUN_DIR"] = old
