"""Model and hardware FLOPs per token: the formula against PyTorch's own FLOP count of a real step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from llmops.estimate.flops import hardware_flops_per_token, model_flops_per_token, utilization
from llmops.telemetry.steps import flop_params
from tests.helpers.models import GPT, GPTConfig


def counted_flops_per_token(cfg: GPTConfig, b: int = 2) -> float:
    """FLOPs PyTorch counts (every matmul of forward and backward, recomputation included) per token."""
    torch.manual_seed(0)
    net = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (b, cfg.block_size))
    with FlopCounterMode(display=False) as counter:
        logits = net(x)
        F.cross_entropy(logits.reshape(-1, cfg.vocab_size), x.reshape(-1)).backward()
    return counter.get_total_flops() / (b * cfg.block_size)


def test_palm_formula_matches_the_flops_pytorch_counts():
    cfg = GPTConfig(n_layer=3, n_head=4, n_embd=256, vocab_size=512, block_size=64, dropout=0.0)
    n = flop_params(GPT(cfg))
    formula = model_flops_per_token(n, cfg.n_layer, cfg.n_embd, cfg.block_size)
    # 6·N counts biases and layer norms (no matmul), which the counter leaves out: under 1% of N here.
    assert formula == pytest.approx(counted_flops_per_token(cfg), rel=0.01)


def test_full_recomputation_adds_one_forward():
    cfg = GPTConfig(n_layer=3, n_head=4, n_embd=256, vocab_size=512, block_size=64, dropout=0.0, recompute="full")
    n = flop_params(GPT(cfg))
    counted = counted_flops_per_token(cfg)
    # the head (V·h of N) is outside the checkpointed blocks: it is not run again
    expected = hardware_flops_per_token(n, cfg.n_layer, cfg.n_embd, cfg.block_size, "full") \
        - 2 * cfg.vocab_size * cfg.n_embd
    assert expected == pytest.approx(counted, rel=0.01)
    assert counted > 1.25 * model_flops_per_token(n, cfg.n_layer, cfg.n_embd, cfg.block_size)


def test_n_counted_by_hand_for_the_tied_gpt():
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16)
    h, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    per_layer = 12 * h * h + 9 * h + 4 * h  # qkv, proj, fc, out weights and biases; two layer norms
    assert flop_params(GPT(cfg)) == L * per_layer + V * h + 2 * h  # tied wte/head once, ln_f; no wpe


def test_terms_and_units():
    assert model_flops_per_token(1000) == 6000  # no architecture: 6·N
    assert model_flops_per_token(1000, 2, 8, 4) == 6000 + 12 * 2 * 8 * 4
    assert hardware_flops_per_token(1000, 2, 8, 4, "attention") == 6000 + 16 * 2 * 8 * 4
    assert hardware_flops_per_token(1000, 2, 8, 4, "full") == 8000 + 16 * 2 * 8 * 4
    assert utilization(1e12, 2.0, 1e12) == 0.5
    assert utilization(1e12, 2.0, None) is None and utilization(1e12, 0.0, 1e12) is None


@pytest.mark.parametrize("kwargs", [{"params": 0}, {"params": -1}, {"params": float("nan")},
                                    {"params": 10, "layers": 2, "hidden": -8, "seq_len": 4}])
def test_bad_values_raise_naming_them(kwargs):
    with pytest.raises(ValueError, match="is not allowed"):
        model_flops_per_token(**kwargs)
    with pytest.raises(ValueError, match="recompute='some'"):
        hardware_flops_per_token(10, 1, 1, 1, "some")
