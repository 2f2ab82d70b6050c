"""Before step 1: the predictions for the run, exported, logged and judged by the one verdict rule."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from llmops.estimate import Estimate, document, refined
from llmops.estimate.flops import model_flops_per_token
from llmops.estimate.verdict import NAMES, OOMRiskError, deciding
from llmops.estimate.whatif import what_if
from llmops.monitor.risk import warn_oom
from llmops.render.tables import estimate_table, to_text, whatif_table
from llmops.spec.live import Introspection
from llmops.telemetry.device_flops import matmul_dtype, peak_flops
from llmops.units import fmt_bytes, unit_for

if TYPE_CHECKING:
    from llmops.monitor.fit import Fit

log = logging.getLogger("llmops")


def preflight(fit: Fit, intro: Introspection, is_rank_zero: bool = True, extra: dict[str, Estimate] | None = None,
              flop_params: int | None = None) -> dict[str, Estimate]:
    """Predict, export and log; raise ``OOMRiskError`` when asked to and the deciding prediction does not fit.

    ``extra`` adds models made elsewhere (the dry run's ``"dryrun"``) to the table and the metrics;
    ``flop_params`` is the N of the FLOPs per token (``steps.flop_params``; default the spec's).
    """
    fit.intro = intro
    spec, missing = intro.spec, set(intro.missing)
    models: dict[str, Estimate] = {}
    if "precision" not in missing:
        models["document"] = document(spec)
        if not missing & {"strategy", "optimizer"}:
            models["refined"] = refined(spec)
    models.update(extra or {})
    fit.prediction = models
    if intro.missing and is_rank_zero:
        log.warning("llmops: could not infer %s from the run; set them with spec={%s}. Predictions that "
                    "need them are left out.", ", ".join(intro.missing),
                    ", ".join(f"{k!r}: ..." for k in intro.missing))
    _export(fit, spec.batch_size)
    with fit.guard("steps"):
        _set_flops(fit, intro, flop_params)
    name, best = deciding(models)
    if name is None or best is None:
        return models
    fit.preflight_text = _text(fit, name, best)
    if fit.runlog is not None:
        fit.runlog.record("preflight", text=fit.preflight_text, spec=asdict(spec), sources=dict(intro.sources),
                          models={k: asdict(v) for k, v in models.items()}, deciding=name)
    if is_rank_zero:
        log.info("%s", fit.preflight_text)
    if best.oom_risk:
        msg = _risk_message(fit, name, best)
        if fit.config.on_oom_risk == "raise":
            raise OOMRiskError(msg + " (on_oom_risk='raise': stopped before the first step)")
        if is_rank_zero:
            warn_oom(msg, rank_zero_only=True)
    return models


def _set_flops(fit: Fit, intro: Introspection, flop_params: int | None) -> None:
    """FLOPs per token from the architecture introspection read (N, L, h; s per batch; a mixture of
    experts' active parameters), and the device's peak: ``peak_flops=``, else the GPU table's for the
    run's matmul dtype (absent on the CPU)."""
    spec = intro.spec
    n = spec.active_params or flop_params or spec.params
    if n:
        layers, hidden = spec.layers, spec.hidden
        fit.steps.flops_per_token = lambda s: model_flops_per_token(n, layers, hidden, s)
    if fit.config.peak_flops is None and fit.nvml is not None:
        fit.steps.peak_flops = peak_flops(fit.nvml.name, matmul_dtype(
            fit.precision, torch.get_float32_matmul_precision()))


def _export(fit: Fit, batch_size: int | None) -> None:
    s = fit.state
    s.set("llmops_batch_size", batch_size)
    s.set("llmops_memory_safety_ratio", fit.config.safety)
    for model, est in fit.prediction.items():
        for component, value in est.components().items():
            s.set("llmops_memory_predicted_bytes", value, component=component, model=model)
        s.set("llmops_batch_size_max_safe", est.max_batch_size, model=model)
        s.set("llmops_batch_accumulate_predicted", est.accumulate, model=model)
        method = "rule_of_thumb" if model == "document" else "formula"
        s.set("llmops_gpus_predicted", est.gpus_training, method=method, phase="training")
        s.set("llmops_gpus_predicted", est.gpus_inference, method=method, phase="inference")
    best = deciding(fit.prediction)[1]
    if best is not None and best.oom_risk is not None:
        s.set("llmops_oom_risk", int(best.oom_risk), source="prediction")
        for source in ("measured", "trend"):
            if s.get("llmops_oom_risk", source=source) is None:
                s.set("llmops_oom_risk", 0, source=source)
    if fit.intro is not None:
        s.set("llmops_memory_budget_bytes", fit.intro.spec.gpu_memory)


def _text(fit: Fit, name: str, best: Estimate) -> str:
    spec = fit.intro.spec if fit.intro else None
    table = estimate_table(fit.prediction.values(), title="llmops preflight: predicted memory per device")
    lines = [f"run={fit.run} rank={fit.rank} b={spec.batch_size} s={spec.seq_len} "
             f"precision={spec.precision} strategy={spec.strategy} n={spec.world_size} "
             f"optimizer={spec.optimizer}" if spec else ""]
    if best.budget_bytes is None:
        lines.append("OOM check: no memory budget (no GPU found); pass memory_budget= to check")
    else:
        lines.append(f"budget {fmt_bytes(best.budget_bytes)} (safety {fit.config.safety} × "
                     f"{fmt_bytes(spec.gpu_memory if spec else None)}); largest safe micro-batch "
                     f"{best.max_batch_size}; gradient accumulation for the global batch "
                     f"{best.accumulate}; the verdict is {NAMES[name]}'s")
    if spec is not None and spec.unmodelled:
        lines.append(f"the refined model does not model {'; '.join(spec.unmodelled)}: its figure may be low"
                     + ("; the dry run decides" if name == "dryrun" else "; a dry run (dry_run=True) would decide"))
    extra: list[Any] = []
    if best.oom_risk and spec is not None:
        extra.append(whatif_table(what_if(spec)))
    return to_text(table, "\n".join(lines), *extra)


def _risk_message(fit: Fit, name: str, best: Estimate) -> str:
    spec = fit.intro.spec if fit.intro else None
    b = spec.batch_size if spec else None
    unit = unit_for(best.peak_bytes, best.budget_bytes)
    return (f"llmops: OOM risk — predicted peak {fmt_bytes(best.peak_bytes, unit)} per device ({NAMES[name]}) "
            f"exceeds the budget {fmt_bytes(best.budget_bytes, unit)} (safety {fit.config.safety}); largest safe "
            f"micro-batch {best.max_batch_size} (in use: {b})"
            + (f"; keep the global batch with accumulate_grad_batches={best.accumulate}" if best.accumulate else ""))
