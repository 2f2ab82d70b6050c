"""``LLMOpsMonitor`` for the ``lightning`` package (``lightning.pytorch``)."""

from lightning.pytorch.callbacks import Callback

from llmops.integration.callback import MonitorCallback


class LLMOpsMonitor(MonitorCallback, Callback):
    __doc__ = MonitorCallback.__doc__
    _lightning_dist = "lightning"


__all__ = ["LLMOpsMonitor"]
