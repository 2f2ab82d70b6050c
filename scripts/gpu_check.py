"""GPU checks (run by scripts/gpu-check.sh): NVML probe vs nvidia-smi, the accuracy matrix, a monitored fit."""

from __future__ import annotations

import subprocess

import lightning.pytorch as pl
import torch

from bench import accuracy as accuracy_matrix
from bench import safe_batch
from llmops import LLMOpsMonitor
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


def accuracy() -> None:
    """The accuracy matrix (document, refined, dry run vs max_memory_allocated) and the largest safe batch."""
    accuracy_matrix.main(["--device", "cuda"])
    safe_batch.main(["--device", "cuda", "--quick"])


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
    accuracy()
    monitored_fit()
