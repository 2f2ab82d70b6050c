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


def test_sizes_read_in_the_unit_that_suits_them():
    from llmops.estimate.units import fmt_bytes, in_unit, unit_for

    assert fmt_bytes(64_720_000) == "64.72 MB" and fmt_bytes(163_630_000_000) == "163.63 GB"
    assert fmt_bytes(2.8e12) == "2,800.00 GB"  # GB at most: planning figures stay comparable
    assert fmt_bytes(512) == "512 B" and fmt_bytes(None) == "—"
    unit = unit_for(3_240_000, 900_000_000, None)  # one unit for a whole table: its largest figure's
    assert unit == (1e6, "MB") and in_unit(3_240_000, unit) == "3.24" and in_unit(0, unit) == "0.00"
    assert unit_for(3 * 2**20, binary=True) == (2.0**20, "MiB")
