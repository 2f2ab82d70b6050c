"""The monitor's lifetimes: a fit that raises closes what the fit opened; the callback is plain data until a fit
starts (pickle, deepcopy, ``ddp_spawn``); a checkpoint save pauses the stall clock that the sampler checks."""

from __future__ import annotations

import copy
import json
import pickle
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from llmops import LLMOpsMonitor
from llmops.runlog import read_run
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader


class Boom(pl.Callback):
    """Raises the user's own error inside the training step at ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.at:
            raise KeyError("the user's own bug")


def fit(monitor: LLMOpsMonitor, steps: int = 3, extra: tuple = (), **kw) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[monitor, *extra], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         enable_checkpointing=kw.pop("enable_checkpointing", False), **kw)
    trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4, n=4 * steps))
    return trainer


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_refit_after_an_exception_writes_a_full_second_segment(tmp_path):
    """The notebook pattern: the first fit raises, the user fixes the bug and runs the cell again with the same
    callback. The error reaches them unchanged, the first segment ends with it, and the second is whole."""
    monitor = LLMOpsMonitor(port=0, run="notebook", run_dir=str(tmp_path), interval=0.1)
    with pytest.raises(KeyError, match="the user's own bug"):
        fit(monitor, steps=3, extra=(Boom(at=1),))
    trainer = fit(monitor, steps=3)
    log = tmp_path / "notebook" / "rank0.jsonl"
    kinds = [r for r in records(log) if r["kind"] in ("start", "end")]
    assert [r["kind"] for r in kinds] == ["start", "end", "start", "end"]
    assert kinds[1]["status"].startswith("error: KeyError") and kinds[3]["status"] == "ok"
    assert kinds[2]["segment"] == 2 and kinds[0].get("segment", 1) == 1
    rank = read_run(tmp_path / "notebook").ranks[0]
    assert not rank.crashed and rank.last_step == trainer.global_step == 3
    assert monitor.monitor.state.get("llmops_run_end_timestamp_seconds") is not None


def test_no_stall_is_reported_after_a_failed_fit(tmp_path):
    """After a fit that raised, nothing of it is left running: no sampler reports a stall for a dead run."""
    monitor = LLMOpsMonitor(port=0, run="dead", run_dir=str(tmp_path), interval=0.05, stall_min_seconds=0.3,
                            stall_factor=1.5)
    with pytest.raises(KeyError):
        fit(monitor, steps=5, extra=(Boom(at=2),))
    time.sleep(1.0)  # over three stall thresholds
    assert not (tmp_path / "dead" / "stall-rank0.txt").exists()
    assert monitor.monitor.state.get("llmops_train_stalled") in (None, 0)
    assert not [r for r in records(tmp_path / "dead" / "rank0.jsonl") if r["kind"] == "stall"]


class SpawnedLM(pl.LightningModule):
    """A module ``ddp_spawn`` can pickle: defined at a module's top level."""

    def __init__(self) -> None:
        super().__init__()
        self.model = GPT(GPTConfig())

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.model(x).flatten(0, 1), y.flatten())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class SlowIO(TorchCheckpointIO):
    """A save that takes longer than the stall threshold (a slow shared file system)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        time.sleep(2.0)
        super().save_checkpoint(checkpoint, path, storage_options)


def test_a_save_longer_than_the_stall_threshold_is_no_stall(tmp_path):
    # a 1 s floor: a tiny step slowed by a loaded machine stays under it, the 2 s save goes past it
    monitor = LLMOpsMonitor(port=0, run="saves", run_dir=str(tmp_path / "runs"), interval=0.05,
                            stall_min_seconds=1.0, stall_factor=1.5)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    fit(monitor, steps=4, extra=(ckpt,), plugins=[SlowIO()], enable_checkpointing=True)
    assert len(list((tmp_path / "ckpt").glob("*.ckpt"))) == 2  # the saves ran, each past the threshold
    assert monitor.monitor.state.get("llmops_checkpoint_saves_total") == 2
    assert not [r for r in records(tmp_path / "runs" / "saves" / "rank0.jsonl") if r["kind"] == "stall"]
    assert not (tmp_path / "runs" / "saves" / "stall-rank0.txt").exists()


@pytest.mark.parametrize("duplicate", [pickle.loads, copy.deepcopy], ids=["pickle", "deepcopy"])
@pytest.mark.parametrize("fitted", [False, True], ids=["new", "after-a-fit"])
def test_the_callback_pickles_and_deep_copies_and_the_copy_fits(tmp_path, duplicate, fitted):
    monitor = LLMOpsMonitor(port=0, run="copied", run_dir=str(tmp_path), safety=0.8, stall_min_seconds=30.0)
    if fitted:
        fit(monitor, steps=1)
    clone = duplicate(pickle.dumps(monitor)) if duplicate is pickle.loads else duplicate(monitor)
    assert clone.config == monitor.config and clone.monitor is not monitor.monitor
    assert clone.metrics_url is None  # nothing of the original's process came along: no endpoint, no thread
    trainer = fit(clone, steps=2)
    assert clone.metrics_url and clone.metrics_url != monitor.metrics_url
    assert clone.monitor.state.get("llmops_train_step") == trainer.global_step == 2


def test_a_two_rank_ddp_spawn_fit_runs_with_the_monitor(tmp_path, monkeypatch):
    """``ddp_spawn`` pickles the trainer, callbacks included, into each process it starts. Tensors go to the
    processes through files: the file-descriptor strategy fails on this sandbox's shared memory, monitor or not."""
    import torch.multiprocessing as mp

    monkeypatch.setattr(mp, "_sharing_strategy", "file_system")
    monitor = LLMOpsMonitor(port=0, run="spawned", run_dir=str(tmp_path), serve=False)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[monitor],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(SpawnedLM(), token_loader(64, 16, 4, n=16))
    run = read_run(tmp_path / "spawned")
    assert sorted(run.ranks) == [0, 1]
    assert all(not r.crashed and r.last_step == 2 for r in run.ranks.values())
