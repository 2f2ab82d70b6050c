"""Lightning-free orchestration of one process's monitoring: settings, the fit's objects, the sampler, the
preflight, the OOM post-mortem and the guard that keeps every error inside the monitor."""
