"""Text a person reads: the tables of the CLI, the preflight and the what-if solver."""
