"""A model described by a Hugging-Face-style ``config``: the monitor reads the architecture from it.

``python examples/hf_config.py [--steps N] [--port P]``. Any object with the attribute names of a
``transformers`` config works (``num_hidden_layers``, ``num_attention_heads``, ``hidden_size``,
``intermediate_size``, ``num_key_value_heads``, ``vocab_size``); a real ``transformers`` model's
``model.config`` is read the same way.
"""

import argparse
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from llmops import LLMOpsMonitor
from llmops.demo.model import GPT, GPTConfig
from llmops.demo.run import char_gpt


@dataclass
class TinyLlamaLikeConfig:  # the names of transformers' LlamaConfig / GPT2-style configs
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    hidden_size: int = 64
    intermediate_size: int = 256
    vocab_size: int = 66
    max_position_embeddings: int = 64
    hidden_act: str = "gelu"


class HFStyleLM(pl.LightningModule):
    def __init__(self, config: TinyLlamaLikeConfig) -> None:
        super().__init__()
        self.config = config  # where Hugging Face models keep it; the monitor looks here and on sub-modules
        self.net = GPT(GPTConfig(config.num_hidden_layers, config.num_attention_heads, config.hidden_size,
                                 config.vocab_size, config.max_position_embeddings, 0.0))

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--port", type=int, default=9445)
    args = ap.parse_args()
    _, data, chars = char_gpt(seq_len=64, batch_size=8)
    model = HFStyleLM(TinyLlamaLikeConfig(vocab_size=chars.vocab_size))
    monitor = LLMOpsMonitor(port=args.port, run="example-hf-config")
    trainer = pl.Trainer(max_steps=args.steps, accelerator="cpu", callbacks=[monitor], logger=False,
                         enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, data)
    intro = monitor.monitor.intro
    for name in ("layers", "heads", "hidden", "ffn_hidden", "vocab", "seq_len", "batch_size"):
        print(f"{name:>10} = {getattr(intro.spec, name)!s:>5}  (from {intro.sources.get(name, '?')})")
