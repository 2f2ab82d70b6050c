"""``llmops demo``: a small GPT trained on the CPU with the monitor on, end to end.

``model`` (the GPT), ``data`` (the shipped text, character level) and ``run`` (the demo itself,
imported lazily: it pulls in Lightning).
"""
