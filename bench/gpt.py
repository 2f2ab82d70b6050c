"""The accuracy matrix's GPT: the demo's model (``llmops/demo/model.py``, which has the SDPA and
recomputation variants the estimator counts), its loss, and a 1.3B-parameter factory for the dry run."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmops.demo.model import GPT, GPTConfig

__all__ = ["GPT", "BenchConfig", "gpt_1b", "lm_loss", "loss_fn"]


@dataclass
class BenchConfig(GPTConfig):
    """The demo GPT's config with dropout off by default: each matrix row turns on what it varies."""

    dropout: float = 0.0


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Next-token loss on a batch of token ids (the dry run's ``loss(model, batch)``)."""
    return loss_fn(model(batch[:, :-1]), batch[:, 1:])


def gpt_1b(batch_size: int = 1, seq_len: int = 2048) -> tuple[GPT, tuple[torch.Tensor, torch.Tensor]]:
    """A 1.3B-parameter GPT (GPT-3 XL's shape: L=24, h=2048, a=16, SDPA) and a ``(x, y)`` batch,
    for ``llmops estimate --dry-run bench.gpt:gpt_1b`` (the dry run's default loss is cross-entropy)."""
    cfg = BenchConfig(n_layer=24, n_head=16, n_embd=2048, vocab_size=50257, block_size=seq_len, dropout=0.0,
                      attention="sdpa")
    tokens = torch.randint(0, cfg.vocab_size, (batch_size, seq_len + 1))
    return GPT(cfg), (tokens[:, :-1], tokens[:, 1:])
