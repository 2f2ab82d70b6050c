"""What an estimate says: bytes per device by component at the peak moment, the verdict's inputs, and the GPU
counts (``Estimate``), for every model alike: the article's formulas, the refined model and the dry run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmops import vocabulary

COMPONENTS = (*vocabulary.COMPONENTS, vocabulary.PEAK)  # the component label of llmops_memory_predicted_bytes


@dataclass(frozen=True)
class Estimate:
    """One model's prediction for a spec; bytes per device, ``None`` where an input is missing.

    The components are what is alive at the peak moment (``peak_phase``: forward, backward or the
    optimizer step) and sum to ``peak_bytes``; ``grads_bytes`` is 0 when the peak falls where
    ``zero_grad`` has freed them and backward has not made them yet.
    """

    model: str  # "document" or "refined"
    inference_bytes: int | None = None
    params_bytes: int | None = None
    grads_bytes: int | None = None
    optimizer_state_bytes: int | None = None
    activation_bytes: int | None = None
    temporary_bytes: int | None = None
    overhead_bytes: int | None = None
    peak_bytes: int | None = None
    budget_bytes: int | None = None  # safety × gpu_memory
    peak_phase: str | None = None  # forward, backward or optimizer; None where one moment is all the model has
    gpus_training: int | None = None
    gpus_inference: int | None = None
    max_batch_size: int | None = None
    accumulate: int | None = None  # micro-batches per optimizer step that keep global_batch at b_max
    oom_risk: bool | None = None
    missing: tuple[str, ...] = ()  # what could not be computed, and why
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_state_bytes(self) -> int | None:
        parts = (self.params_bytes, self.grads_bytes, self.optimizer_state_bytes)
        return None if None in parts else sum(parts)  # type: ignore[arg-type]

    def components(self) -> dict[str, int | None]:
        """Bytes by the ``component`` label of ``llmops_memory_predicted_bytes``."""
        return {
            "params": self.params_bytes, "grads": self.grads_bytes,
            "optimizer_states": self.optimizer_state_bytes, "activations": self.activation_bytes,
            "temporaries": self.temporary_bytes, "overhead": self.overhead_bytes, "peak": self.peak_bytes,
        }

    def to_json(self) -> dict[str, Any]:
        """The keys of ``llmops estimate --json`` (bytes as integers)."""
        out: dict[str, Any] = {
            "inference_bytes": self.inference_bytes,
            "model_state_bytes": self.model_state_bytes,
            "activation_bytes": self.activation_bytes,
            "peak_bytes": self.peak_bytes,
            "gpus_training": self.gpus_training,
            "gpus_inference": self.gpus_inference,
            "max_batch_size": self.max_batch_size,
            "oom_risk": self.oom_risk,
        }
        if self.model != "document":
            out.update(components=self.components(), accumulate=self.accumulate,
                       budget_bytes=self.budget_bytes, peak_phase=self.peak_phase, missing=list(self.missing),
                       notes=list(self.notes), **self.extra)
        return out
