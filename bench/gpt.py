"""The accuracy matrix's GPT: nanoGPT's layout with the variants the estimator models.

The demo's GPT (``llmops/demo/model.py``) keeps plain attention only; this one adds SDPA and full
activation checkpointing, so each row of the matrix changes exactly one thing the refined model
counts. Config names are nanoGPT's, so ``llmops.introspect`` reads it as it reads nanoGPT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass
class BenchConfig:
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    vocab_size: int = 64
    block_size: int = 16  # longest sequence (learned position embeddings)
    dropout: float = 0.0  # one rate for attention, residual and MLP dropout; 0 builds no dropout
    attention: str = "plain"  # plain: s×s scores kept; sdpa: F.scaled_dot_product_attention
    recompute: str = "none"  # none, or full: each block under torch.utils.checkpoint


class Block(nn.Module):
    """Pre-norm block: attention (plain or SDPA), GELU MLP of width 4h, dropout, two layer norms."""

    def __init__(self, c: BenchConfig) -> None:
        super().__init__()
        h = c.n_embd
        self.a, self.p, self.sdpa = c.n_head, c.dropout, c.attention == "sdpa"
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.qkv, self.proj = nn.Linear(h, 3 * h), nn.Linear(h, h)
        self.fc, self.out = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)
        drop = (lambda: nn.Dropout(c.dropout)) if c.dropout else nn.Identity
        self.attn_drop, self.resid_drop, self.mlp_drop = drop(), drop(), drop()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=2)
        q, k, v = (t.view(b, s, self.a, h // self.a).transpose(1, 2) for t in (q, k, v))
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(h // self.a)
            mask = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
            y = self.attn_drop(F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)) @ v
        x = x + self.resid_drop(self.proj(y.transpose(1, 2).reshape(b, s, h)))
        return x + self.mlp_drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, config: BenchConfig) -> None:
        super().__init__()
        c = self.config = config
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied, as GPT-2

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            # Reentrant checkpointing saves each block's input with save_for_backward, which the
            # ActivationMeter sees; the non-reentrant kind hides it behind its own saved-tensor hooks.
            x = checkpoint(block, x, use_reentrant=True) if self.config.recompute == "full" else block(x)
        return self.head(self.ln_f(x))


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
