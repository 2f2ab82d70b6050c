"""One measured step: what the forward saves for backward, and on the CPU every live byte of the step."""

from __future__ import annotations

from typing import Any

import torch

from llmops.probes import ActivationMeter, LiveBytes, state_bytes


class StepMeasurement:
    """Opened at a sampled step's first hook and finished at its end (or aborted by an exception). CUDA's
    allocator keeps the peak itself (``max_memory_allocated``); on the CPU ``LiveBytes`` counts it."""

    def __init__(self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer], batch: Any,
                 device: str) -> None:
        self.meter = ActivationMeter(exclude=module.parameters())
        self.live = LiveBytes.for_step(module.parameters(), optimizers, batch, module.buffers()) \
            if device == "cpu" else None
        self.meter.start()

    def forward_done(self) -> None:
        """Stop counting saved tensors before backward, so recomputation in backward is not counted."""
        self.meter.stop()
        if self.live is not None:
            self.live.phase("backward")

    def optimizer_step(self) -> None:
        """The optimizer step begins: what it allocates is its temporaries."""
        if self.live is not None:
            self.live.phase("optimizer")

    def finish(self, module: torch.nn.Module,
               optimizers: list[torch.optim.Optimizer]) -> tuple[dict[str, int], str, int]:
        """``(components, peak phase, saved bytes)``. CPU: what the live-bytes count held at the step's peak, by
        category (they sum to ``peak``). CUDA: the states counted from the tensors and the activations saved for
        backward; the peak comes from the allocator on the sampler thread."""
        self.meter.stop()
        saved = self.meter.activation_bytes
        if self.live is not None:
            peak = self.live.finish(module.parameters(), optimizers)
            c = peak.categories
            return ({"params": c["params"], "grads": c["grads"], "optimizer_states": c["optimizer_states"],
                     "activations": c["activations"], "temporaries": c["temporaries"] + c["other"],
                     "peak": peak.peak_bytes}, peak.phase, saved)
        counted = state_bytes(module, optimizers)
        return ({"params": counted["params"], "grads": counted["grads"],
                 "optimizer_states": counted["optimizer_states"], "activations": saved}, "", saved)

    def abort(self) -> None:
        self.meter.stop()
        if self.live is not None:
            self.live.abort()
