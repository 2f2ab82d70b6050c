"""Pure-math memory and GPU estimator (formulas.md); imports no torch."""

from llmops.estimate.document import document
from llmops.estimate.refined import refined
from llmops.estimate.result import COMPONENTS, Estimate
from llmops.estimate.solver import accumulate_for, max_batch, min_world_size
from llmops.spec.presets import PRESETS, Preset, get_preset
from llmops.spec.training import TrainingSpec, validate
from llmops.units import PRECISIONS, bytes_per_value, get_precision, parse_count, parse_size


def estimate(spec: TrainingSpec) -> dict[str, Estimate]:
    """Both models for one spec: ``{"document": ..., "refined": ...}``."""
    return {"document": document(spec), "refined": refined(spec)}


__all__ = [
    "COMPONENTS", "PRECISIONS", "PRESETS", "Estimate", "Preset", "TrainingSpec",
    "accumulate_for", "bytes_per_value", "document", "estimate", "get_precision",
    "get_preset", "max_batch", "min_world_size", "parse_count", "parse_size", "refined", "validate",
]
