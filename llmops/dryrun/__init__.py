"""The dry run: the user's own step on fake tensors (FSDP2 on a fake process group included) -> the exact
peak by category."""
