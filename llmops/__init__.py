"""llmops."""
