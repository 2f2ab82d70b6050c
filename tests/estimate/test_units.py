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
    from llmops.units import fmt_bytes, in_unit, unit_for

    assert fmt_bytes(64_720_000) == "64.72 MB" and fmt_bytes(163_630_000_000) == "163.63 GB"
    assert fmt_bytes(2.8e12) == "2,800.00 GB"  # GB at most: planning figures stay comparable
    assert fmt_bytes(512) == "512 B" and fmt_bytes(None) == "—"
    unit = unit_for(3_240_000, 900_000_000, None)  # one unit for a whole table: its largest figure's
    assert unit == (1e6, "MB") and in_unit(3_240_000, unit) == "3.24" and in_unit(0, unit) == "0.00"
    assert unit_for(3 * 2**20, binary=True) == (2.0**20, "MiB")


@pytest.mark.parametrize("text,expected", [
    ("7,000,000,000", 7 * 10**9), ("1,000", 1000), ("1,300.5M", 1_300_500_000), ("7,000B", 7 * 10**12)])
def test_commas_separate_thousands(text, expected):
    assert parse_count(text) == expected


@pytest.mark.parametrize("bad", ["1,5B", "1,5,0B", "7,00", "1,0000", ",5", "1,", "1.5,000"])
def test_any_other_comma_is_an_error_not_a_silent_misreading(bad):
    with pytest.raises(ValueError, match="commas only separate thousands"):
        parse_count(bad)  # "1,5B" used to read as 15B


def test_sizes_take_thousands_separators_too():
    assert parse_size("24,000MB") == 24 * 10**9
    with pytest.raises(ValueError, match="commas only separate thousands"):
        parse_size("1,5GB")


@pytest.mark.parametrize("text", ["1e400", "1e999999999", "1000000000000000001", "1.0000000000000000001e18",
                                  "99999999999999999999999999999999999999999999999999T"])
def test_counts_past_1e18_are_out_of_range(text):
    with pytest.raises(ValueError, match="out of range; allowed: 1 to 1e18 parameters"):
        parse_count(text)


def test_the_largest_count_and_size_are_allowed():
    assert parse_count("1e18") == 10**18 and parse_size("1e18B") == 10**18 and parse_size("1e9GB") == 10**18


@pytest.mark.parametrize("text", ["1e400", "1e10", "1e18", "1e999999999", pytest.param(10**400, id="10**400"), 1e300])
def test_sizes_past_1e18_bytes_are_out_of_range(text):
    with pytest.raises(ValueError, match="out of range; allowed: 1 to 1e18 bytes"):
        parse_size(text)  # a bare number is GB


def test_a_tiny_exponent_is_less_than_one_not_a_huge_computation():
    with pytest.raises(ValueError, match="less than one parameter"):
        parse_count("1e-999999999")
    with pytest.raises(ValueError, match="less than one byte"):
        parse_size("1e-999999999")


def test_zero_only_where_allowed():
    assert parse_size("0", allow_zero=True) == 0 and parse_size("0GB", allow_zero=True) == 0
    with pytest.raises(ValueError, match="not a positive size"):
        parse_size("0")
    with pytest.raises(ValueError, match="not a positive size"):
        parse_size("-1GB", allow_zero=True)


def test_numbers_from_code_parse_as_their_decimal_text():
    assert parse_size(8e9, bare_unit=1) == 8 * 10**9 and parse_size(24) == 24 * 10**9
    with pytest.raises(ValueError, match="not a size"):
        parse_size(float("inf"))


def test_validate_bounds_every_count_and_size():
    from llmops.estimate import TrainingSpec, validate

    for field, value in (("layers", 10**320), ("seq_len", 10**9 + 1), ("params", 10**18 + 1),
                         ("gpu_memory", 10**19), ("world_size", 10**10), ("overhead_bytes", 10**19)):
        with pytest.raises(ValueError, match=f"^{field}=.* is not allowed; .*1e(9|18)"):
            validate(TrainingSpec(**{field: value}))
    validate(TrainingSpec(layers=10**9, params=10**18, gpu_memory=10**18, overhead_bytes=0))
