import pytest

from llmops.estimate import get_preset, parse_count, parse_size


@pytest.mark.parametrize("text,expected", [
    ("7e9", 7 * 10**9), ("7B", 7 * 10**9), ("1.3b", 1_300_000_000), ("7000000000", 7 * 10**9),
    ("125M", 125 * 10**6), ("70b", 70 * 10**9)])
def test_parse_count(text, expected):
    assert parse_count(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("24GB", 24 * 10**9), ("80GiB", 80 * 2**30), ("80", 80 * 10**9), ("0.5", 5 * 10**8),
    ("512MB", 512 * 10**6), ("1TB", 10**12)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["-5", "0", "abc", "7X", ""])
def test_bad_sizes_and_counts(bad):
    with pytest.raises(ValueError):
        parse_size(bad)
    with pytest.raises(ValueError):
        parse_count(bad)


def test_unknown_preset_suggests():
    with pytest.raises(ValueError, match="llama-2-7b"):
        get_preset("lama-2-7b")
