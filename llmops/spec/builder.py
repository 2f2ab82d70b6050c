"""The one way a ``TrainingSpec`` is built: sources layered in order (a preset, a Hugging Face config, a framework's
code, a live module, the trainer, the batch, flags), later over earlier, and where each value came from kept."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from llmops.spec.training import TrainingSpec


def explicit(spec: TrainingSpec) -> dict[str, Any]:
    """The fields of ``spec`` that differ from ``TrainingSpec``'s defaults: what a spec object says on purpose (a
    dataclass cannot tell a default passed on purpose from one left alone; a dict of fields can)."""
    defaults = TrainingSpec()
    return {k: v for k, v in vars(spec).items() if v != getattr(defaults, k)}


class SpecBuilder:
    """Fields and their sources, layered: ``layer`` sets what a source knows (``None`` is "not known" and sets
    nothing), ``build`` makes the spec. ``sources`` maps each field set to the source that set it last."""

    def __init__(self, start: TrainingSpec | None = None, source: str = "default") -> None:
        self.fields: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        if start is not None:
            self.layer(source, explicit(start))

    def layer(self, source: str, values: Mapping[str, Any], keep: Iterable[str] = ()) -> list[str]:
        """Set ``values`` from ``source``, except the fields in ``keep`` (set by a source that wins over this
        one); returns the fields set, sorted."""
        kept = set(keep)
        set_now = {k: v for k, v in values.items() if v is not None and k not in kept}
        self.fields.update(set_now)
        self.sources.update(dict.fromkeys(set_now, source))
        return sorted(set_now)

    def note(self, field: str, source: str) -> None:
        """Say where a field came from when a source derived it from others (a LoRA base's parameter count)."""
        self.sources[field] = source

    def build(self) -> TrainingSpec:
        """The spec: ``TrainingSpec``'s defaults under every layer (checked by the caller: ``validate_input``)."""
        return TrainingSpec(**self.fields)
