"""The basic-auth password never shows: not in a repr of the config or the callback, nor in the run log."""

from __future__ import annotations

from llmops import LLMOpsMonitor
from tests.helpers.models import GPT, GPTConfig
from tests.integration.test_callback_fit import fit

SECRET = "s3cret-Pa55"


def test_password_is_in_no_repr_and_no_run_log(tmp_path):
    monitor = LLMOpsMonitor(port=0, basic_auth=("scraper", SECRET), run="secret", run_dir=str(tmp_path))
    assert SECRET not in repr(monitor.config) and SECRET not in repr(vars(monitor))
    assert monitor.config.basic_auth == ("scraper", SECRET)  # still there for the server to check
    fit(monitor, GPT(GPTConfig()), steps=1)
    assert SECRET not in repr(vars(monitor)) and SECRET not in repr(vars(monitor.monitor))
    assert all(SECRET not in p.read_text() for p in tmp_path.rglob("*") if p.is_file())
