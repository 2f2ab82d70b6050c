"""Tiny models for Lightning fits on the CPU: nanoGPT-style and Hugging-Face-style configs."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from llmops.demo.model import GPT, Block, GPTConfig  # noqa: F401 - moved into the package for the demo


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
            if optimizer == "nadam":  # one the estimator does not model
                return torch.optim.NAdam(self.parameters(), lr=lr)
            return torch.optim.AdamW(self.parameters(), lr=lr)

    return LM()


def small_llama(intermediate_size: int = 688, vocab_size: int = 1000) -> nn.Module:
    """A 4-layer Hugging Face Llama (vocabulary 1000, width 256, 8 heads, 2 key/value heads, SDPA) with seeded
    random weights, in training mode: a small vocabulary, so the layers' activations decide the peak."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=256, intermediate_size=intermediate_size,
                                   num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                                   use_cache=False, attn_implementation="sdpa")
    return transformers.LlamaForCausalLM(cfg).train()


def llama_batch(batch_size: int = 4, seq_len: int = 256, seed: int = 1,
                vocab_size: int = 1000) -> dict[str, torch.Tensor]:
    """Token ids for ``small_llama`` and their labels (the ids themselves)."""
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids.clone()}
