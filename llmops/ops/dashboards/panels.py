"""Panel builders shared by the dashboards: one Prometheus datasource variable, a unit on every panel.

Units (Grafana unit ids): bytes are decimal (``decbytes``), as the CLI prints GB; seconds ``s``;
ratios 0–1 ``percentunit``; bandwidth ``Bps``; counts ``none``.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.common import TableAutoCellOptions
from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = common.DataSourceRef(type_val="prometheus", uid="${datasource}")

BYTES, SECONDS, RATIO, BYTES_PER_SECOND, COUNT = "decbytes", "s", "percentunit", "Bps", "none"
WATTS, JOULES = "watt", "joule"


def query(expr: str, legend: str = "", *, instant: bool = False, table_format: bool = False) -> prometheus.Dataquery:
    """One PromQL target; ``legend`` is Grafana's legend format (``{{rank}}``)."""
    q = prometheus.Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    if table_format:
        q = q.format(PromQueryFormat.TABLE)
    return q


def _with_targets(panel: Any, targets: tuple[prometheus.Dataquery, ...]) -> Any:
    """Add the targets with stable refIds (A, B, ...) so regenerated JSON never differs."""
    for i, t in enumerate(targets):
        panel = panel.with_target(t.ref_id(chr(ord("A") + i)))
    return panel


def _legend() -> common_builders.VizLegendOptions:
    return (common_builders.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"]))


def _tooltip() -> common_builders.VizTooltipOptions:
    return (common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)  # type: ignore[arg-type]  # StrEnum, seen from py3.10
            .sort(common.SortOrder.DESCENDING))


def graph(title: str, unit: str, description: str, *targets: prometheus.Dataquery,
          width: int = 12, height: int = 8, min_value: float | None = None,
          empty: str | None = None, stacked: bool = False) -> timeseries.Panel:
    """A time series panel; ``empty`` is what it says instead of "No data" (why it can be empty); ``stacked``
    stacks the series (shares that add up to the whole)."""
    p = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
         .span(width).height(height).legend(_legend()).tooltip(_tooltip()).fill_opacity(60 if stacked else 5))
    if stacked:
        p = p.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))  # type: ignore[arg-type]  # StrEnum, seen from py3.10
    if min_value is not None:
        p = p.min(min_value)
    if empty is not None:
        p = p.no_value(empty)
    return _with_targets(p, targets)


def states(title: str, description: str, mapping: dict[str, tuple[str, str]], *targets: prometheus.Dataquery,
           width: int = 12, height: int = 8) -> statetimeline.Panel:
    """A state timeline; ``mapping`` is value → (text, color)."""
    options = {value: ValueMappingResult(text=text, color=color, index=i)
               for i, (value, (text, color)) in enumerate(mapping.items())}
    p = (statetimeline.Panel().title(title).description(description).unit(COUNT).datasource(DATASOURCE)
         .span(width).height(height).mappings([ValueMap(options=options)]))
    return _with_targets(p, targets)


def info_table(title: str, description: str, *targets: prometheus.Dataquery,
               width: int = 24, height: int = 5) -> table.Panel:
    p = (table.Panel().title(title).description(description).unit(COUNT).datasource(DATASOURCE)
         .span(width).height(height).cell_options(TableAutoCellOptions()))
    return _with_targets(p, targets)


def label_variable(name: str, label: str, expr: str, *, all_ranks: bool) -> dashboard.QueryVariable:
    """A variable filled from ``label_values(expr, name)``; ``all_ranks`` adds "All" (``.*``) and multi-select."""
    definition = f"label_values({expr}, {name})"
    v = (dashboard.QueryVariable(name).label(label).datasource(DATASOURCE).query(definition)
         .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    if all_ranks:
        v = v.multi(True).include_all(True).all_value(".*")
    return v
