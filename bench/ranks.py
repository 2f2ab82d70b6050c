"""Many simulated ranks in one process: each serves its own loopback port with the series a GPU DDP rank
exports (the real ``MetricState`` and ``LLMOpsCollector``), and its values change at every scrape.

One asyncio loop holds every listening socket, so 1,024 endpoints cost one thread. Rank ``slow_rank``
steps 30% slower than the others (a straggler for the rules to find); rank 0 also writes checkpoints and
exports the run-level prediction, as in a real run.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, generate_latest

from llmops.exporter import LLMOpsCollector
from llmops.metrics import MetricState

GPUS_PER_NODE = 8
COMPONENTS = ("params", "grads", "optimizer_states", "activations", "overhead", "peak")


class SimulatedRank:
    """One rank's state, advanced by the wall time since its last scrape (0.5 s a step, 8 samples a step)."""

    def __init__(self, run: str, rank: int, slow_rank: int | None, seed: int = 0) -> None:
        self.rank, self.local = rank, rank % GPUS_PER_NODE
        self.state = MetricState()
        self.registry = CollectorRegistry()
        self.registry.register(LLMOpsCollector(self.state, run=run, rank=rank))
        self.step_s = 0.5 * (1.3 if rank == slow_rank else 1.0)
        self.random = random.Random(seed * 100_003 + rank)
        self.last = time.time()
        self._static(rank)

    def _static(self, rank: int) -> None:
        s, gpu = self.state, {"gpu": str(self.local), "UUID": f"GPU-{rank:08x}-0000-0000-0000-000000000000"}
        s.set("llmops_run_start_timestamp_seconds", self.last)
        s.set("llmops_memory_budget_bytes", 80e9)
        s.set("llmops_memory_safety_ratio", 0.9)
        s.set("llmops_batch_size", 8)
        s.set("llmops_gpu_memory_total_bytes", 80e9, **gpu)
        s.set("llmops_build_info", 1, version="0.1", torch="2.13.0", lightning="2.6", strategy="DDPStrategy",
              precision="bf16-mixed")
        for source in ("prediction", "measured", "trend"):
            s.set("llmops_oom_risk", 0, source=source)
        for model, scale in (("document", 0.8), ("refined", 1.0)):
            for c in COMPONENTS:
                s.set("llmops_memory_predicted_bytes", scale * 10e9, component=c, model=model)
            s.set("llmops_batch_size_max_safe", 12, model=model)
            s.set("llmops_batch_accumulate_predicted", 1, model=model)
        for method in ("rule_of_thumb", "formula"):
            for phase in ("training", "inference"):
                s.set("llmops_gpus_predicted", 64, method=method, phase=phase)
        s.set("llmops_comm_allreduce_predicted_bytes", 14e9)
        s.set("llmops_train_accumulate_grad_batches", 1)
        s.inc("llmops_checkpoint_failures_total", 0)
        self.gpu = gpu

    def advance(self) -> None:
        """Every step finished since the last call: counters, histograms and gauges, with some noise."""
        now = time.time()
        steps = max(1, int((now - self.last) / self.step_s))
        s, r = self.state, self.random
        for _ in range(steps):
            t = self.step_s * r.uniform(0.9, 1.1)
            s.observe("llmops_step_duration_seconds", t)
            for _ in range(4):
                s.observe("llmops_comm_allreduce_duration_seconds", r.uniform(0.004, 0.03))
            for phase, share in (("data", 0.05), ("forward", 0.3), ("backward", 0.5), ("optimizer", 0.1),
                                 ("comm_exposed", 0.05)):
                s.inc("llmops_step_phase_seconds_total", t * share, phase=phase)
        s.inc("llmops_samples_total", 8 * steps)
        s.inc("llmops_tokens_total", 8 * 4096 * steps)
        s.inc("llmops_model_flops_total", 8 * 4096 * steps * 6 * 7e9)
        s.inc("llmops_comm_allreduce_bytes_total", 14e9 * steps)
        s.set("llmops_train_step", (s.get("llmops_train_step") or 0) + steps)
        s.set("llmops_last_step_timestamp_seconds", now)
        s.set("llmops_train_stalled", 0)
        s.set("llmops_step_time_median_ratio", r.uniform(0.95, 1.05))
        s.set("llmops_mfu_ratio", r.uniform(0.38, 0.42))
        s.set("llmops_comm_bus_bandwidth_bytes_per_second", r.uniform(1.8e11, 2.0e11))
        s.set("llmops_comm_step_time_ratio", r.uniform(0.1, 0.2))
        peak = 60e9 + self.rank * 1e6 + r.uniform(0, 1e8)
        for c in COMPONENTS:
            s.set("llmops_memory_actual_bytes", peak if c == "peak" else peak / 6, component=c)
        for model in ("document", "refined"):
            s.set("llmops_memory_drift_ratio", peak / 10e9, model=model)
        s.set("llmops_cuda_memory_reserved_bytes", peak * 1.05)
        s.set("llmops_gpu_memory_used_bytes", peak * 1.1, **self.gpu)
        s.set("llmops_gpu_process_memory_bytes", peak * 1.08, **self.gpu)
        s.set("llmops_gpu_utilization_ratio", r.uniform(0.9, 1.0), **self.gpu)
        s.set("llmops_gpu_power_watts", r.uniform(600, 700), **self.gpu)
        s.inc("llmops_gpu_energy_joules_total", 650 * (now - self.last), **self.gpu)
        if self.rank == 0:  # the writing rank: a checkpoint every scrape
            s.observe("llmops_checkpoint_save_duration_seconds", r.uniform(20, 40))
            s.inc("llmops_checkpoint_saves_total")
            s.set("llmops_checkpoint_size_bytes", 84e9)
        s.set("llmops_checkpoint_last_success_timestamp_seconds", now)
        self.last = now

    def body(self) -> bytes:
        self.advance()
        return generate_latest(self.registry)


class RankFarm:
    """``ranks`` simulated ranks on ``127.0.0.1:port0 + i``, served from one background thread."""

    def __init__(self, n: int, run: str = "scale", slow_rank: int | None = 3, host: str = "127.0.0.1") -> None:
        if n < 1:
            raise ValueError(f"n={n}: at least one simulated rank")
        self.host, self.ranks = host, [SimulatedRank(run, r, slow_rank) for r in range(n)]
        self.ports: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="rank-farm", daemon=True)

    @property
    def targets(self) -> Sequence[str]:
        return [f"{self.host}:{p}" for p in self.ports]

    def start(self) -> RankFarm:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the simulated ranks did not start listening within 60 s")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        servers = [self._loop.run_until_complete(asyncio.start_server(self._handler(rank), self.host, 0))
                   for rank in self.ranks]
        self.ports = [s.sockets[0].getsockname()[1] for s in servers]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            for s in servers:
                s.close()

    def _handler(self, rank: SimulatedRank):  # noqa: ANN202 - asyncio's callback shape
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while await reader.readline() not in (b"\r\n", b"\n", b""):
                    pass  # the request line and headers: every path gets the metrics
                body = rank.body()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
                await writer.drain()
            finally:
                writer.close()
        return handle
