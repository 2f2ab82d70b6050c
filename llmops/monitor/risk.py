"""The OOM risk said to the user: logged, and raised as an ``OOMRiskWarning`` that warnings filters can stop on."""

from __future__ import annotations

import logging
import warnings

from llmops.estimate.verdict import OOMRiskWarning

log = logging.getLogger("llmops")


def warn_oom(message: str, rank_zero_only: bool) -> None:
    """Log an OOM risk and raise it as an ``OOMRiskWarning``: through Lightning's rank-zero warning for
    what every rank predicts alike, on any rank for what one rank measured."""
    log.warning(message)
    if rank_zero_only:
        from lightning_utilities.core.rank_zero import rank_zero_warn

        rank_zero_warn(message, category=OOMRiskWarning, stacklevel=4)
    else:
        warnings.warn(message, OOMRiskWarning, stacklevel=4)
