#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the real probes against nvidia-smi and torch.cuda, the accuracy
# matrix (bench/accuracy.py: document, refined and dry run against max_memory_allocated) and the
# largest-safe-batch comparison, LitGPT LoRA per-sample bytes by norm (the public table's Llama gap), a
# monitored Lightning fit, and the GPU-marked tests. About 5 minutes
# on an H100.
# Uses the machine's python3 (with torch, lightning, prometheus-client, nvidia-ml-py installed).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu --format=csv
$PY scripts/gpu_check.py
$PY -m pytest -q -m gpu -p no:cacheprovider tests
echo "gpu-check: ${SECONDS} s"
