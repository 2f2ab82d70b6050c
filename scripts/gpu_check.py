"""GPU checks (run by scripts/gpu-check.sh): NVML probe vs nvidia-smi, predicted vs measured CUDA peak."""

from __future__ import annotations

import subprocess

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from llmops import LLMOpsMonitor
from llmops.estimate import TrainingSpec, refined
from llmops.introspect import count_parameters
from llmops.probes import CudaAllocatorProbe, NvmlProbe, PynvmlClient
from llmops.probes.cuda import cuda_device_uuid
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader
from tests.helpers.scrape import scrape


def nvml_vs_smi() -> None:
    probe = NvmlProbe(PynvmlClient(), cuda_uuid=cuda_device_uuid(0), cuda_index=0)
    probe.open()
    torch.ones(256, 2**20, device="cuda")  # 1 GiB held by this process
    r = probe.read()
    smi = subprocess.run(["nvidia-smi", f"--id={r.uuid}", "--query-gpu=memory.total,memory.used",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout.split(",")
    free, total = torch.cuda.mem_get_info(0)
    print(f"nvml: index={r.index} uuid={r.uuid} name={r.name} total={r.memory_total_bytes} "
          f"used={r.memory_used_bytes} process={r.process_memory_bytes} util={r.utilization_ratio}")
    print(f"nvidia-smi MiB: total={smi[0].strip()} used={smi[1].strip()}; torch.cuda.mem_get_info total={total} "
          f"used={total - free}; uuid matches torch: {cuda_device_uuid(0) == r.uuid}")
    print(f"allocator: {CudaAllocatorProbe(0).read()}")
    probe.close()


def peak_of_second_step(cfg: GPTConfig, b: int, precision: str) -> tuple[int, int]:
    torch.manual_seed(0)
    net = GPT(cfg).cuda()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (b, cfg.block_size), device="cuda")
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    peak = 0
    for _ in range(2):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = net(x)
            loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size).float(), x.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        del logits, loss
    n, _ = count_parameters(net)
    spec = TrainingSpec(params=n, layers=cfg.n_layer, heads=cfg.n_head, hidden=cfg.n_embd, vocab=cfg.vocab_size,
                        seq_len=cfg.block_size, batch_size=b, precision=precision, device="cuda",
                        overhead_bytes=0, dropout=cfg.dropout > 0)
    predicted = refined(spec).peak_bytes or 0
    del net, opt
    torch.cuda.empty_cache()
    return predicted, peak


def predicted_vs_measured() -> None:
    print("| L | h | a | s | b | V | precision | refined peak GB | measured peak GB | measured/refined |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for L, h, a, s, b, V in ((4, 256, 4, 256, 8, 1024), (12, 768, 12, 1024, 4, 50257), (24, 1024, 16, 1024, 2, 50257)):
        for precision in ("fp32", "bf16-mixed"):
            cfg = GPTConfig(n_layer=L, n_head=a, n_embd=h, vocab_size=V, block_size=s, dropout=0.1)
            pred, meas = peak_of_second_step(cfg, b, precision)
            print(f"| {L} | {h} | {a} | {s} | {b} | {V} | {precision} | {pred / 1e9:.3f} | {meas / 1e9:.3f} | "
                  f"{meas / pred:.3f} |")


def monitored_fit() -> None:
    cfg = GPTConfig(n_layer=4, n_head=4, n_embd=256, vocab_size=1024, block_size=256, dropout=0.1)
    monitor = LLMOpsMonitor(port=0, run="gpu-check", interval=0.2)
    trainer = pl.Trainer(max_steps=20, accelerator="gpu", devices=1, callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(make_module(pl.LightningModule, GPT(cfg)), token_loader(1024, 256, 8, n=256))
    for name, labels, v in scrape(monitor.metrics_url):
        if name.startswith(("llmops_gpu_", "llmops_memory_actual", "llmops_memory_drift", "llmops_cuda_",
                            "llmops_oom")):
            print(name, {k: x for k, x in labels.items() if k not in ("run", "rank")}, v)


if __name__ == "__main__":
    nvml_vs_smi()
    predicted_vs_measured()
    monitored_fit()
