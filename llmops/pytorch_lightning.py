"""``LLMOpsMonitor`` for the standalone ``pytorch_lightning`` package."""

from pytorch_lightning.callbacks import Callback

from llmops.integration.callback import MonitorCallback


class LLMOpsMonitor(MonitorCallback, Callback):
    __doc__ = MonitorCallback.__doc__
    _lightning_dist = "pytorch-lightning"


__all__ = ["LLMOpsMonitor"]
