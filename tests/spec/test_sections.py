"""The spec's sections: every field is declared by one section, and each section's check names its own field."""

from __future__ import annotations

from dataclasses import fields

import pytest

from llmops.spec.training import SECTIONS, TrainingSpec, section_fields, validate


def test_every_field_belongs_to_exactly_one_section_in_order():
    declared = [name for section in SECTIONS for name in section_fields(section)]
    assert declared == [f.name for f in fields(TrainingSpec)]  # one section each, read in SECTIONS' order
    assert len(set(declared)) == len(declared)


@pytest.mark.parametrize("section,field,value", [
    ("Model", "heads", 0), ("Kernels", "attention", "flash"), ("Batch", "seq_len", -1),
    ("Parallelism", "strategy", "zero4"), ("Numerics", "optimizer", "adamx"), ("Adapters", "lora_rank", 0),
    ("Quantisation", "quantize", "nf3"), ("Loop", "recompute", "half"), ("Device", "safety", 1.5),
], ids=lambda v: str(v))
def test_each_sections_check_names_its_field(section, field, value):
    assert field in section_fields(next(s for s in SECTIONS if s.__name__ == section))
    with pytest.raises(ValueError, match=rf"^{field}={value!r} is not allowed; "):
        validate(TrainingSpec(**{field: value}))
