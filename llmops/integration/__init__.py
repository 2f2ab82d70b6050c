"""The Lightning integration: the callback (one line per hook), its loggers, and the run's name."""
