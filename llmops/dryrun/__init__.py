"""The dry run: the user's own step on fake tensors (FSDP2 on a fake process group included) -> the exact
peak by category."""

from llmops.dryrun.factory import Built, build, load_factory, model_fields, spec_from_model
from llmops.dryrun.result import cuda_kernel_bytes, for_run, to_estimate
from llmops.dryrun.run import DEFAULT_TIMEOUT_S, DryRun, DryRunSkipped, dry_run, lightning_step

__all__ = ["DEFAULT_TIMEOUT_S", "Built", "DryRun", "DryRunSkipped", "build", "cuda_kernel_bytes",
           "dry_run", "for_run", "lightning_step", "load_factory", "model_fields", "spec_from_model", "to_estimate"]
