"""Public GPU memory measurements beside the refined model's prediction of the same figure (issue 15).

Every row is a published run: its source (repository and path at a commit, or paper and table), a
verbatim quote holding the figure, the setup the source states (and, marked ``assumed``, what it does
not), and which figure it reports:

- ``allocated``: ``torch.cuda.max_memory_allocated()`` (or the allocator's peak *active* bytes, which
  count the same blocks): predicted as the refined peak less its fixed overhead, which is the CUDA
  context and libraries the allocator never sees (``predicted_allocated_bytes``);
- ``reserved``: ``torch.cuda.max_memory_reserved()``: the above plus the allocator's cache
  (``allocator_cache_bytes``);
- ``nvidia-smi``: the process's device memory: reserved plus the CUDA context (``cuda_context_bytes``).

The verdict is the refined model's own (``oom_risk`` at safety 1, its default overhead included)
against whether the run fitted. The predictions are computed when the bench runs, so they follow the
estimator; a spec field this estimator lacks is dropped with a note. Nothing here is fitted to a row.

    .venv/bin/python -m bench.public [--markdown]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops.estimate import PRECISIONS, Estimate, TrainingSpec, get_preset, refined
from llmops.estimate.lora import with_lora
from llmops.spec.hf_config import LITGPT_CODE, spec_fields
from llmops.units import parse_size

FIGURES = ("allocated", "reserved", "nvidia-smi")
GiB, MiB = 2**30, 2**20
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Row:
    """One published measurement and the spec that describes its run."""

    key: str
    source: str  # repository and path at a commit, or paper and table
    quote: str  # verbatim excerpts of the source joined by " … " (whitespace collapsed); holds `reported`
    reported: str  # the figure as printed ("21.30 GB", "82.4 GiB"); "OOM": the run did not fit; "fits": no figure
    figure: str  # allocated | reserved | nvidia-smi
    gpu: str
    gpu_memory: int  # bytes of one device
    setup: str  # model, tokens and padding, micro-batch, precision, LoRA, quantisation, strategy, checkpointing
    preset: str  # the architecture: a preset's name, or "" where ``config`` states it
    spec: dict[str, Any]  # TrainingSpec fields beside the preset's architecture
    lora: tuple[int, tuple[str, ...]] | None = None  # rank and targets; LoRA dropout is spec["lora_dropout"]
    untied_head: bool = False  # the run's model has its own output head where the preset ties it
    assumed: tuple[str, ...] = ()
    config: dict[str, Any] | None = None  # the run's model config (LitGPT's Config fields), read as introspection does

    @property
    def fitted(self) -> bool:
        return self.reported != "OOM"

    @property
    def reported_bytes(self) -> int | None:
        return None if self.reported in ("OOM", "fits") else parse_size(self.reported)


@dataclass(frozen=True)
class Result:
    """A row's prediction of its own figure; ``error`` is predicted / reported − 1."""

    row: Row
    estimate: Estimate
    predicted_bytes: int
    notes: tuple[str, ...] = field(default=())

    @property
    def error(self) -> float | None:
        reported = self.row.reported_bytes
        return None if reported is None else self.predicted_bytes / reported - 1

    @property
    def predicted_fits(self) -> bool:
        return not self.estimate.oom_risk

    @property
    def verdict_right(self) -> bool:
        return self.predicted_fits == self.row.fitted

    @property
    def default_verdict_right(self) -> bool:
        """The verdict ``llmops estimate`` gives by default, at ``TrainingSpec``'s safety (0.9 of the card), right."""
        assert self.estimate.peak_bytes is not None
        fits = self.estimate.peak_bytes <= TrainingSpec().safety * self.row.gpu_memory
        return fits == self.row.fitted


# The allocator's cache at the peak, as a fraction of the allocated peak. There is no first-principles
# figure (it depends on the order and sizes of frees), so each is one published pair of peak active /
# allocated and peak reserved from a run that is not scored here:
# - sharded (FSDP2 keeps all-gather and reduce-scatter buffers in per-stream pools the default stream
#   cannot reuse): torchtitan PR #165 (awgu), Llama on 8 H100, local batch 8, seq 2048, FSDP2 with
#   op-level SAC: "52.13% peak active, 62.51% peak reserved" -> 62.51 / 52.13 - 1. The same PR's
#   full-AC pair gives 0.365, and FSDP1 0.27-0.36: the term is uncertain by about 10% of the peak.
# - one device: pytorch/pytorch issue #40989, peak allocated 15006 MB, peak reserved 16726 MB
#   -> 16726 / 15006 - 1 (the same issue's second pair, 17402 / 19354 MB, gives 0.112).
ALLOCATOR_CACHE_FRACTION = {"sharded": 62.51 / 52.13 - 1, "single": 16726 / 15006 - 1}
# CUDA context with lazy module loading (PyTorch's default since 1.13): pytorch/pytorch PR #86509
# measured 287,047,680 bytes used after one 6.4 MB tensor (the allocator's 8 MiB segment taken off);
# kernels loaded later (cuBLAS, attention) and NCCL's buffers add to it and are not counted.
CUDA_CONTEXT_BYTES = 287_047_680 - 8 * MiB


def predicted_allocated_bytes(estimate: Estimate) -> int:
    """The refined peak without its fixed overhead (the CUDA context and libraries' memory outside
    PyTorch's allocator), i.e. what ``max_memory_allocated`` reads; bytes."""
    assert estimate.peak_bytes is not None and estimate.overhead_bytes is not None
    return estimate.peak_bytes - estimate.overhead_bytes


def allocator_cache_bytes(spec: TrainingSpec, allocated_bytes: int) -> int:
    """What ``max_memory_reserved`` holds beyond the allocated peak: the cached free blocks, a published
    fraction of the peak (``ALLOCATOR_CACHE_FRACTION``: sharded runs or one device); bytes."""
    kind = "sharded" if spec.strategy in ("fsdp", "zero3") and spec.world_size > 1 else "single"
    return round(ALLOCATOR_CACHE_FRACTION[kind] * allocated_bytes)


def cuda_context_bytes(spec: TrainingSpec) -> int:
    """What nvidia-smi shows beyond PyTorch's reservation: the CUDA context (``CUDA_CONTEXT_BYTES``,
    measured publicly with lazy module loading); bytes."""
    return CUDA_CONTEXT_BYTES if spec.device == "cuda" else 0


def predict(estimate: Estimate, spec: TrainingSpec, figure: str) -> int:
    """The refined prediction of ``figure`` (one of ``FIGURES``); bytes."""
    if figure not in FIGURES:
        raise ValueError(f"figure={figure!r} is not allowed; allowed: {', '.join(FIGURES)}")
    allocated = predicted_allocated_bytes(estimate)
    if figure == "allocated":
        return allocated
    reserved = allocated + allocator_cache_bytes(spec, allocated)
    return reserved if figure == "reserved" else reserved + cuda_context_bytes(spec)


def spec_for(row: Row) -> tuple[TrainingSpec, tuple[str, ...]]:
    """The row's spec on its GPU (safety 1: the verdict asks "does it fit"), and notes on what this
    estimator could not take."""
    known = {f.name for f in dataclasses.fields(TrainingSpec)}
    notes = [f"{k}={v!r} is not a TrainingSpec field yet: predicted without it"
             for k, v in row.spec.items() if k not in known]
    fields_ = {k: v for k, v in row.spec.items() if k in known}
    precision = fields_.get("precision", "bf16")
    if precision not in PRECISIONS and precision.endswith("-fsdp"):  # an estimator without FSDP2's policy
        fields_["precision"] = precision.replace("-fsdp", "-mixed")
        notes.append(f"precision={precision!r} is not in this estimator yet: predicted as {fields_['precision']!r}")
    base = TrainingSpec(**spec_fields(row.config)) if row.config else get_preset(row.preset).spec
    spec = base.with_(gpu_memory=row.gpu_memory, safety=1.0, **fields_)
    if row.untied_head:
        spec = spec.with_(params=(spec.params or 0) + (spec.vocab or 0) * (spec.hidden or 0))
    if row.lora is not None:
        spec, _ = with_lora(spec, row.lora[0], row.lora[1], spec.lora_dropout)
    return spec, tuple(notes)


def evaluate(row: Row) -> Result:
    """The refined estimate for the row and its prediction of the row's figure."""
    spec, notes = spec_for(row)
    estimate = refined(spec)
    return Result(row, estimate, predict(estimate, spec, row.figure), notes)


# --- the rows -------------------------------------------------------------------------------------

# What CUDA reports for the card, not its nominal 40 GiB (the driver keeps the rest): total_memory=40536MB
# (PaddlePaddle/Paddle python/paddle/device/cuda/__init__.py, get_device_properties' docstring); a CUDA 12.2
# driver's deviceQuery shows 40339 MiB (bottlerocket-os/bottlerocket#3873). The larger, which favours "fits".
A100_40 = ("A100-SXM4-40GB", 40536 * MiB)
A10G = ("1xA10G", 24 * GiB)
_A100_ASSUMED = ("GPU memory 40,536 MiB (CUDA's total_memory for the card, published elsewhere; the source names "
                 "the card only)")
_A10G_ASSUMED = "GPU memory 24 GiB (the card's nominal memory; the source names the machine only)"

# LitGPT tutorials/resource-tables.md as added in 0cc02afa ("Lit-GPT version: commit 8641822"; A100-SXM4-40GB,
# bf16-true, Alpaca). finetune/lora.py at 8641822: lora_r=8, alpha 16, dropout 0.05, query and value only;
# prints torch.cuda.max_memory_allocated() / 1e9; the first iteration forces the longest sample (1304 tokens
# for Llama 2) and pads the micro-batch to it; torch.optim.AdamW, bnb.optim.PagedAdamW under --quantize;
# lm_head in chunks of 128 tokens and chunked cross-entropy without an fp32 upcast.
_LITGPT_2023 = "Lightning-AI/litgpt tutorials/resource-tables.md @0cc02afa (code: finetune/lora.py @8641822)"
# Its Llama 2 7B micro-batch-1 rows were first published by 982abcbc (tutorials/finetune_lora.md, 2023-10-05), whose
# model, LoRA and loop code differ from 8641822's in type hints and the LR scheduler only.
# LitGPT's attention (lit_gpt/model.py @8641822, litgpt/model.py since): Q, K, V from one fused linear, K and V
# repeated to the query heads under GQA, no KV cache in training; its RMSNorm at 8641822 computes in the input
# dtype (the fp32 upcast came in 6178c7cc, "Half precision fixes", four days later).
# The longest sample comes first (get_batch(..., longest_seq_ix if iter_num == 0 else None)); every later
# micro-batch is random Alpaca samples padded to their longest, far shorter, so the peak is the first step's,
# with no earlier micro-batch's logits or kept inputs alive (longest_first).
_LITGPT_2023_SPEC = {"precision": "bf16-true", "strategy": "single", "lora_dropout": True, "keeps_outputs": True,
                     "lora_layout": "litgpt", "norm_upcast": False, "longest_first": True, **LITGPT_CODE}
# Both LitGPT scripts rebind `logits = model(...)` only when the next forward returns (the last micro-batch's
# logits, and its graph, live through it), and quantise with bitsandbytes before 0.43.2 (unpinned in
# requirements-all.txt @8641822, October 2023: 0.41; pyproject.toml @43c44323 and @e5493986: ==0.42.0), whose
# MatMul4Bit keeps each 4-bit layer's input on ctx; BitsandbytesPrecision replaces every nn.Linear, lm_head too,
# and quantises from fp16 whatever its dtype (lightning/fabric/plugins/precision/bitsandbytes.py, _Linear4bit.quantize:
# ``weight.contiguous().to(device=device, dtype=torch.half)``, unchanged from the October 2023 Lightning LitGPT
# pinned to the present), so under bf16-true MatMul4Bit's ``dequantize_4bit(B, state).to(A.dtype)`` holds both.
_LITGPT_NF4 = {"quantize": "nf4", "optimizer": "paged_adamw", "quantize_head": True, "quant_keeps_input": True,
               "quantized_from": "fp16"}
_LITGPT_2023_SETUP = ("{model}, Alpaca's longest sample ({tokens} tokens) forced first, micro-batch {b} padded to "
                      "it, bf16-true, LoRA r=8 on q,v (dropout 0.05), {quant}, {opt}, one GPU, no checkpointing")
# The table's other models, as lit_gpt/config.py @8641822 builds them (Config's defaults: LayerNorm, GptNeoxMLP
# at 4h, parallel residual, biases, n_query_groups = n_head); their longest Alpaca sample is the table's own.
_LITGPT_2023_MODELS: dict[str, tuple[int, str, dict[str, Any] | None]] = {
    "Llama 2 7B": (1304, "llama-2-7b", None),
    "Llama 2 13B": (1304, "llama-2-13b", None),
    "phi-1.5": (1044, "", {"name": "phi-1_5", "padded_vocab_size": 51200, "vocab_size": 50257, "n_layer": 24,
                           "n_head": 32, "n_embd": 2048, "intermediate_size": 8192, "n_query_groups": 32,
                           "rotary_percentage": 0.5, "parallel_residual": True, "shared_attention_norm": True,
                           "_norm_class": "LayerNorm", "_mlp_class": "GptNeoxMLP", "gelu_approximate": "tanh",
                           "bias": True, "lm_head_bias": True}),
    "StableLM Alpha 3B": (1034, "", {"name": "stablelm-base-alpha-3b", "padded_vocab_size": 50688,
                                     "vocab_size": 50254, "n_layer": 16, "n_head": 32, "n_embd": 4096,
                                     "intermediate_size": 16384, "n_query_groups": 32, "rotary_percentage": 0.25,
                                     "parallel_residual": True, "_norm_class": "LayerNorm",
                                     "_mlp_class": "GptNeoxMLP", "bias": True}),
    "Falcon 40B": (1079, "", {"name": "falcon-40b", "padded_vocab_size": 65024, "vocab_size": 65024,
                              "n_layer": 60, "n_head": 128, "n_embd": 8192, "intermediate_size": 32768,
                              "n_query_groups": 8, "rotary_percentage": 1.0, "parallel_residual": True,
                              "_norm_class": "LayerNorm", "_mlp_class": "GptNeoxMLP", "bias": False}),
}


def _litgpt_2023(key: str, model: str, b: int, quant: str, reported: str, quote: str) -> Row:
    nf4 = quant.startswith("bnb.nf4")
    q = {**_LITGPT_NF4, "double_quant": quant == "bnb.nf4-dq"} if nf4 else {}
    tokens, preset, config = _LITGPT_2023_MODELS[model]
    return Row(key, _LITGPT_2023, quote, reported, "allocated", *A100_40,
               _LITGPT_2023_SETUP.format(model=model, tokens=tokens, b=b, quant=quant if nf4 else "no quantisation",
                                         opt="bnb PagedAdamW" if nf4 else "torch AdamW"),
               preset, {**_LITGPT_2023_SPEC, "seq_len": tokens, "batch_size": b, **q}, (8, ("q", "v")),
               assumed=(_A100_ASSUMED,), config=config)


# LitGPT config_hub/finetune/README.md (1xA10G, bf16-true, Alpaca2k, max_seq_length 512); the yaml and
# litgpt/finetune/lora.py at the commit that added the row: lora_r=32, alpha 16, dropout 0.05 on q,v;
# "Peak memory" is the script's torch.cuda.max_memory_allocated() / 1e9; PagedAdamW under bnb.nf4.
_HUB = ("Lightning-AI/litgpt config_hub/finetune/README.md @26857050 (row since {commit}; the yaml and "
        "litgpt/finetune/{script}.py at {commit})")
_HUB_SPEC = {"seq_len": 512, "precision": "bf16-true", "strategy": "single", "lora_dropout": True,
             "keeps_outputs": True, "lora_layout": "litgpt", **LITGPT_CODE}
_HUB_SEQ = "the longest Alpaca2k batch reaches the 512-token truncation (padding is to the batch's longest sample)"
_HUB_SETUP = ("{model}, Alpaca2k truncated to 512 tokens, padded per batch, micro-batch {b}, bf16-true, "
              "{method}, one GPU, no checkpointing")


def _hub(key: str, commit: str, model: str, preset: str, b: int, method: str, reported: str, quote: str,
         untied: bool = False, extra: tuple[str, ...] = ()) -> Row:
    q = _LITGPT_NF4 if method == "qlora" else {}
    lora = None if method == "full" else (32, ("q", "v"))
    spec = {**_HUB_SPEC, "batch_size": b, **q} if lora else {**_HUB_SPEC, "batch_size": b, "lora_dropout": False}
    words = {"full": "full fine-tune, torch AdamW (bf16 states)",
             "lora": "LoRA r=32 on q,v (dropout 0.05), torch AdamW",
             "qlora": "QLoRA: bnb.nf4 base, LoRA r=32 on q,v (dropout 0.05), bnb PagedAdamW"}[method]
    return Row(key, _HUB.format(commit=commit, script="full" if method == "full" else "lora"), quote, reported,
               "allocated", *A10G, _HUB_SETUP.format(model=model, b=b, method=words), preset, spec, lora,
               untied, (_HUB_SEQ, _A10G_ASSUMED, *extra))


_UNTIED = "LitGPT's Llama 3.2 config has no tie_embeddings (litgpt/config.py @00af8b0d): its own lm_head"
_HEAD_NF4 = "LitGPT quantises every nn.Linear, lm_head included (BitsandbytesPrecision without ignore_modules)"

# torchtitan: the logged "memory" is max_reserved_gib (train.py and torchtitan/metrics.py @9dec370).
_TITAN = "pytorch/torchtitan benchmarks/llama3_h100_202412_torchtitan.md (torchtitan @9dec370)"
_TITAN_SPEC = {"seq_len": 8192, "batch_size": 2, "precision": "bf16-fsdp",
               "attention": "sdpa", "recompute": "selective", "strategy": "fsdp", "loss_upcast": True}
_TITAN_SETUP = ("Llama 3.1 8B pre-training on C4, seq 8192 (no padding), local batch 2, FSDP2 over {n} H100 "
                "(MixedPrecisionPolicy bf16 params, fp32 reduce), op-level selective AC, AdamW, no compile, no Float8")
_TITAN_ASSUMED = ("seq_len 8192 and AdamW from train_configs/llama3_8b.toml @9dec370 (the table gives neither)",
                  "Memory(GiB) is the logged max_reserved_gib", "GPU memory 96 GiB (\"96GB HBM2e\")")
# torchtitan docs/performance.md as first added (528cab939): Llama 2 70B shapes, 64 A100 80GB, FSDP2.
_TITAN_70B = "pytorch/torchtitan docs/performance.md @528cab939 (train_configs/llama_70b.toml there)"
_TITAN_70B_ASSUMED = ("seq_len 4096 from train_configs/llama_70b.toml @528cab939",
                      "vocabulary 32,000 (the Llama 2 tokenizer.model that config names)",
                      "bf16 params, fp32 reduce (parallelize_llama.py @528cab939)", "GPU memory 80 GiB")

# torchtune docs/source/tutorials/qlora_finetune.rst @0914d5cfb: recipes/lora_finetune_single_device.py and
# its llama2 configs there; memory_stats_log divides by 1e9, and the recipe empties the cache before training.
_TUNE = "pytorch/torchtune docs/source/tutorials/qlora_finetune.rst @0914d5cfb (recipes and configs there)"
_TUNE_SPEC = {"seq_len": 512, "batch_size": 2, "precision": "bf16-true", "attention": "sdpa", "recompute": "full",
              "loss_upcast": True, "strategy": "single", "lora_dropout": True}
_TUNE_ASSUMED = ("the longest alpaca_cleaned batch reaches the dataset's max_seq_len of 512 (padded per batch)",
                 "GPU not stated; 80 GiB assumed for the verdict")

ROWS: tuple[Row, ...] = (
    _litgpt_2023("litgpt-phi15-lora-b1", "phi-1.5", 1, "None", "4.82 GB",
                 "| 1.3 B | phi-1.5 | None | 1 | 1,572,864 | 4.82 GB |"),
    _litgpt_2023("litgpt-phi15-nf4-b1", "phi-1.5", 1, "bnb.nf4", "3.78 GB",
                 "| 1.3 B | phi-1.5 | bnb.nf4 | 1 | 1,572,864 | 3.78 GB |"),
    _litgpt_2023("litgpt-phi15-nf4dq-b1", "phi-1.5", 1, "bnb.nf4-dq", "3.72 GB",
                 "| 1.3 B | phi-1.5 | bnb.nf4-dq | 1 | 1,572,864 | 3.72 GB |"),
    _litgpt_2023("litgpt-phi15-lora-b2", "phi-1.5", 2, "None", "6.76 GB",
                 "| 1.3 B | phi-1.5 | None | 2 | 1,572,864 | 6.76 GB |"),
    _litgpt_2023("litgpt-phi15-lora-b4", "phi-1.5", 4, "None", "10.68 GB",
                 "| 1.3 B | phi-1.5 | None | 4 | 1,572,864 | 10.68 GB |"),
    _litgpt_2023("litgpt-stablelm3b-lora-b1", "StableLM Alpha 3B", 1, "None", "9.69 GB",
                 "| 3 B | StableLM Alpha | None | 1 | 2,097,152 | 9.69 GB |"),
    _litgpt_2023("litgpt-stablelm3b-nf4-b1", "StableLM Alpha 3B", 1, "bnb.nf4", "6.35 GB",
                 "| 3 B | StableLM Alpha | bnb.nf4 | 1 | 2,097,152 | 6.35 GB |"),
    _litgpt_2023("litgpt-stablelm3b-nf4dq-b1", "StableLM Alpha 3B", 1, "bnb.nf4-dq", "6.19 GB",
                 "| 3 B | StableLM Alpha | bnb.nf4-dq | 1 | 2,097,152 | 6.19 GB |"),
    _litgpt_2023("litgpt-stablelm3b-lora-b2", "StableLM Alpha 3B", 2, "None", "12.10 GB",
                 "| 3 B | StableLM Alpha | None | 2 | 2,097,152 | 12.10 GB |"),
    _litgpt_2023("litgpt-stablelm3b-lora-b4", "StableLM Alpha 3B", 4, "None", "16.92 GB",
                 "| 3 B | StableLM Alpha | None | 4 | 2,097,152 | 16.92 GB |"),
    _litgpt_2023("litgpt-l2-7b-lora-b1", "Llama 2 7B", 1, "None", "21.30 GB",
                 "| 7 B | Llama 2 | None | 1 | 4,194,304 | 21.30 GB |"),
    _litgpt_2023("litgpt-l2-7b-nf4-b1", "Llama 2 7B", 1, "bnb.nf4", "14.14 GB",
                 "| 7 B | Llama 2 | bnb.nf4 | 1 | 4,194,304 | 14.14 GB |"),
    _litgpt_2023("litgpt-l2-7b-nf4dq-b1", "Llama 2 7B", 1, "bnb.nf4-dq", "13.84 GB",
                 "| 7 B | Llama 2 | bnb.nf4-dq | 1 | 4,194,304 | 13.84 GB |"),
    _litgpt_2023("litgpt-l2-7b-lora-b2", "Llama 2 7B", 2, "None", "29.07 GB",
                 "| 7 B | Llama 2 | None | 2 | 4,194,304 | 29.07 GB |"),
    _litgpt_2023("litgpt-l2-7b-lora-b4", "Llama 2 7B", 4, "None", "OOM",
                 "| 7 B | Llama 2 | None | 4 | 4,194,304 | OOM | - |"),
    _litgpt_2023("litgpt-l2-13b-lora-b1", "Llama 2 13B", 1, "None", "38.12 GB",
                 "| 13 B | Llama 2 | None | 1 | 6,553,600 | 38.12 GB |"),
    _litgpt_2023("litgpt-l2-13b-nf4-b1", "Llama 2 13B", 1, "bnb.nf4", "23.14 GB",
                 "| 13 B | Llama 2 | bnb.nf4 | 1 | 6,553,600 | 23.14 GB |"),
    _litgpt_2023("litgpt-l2-13b-nf4dq-b1", "Llama 2 13B", 1, "bnb.nf4-dq", "22.55 GB",
                 "| 13 B | Llama 2 | bnb.nf4-dq | 1 | 6,553,600 | 22.55 GB |"),
    _litgpt_2023("litgpt-l2-13b-lora-b2", "Llama 2 13B", 2, "None", "OOM",
                 "| 13 B | Llama 2 | None | 2 | 6,553,600 | OOM | - |"),
    _litgpt_2023("litgpt-l2-13b-lora-b4", "Llama 2 13B", 4, "None", "OOM",
                 "| 13 B | Llama 2 | None | 4 | 6,553,600 | OOM | - |"),
    _litgpt_2023("litgpt-falcon40b-lora-b1", "Falcon 40B", 1, "None", "OOM",
                 "| 40 B | Falcon | None | 1 | 12,042,240 | OOM | - |"),
    _litgpt_2023("litgpt-falcon40b-nf4-b1", "Falcon 40B", 1, "bnb.nf4", "OOM",
                 "| 40 B | Falcon | bnb.nf4 | 1 | 12,042,240 | OOM | - |"),
    _litgpt_2023("litgpt-falcon40b-nf4dq-b1", "Falcon 40B", 1, "bnb.nf4-dq", "OOM",
                 "| 40 B | Falcon | bnb.nf4-dq | 1 | 12,042,240 | OOM | - |"),
    _hub("hub-l3-8b-lora", "43c44323", "Llama 3 8B", "llama-3-8b", 1, "lora", "19.73 GB",
         "| llama-3-8b/lora.yaml | llama-3-8b | 2 | 512 | 1 | 1xA10G | 14.79 min | $0.4 | 19.73 GB |"),
    _hub("hub-l3-8b-qlora", "e5493986", "Llama 3 8B", "llama-3-8b", 2, "qlora", "17.41 GB",
         "| llama-3-8b/qlora.yaml | llama-3-8b | 2 | 512 | 2 | 1xA10G | 22.24 min | $0.7 | 17.41 GB |",
         extra=(_HEAD_NF4,)),
    _hub("hub-l2-7b-lora", "43c44323", "Llama 2 7B", "llama-2-7b", 2, "lora", "19.77 GB",
         "| llama-2-7b/lora.yaml | llama-2-7b | 4 | 512 | 2 | 1xA10G | 32.82 min | $1.0 | 19.77 GB |"),
    _hub("hub-l2-7b-qlora", "e5493986", "Llama 2 7B", "llama-2-7b", 2, "qlora", "13.68 GB",
         "| llama-2-7b/qlora.yaml | llama-2-7b | 4 | 512 | 2 | 1xA10G | 45.67 min | $1.4 | 13.68 GB |",
         extra=(_HEAD_NF4,)),
    _hub("hub-mistral-7b-lora", "43c44323", "Mistral 7B", "mistral-7b", 2, "lora", "20.66 GB",
         "| mistral-7b/lora.yaml | mistral-7b | 4 | 512 | 2 | 1xA10G | 31.01 min | $0.9 | 20.66 GB |"),
    _hub("hub-mistral-7b-qlora", "e5493986", "Mistral 7B", "mistral-7b", 2, "qlora", "14.29 GB",
         "| mistral-7b/qlora.yaml | mistral-7b | 4 | 512 | 2 | 1xA10G | 44.75 min | $1.3 | 14.29 GB |",
         extra=(_HEAD_NF4,)),
    _hub("hub-l32-1b-lora", "00af8b0d", "Llama 3.2 1B", "llama-3.2-1b", 1, "lora", "4.49 GB",
         "| llama-3.2-1b/lora.yaml | llama-3.2-1b | 2 | 512 | 1 | 1xA10G | 4.17 min | $0.4 | 4.49 GB |",
         untied=True, extra=(_UNTIED,)),
    _hub("hub-l32-1b-qlora", "00af8b0d", "Llama 3.2 1B", "llama-3.2-1b", 2, "qlora", "5.53 GB",
         "| llama-3.2-1b/qlora.yaml | llama-3.2-1b | 2 | 512 | 2 | 1xA10G | 6.20 min | $0.6 | 5.53 GB |",
         untied=True, extra=(_UNTIED, _HEAD_NF4)),
    _hub("hub-l32-3b-lora", "00af8b0d", "Llama 3.2 3B", "llama-3.2-3b", 1, "lora", "9.67 GB",
         "| llama-3.2-3b/lora.yaml | llama-3.2-3b | 2 | 512 | 1 | 1xA10G | 8.31 min | $0.8 | 9.67 GB |",
         untied=True, extra=(_UNTIED,)),
    _hub("hub-l32-3b-qlora", "00af8b0d", "Llama 3.2 3B", "llama-3.2-3b", 2, "qlora", "10.30 GB",
         "| llama-3.2-3b/qlora.yaml | llama-3.2-3b | 2 | 512 | 2 | 1xA10G | 14.89 min | $1.4 | 10.30 GB |",
         untied=True, extra=(_UNTIED, _HEAD_NF4)),
    _hub("hub-tinyllama-full", "43c44323", "TinyLlama 1.1B", "tinyllama-1.1b", 4, "full", "14.10 GB",
         "| tiny-llama/full.yaml | tiny-llama | 1 | 512 | 4 | 1xA10G | 2.58 min | $0.1 | 14.10 GB |"),
    Row("titan-l31-8b-fsdp8", _TITAN, "**Table 1** 1D Parallelism (FSDP). Llama 3.1 8B model. 8 GPUs. Local batch "
        "size 2, global batch size 16. Selective activation checkpointing. … | Techniques | TPS/GPU | Memory(GiB) | "
        "… | FSDP | 5,762 | 82.4 |", "82.4 GiB", "reserved",
        "8x H100 96GB", 96 * GiB, _TITAN_SETUP.format(n=8), "llama-3.1-8b", {**_TITAN_SPEC, "world_size": 8},
        assumed=_TITAN_ASSUMED),
    Row("titan-l31-8b-fsdp128", _TITAN, "**Table 3** 1D Parallelism (FSDP). Llama 3.1 8B model. 128 GPUs. Local "
        "batch size 2, global batch size 256. Selective activation checkpointing. … | FSDP | 5,605 | 67.0 |",
        "67.0 GiB", "reserved", "128x H100 96GB", 96 * GiB, _TITAN_SETUP.format(n=128), "llama-3.1-8b",
        {**_TITAN_SPEC, "world_size": 128}, assumed=_TITAN_ASSUMED),
    Row("titan-l70b-sac-b2", _TITAN_70B, "| 70B | 2 | selective op | OOM | OOM |", "OOM", "allocated",
        "64x A100 80GB", 80 * GiB, "Llama 70B (Llama 2 shapes), seq 4096, local batch 2, FSDP2 over 64 A100, "
        "op-level selective AC, AdamW", "llama-2-70b",
        {**_TITAN_SPEC, "seq_len": 4096, "world_size": 64}, assumed=_TITAN_70B_ASSUMED),
    Row("titan-l70b-sac-b1", _TITAN_70B, "| 70B | 1[^1] | selective op | 355 | 50.8% |", "fits", "allocated",
        "64x A100 80GB", 80 * GiB, "as above, local batch 1 (the run fitted; no memory figure)", "llama-2-70b",
        {**_TITAN_SPEC, "seq_len": 4096, "batch_size": 1, "world_size": 64}, assumed=_TITAN_70B_ASSUMED),
    Row("titan-l70b-full-b2", _TITAN_70B, "| 70B | 2 | full | 353 | 50.5% |", "fits", "allocated",
        "64x A100 80GB", 80 * GiB, "as above, local batch 2, full AC (the run fitted; no memory figure)",
        "llama-2-70b", {**_TITAN_SPEC, "seq_len": 4096, "recompute": "full", "world_size": 64},
        assumed=_TITAN_70B_ASSUMED),
    Row("tune-l2-7b-lora", _TUNE, "LoRA                   13.98 GB                            15.57 GB", "15.57 GB",
        "reserved", "1 GPU", 80 * GiB, "Llama 2 7B, alpaca_cleaned (max_seq_len 512), batch 2 padded, bf16, "
        "LoRA r=8 on q,v (dropout 0.05), torch AdamW, full activation checkpointing, logits upcast to fp32",
        "llama-2-7b", _TUNE_SPEC, (8, ("q", "v")), assumed=_TUNE_ASSUMED),
)


# Published figures read but left out, and why (the report lists them too).
EXCLUDED = (
    "LitGPT resource-tables.md multi-GPU LoRA rows (2-4 x A100, FSDP1 with block checkpointing): 7B reads 22.18, "
    "22.47 and 23.39 GB at micro-batch 1, 2 and 4, nearly flat and above the one-GPU 21.30 GB; the whole-run "
    "max_memory_allocated most likely holds the full-state-dict checkpoint load into unsharded parameters, not a step",
    "LitGPT config_hub Llama 3.2 1B/3B and Phi-3 full fine-tunes on 1xA10G (8.70, 16.51, 17.01 GB): bf16 weights, "
    "gradients and AdamW states alone exceed them (Phi-3: 3.8e9 x 8 B = 30 GB on a 24 GB card); the rows cannot "
    "be the stated setup",
    "LitGPT Adapter / Adapter-v2 rows: LLaMA-Adapter prefixes are not a TrainingSpec option",
    "LitGPT tiny-llama, phi-3 and gemma LoRA/QLoRA rows: LoRA on the output head (lora_head: true) is not a "
    "TrainingSpec target",
    "torchtitan Tables 2, 4-6 (torch.compile, Float8, CP, TP, PP) and the compiled rows of Tables 1 and 3: "
    "compile and Float8 are not modelled",
    "torchtune README Llama 3.1 tables and its Llama 3.2 3B optimisation table: compile, activation offloading, "
    "optimizer-in-backward and the exact overrides per row are not all stated",
    "torchtune qlora_finetune.rst @0914d5cfb QLoRA row (\"QLoRA 9.13 GB 9.29 GB\", peak reserved at model init and "
    "in training): the training figure is floored by the init's cache, not the step. memory_stats_log resets the "
    "peak after init without emptying the cache (cleanup_before_training is not called in "
    "recipes/lora_finetune_single_device.py there), so training's max_memory_reserved starts at the 9.13 GB the "
    "init left reserved (bf16 layers made on the GPU, then quantised); the LoRA row (13.98 → 15.57 GB) is the step's",
    "nvidia-smi figures: none found with a complete published setup",
)


# --- the table ------------------------------------------------------------------------------------

def _gb(value: int | None) -> str:
    return "—" if value is None else f"{value / 1e9:.2f} GB"


def table_rows(results: list[Result]) -> list[list[str]]:
    """The table's cells, one list per result."""
    return [[r.row.key, r.row.figure, r.row.reported, _gb(r.predicted_bytes),
             "—" if r.error is None else f"{r.error:+.1%}",
             f"{'fits' if r.predicted_fits else 'OOM'} / {'fits' if r.row.fitted else 'OOM'}",
             "yes" if r.verdict_right else "NO"] for r in results]


HEADER = ["row", "figure", "reported", "predicted", "error", "verdict (predicted / run)", "verdict right"]


def summary(results: list[Result]) -> str:
    """One line: rows within 10%, the largest error and the verdicts that are right."""
    errors = [r.error for r in results if r.error is not None]
    within = sum(abs(e) <= 0.10 for e in errors)
    worst = max(errors, key=abs) if errors else 0.0
    right = sum(r.verdict_right for r in results)
    by_default = sum(r.default_verdict_right for r in results)
    return (f"rows={len(results)} with_figure={len(errors)} within_10pct={within} "
            f"max_abs_error={abs(worst):.1%} verdicts_right={right}/{len(results)} "
            f"verdicts_right_at_default_safety={by_default}/{len(results)}")


def slopes(results: list[Result]) -> list[str]:
    """Per model and setup measured at two or more micro-batches (one source, one GPU): the bytes one more sample
    adds, reported and predicted, from the smallest to the largest batch with a figure (markdown list items)."""
    groups: dict[tuple[str, str, str | None], list[Result]] = {}
    for r in results:
        if r.row.reported_bytes is not None:
            model = r.row.preset or (r.row.config or {}).get("name", "")
            groups.setdefault((r.row.source, model, r.row.spec.get("quantize")), []).append(r)
    lines = []
    for (_, model, quant), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.row.spec["batch_size"])
        lo, hi = rs[0], rs[-1]
        db = hi.row.spec["batch_size"] - lo.row.spec["batch_size"]
        if db == 0 or lo.row.reported_bytes is None or hi.row.reported_bytes is None:
            continue
        reported = (hi.row.reported_bytes - lo.row.reported_bytes) / db
        predicted = (hi.predicted_bytes - lo.predicted_bytes) / db
        lines.append(f"- {model}{f' ({quant})' if quant else ''}, micro-batch {lo.row.spec['batch_size']} → "
                     f"{hi.row.spec['batch_size']}: {_gb(round(reported))} a sample reported, {_gb(round(predicted))} "
                     f"predicted ({predicted / reported - 1:+.1%})")
    return lines


def details(results: list[Result]) -> list[str]:
    """Per row: source, quote, setup, assumptions and notes (markdown list items)."""
    lines = []
    for r in results:
        row, e = r.row, r.estimate
        lines += [f"- **{row.key}** — {row.source}", f"  - quote: `{row.quote}`", f"  - setup: {row.setup}; "
                  f"GPU {row.gpu} ({row.gpu_memory / GiB:.1f} GiB); figure: {row.figure}",
                  f"  - refined: peak {_gb(e.peak_bytes)} ({e.peak_phase}) = params {_gb(e.params_bytes)}, grads "
                  f"{_gb(e.grads_bytes)}, optimizer {_gb(e.optimizer_state_bytes)}, activations "
                  f"{_gb(e.activation_bytes)}, temporaries {_gb(e.temporary_bytes)}, overhead {_gb(e.overhead_bytes)}"]
        if row.figure != "allocated":
            spec, _ = spec_for(row)
            allocated = predicted_allocated_bytes(e)
            context = cuda_context_bytes(spec) if row.figure == "nvidia-smi" else 0
            lines.append(f"  - predicted {row.figure}: allocated {_gb(allocated)} + allocator cache "
                         f"{_gb(allocator_cache_bytes(spec, allocated))}" + (f" + CUDA context {_gb(context)}"
                                                                              if context else ""))
        lines += [f"  - assumed: {a}" for a in row.assumed] + [f"  - note: {n}" for n in r.notes]
    return lines


def markdown(results: list[Result]) -> str:
    """The whole report as markdown."""
    out = ["# Public GPU memory measurements against the refined model", "",
           "Generated by `.venv/bin/python -m bench.public --markdown`. Error = predicted / reported − 1 of the "
           "figure each source reports; the verdict is the refined model's own (`oom_risk` at safety 1: does it fit); "
           "the summary also scores the verdict `llmops estimate` gives by default (safety 0.9).", "",
           "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cells) + " |" for cells in table_rows(results)]
    out += ["", summary(results), "", "## What reserved and nvidia-smi add", "",
            f"- allocator cache: {ALLOCATOR_CACHE_FRACTION['sharded']:.3f} × the allocated peak for sharded runs "
            "(torchtitan PR #165, FSDP2 + op-level SAC: 52.13% peak active, 62.51% peak reserved), "
            f"{ALLOCATOR_CACHE_FRACTION['single']:.3f} on one device (pytorch/pytorch#40989: 15006 MB allocated, "
            "16726 MB reserved); neither run is scored here.",
            f"- CUDA context: {CUDA_CONTEXT_BYTES / 1e6:.0f} MB (pytorch/pytorch PR #86509, lazy module loading).",
            "", "## What one more sample adds", "", *slopes(results),
            "", "## Rows", "", *details(results), "", "## Looked for, not used", "",
            *[f"- {item}" for item in EXCLUDED], ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="also write bench/results/public-DATE.md")
    args = parser.parse_args(argv)
    results = [evaluate(row) for row in ROWS]
    from rich.console import Console
    from rich.table import Table

    table = Table(*HEADER, title="Public measurements vs the refined prediction of the same figure")
    for cells in table_rows(results):
        table.add_row(*cells)
    console = Console(width=140)
    console.print(table)
    for r in results:
        for note in r.notes:
            console.print(f"{r.row.key}: {note}", markup=False)
    for line in slopes(results):
        console.print(line, markup=False)
    console.print(summary(results), markup=False)
    if args.markdown:
        path = RESULTS / f"public-{datetime.date.today().isoformat()}.md"
        path.write_text(markdown(results))
        console.print(f"wrote {path}", markup=False)
    return results


if __name__ == "__main__":
    main()
