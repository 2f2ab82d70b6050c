"""state_bytes against hand counts: AdamW after one step, a frozen layer, tied weights."""

from __future__ import annotations

import torch
from torch import nn

from llmops.probes import state_bytes

F32 = 4
STEP = 4  # AdamW's per-parameter `step`: a 0-dim float32 tensor


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))  # weights 12 + 6, biases 3 + 2


def train_one_step(model: nn.Module) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(torch.randn(5, model[0].in_features)).square().sum().backward()
    opt.step()
    return opt


def test_adamw_after_one_step() -> None:
    model = mlp()
    opt = train_one_step(model)
    n = 12 + 3 + 6 + 2
    assert state_bytes(model, [opt]) == {
        "params": n * F32, "params_trainable": n * F32, "params_frozen": 0, "grads": n * F32,
        # exp_avg and exp_avg_sq per element, plus one step counter per parameter tensor
        "optimizer_states": 2 * n * F32 + 4 * STEP,
    }


def test_before_the_first_step_only_params() -> None:
    model = mlp()
    opt = torch.optim.AdamW(model.parameters())
    counted = state_bytes(model, [opt])
    assert (counted["params"], counted["grads"], counted["optimizer_states"]) == (23 * F32, 0, 0)


def test_frozen_layer() -> None:
    model = mlp()
    model[0].requires_grad_(False)
    opt = train_one_step(model)
    trainable, frozen = (6 + 2) * F32, (12 + 3) * F32
    assert state_bytes(model, [opt]) == {
        "params": trainable + frozen, "params_trainable": trainable, "params_frozen": frozen,
        "grads": trainable, "optimizer_states": 2 * trainable + 2 * STEP,
    }


class TiedLM(nn.Module):
    """Embedding and output head share one weight (GPT-2 style)."""

    def __init__(self, vocab: int = 10, dim: int = 4, share_parameter: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        if share_parameter:
            self.head.weight = self.embed.weight
        else:  # two Parameter objects over one storage: only the storage dedup sees the tie
            self.head.weight = nn.Parameter(self.embed.weight.data)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


def test_tied_weights_counted_once() -> None:
    for share_parameter in (True, False):
        model = TiedLM(share_parameter=share_parameter)
        opt = torch.optim.AdamW(model.parameters())
        model(torch.tensor([[1, 2, 3]])).sum().backward()
        opt.step()
        counted = state_bytes(model, [opt])
        assert counted["params"] == 10 * 4 * F32
        if share_parameter:  # one parameter: one grad, one set of states
            assert counted["grads"] == 10 * 4 * F32
            assert counted["optimizer_states"] == 2 * 10 * 4 * F32 + STEP
        else:  # two parameters over one storage still get a grad and states each
            assert counted["grads"] == 2 * 10 * 4 * F32
            assert counted["optimizer_states"] == 2 * (2 * 10 * 4 * F32 + STEP)


def test_dtype_and_several_optimizers() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(8, 8, bias=False).to(torch.bfloat16), nn.Linear(8, 8, bias=False)
    model = nn.ModuleDict({"a": a, "b": b})
    opts = [torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), torch.optim.SGD(b.parameters(), lr=0.1)]
    (b(a(torch.randn(2, 8, dtype=torch.bfloat16)).float())).sum().backward()
    for opt in opts:
        opt.step()
    counted = state_bytes(model, opts)
    assert counted["params"] == 64 * 2 + 64 * F32
    assert counted["grads"] == 64 * 2 + 64 * F32
    assert counted["optimizer_states"] == 64 * 2  # a's bf16 momentum buffer; plain SGD keeps none


def test_meta_model_counts_without_merging() -> None:
    with torch.device("meta"):
        model = nn.Linear(4, 3)
    assert state_bytes(model, [])["params"] == (12 + 3) * F32
