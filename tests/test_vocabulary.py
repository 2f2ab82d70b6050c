"""One word for one thing: every probe name the monitor counts errors under is in ``vocabulary.PROBES``, and the
other vocabularies are used where their names are."""

from __future__ import annotations

import re
from pathlib import Path

from llmops import vocabulary
from llmops.metrics.catalogue import LABELS
from llmops.spec.choices import RECOMPUTE

SOURCE = Path(__file__).resolve().parents[1] / "llmops"
GUARDED = re.compile(r"guard(?:\.record)?\(\s*\"([A-Za-z_]+)\"")


def test_every_guarded_probe_is_in_the_vocabulary_and_every_entry_is_used():
    used = {name for path in SOURCE.rglob("*.py") for name in GUARDED.findall(path.read_text())}
    assert used, "the pattern found no guard call: did the Guard's spelling change?"
    assert used <= set(vocabulary.PROBES), sorted(used - set(vocabulary.PROBES))
    assert set(vocabulary.PROBES) <= used, sorted(set(vocabulary.PROBES) - used)


def test_the_metric_docs_list_the_probe_and_phase_names():
    assert all(f"`{p}`" in LABELS["probe"] for p in vocabulary.PROBES)
    assert all(f"`{p}`" in LABELS["phase"] for p in vocabulary.STEP_PHASES)


def test_the_spec_takes_its_recompute_modes_from_the_vocabulary():
    assert RECOMPUTE is vocabulary.RECOMPUTE
