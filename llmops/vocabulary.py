"""The words every part of llmops uses for the same things, defined once: memory components, where a step's time
and its memory peak go, recomputation modes. Pure constants, no torch."""

from __future__ import annotations

# A device's memory by component: predicted (``Estimate.components``, the ``component`` label of
# llmops_memory_predicted_bytes) and measured (llmops_memory_actual_bytes); ``peak`` is the step's real peak.
TENSOR_COMPONENTS = ("params", "grads", "optimizer_states", "activations", "temporaries")  # what tensors hold
COMPONENTS = (*TENSOR_COMPONENTS, "overhead")  # and the fixed overhead per process (CUDA context, workspaces)
PEAK = "peak"
# What a live-bytes count sorts every tensor into at the peak; ``other`` is what it cannot place.
LIVE_CATEGORIES = ("params", "grads", "optimizer_states", "activations", "temporaries", "other")
# Where a training step's time goes (llmops_step_phase_seconds_total{phase}).
STEP_PHASES = ("data", "forward", "backward", "optimizer", "comm_exposed")
# Where a training step's memory can peak.
MEMORY_PHASES = ("forward", "backward", "optimizer")
# Activation recomputation: none; attention (Megatron's selective: the s×s scores only); selective (op-level, as
# torchtitan's policy: SDPA and every other matmul kept); full (each layer's input kept, the layer rebuilt).
RECOMPUTE = ("none", "attention", "selective", "full")
# The parts of the monitor an error is counted under (llmops_monitor_errors_total{probe}): each guards one job.
PROBES = ("activations", "checkpoint", "collector", "comm", "comm_probe", "cuda_allocator", "dryrun", "exporter",
          "loggers", "memory_history", "node", "node_handoff", "nvml", "postmortem", "preflight", "pushgateway",
          "runlog", "setup", "stall", "steps", "teardown")
