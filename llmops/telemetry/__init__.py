"""Instruments on the training loop that only drop marks for the sampler: steps and phases, communication,
stalls, checkpoints, the measuring schedule and drift."""
