"""A run's name: unique per run by default, the same on resume (the callback's checkpointed state), clear
under fast_dev_run (which serves no port and writes no run log unless asked); the constructor's public
signature as LightningCLI sees it."""

from __future__ import annotations

import re

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from llmops import LLMOpsMonitor
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader

STAMP = r"\d{8}-\d{6}-[0-9a-f]{4}"


def fit(monitor, tmp_path, steps=2, ckpt_path=None, **kw):
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[monitor, *kw.pop("extra", ())],
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **kw)
    trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4), ckpt_path=ckpt_path)
    return trainer


def test_default_names_are_unique_per_run_and_readable(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_RUN_DIR", str(tmp_path / "runs"))
    names = []
    for _ in range(2):  # the same logger name and version both times: CSVLogger into a fresh folder each
        monitor = LLMOpsMonitor(port=0)
        fit(monitor, tmp_path, logger=CSVLogger(tmp_path / "logs", name="exp", version=0), enable_checkpointing=False)
        names.append(monitor.monitor.run)
    assert all(re.fullmatch(rf"exp-v0-{STAMP}", n) for n in names), names
    assert names[0] != names[1]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(names)  # one run log folder each


def test_no_logger_and_a_string_version(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_RUN_DIR", str(tmp_path / "runs"))
    plain = LLMOpsMonitor(port=0)
    fit(plain, tmp_path, logger=False, enable_checkpointing=False)
    assert re.fullmatch(rf"run-{STAMP}", plain.monitor.run)
    long_id = LLMOpsMonitor(port=0)  # an MLflow-like run id: 32 hex digits, cut to 8
    fit(long_id, tmp_path, logger=CSVLogger(tmp_path / "logs", name="7", version="0123456789abcdef" * 2),
        enable_checkpointing=False)
    assert re.fullmatch(rf"7-01234567-{STAMP}", long_id.monitor.run)


def test_resume_keeps_the_name(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_RUN_DIR", str(tmp_path / "runs"))
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1)
    first = LLMOpsMonitor(port=0)
    fit(first, tmp_path, steps=2, extra=[ckpt], logger=CSVLogger(tmp_path / "logs", name="exp"))
    second = LLMOpsMonitor(port=0)
    trainer = fit(second, tmp_path, steps=4, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"),
                  extra=[ModelCheckpoint(dirpath=tmp_path / "ckpt2")], logger=CSVLogger(tmp_path / "logs", name="exp"))
    assert trainer.global_step == 4 and trainer.logger.version == 1  # Lightning's own version moved on
    assert second.monitor.run == first.monitor.run  # ours did not: one run in Prometheus and one run log
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [first.monitor.run]
    fresh = LLMOpsMonitor(port=0)
    fit(fresh, tmp_path, steps=1, logger=CSVLogger(tmp_path / "logs", name="exp"), enable_checkpointing=False)
    assert fresh.monitor.run != first.monitor.run  # a new run without a checkpoint is a new name


def test_fast_dev_run_has_a_clear_name_no_port_and_no_run_log(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_RUN_DIR", str(tmp_path / "runs"))
    monitor = LLMOpsMonitor(port=0)
    fit(monitor, tmp_path, fast_dev_run=True)
    assert re.fullmatch(rf"fast_dev_run-{STAMP}", monitor.monitor.run)
    assert monitor.metrics_url is None and not (tmp_path / "runs").exists()
    asked = LLMOpsMonitor(port=0, serve=True, runlog=True)
    fit(asked, tmp_path, fast_dev_run=True)
    assert asked.metrics_url is not None and (tmp_path / "runs" / asked.monitor.run / "rank0.jsonl").exists()
    asked.monitor.shutdown()


def test_lightning_cli_sees_the_public_arguments_only():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(LLMOpsMonitor, "monitor")
    text = parser.format_help()
    assert "--monitor.port" in text and "--monitor.pushgateway_url" in text
    assert "registry" not in text and "nvml_client" not in text  # the test hooks are private
    assert re.search(r"--monitor\.on_oom_risk \{warn,raise\}", text), text  # a Literal: the CLI lists choices
    parsed = parser.parse_args(["--monitor.on_oom_risk", "raise"])
    assert parsed.monitor.on_oom_risk == "raise"
