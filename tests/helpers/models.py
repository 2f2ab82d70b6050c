"""Tiny models for Lightning fits on the CPU: nanoGPT-style and Hugging-Face-style configs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


@dataclass
class GPTConfig:  # nanoGPT's names
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    vocab_size: int = 64
    block_size: int = 16
    dropout: float = 0.1


class Block(nn.Module):
    """Plain attention (s×s scores kept), GELU MLP of width 4h, dropout, two layer norms."""

    def __init__(self, h: int, a: int, dropout: float) -> None:
        super().__init__()
        self.a = a
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.qkv, self.proj = nn.Linear(h, 3 * h), nn.Linear(h, h)
        self.fc, self.out = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)
        self.attn_drop, self.resid_drop, self.mlp_drop = (nn.Dropout(dropout) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=2)
        q, k, v = (t.view(b, s, self.a, h // self.a).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(h // self.a)
        mask = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
        att = self.attn_drop(F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, s, h)
        x = x + self.resid_drop(self.proj(y))
        return x + self.mlp_drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        self.blocks = nn.ModuleList(Block(c.n_embd, c.n_head, c.dropout) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied, as GPT-2

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def hf_style_config(layers: int = 2, heads: int = 4, hidden: int = 32, vocab: int = 50,
                    intermediate: int = 128) -> SimpleNamespace:
    """A Hugging Face config's attribute names."""
    return SimpleNamespace(num_hidden_layers=layers, num_attention_heads=heads, hidden_size=hidden,
                           intermediate_size=intermediate, num_key_value_heads=heads,
                           vocab_size=vocab, hidden_act="gelu", max_position_embeddings=64)


class HFStyleModel(GPT):
    """The same network, described by a Hugging-Face-style ``config``."""

    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__(GPTConfig(config.num_hidden_layers, config.num_attention_heads,
                                   config.hidden_size, config.vocab_size, 64, 0.0))
        self.config = config


def token_loader(vocab: int, seq_len: int, batch_size: int, n: int = 64, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, seq_len + 1), generator=g)
    return DataLoader(TensorDataset(x[:, :-1], x[:, 1:]), batch_size=batch_size, shuffle=True, generator=g)


def make_module(base: type, net: nn.Module, optimizer: str = "adamw", lr: float = 1e-3):
    """A LightningModule of the given namespace around ``net``; counts its training steps."""

    class LM(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.model = net
            self.steps_run = 0

        def training_step(self, batch, batch_idx):
            self.steps_run += 1
            x, y = batch
            logits = self.model(x)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

        def configure_optimizers(self):
            if optimizer == "sgd":
                return torch.optim.SGD(self.parameters(), lr=lr, momentum=0.9)
            return torch.optim.AdamW(self.parameters(), lr=lr)

    return LM()
