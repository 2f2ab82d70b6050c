"""Just enough PromQL reading to check dashboards and rules: metric names, template variables.

No Grafana or Prometheus import: tests and the ``llmops dashboards`` command use it on JSON/YAML.
"""

from __future__ import annotations

import re

# Function names, aggregation operators and keywords: identifiers that are not metric names.
KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset", "inf", "nan", "atan2",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(\s*\()?")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Every metric (or recording-rule) name that ``expr`` selects, as written (``_bucket`` kept)."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("", text)  # label matchers
    text = _RANGE.sub("", text)  # [5m], [1h:1m]
    text = _LABEL_LIST.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def base_metric(name: str, histograms: set[str]) -> str:
    """``x_bucket``/``x_sum``/``x_count`` → ``x`` when ``x`` is a histogram in ``histograms``."""
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in histograms:
            return name.removesuffix(suffix)
    return name


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace Grafana's ``$name`` and ``${name}`` with ``values[name]``; unknown variables raise KeyError."""
    def one(m: re.Match[str]) -> str:
        return values[m.group(1) or m.group(2)]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", one, expr)


def label_values(query: str) -> tuple[str, str]:
    """``label_values(expr, label)`` → ``(expr, label)``, as a Grafana query variable writes it."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.S)
    if not m:
        raise ValueError(f"not a label_values(expr, label) query: {query!r}")
    return m.group(1).strip(), m.group(2)
