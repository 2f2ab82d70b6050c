"""FSDP's gathered layers: how many layers' unsharded parameters are alive at once, and their bytes.
"""

from __future__ import annotations

from fractions import Fraction

from llmops.estimate.peak import (
    Gathered,
)
from llmops.spec.blocks import block_linears
from llmops.spec.training import TrainingSpec
from llmops.units import get_precision

# FSDP2 issues the next layer's all-gather while a layer computes (implicit prefetching, on its own CUDA
# stream), so two layers' unsharded parameters are alive at once; gloo on the CPU gathers in line, one.
GATHERED_LAYERS = {"cuda": 2, "cpu": 1}


def gathered(spec: TrainingSpec) -> Gathered:
    """FSDP2 with one ``fully_shard`` unit per block and one for the root (torchtitan's, and Lightning's
    ``ModelParallelStrategy``'s usual wrapping): the root's parameters (embeddings, final norm, head) stay
    unsharded from the forward's start to the backward's end, each block's only while it runs; a block's
    gradients are unsharded until their reduce-scatter, plus their copy in the reduce dtype where it
    differs (``*-fsdp``: bf16 gradients reduced in fp32). Gathered in the compute dtype under ``*-fsdp``,
    else in the parameters'."""
    if spec.strategy != "fsdp" or spec.world_size == 1 or not (spec.params and spec.layers and spec.hidden):
        return Gathered()
    prec = get_precision(spec.precision)
    gather = prec.compute_bytes if prec.name.endswith("-fsdp") else prec.param_bytes
    layer = layer_params(spec)
    root = max(spec.params - spec.layers * layer, 0)
    grads = layer * (gather + (prec.grad_bytes if prec.grad_bytes != gather else 0))
    if spec.lora_rank is not None or spec.trainable_params is not None and spec.trainable_params < spec.params:
        grads = Fraction(0)  # adapters: their gradients are small; the frozen base makes none
    t = spec.tensor_parallel
    return Gathered(params=gather * (root + GATHERED_LAYERS[spec.device] * layer) / t, grads=grads / t)


def layer_params(spec: TrainingSpec) -> int:
    """Parameters of one block: its linears (every expert), a mixture's router and shared expert, two norms."""
    h = spec.hidden or 0
    linears = sum(i * o * c for i, o, c in block_linears(spec, spec.experts).values())
    router = spec.experts * h if spec.experts > 1 else 0
    shared = (3 if spec.gated_mlp else 2) * h * spec.shared_expert_ffn_hidden if spec.shared_expert_ffn_hidden else 0
    return linears + router + shared + 2 * h
