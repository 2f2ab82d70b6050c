"""llmops: predicted-versus-actual memory and OOM risk for PyTorch Lightning runs.

``from llmops import LLMOpsMonitor`` gives the callback for the installed Lightning
(``lightning`` first, else ``pytorch_lightning``); ``llmops.lightning`` and
``llmops.pytorch_lightning`` name each explicitly. The estimator (``llmops.estimate``)
imports no torch. The distribution is ``llmops-lightning`` (``pip install llmops-lightning``); the
name ``llmops`` on the package index is someone else's.
"""

from __future__ import annotations

import logging
from typing import Any

from llmops.estimate import TrainingSpec

__all__ = ["DISTRIBUTION", "LLMOpsMonitor", "OOMRiskError", "OOMRiskWarning", "TrainingSpec", "version"]

DISTRIBUTION = "llmops-lightning"  # the name on the package index; the import name stays llmops


def version(dist: str = DISTRIBUTION) -> str:
    """The installed version of ``dist`` (llmops by default), or ``"unknown"`` where it is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(dist)
    except PackageNotFoundError:
        return "unknown"


_log = logging.getLogger("llmops")
if not logging.getLogger().handlers and not _log.handlers:  # as Lightning does for its logger
    _log.setLevel(logging.INFO)
    _log.addHandler(logging.StreamHandler())
    _log.propagate = False


def __getattr__(name: str) -> Any:
    # Lazy, so `import llmops.estimate` (the CLI, planning) never imports torch or Lightning.
    if name == "LLMOpsMonitor":
        try:
            from llmops.lightning import LLMOpsMonitor
        except ImportError:
            from llmops.pytorch_lightning import LLMOpsMonitor  # type: ignore[assignment]
        return LLMOpsMonitor
    if name in ("OOMRiskError", "OOMRiskWarning"):
        from llmops.estimate import verdict
        return getattr(verdict, name)
    raise AttributeError(f"module 'llmops' has no attribute {name!r}")
