"""Real Trainer.fit on the CPU; the endpoint scraped over HTTP and parsed by prometheus-client."""

from __future__ import annotations

import logging
import socket
from fractions import Fraction

import lightning.pytorch as pl
import pytest
import torch

from llmops import LLMOpsMonitor, OOMRiskError, OOMRiskWarning, TrainingSpec
from llmops.estimate.document import activation_bytes
from tests.helpers.models import GPT, GPTConfig, HFStyleModel, hf_style_config, make_module, token_loader
from tests.helpers.scrape import scrape, value


def fit(monitor, net, steps=3, batch_size=4, seq_len=16, vocab=64, namespace=pl, optimizer="adamw",
        callbacks_extra=(), **kw):
    module = make_module(namespace.LightningModule, net, optimizer=optimizer)
    trainer = namespace.Trainer(max_steps=steps, accelerator="cpu", devices=1,
                                callbacks=[monitor, *callbacks_extra],
                                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, **kw)
    trainer.fit(module, token_loader(vocab, seq_len, batch_size))
    return trainer, module


@pytest.fixture
def records():
    """Records of the llmops logger (it does not propagate when no root handler exists)."""
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    log = logging.getLogger("llmops")
    log.addHandler(handler)
    yield seen
    log.removeHandler(handler)


def exact_state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    states = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                 for t in s.values() if torch.is_tensor(t))
    return params, states


def test_nanogpt_fit_exports_prediction_and_measurements():
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16)
    monitor = LLMOpsMonitor(port=0, run="nano", activation_interval=1)
    trainer, module = fit(monitor, GPT(cfg), steps=3, batch_size=4, seq_len=16)
    assert monitor.metrics_url and monitor.metrics_url.startswith("http://127.0.0.1:")
    samples = scrape(monitor.metrics_url)
    assert all(lab["run"] == "nano" and lab["rank"] == "0" for n, lab, _ in samples if n.startswith("llmops_"))
    # document activations: the formula for L=2, b=4, s=16, h=32, a=2 at fp32 (p = 4)
    expected = activation_bytes(2, 4, 16, 32, 2, Fraction(4))
    assert value(samples, "llmops_memory_predicted_bytes", component="activations", model="document") == expected
    assert value(samples, "llmops_batch_size") == 4
    assert value(samples, "llmops_train_step") == 3 == trainer.global_step
    assert value(samples, "llmops_samples_total") == 12
    assert value(samples, "llmops_step_duration_seconds_count") == 3
    params, states = exact_state_bytes(module, trainer.optimizers[0])
    assert value(samples, "llmops_memory_actual_bytes", component="params") == params
    assert value(samples, "llmops_memory_actual_bytes", component="optimizer_states") == states
    assert value(samples, "llmops_memory_actual_bytes", component="activations") > 0
    assert value(samples, "llmops_memory_drift_ratio", model="refined") > 0
    # CPU: no NVML read, so no GPU series at all (never zeros)
    assert not [n for n, _, _ in samples if n.startswith("llmops_gpu_")]
    assert value(samples, "llmops_build_info", precision="32-true", strategy="SingleDeviceStrategy") == 1


def test_hf_style_model_prediction_uses_config():
    config = hf_style_config(layers=3, heads=4, hidden=32, vocab=50)
    monitor = LLMOpsMonitor(port=0, run="hf")
    fit(monitor, HFStyleModel(config), steps=2, batch_size=2, seq_len=8, vocab=50)
    samples = scrape(monitor.metrics_url)
    expected = activation_bytes(3, 2, 8, 32, 4, Fraction(4))
    assert value(samples, "llmops_memory_predicted_bytes", component="activations", model="document") == expected
    spec = monitor.monitor.intro.spec
    assert (spec.layers, spec.heads, spec.hidden, spec.ffn_hidden, spec.vocab) == (3, 4, 32, 128, 50)
    assert (spec.batch_size, spec.seq_len, spec.precision, spec.optimizer) == (2, 8, "fp32", "adamw")


def test_pytorch_lightning_namespace_fits():
    import pytorch_lightning as ptl

    from llmops.pytorch_lightning import LLMOpsMonitor as PTLMonitor

    monitor = PTLMonitor(port=0, run="ptl")
    trainer, _ = fit(monitor, GPT(GPTConfig()), steps=2, namespace=ptl)
    assert trainer.global_step == 2
    assert value(scrape(monitor.metrics_url), "llmops_train_step") == 2


def test_spec_overrides_inferred_fields():
    monitor = LLMOpsMonitor(port=0, spec=TrainingSpec(seq_len=1024))
    fit(monitor, GPT(GPTConfig()), steps=1)
    assert monitor.monitor.intro.spec.seq_len == 1024
    assert monitor.monitor.intro.sources["seq_len"] == "spec="


def test_tiny_budget_warns_and_sets_risk(records):
    monitor = LLMOpsMonitor(port=0, memory_budget="10kB")
    with pytest.warns(OOMRiskWarning, match="largest safe micro-batch") as caught:
        trainer, module = fit(monitor, GPT(GPTConfig()), steps=2)
    assert issubclass(OOMRiskWarning, UserWarning)
    assert module.steps_run == 2  # warn only: the run goes on
    assert value(scrape(monitor.metrics_url), "llmops_oom_risk", source="prediction") == 1
    assert any("OOM risk" in r.getMessage() and r.levelno == logging.WARNING for r in records)
    assert any("OOM risk (measured)" in str(w.message) for w in caught)  # what the step measured, too


def test_oom_risk_warning_made_an_error_stops_the_run():
    """``-W error::llmops.OOMRiskWarning`` (or a pytest filter) turns the warning into the user's stop."""
    import warnings

    monitor = LLMOpsMonitor(port=0, memory_budget="10kB")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OOMRiskWarning)
        with pytest.raises(OOMRiskWarning):
            fit(monitor, GPT(GPTConfig()), steps=2)


def test_tiny_budget_raise_stops_before_any_step():
    monitor = LLMOpsMonitor(port=0, memory_budget=10_000, on_oom_risk="raise")
    module = make_module(pl.LightningModule, GPT(GPTConfig()))
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(OOMRiskError, match="largest safe micro-batch"):
        trainer.fit(module, token_loader(64, 16, 4))
    assert module.steps_run == 0 and trainer.global_step == 0


def test_nvml_absent_no_gpu_series_and_error_counted():
    monitor = LLMOpsMonitor(port=0, nvml=True, interval=0.05)  # force the real NVML on a CPU machine
    trainer, _ = fit(monitor, GPT(GPTConfig()), steps=2)
    samples = scrape(monitor.metrics_url)
    assert trainer.global_step == 2
    assert not [n for n, _, _ in samples if n.startswith("llmops_gpu_")]
    if not torch.cuda.is_available():
        assert value(samples, "llmops_monitor_errors_total", probe="nvml") >= 1


def test_port_in_use_next_port_serves():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monitor = LLMOpsMonitor(port=port)
        fit(monitor, GPT(GPTConfig()), steps=1)
        assert not monitor.metrics_url.endswith(f":{port}/metrics")
        assert value(scrape(monitor.metrics_url), "llmops_train_step") == 1
    monitor.monitor.shutdown()


@pytest.mark.parametrize("kwargs,name", [
    ({"port": -1}, "port"), ({"port": 70000}, "port"), ({"safety": 0}, "safety"), ({"safety": 2}, "safety"),
    ({"on_oom_risk": "explode"}, "on_oom_risk"), ({"interval": 0}, "interval"),
    ({"memory_budget": "lots"}, "memory_budget"), ({"memory_budget": -5}, "memory_budget"),
    ({"spec": {"layerz": 2}}, "layerz"), ({"spec": {"layers": -2}}, "layers"), ({"spec": [2]}, "spec"),
    ({"certfile": "a.pem"}, "certfile"),
    # the estimator's own checks run at construction, not at the first batch of the run
    ({"spec": TrainingSpec(heads=7, hidden=100)}, "heads"), ({"spec": TrainingSpec(precision="fp8")}, "fp8"),
    # values that would break the sampler or teardown after training
    ({"linger": float("nan")}, "linger"), ({"interval": float("inf")}, "interval"), ({"linger": -1}, "linger"),
    ({"safety": True}, "safety"), ({"nvml": "yes"}, "nvml"), ({"runlog": "no"}, "runlog"),
    ({"pushgateway_url": ""}, "pushgateway_url"), ({"basic_auth": ("u", 5)}, "basic_auth"),
    ({"certfile": "/nonexistent.pem", "keyfile": "/nonexistent.key"}, "certfile"), ({"run_dir": 5}, "run_dir")])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LLMOpsMonitor(**kwargs)


def fake_gpu_client():
    import os

    from llmops.probes.base import NvmlProcess
    from llmops.probes.fake import FakeGpu, FakeNvmlClient

    gpu = FakeGpu(index=0, uuid="GPU-11111111-2222-3333-4444-555555555555", memory_total_bytes=80 * 10**9,
                  memory_used_bytes=20 * 10**9, utilization_percent=75,
                  processes=[NvmlProcess(os.getpid(), 3 * 10**9), NvmlProcess(1, 9 * 10**9)])
    return FakeNvmlClient([gpu])


def test_fake_nvml_gpu_series_by_uuid():
    client = fake_gpu_client()
    monitor = LLMOpsMonitor(port=0, nvml=True, _nvml_client=client, interval=0.02)
    fit(monitor, GPT(GPTConfig()), steps=2)
    samples = scrape(monitor.metrics_url)
    labels = {"gpu": "0", "UUID": "GPU-11111111-2222-3333-4444-555555555555"}
    assert value(samples, "llmops_gpu_memory_total_bytes", **labels) == 80 * 10**9
    assert value(samples, "llmops_gpu_memory_used_bytes", **labels) == 20 * 10**9
    assert value(samples, "llmops_gpu_process_memory_bytes", **labels) == 3 * 10**9  # this pid only
    assert value(samples, "llmops_gpu_utilization_ratio", **labels) == 0.75
    assert client.shutdown_calls >= 1  # closed at the end of fit


def test_probe_raising_mid_run_is_counted_and_run_completes():
    from llmops.probes.base import NvmlError

    client = fake_gpu_client()

    class BreakNvml(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:
                client.errors["memory_info"] = NvmlError(999, "GPU is lost")

    monitor = LLMOpsMonitor(port=0, nvml=True, _nvml_client=client, interval=0.01)
    trainer, module = fit(monitor, GPT(GPTConfig()), steps=4, callbacks_extra=[BreakNvml()])
    assert trainer.global_step == 4 and module.steps_run == 4
    assert value(scrape(monitor.metrics_url), "llmops_monitor_errors_total", probe="nvml") >= 1


def test_activations_measured_over_forward_only_with_checkpointing():
    """Reentrant checkpointing recomputes in backward; the meter stops before backward, so it counts
    what the forward keeps: far less than the same model without checkpointing."""
    from bench.gpt import GPT as BenchGPT
    from bench.gpt import BenchConfig

    measured = {}
    for recompute in ("none", "full"):
        cfg = BenchConfig(n_layer=4, n_head=2, n_embd=32, vocab_size=64, block_size=16, recompute=recompute)
        monitor = LLMOpsMonitor(port=0, activation_interval=1)
        fit(monitor, BenchGPT(cfg), steps=2)
        measured[recompute] = value(scrape(monitor.metrics_url), "llmops_memory_actual_bytes", component="activations")
    assert measured["full"] < 0.6 * measured["none"]


def test_one_monitor_serves_a_second_fit(tmp_path):
    """Reusing the callback (fit, then fit again): same endpoint, the second fit's steps counted and logged."""
    from llmops.runlog import read_run

    monitor = LLMOpsMonitor(port=0, run="twice", run_dir=str(tmp_path))
    fit(monitor, GPT(GPTConfig()), steps=2)
    url = monitor.metrics_url
    trainer, _ = fit(monitor, GPT(GPTConfig()), steps=3)
    s = scrape(url)
    assert monitor.metrics_url == url and trainer.global_step == 3
    assert value(s, "llmops_train_step") == 3 and value(s, "llmops_samples_total") == 4 * (2 + 3)
    rank = read_run(tmp_path / "twice").ranks[0]
    assert rank.end is not None and [step for step, _, _ in rank.steps][-1] == 3  # the second session, closed


def test_accumulation_measures_once_per_sampled_step_after_the_optimizer_step():
    monitor = LLMOpsMonitor(port=0, runlog=False)
    _, module = fit(monitor, GPT(GPTConfig()), steps=2, accumulate_grad_batches=4)
    s = scrape(monitor.metrics_url)
    assert value(s, "llmops_activation_sample_steps_total") == 2  # steps 0 and 1, not their 4 micro-batches each
    moments = sum(t.numel() * t.element_size() for st in module.optimizers().optimizer.state.values()
                  for t in st.values() if torch.is_tensor(t))  # moments and step counters
    assert moments > 0 and value(s, "llmops_memory_actual_bytes", component="optimizer_states") == moments


def test_spec_dict_sets_a_field_even_to_its_default():
    """An optimizer the estimator does not know (NAdam): spec={"optimizer": "adamw"} brings the refined
    model back, although "adamw" is TrainingSpec's default (a TrainingSpec could not say so)."""
    quiet = LLMOpsMonitor(port=0, runlog=False)
    fit(quiet, GPT(GPTConfig()), steps=1, optimizer="nadam")
    assert "refined" not in quiet.monitor.prediction and "optimizer" in quiet.monitor.intro.missing
    told = LLMOpsMonitor(port=0, runlog=False, spec={"optimizer": "adamw"})
    fit(told, GPT(GPTConfig()), steps=1, optimizer="nadam")
    assert "refined" in told.monitor.prediction and told.monitor.intro.sources["optimizer"] == "spec="
