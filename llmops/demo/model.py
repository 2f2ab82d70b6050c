"""A small nanoGPT-style model: the demo trains it, the tests and benchmarks measure it.

Config names are nanoGPT's, so ``llmops.spec.live`` reads it as it reads nanoGPT. ``attention`` and
``recompute`` are the variants the refined estimator counts (the accuracy matrix in
``bench/accuracy.py`` changes one at a time); the demo keeps plain attention and no recomputation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmops.demo.sampling import sample


@dataclass
class GPTConfig:  # nanoGPT's names, so the monitor reads them as it would read nanoGPT's
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    vocab_size: int = 64
    block_size: int = 16  # longest sequence (learned position embeddings)
    dropout: float = 0.1  # one rate for attention, residual and MLP dropout; 0 builds no dropout
    attention: str = "plain"  # plain: s×s scores kept; sdpa: F.scaled_dot_product_attention
    recompute: str = "none"  # none, or full: each block under torch.utils.checkpoint


class Block(nn.Module):
    """Pre-norm block: attention (plain or SDPA), GELU MLP of width 4h, dropout, two layer norms."""

    def __init__(self, c: GPTConfig) -> None:
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
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        c = self.config = config
        self.recompute = c.recompute == "full"  # kept apart: subclasses may describe themselves by another config
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
            x = checkpoint(block, x, use_reentrant=True) if self.recompute else block(x)
        return self.head(self.ln_f(x))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, new_tokens: int, temperature: float = 0.8, top_k: int | None = 36,
                 top_p: float = 0.7, generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``new_tokens`` sampled tokens to each row of ``idx`` ``(b, s)`` (formulas.md §8)."""
        was_training = self.training
        self.eval()
        for _ in range(new_tokens):
            logits = self(idx[:, -self.config.block_size:])[:, -1]
            idx = torch.cat([idx, sample(logits, temperature, top_k, top_p, generator)[:, None]], dim=1)
        self.train(was_training)
        return idx
