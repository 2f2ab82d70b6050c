"""Tokens, model FLOPs, MFU and the step's phases from real CPU fits, checked against what the test itself
records (its own clock, its own token count, N counted by hand); and the hooks make no synchronising call."""

from __future__ import annotations

import threading
import time

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from llmops import LLMOpsMonitor
from llmops.probes import CudaEventClock, FakeCudaEvents, FakeGpu, FakeNvmlClient
from llmops.vocabulary import STEP_PHASES
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader

CFG = GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16, dropout=0.0)
PEAK = 2e11  # FLOP/s, as a user would pass for the CPU


class Stopwatch(pl.Callback):
    """The test's own record of the run: its clock at the first batch start and at every batch end, and
    the tokens each batch held (placed after the monitor, so its marks bracket the monitor's)."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end = 0.0
        self.tokens = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.start is None:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()
        x = batch["input_ids"] if isinstance(batch, dict) else batch[0]
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        self.tokens += int(mask.sum()) if mask is not None else x.numel()


def fit(monitor, steps=12, batch_size=4, module=None, loader=None, callbacks_extra=(), **kw):
    watch = Stopwatch()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[monitor, watch, *callbacks_extra],
                         logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw)
    trainer.fit(module or make_module(pl.LightningModule, GPT(CFG)),
                loader or token_loader(CFG.vocab_size, CFG.block_size, batch_size, n=batch_size * steps))
    return trainer, watch


def n_by_hand(c: GPTConfig) -> int:
    h = c.n_embd
    return c.n_layer * (12 * h * h + 13 * h) + c.vocab_size * h + 2 * h  # blocks, tied head, final norm


def test_tokens_per_second_and_mfu_agree_with_the_wall_clock_and_the_formula():
    monitor = LLMOpsMonitor(port=0, runlog=False, peak_flops=PEAK, interval=3600)  # one window: the whole run
    trainer, watch = fit(monitor, steps=12, batch_size=4)
    s = monitor.monitor.state
    tokens = 12 * 4 * CFG.block_size
    assert s.get("llmops_tokens_total") == tokens == watch.tokens
    flops_per_token = 6 * n_by_hand(CFG) + 12 * CFG.n_layer * CFG.n_embd * CFG.block_size  # PaLM appendix B
    assert s.get("llmops_model_flops_total") == pytest.approx(tokens * flops_per_token, rel=1e-12)
    wall = watch.end - watch.start
    phases = sum(s.get("llmops_step_phase_seconds_total", phase=p) for p in STEP_PHASES)
    assert tokens / phases == pytest.approx(tokens / wall, rel=0.01)  # tokens/s
    assert s.get("llmops_mfu_ratio") == pytest.approx(tokens * flops_per_token / wall / PEAK, rel=0.01)


def test_phases_are_each_measured():
    monitor = LLMOpsMonitor(port=0, runlog=False, interval=0.05)
    fit(monitor, steps=6)
    s = monitor.monitor.state
    seconds = {p: s.get("llmops_step_phase_seconds_total", phase=p) for p in STEP_PHASES}
    assert all(seconds[p] > 0 for p in ("data", "forward", "backward", "optimizer")), seconds
    assert seconds["comm_exposed"] == 0  # one process: nothing to all-reduce, the series exists at 0
    assert s.get("llmops_mfu_ratio") is None  # the CPU has no table peak: absent, not 0
    assert s.get("llmops_model_flops_total") > 0 and s.get("llmops_monitor_errors_total", probe="steps") is None


class MaskedLM(pl.LightningModule):
    """Batches as a tokenizer makes them: input_ids with an attention_mask whose zeros are padding."""

    def __init__(self) -> None:
        super().__init__()
        self.model = GPT(CFG)

    def training_step(self, batch, batch_idx):
        logits = self.model(batch["input_ids"])
        loss = F.cross_entropy(logits.reshape(-1, CFG.vocab_size), batch["input_ids"].reshape(-1), reduction="none")
        return (loss * batch["attention_mask"].reshape(-1)).sum() / batch["attention_mask"].sum()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def masked_loader(n: int = 16, b: int = 4):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, CFG.vocab_size, (n, CFG.block_size), generator=g)
    lengths = torch.randint(3, CFG.block_size + 1, (n,), generator=g)
    mask = (torch.arange(CFG.block_size)[None, :] < lengths[:, None]).long()
    rows = [{"input_ids": ids[i], "attention_mask": mask[i]} for i in range(n)]
    return torch.utils.data.DataLoader(rows, batch_size=b), int(mask.sum())


def test_tokens_are_the_attention_masks_non_padding_tokens():
    loader, non_padding = masked_loader()
    monitor = LLMOpsMonitor(port=0, runlog=False, interval=0.05)
    _, watch = fit(monitor, steps=4, module=MaskedLM(), loader=loader)
    s = monitor.monitor.state
    assert s.get("llmops_tokens_total") == non_padding == watch.tokens < 16 * CFG.block_size


class SlowStep(pl.Callback):
    """Makes each optimizer step last at least ``seconds`` (a sleep before it), so the optimizer phase's total
    tells how many steps it counted, with margins no machine load closes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        time.sleep(self.seconds)


def test_gradient_accumulation_counts_every_micro_batch_and_one_optimizer_phase_per_step():
    monitor = LLMOpsMonitor(port=0, runlog=False, interval=0.05)
    loader = token_loader(CFG.vocab_size, CFG.block_size, 2, n=2 * 2 * 3)  # one epoch: 6 micro-batches
    _, watch = fit(monitor, steps=3, loader=loader, accumulate_grad_batches=2, callbacks_extra=[SlowStep(0.2)])
    s = monitor.monitor.state
    assert s.get("llmops_tokens_total") == 3 * 2 * 2 * CFG.block_size == watch.tokens
    # the optimizer phase runs on 3 of the 6 micro-batches (3 × 0.2 s asleep), not on all 6 (1.2 s)
    assert 0.6 <= s.get("llmops_step_phase_seconds_total", phase="optimizer") < 1.2


def test_hooks_make_no_synchronising_call_on_the_training_thread(monkeypatch):
    """The CUDA path (CudaEventClock, the code a GPU run uses) on fake events that complete 10 ms after they are
    recorded (the 12-step fit lasts well past that): the training thread only records; reading them (query,
    elapsed_time) is the sampler's."""
    events = FakeCudaEvents(delay=0.01)
    training = threading.current_thread()

    def forbidden(name):
        def call(*args, **kwargs):
            if threading.current_thread() is training:
                raise AssertionError(f"{name} called on the training thread")
        return call

    monkeypatch.setattr(torch.cuda, "synchronize", forbidden("torch.cuda.synchronize"))
    monkeypatch.setattr(torch.cuda.Event, "synchronize", forbidden("Event.synchronize"))
    monkeypatch.setattr(torch.cuda.Event, "elapsed_time", forbidden("Event.elapsed_time"))
    monkeypatch.setattr(torch.cuda.Event, "query", forbidden("Event.query"))
    monitor = LLMOpsMonitor(port=0, runlog=False, interval=0.01, peak_flops=PEAK,
                            _step_clock=CudaEventClock(event_factory=events))
    trainer, _ = fit(monitor, steps=12)
    assert trainer.global_step == 12
    on_training = {m for m, thread in events.calls if thread == training.name}
    assert on_training == {"record"}, on_training
    assert {m for m, _ in events.calls} >= {"record", "query", "elapsed_time"}  # read, elsewhere
    s = monitor.monitor.state
    assert s.get("llmops_step_phase_seconds_total", phase="forward") > 0
    assert s.get("llmops_monitor_errors_total", probe="steps") is None


def test_power_and_energy_from_nvml_and_absent_where_not_supported():
    uuid = "GPU-11111111-2222-3333-4444-555555555555"
    gpu = FakeGpu(0, uuid, "NVIDIA H100 80GB HBM3", power_milliwatts=300_000, energy_millijoules=5_000_000)
    monitor = LLMOpsMonitor(port=0, runlog=False, nvml=True, _nvml_client=FakeNvmlClient([gpu]), interval=0.01)
    fit(monitor, steps=2)
    s, labels = monitor.monitor.state, {"gpu": "0", "UUID": uuid}
    assert s.get("llmops_gpu_power_watts", **labels) == 300.0
    assert s.get("llmops_gpu_energy_joules_total", **labels) == 5000.0  # since the driver loaded, not since start
    # the table's H100 SXM figure for the run's matmuls: 32-true at torch's default "highest" is plain fp32
    assert monitor.monitor.steps.peak_flops == 67e12

    gpu = FakeGpu(0, uuid, "NVIDIA A10G", power_milliwatts=None, energy_millijoules=None)
    monitor = LLMOpsMonitor(port=0, runlog=False, nvml=True, _nvml_client=FakeNvmlClient([gpu]), interval=0.01)
    fit(monitor, steps=2)
    s = monitor.monitor.state
    assert s.get("llmops_gpu_power_watts", **labels) is None
    assert s.get("llmops_gpu_energy_joules_total", **labels) is None
    assert s.get("llmops_gpu_memory_total_bytes", **labels) is not None  # the rest still read
    assert s.get("llmops_mfu_ratio") is None  # no peak known for it: absent


class ScriptedClock:
    """Host-clock marks the test hands out in order (seconds)."""

    def __init__(self, marks):
        self.marks = iter(marks)

    def mark(self):
        return next(self.marks)

    def ready(self, mark):
        return True

    def seconds(self, start, end):
        return float(end - start)

    def count(self, tensor):
        return int(tensor.count_nonzero())


def test_step_time_median_ratio_is_each_step_over_this_ranks_recent_median():
    from llmops.metrics import MetricState
    from llmops.telemetry.steps import StepTimer

    durations = [1.0, 1.0, 1.2, 0.8, 1.0, 2.0]  # the last one twice the median of those before it
    marks, t = [], 0.0
    for d in durations:  # start, backward, optimizer, end: a quarter each
        marks += [t, t + d / 4, t + d / 2, t + d]
        t += d
    state = MetricState()
    timer = StepTimer(state, ScriptedClock(marks))
    ratios = []
    for _ in durations:
        timer.batch_start(None)
        timer.backward_start()
        timer.optimizer_start()
        timer.batch_end(True)
        timer.drain()
        ratios.append(state.get("llmops_step_time_median_ratio"))
    assert ratios[0] is None  # nothing to compare the first step with
    assert ratios[1:] == pytest.approx([1.0, 1.2, 0.8, 1.0, 2.0])
