"""The documentation holds together: docs/metrics.md is generated, every link and path it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmops.metrics.catalogue import LABELS, METRICS
from llmops.metrics.doc import render

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "runbooks.md"]
# a path in backticks under one of the repository's own folders, e.g. `deploy/prometheus/scrape/`
REPO_PATH = re.compile(r"`((?:deploy|docs|llmops|bench|tests|examples|scripts)/[^`\s*<>{}]*)`")


def anchors(page: Path) -> set[str]:
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}


def test_metrics_md_is_generated_from_the_metric_list():
    assert (ROOT / "docs/metrics.md").read_text() == render(), \
        "docs/metrics.md is out of date: python -m llmops.metrics.doc > docs/metrics.md"
    text = render()
    assert all(f"`{m.name}" in text for m in METRICS)
    assert {label for m in METRICS for label in m.labels} <= set(LABELS)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    links = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # http(s), mailto: not checked offline
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists() and path.is_relative_to(ROOT), f"{page.name}: {link} does not exist in the repository"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page.name}: {link}: no heading #{anchor} in {path.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_exists(page):
    missing = [p for p in REPO_PATH.findall(page.read_text()) if not (ROOT / p.rstrip(".,;:")).exists()]
    assert not missing, f"{page.name} names paths that do not exist: {missing}"
