"""llmops: predicted-versus-actual memory and OOM risk for PyTorch Lightning runs.

``from llmops import LLMOpsMonitor`` gives the callback for the installed Lightning
(``lightning`` first, else ``pytorch_lightning``); ``llmops.lightning`` and
``llmops.pytorch_lightning`` name each explicitly. The estimator (``llmops.estimate``)
imports no torch.
"""

from __future__ import annotations

import logging
from typing import Any

from .estimate import TrainingSpec

__all__ = ["LLMOpsMonitor", "OOMRiskError", "OOMRiskWarning", "TrainingSpec"]

_log = logging.getLogger("llmops")
if not logging.getLogger().handlers and not _log.handlers:  # as Lightning does for its logger
    _log.setLevel(logging.INFO)
    _log.addHandler(logging.StreamHandler())
    _log.propagate = False


def __getattr__(name: str) -> Any:
    # Lazy, so `import llmops.estimate` (the CLI, planning) never imports torch or Lightning.
    if name == "LLMOpsMonitor":
        try:
            from .lightning import LLMOpsMonitor
        except ImportError:
            from .pytorch_lightning import LLMOpsMonitor  # type: ignore[assignment]
        return LLMOpsMonitor
    if name in ("OOMRiskError", "OOMRiskWarning"):
        from . import guard
        return getattr(guard, name)
    raise AttributeError(f"module 'llmops' has no attribute {name!r}")
