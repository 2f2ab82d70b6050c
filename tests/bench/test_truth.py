"""bench.truth's real peak: exact on a case computed by hand, in line with PyTorch's MemTracker, and on the zoo."""

import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from bench.truth import real_peak, run_step
from bench.zoo import NAMES, build

PRECISIONS = {"fp32": (torch.float32, None), "bf16-mixed": (torch.float32, torch.bfloat16),
              "bf16-true": (torch.bfloat16, None)}  # fmt: skip


def _linear_case() -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4096, 4096)
    # foreach=False: the per-tensor loop, the CPU default, written out so the derivation below stays true
    return model, {"x": torch.randn(8, 4096)}, torch.optim.AdamW(model.parameters(), foreach=False)


def _square_mean(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["x"]).square().mean()


def _memtracker_peak(model, batch, loss_fn, optimizer, autocast_dtype=None) -> int:
    """MemTracker's peak snapshot over one more step, summed over its categories."""
    mt = MemTracker()
    mt.track_external(model, optimizer, *batch.values())
    with mt:
        run_step(model, batch, loss_fn, optimizer, autocast_dtype)
    snap = mt.get_tracker_snapshot("peak")[torch.device("cpu")]
    return sum(v for k, v in snap.items() if k != "Total")


def test_linear_peak_computed_by_hand():
    # Linear(4096, 4096) fp32 + AdamW, x of shape (8, 4096), loss = out.square().mean():
    #   W = 4096*4096*4 = 67_108_864 B, b = 4096*4 = 16_384 B, P = W + b = 67_125_248 B
    #   baseline = params P + old grads P + exp_avg P + exp_avg_sq P + 2 step scalars 2*4 + x 8*4096*4
    #            = 4*67_125_248 + 8 + 131_072 = 268_632_072 B
    #   forward: out 131_072 + out² 131_072 (freed once the mean is taken) + loss 4   -> baseline + 262_148
    #   zero_grad frees the old grads (-P); backward: grad_out chain of 131_072s, then the new grad_W (W) and
    #   grad_b (b) that AccumulateGrad keeps                                         -> at most baseline + 262_152
    #   optimizer step on W: denom = exp_avg_sq.sqrt() (W), then / bias_correction2_sqrt (another W), both alive
    #   while out and the graph are gone and the loss (4) is still referenced        -> baseline + 2W + 4
    #   peak = 268_632_072 + 134_217_728 + 4 = 402_849_804 B; the profiler also sees the 0-dim scalars the
    #   division wraps (8 + 4 B): 402_849_816 B measured.
    w, b = 4096 * 4096 * 4, 4096 * 4
    baseline = 4 * (w + b) + 2 * 4 + 8 * 4096 * 4
    hand = baseline + 2 * w + 4
    model, batch, opt = _linear_case()
    truth = real_peak(model, batch, _square_mean, opt)
    assert truth.baseline_bytes == baseline == 268_632_072
    assert hand == 402_849_804
    assert 0 <= truth.peak_bytes - hand <= 32
    assert truth.seconds > 0


def test_linear_agrees_with_memtracker():
    model, batch, opt = _linear_case()
    truth = real_peak(model, batch, _square_mean, opt)
    mt = _memtracker_peak(model, batch, _square_mean, opt)
    assert abs(truth.peak_bytes - mt) <= 1e-3 * mt


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_zoo_llama_agrees_with_memtracker(precision):
    dtype, autocast = PRECISIONS[precision]
    case = build("llama", batch_size=2, seq_len=64, dtype=dtype)
    opt = torch.optim.AdamW(case.model.parameters())
    truth = real_peak(case.model, case.batch, case.loss_fn, opt, autocast_dtype=autocast)
    mt = _memtracker_peak(case.model, case.batch, case.loss_fn, opt, autocast)
    assert abs(truth.peak_bytes - mt) <= 1e-3 * mt


def test_steps_below_two_are_refused():
    model, batch, opt = _linear_case()
    with pytest.raises(ValueError):
        real_peak(model, batch, _square_mean, opt, steps=1)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # PEFT calls a deprecated transformers API
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", NAMES)
def test_zoo_entry_trains_and_peaks_above_baseline(name, precision):
    dtype, autocast = PRECISIONS[precision]
    case = build(name, batch_size=1, seq_len=32, dtype=dtype)
    assert (case.batch_size, case.seq_len) == (1, 32)
    opt = torch.optim.AdamW([p for p in case.model.parameters() if p.requires_grad])
    truth = real_peak(case.model, case.batch, case.loss_fn, opt, autocast_dtype=autocast, steps=2)
    assert truth.peak_bytes > truth.baseline_bytes > 0
