"""The demo's text, shipped in the package (nothing is downloaded), as a character-level dataset."""

from __future__ import annotations

from importlib import resources

import torch
from torch.utils.data import Dataset

TEXT = "sonnets.txt"  # a selection of Shakespeare's Sonnets (1609), public domain


def load_text(name: str = TEXT) -> str:
    return resources.files("llmops.demo").joinpath("data").joinpath(name).read_text(encoding="utf-8")


class CharDataset(Dataset):
    """Every window of ``seq_len + 1`` characters: inputs are the first ``seq_len``, targets shifted by one."""

    def __init__(self, text: str, seq_len: int) -> None:
        if seq_len < 1 or seq_len >= len(text):
            raise ValueError(f"seq_len={seq_len} is not allowed; expected 1..{len(text) - 1} for this text")
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.data = torch.tensor([self.stoi[c] for c in text], dtype=torch.long)
        self.seq_len = seq_len

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.data) - self.seq_len

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.data[i: i + self.seq_len + 1]
        return chunk[:-1], chunk[1:]

    def encode(self, s: str) -> torch.Tensor:
        return torch.tensor([self.stoi[c] for c in s if c in self.stoi], dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        return "".join(self.chars[i] for i in ids.tolist())
