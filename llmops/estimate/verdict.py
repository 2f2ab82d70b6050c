"""The one rule for which prediction decides the OOM verdict: the most exact one available.

The dry run measured the user's own step on fake tensors, so where it ran it decides; else the refined model (what
a real run holds); else the article's formulas (formulas.md). The CLI, the preflight, the metrics, the report and
the OOM post-mortem all ask ``deciding`` and say which model it named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")
MOST_EXACT_FIRST = ("dryrun", "refined", "document")
NAMES = {"dryrun": "the dry run", "refined": "the refined model", "document": "the article's formulas"}


def deciding(models: Mapping[str, T]) -> tuple[str, T] | tuple[None, None]:
    """``(name, prediction)`` of the most exact prediction in ``models`` (``Estimate`` objects or their JSON),
    or ``(None, None)`` where there is none."""
    for name in MOST_EXACT_FIRST:
        if models.get(name):
            return name, models[name]
    return None, None


class OOMRiskError(RuntimeError):
    """Raised before the first step when ``on_oom_risk="raise"`` and the prediction does not fit."""


class OOMRiskWarning(UserWarning):
    """The run may not fit: ``warnings`` filters, ``-W error`` and pytest's filters see it."""
