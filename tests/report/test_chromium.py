"""The report opened in headless Chromium (Debian's ``chromium``) renders its plots."""

from __future__ import annotations

import shutil
import subprocess

import lightning.pytorch as pl
import pytest
from PIL import Image, ImageStat

from llmops import LLMOpsMonitor
from llmops.report import write_report
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_headless_chromium_screenshot_is_not_blank(tmp_path):
    monitor = LLMOpsMonitor(port=0, run="shot", run_dir=str(tmp_path), memory_budget="1GB", interval=0.05)
    trainer = pl.Trainer(max_steps=10, accelerator="cpu", callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4))
    page = write_report(tmp_path / "shot")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    "--hide-scrollbars", "--window-size=1100,2600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1100, 2600)
    assert max(ImageStat.Stat(img).stddev) > 20  # not one flat colour
    # the plots' coloured lines: saturated pixels, which the text and tables never are
    colourful = sum(img.convert("HSV").getchannel("S").histogram()[80:])
    assert colourful > 2000, f"only {colourful} coloured pixels: the plots did not render"
