"""``llmops estimate`` and ``llmops models``: planning without a training run."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from llmops.cli.params import Count, Name, PositiveInt, Seconds, Size, UnitFraction
from llmops.estimate import PRESETS, TrainingSpec, document, get_preset, refined
from llmops.estimate.lora import LORA_FIELDS, lora_experts_note, parse_targets, with_lora
from llmops.estimate.verdict import NAMES, deciding
from llmops.estimate.whatif import what_if
from llmops.render.tables import estimate_table, inputs_table, whatif_table
from llmops.spec.builder import SpecBuilder
from llmops.spec.choices import (
    ATTENTION,
    DEVICES,
    EXPERTS_IMPLEMENTATIONS,
    LORA_LAYOUTS,
    OPTIMIZER_STATES,
    QUANTIZE,
    QUANTIZED_FROM,
    RECOMPUTE,
    STRATEGIES,
)
from llmops.spec.hf_config import FRAMEWORKS, read_config, spec_fields
from llmops.spec.presets import MODEL_ALIASES
from llmops.spec.training import validate_input
from llmops.units import DOCUMENT_PRECISIONS, PRECISION_ALIASES, PRECISIONS, fmt_bytes

# flag name → TrainingSpec field
FIELDS = {
    "params": "params", "trainable_params": "trainable_params", "layers": "layers",
    "heads": "heads", "kv_heads": "kv_heads", "hidden": "hidden", "ffn_hidden": "ffn_hidden",
    "seq_len": "seq_len", "batch_size": "batch_size", "global_batch": "global_batch",
    "vocab": "vocab", "precision": "precision", "optimizer": "optimizer",
    "gpu_memory": "gpu_memory", "safety": "safety", "world_size": "world_size",
    "strategy": "strategy", "tensor_parallel": "tensor_parallel", "attention": "attention",
    "recompute": "recompute", "dropout": "dropout", "device": "device", "overhead": "overhead_bytes",
    "quantize": "quantize", "double_quant": "double_quant", "quantize_head": "quantize_head",
    "quantized_from": "quantized_from",
    "fused_experts": "fused_experts", "lora_experts": "lora_experts",
    "experts_implementation": "experts_implementation", "lora_layout": "lora_layout",
}
FLAGS = {field: "--" + flag.replace("_", "-") for flag, field in FIELDS.items()}
EXIT_OOM = 3  # --fail-on-oom: the verdict is OOM (2 is bad input, as click's usage errors)
PRECISION_CHOICES = list(DOCUMENT_PRECISIONS) + [p for p in PRECISIONS if p not in DOCUMENT_PRECISIONS]


def _opt(*decls: str, **kw: Any) -> Any:
    return click.option(*decls, default=None, show_default=False, **kw)


@click.command()
@_opt("--model", type=Name(list(PRESETS), MODEL_ALIASES), help="A preset (see `llmops models`).")
@_opt("--config", "config_path", type=click.Path(dir_okay=False), metavar="CONFIG.JSON",
      help="A local Hugging Face config.json: the exact architecture, read without the hub.")
@_opt("--framework", type=Name(list(FRAMEWORKS)),
      help="Whose code runs the model: hf (transformers and PEFT, the default) or litgpt (LitGPT's model, LoRA and "
           "finetune scripts: fused qkv, K and V repeated, SDPA, no KV cache, the loss in the logits' dtype, one "
           "LoRAQKVLinear, the last logits held into the next forward).")
@_opt("--params", type=Count(), help="N, parameters: 7e9, 7B, 1.3b, 7000000000.")
@_opt("--trainable-params", type=Count(), help="Parameters with gradients (default: all).")
@_opt("--layers", type=PositiveInt(), help="L, transformer layers.")
@_opt("--heads", type=PositiveInt(), help="a, attention heads.")
@_opt("--kv-heads", type=PositiveInt(), help="Key/value heads (grouped-query attention).")
@_opt("--hidden", type=PositiveInt(), help="h, hidden size.")
@_opt("--ffn-hidden", type=PositiveInt(), help="MLP width (default 4h).")
@_opt("--seq-len", type=PositiveInt(), help="s, sequence length.")
@_opt("--batch-size", type=PositiveInt(), help="b, micro-batch per device.")
@_opt("--global-batch", type=PositiveInt(), help="Samples per optimizer step, all ranks.")
@_opt("--vocab", type=PositiveInt(), help="V, vocabulary size.")
@_opt("--precision", type=Name(PRECISION_CHOICES, PRECISION_ALIASES),
      help="fp32, fp16, bf16, int8, int4 (or Lightning's bf16-mixed, bf16-true, ...). Default bf16.")
@_opt("--optimizer", type=Name(list(OPTIMIZER_STATES)), help="Default adamw.")
@_opt("--gpu-memory", type=Size(), help="Memory per GPU: 24GB (1e9), 80GiB, a bare number is GB.")
@_opt("--safety", type=UnitFraction(), help="Fraction of GPU memory a run may use, in (0, 1]. Default 0.9.")
@_opt("--world-size", type=PositiveInt(), help="n, data-parallel ranks. Default 1.")
@_opt("--strategy", type=Name(list(STRATEGIES)), help="Default ddp.")
@_opt("--tensor-parallel", type=PositiveInt(), help="Tensor-parallel degree. Default 1.")
@_opt("--attention", type=Name(list(ATTENTION)), help="plain (s×s scores kept) or sdpa (fused).")
@_opt("--recompute", type=Name(list(RECOMPUTE)), help="none; attention (Megatron's: the s×s scores only); selective "
      "(op-level, torchtitan's policy: SDPA and every other matmul kept); full.")
@_opt("--dropout/--no-dropout", help="Dropout in the model (masks are kept).")
@_opt("--device", type=Name(list(DEVICES)), help="cuda (default) or cpu.")
@_opt("--overhead", type=Size(allow_zero=True), help="Fixed overhead per process (refined). Default 0.5GB on cuda.")
@_opt("--lora-rank", type=PositiveInt(), help="Train LoRA adapters of this rank only (the base is frozen).")
@_opt("--lora-targets", metavar="LIST", help="q,v (default), q,k,v,o, all-linear, or names such as q_proj,up_proj.")
@click.option("--lora-dropout", is_flag=True, help="Dropout on the adapters' input (PEFT's lora_dropout > 0).")
@_opt("--fused-experts/--per-expert-linears",
      help="A mixture's experts as fused stacks (transformers 5, the default): LoRA on them adapts each stack "
           "whole and keeps the merged stack for backward; or one nn.Linear per expert (transformers 4).")
@_opt("--lora-experts/--no-lora-experts",
      help="Whether LoRA's MLP targets reach a mixture's fused experts and its router. Default: yes, as PEFT 0.22 "
           "adapts them; PEFT 0.21 leaves Qwen2-MoE's alone (--no-lora-experts).")
@_opt("--lora-layout", type=Name(list(LORA_LAYOUTS)),
      help="Whose LoRA layers: peft (one adapter a module, the default) or litgpt (one LoRAQKVLinear for q, k, v: "
           "one dropped input, and its zero-padded B outputs kept unless all three are adapted).")
@_opt("--experts-implementation", type=Name(list(EXPERTS_IMPLEMENTATIONS)),
      help="How fused expert stacks run (transformers 5's config._experts_implementation): grouped_mm, the "
           "default, which autocast leaves in fp32; batched_mm or eager, cast as linears are.")
@_opt("--quantize", type=Name(list(QUANTIZE)), help="The frozen base stored in nf4 (QLoRA) or int8; needs --lora-rank.")
@_opt("--double-quant/--no-double-quant", help="nf4's block constants quantised too (QLoRA's double quantisation).")
@_opt("--quantize-head/--no-quantize-head",
      help="The output head quantised too (LitGPT's bnb precision; Hugging Face's keeps it). Needs --quantize.")
@_opt("--quantized-from", type=Name(list(QUANTIZED_FROM)),
      help="The dtype nf4 was quantised from, which it dequantises into before the cast to the compute dtype "
           "(Lightning's bnb precision: fp16; Hugging Face: the load dtype). Default: the compute dtype.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: inputs, document, refined.")
@click.option("--gib", is_flag=True, help="Show GiB instead of decimal GB.")
@click.option("--what-if", "show_what_if", is_flag=True, help="Also list the changes that would make the run fit.")
@click.option("--dry-run", "dry_run", metavar="MODULE:FACTORY",
              help="Also run one training step of factory()'s (model, batch[, loss[, optimizer]]) on fake tensors.")
@click.option("--no-dry-run", is_flag=True,
              help="With --config: plan with the refined model alone (by default the model is built from the config "
                   "on fake tensors and one training step decides).")
@click.option("--dry-run-timeout", type=Seconds(), default=120.0, show_default=True,
              help="Seconds the dry run may take before it is skipped.")
@click.option("--fail-on-oom", is_flag=True,
              help=f"Exit {EXIT_OOM} when the verdict is OOM (the most exact model's), for a CI gate.")
def estimate(model: str | None, config_path: str | None, framework: str | None, lora_rank: int | None,
             lora_targets: str | None, lora_dropout: bool, as_json: bool, gib: bool, show_what_if: bool,
             dry_run: str | None, no_dry_run: bool, dry_run_timeout: float, fail_on_oom: bool,
             **flags: Any) -> None:
    """Predict memory per device, the OOM verdict, the largest safe batch and GPU counts."""
    builder = SpecBuilder(get_preset(model).spec, f"preset {model}") if model else SpecBuilder()
    sources = builder.sources
    config: dict[str, Any] | None = None
    if config_path:
        try:
            config = read_config(config_path)
            builder.layer(f"config {config_path}", spec_fields(config))
        except ValueError as e:
            raise click.BadParameter(_one_line(e), param_hint="'--config'") from None
    if framework:
        builder.layer(f"framework {framework}", FRAMEWORKS[framework])
    builder.layer("flag", {FIELDS[k]: v for k, v in flags.items()})
    spec = builder.build()
    if (lora_targets is not None or lora_dropout) and lora_rank is None:
        hint = "'--lora-targets'" if lora_targets is not None else "'--lora-dropout'"
        raise click.BadParameter(f"{lora_targets or 'it'!r} needs --lora-rank", param_hint=hint)
    if lora_rank is not None:
        try:
            targets = parse_targets(lora_targets or "q,v")
            spec, adapters = with_lora(spec, lora_rank, targets, lora_dropout)
        except ValueError as e:
            raise click.BadParameter(_one_line(e), param_hint="'--lora-rank'") from None
        shown = [t for t in targets if t != "router" or spec.experts > 1]
        how = f"base + LoRA r={lora_rank} on {','.join(shown)}"
        base = sources.get("params", "default")
        builder.layer("flag", {k: getattr(spec, k) for k in LORA_FIELDS})
        builder.note("params", f"{base} {how}")
        builder.note("trainable_params", f"LoRA adapters: {adapters:,}")
        builder.note("lora_targets", "flag" if lora_targets is not None else "default (q,v)")
        builder.note("lora_dropout", "flag" if lora_dropout else "default")
    built = None
    if dry_run:
        from llmops import dryrun  # torch only with --dry-run: the estimator alone imports none

        try:
            built = dryrun.build(dry_run)
        except ValueError as e:
            raise click.BadParameter(_one_line(e), param_hint="'--dry-run'") from None
        except SystemExit as e:  # the user's factory called sys.exit: a failed factory, not our exit code
            raise click.BadParameter(f"{dry_run}() exited (SystemExit: {e.code}) instead of returning "
                                     "(model, batch[, loss[, optimizer]])", param_hint="'--dry-run'") from None
        builder.layer(f"--dry-run {dry_run}", dryrun.model_fields(built.model, built.batch), keep=sources)
        spec = builder.build()
    try:
        validate_input(spec)
    except ValueError as e:
        name = str(e).split("=", 1)[0]
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        raise click.UsageError(f"{flag}: {e}") from None
    skipped = None
    if config is not None and not dry_run and not no_dry_run:
        built, skipped = _config_build(config, spec, sources, lora_targets, config_path or "")
        if built is not None and spec.params is None:  # a config without the shapes: the model built counts
            from llmops import dryrun

            builder.layer(f"--config {config_path} (the model built)", dryrun.model_fields(built.model, built.batch),
                          keep=sources)
            spec = builder.build()
    target = dry_run or f"--config {config_path}"
    if built is not None:
        result, skipped = _dry_run(built, spec, target, dry_run_timeout, fallback=not dry_run)
    else:
        result = None
    if result is not None:  # the kernels the step ran say attention and dropout, unless a flag or preset did
        ran = {k: getattr(result, k) for k in ("attention", "dropout")
               if not sources.get(k, "").startswith(("flag", "preset"))}
        builder.layer(f"{'--dry-run ' if dry_run else ''}{target} (kernels run)", ran)
        spec = builder.build()
    doc, ref = document(spec), refined(spec)
    dry = _to_estimate(result, spec) if result is not None else None
    if dry is not None and not dry_run:  # built from the config: the largest batch from dry runs of it
        from llmops.dryrun.hf import max_batch

        dry = max_batch(config or {}, spec, _attention_flag(spec, sources), lora_targets, dry_run_timeout, dry)
    models = {"document": doc, "refined": ref, **({"dryrun": dry} if dry is not None else {})}
    inputs = {k: v for k, v in vars(spec).items()}
    plans = what_if(spec) if show_what_if else []
    if as_json:
        out: dict[str, Any] = {"inputs": {"model": model, **inputs}, "document": doc.to_json(),
                               "refined": ref.to_json()}
        if dry is not None:
            out["dryrun"] = dry.to_json()
        if show_what_if:
            out["what_if"] = [{"change": r.change, "peak_bytes": r.peak_bytes, "fits": r.fits} for r in plans]
        click.echo(json.dumps(out, indent=2, default=str))
        _gate(fail_on_oom, models)
        return
    console = Console(width=max(Console().width, 100))
    title = f"llmops estimate{f' — {model}' if model else ''}"
    console.print(estimate_table([doc, ref] + ([dry] if dry else []), binary=gib, title=title))
    rows = [(k, v, sources.get(k, "default")) for k, v in inputs.items() if v is not None]
    console.print(inputs_table(rows))
    for line in dict.fromkeys(doc.missing + ref.missing):
        console.print(f"[yellow]not computed[/]: {line}")
    assumed = [] if "lora_experts" in sources else lora_experts_note(spec)
    for line in [*assumed, *ref.notes, *(dry.notes if dry else ((skipped,) if skipped else ()))]:
        console.print(f"note: {line}")
    if show_what_if:
        console.print(whatif_table(plans, binary=gib))
    console.print("document = formulas.md exactly (x = y = p = bytes of --precision); "
                  "refined = what a real run holds (optimizer, Lightning precision, logits, overhead); both shard by "
                  "--strategy.")
    name, best = deciding(models)
    if best is not None and best.oom_risk is not None:
        caveat = "; it does not model this architecture whole: the figure may be low" \
            if name == "refined" and spec.unmodelled else ""
        console.print(f"verdict: {'OOM' if best.oom_risk else 'fits'} ({NAMES[name]}: peak "
                      f"{fmt_bytes(best.peak_bytes)} against {fmt_bytes(best.budget_bytes)}{caveat})")
    _gate(fail_on_oom, models)


def _gate(fail_on_oom: bool, models: dict[str, Any]) -> None:
    """``--fail-on-oom``: exit 3 when the deciding prediction (``estimate.verdict``) says OOM."""
    best = deciding(models)[1]
    if fail_on_oom and best is not None and best.oom_risk:
        raise click.exceptions.Exit(EXIT_OOM)


def _dry_run(built: Any, spec: TrainingSpec, target: str, timeout_s: float,
             fallback: bool = False) -> tuple[Any, str | None]:
    """``(DryRun, None)``, or ``(None, why)`` when the dry run ran past its limit, or failed where ``fallback``
    (a model built from a config: the refined model decides; a user's factory that fails is a bad value)."""
    from llmops import dryrun

    try:
        return built.run(spec.precision, timeout_s, spec.world_size if spec.strategy == "fsdp" else 1), None
    except dryrun.DryRunSkipped as e:
        return None, str(e).replace("dry_run_timeout=", "--dry-run-timeout ")
    except (Exception, SystemExit) as e:  # the model or its loss failed on fake tensors
        if fallback:
            return None, f"the dry run of {target} failed ({type(e).__name__}: {_one_line(e)[:200]}); " \
                         "the refined model decides"
        raise click.BadParameter(f"the dry run of {target} failed: {type(e).__name__}: {_one_line(e)}",
                                 param_hint="'--dry-run'") from None


def _attention_flag(spec: TrainingSpec, sources: dict[str, str]) -> str | None:
    """The attention a flag or preset named; else None (the config's, or transformers' default)."""
    return spec.attention if sources.get("attention", "").startswith(("flag", "preset")) else None


def _config_build(config: dict[str, Any], spec: TrainingSpec, sources: dict[str, str], lora_targets: str | None,
                  path: str) -> tuple[Any, str | None]:
    """The model transformers builds from ``config``, on fake tensors, for the dry run: ``(Built, None)``, or
    ``(None, why)`` where it cannot be built here (the refined model then decides)."""
    try:
        import transformers

        from llmops.dryrun.hf import build_config, unsupported
    except ImportError:
        return None, "no dry run: transformers is not installed here (pip install transformers); the refined " \
                     "model decides"
    why = unsupported(spec)
    if why is not None:
        return None, f"no dry run: {why}; the refined model decides"
    transformers.logging.set_verbosity_error()  # its notes on kernels it falls back from are not the plan's
    try:
        return build_config(config, spec, _attention_flag(spec, sources), lora_targets), None
    except (Exception, SystemExit) as e:  # an architecture transformers cannot build, a target PEFT cannot find
        return None, f"no dry run: transformers could not build {path} ({_one_line(e)[:200]}); the refined " \
                     "model decides"


def _one_line(e: BaseException) -> str:
    """The user's exception message on one line: a person reads one line of error, never a traceback."""
    return " ".join(str(e).split())


def _to_estimate(result: Any, spec: TrainingSpec) -> Any:
    from llmops.dryrun.result import to_estimate

    return to_estimate(result, spec)


@click.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json: bool) -> None:
    """List the presets and their published configurations."""
    keys = ("params", "active_params", "layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "seq_len")
    if as_json:
        click.echo(json.dumps({n: {k: getattr(p.spec, k) for k in keys} | {"source": p.source}
                               for n, p in PRESETS.items()}, indent=2))
        return
    table = Table(title="presets (llmops estimate --model NAME)", title_justify="left")
    for k in ("model", "N", "active N", "L", "h", "a", "kv", "MLP", "V", "s", "source"):
        table.add_column(k, justify="left" if k in ("model", "source") else "right")
    for name, p in PRESETS.items():
        s = p.spec
        table.add_row(name, f"{(s.params or 0) / 1e9:.2f}B", f"{s.active_params / 1e9:.0f}B" if s.active_params else "",
                      *(str(getattr(s, k) or "") for k in ("layers", "hidden", "heads", "kv_heads", "ffn_hidden",
                                                           "vocab", "seq_len")), p.source)
    Console(width=max(Console().width, 140)).print(table)


__all__ = ["estimate", "models"]
