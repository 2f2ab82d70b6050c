"""Precisions and the parsing of sizes and counts people type (``24GB``, ``80GiB``, ``7B``)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Precision:
    """How a training run stores and computes values, in bytes per value.

    ``param_bytes`` (x) and ``grad_bytes`` (y) are what the refined model counts;
    ``compute_bytes`` (p) is the activation precision; ``master_copy`` is a separate fp32
    copy of the weights kept by the optimizer; ``state_bytes`` is the bytes of each
    optimizer moment.
    """

    name: str
    compute_bytes: Fraction
    param_bytes: Fraction
    grad_bytes: Fraction
    master_copy: bool
    state_bytes: Fraction


_F = Fraction
# formulas.md §1, plus Lightning's precision names for what a real run holds.
PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", _F(4), _F(4), _F(4), False, _F(4)),
    # The document's mixed-precision convention: 2-byte weights and gradients, fp32 master.
    "fp16": Precision("fp16", _F(2), _F(2), _F(2), True, _F(4)),
    "bf16": Precision("bf16", _F(2), _F(2), _F(2), True, _F(4)),
    "int8": Precision("int8", _F(1), _F(1), _F(1), True, _F(4)),
    "int4": Precision("int4", _F(1, 2), _F(1, 2), _F(1, 2), True, _F(4)),
    # Lightning: "*-mixed" keeps fp32 weights and gradients and autocasts the compute.
    "16-mixed": Precision("16-mixed", _F(2), _F(4), _F(4), False, _F(4)),
    "bf16-mixed": Precision("bf16-mixed", _F(2), _F(4), _F(4), False, _F(4)),
    # "*-true" keeps everything, optimizer states included, in the 2-byte type.
    "16-true": Precision("16-true", _F(2), _F(2), _F(2), False, _F(2)),
    "bf16-true": Precision("bf16-true", _F(2), _F(2), _F(2), False, _F(2)),
    # FSDP2's MixedPrecisionPolicy(param_dtype=bf16/fp16, reduce_dtype=fp32): fp32 sharded parameters,
    # gradients and states; each layer gathered and computed in the 2-byte type, without autocast.
    "bf16-fsdp": Precision("bf16-fsdp", _F(2), _F(4), _F(4), False, _F(4)),
    "16-fsdp": Precision("16-fsdp", _F(2), _F(4), _F(4), False, _F(4)),
}
DOCUMENT_PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
PRECISION_ALIASES = {
    "float32": "fp32", "32": "fp32", "32-true": "fp32", "half": "fp16", "float16": "fp16",
    "bfloat16": "bf16", "16": "16-mixed", "bf16-mixed": "bf16-mixed", "64-true": "fp32",
}


def closest(value: str, allowed: list[str] | tuple[str, ...]) -> str:
    """A ``did you mean`` suffix naming the closest allowed names, or ``""``."""
    near = difflib.get_close_matches(value.lower(), list(allowed), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def get_precision(name: str) -> Precision:
    """Look a precision up by its name or alias; ``ValueError`` names what is allowed."""
    key = str(name).strip().lower()
    key = PRECISION_ALIASES.get(key, key)
    if key not in PRECISIONS:
        allowed = sorted(PRECISIONS)
        raise ValueError(
            f"unknown precision {name!r}{closest(str(name), allowed)}; allowed: {', '.join(allowed)}"
        )
    return PRECISIONS[key]


def compute_dtype(precision: str) -> str:
    """The floating dtype a precision computes in: ``bf16`` (bf16, bf16-mixed, bf16-true, bf16-fsdp), ``fp16``
    (fp16 and Lightning's 16-*), else ``fp32``; the document's int8 and int4 by their own names."""
    name = get_precision(precision).name
    if name.startswith("bf16"):
        return "bf16"
    if name.startswith(("16", "fp16")):
        return "fp16"
    return name if name.startswith("int") else "fp32"


def bytes_per_value(precision: str) -> Fraction:
    """formulas.md §1: bytes per value of a precision (4, 2, 1, 0.5)."""
    return get_precision(precision).compute_bytes


# A number as people write it: commas only between groups of three digits (7,000,000,000), so
# "1,5B" is an error rather than 15B; a point for decimals; an optional power of ten.
_NUMBER = r"((?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)(?:e([+-]?[0-9]+))?"
_SIZE = re.compile(rf"\s*{_NUMBER}\s*([a-z]*)\s*", re.IGNORECASE)
_COUNT = re.compile(rf"{_NUMBER}([kmbt]?)")
_SIZE_UNITS = {
    "": 10**9, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
# Far beyond any device or model (an exabyte, a quintillion parameters), and small enough that
# every figure derived from them still converts to a float for tables and messages.
MAX_BYTES = 10**18
MAX_COUNT = 10**18
_COMMA_HINT = "; commas only separate thousands (7,000,000,000), decimals take a point (1.5B)"


def _as_text(text: str | float | int) -> str:
    """What a person typed, or a number's shortest decimal form (``8e9`` → ``'8000000000.0'``)."""
    if isinstance(text, bool):
        return str(text)
    if isinstance(text, int):
        return str(int(text))
    if isinstance(text, float):
        return repr(float(text))  # inf and nan match no number pattern
    return str(text)


def _scientific(mantissa: str, exponent: str | None) -> Fraction:
    """``mantissa × 10**exponent`` exactly. Magnitudes past 10**±40 are clamped to 10**±41, outside
    every allowed range either way, so ``1e999999999`` costs nothing instead of a huge integer."""
    m = Fraction(mantissa.replace(",", ""))
    digits = (exponent or "0").lstrip("+-").lstrip("0")
    if m == 0 or not digits:
        return m
    sign = -1 if (exponent or "").startswith("-") else 1
    e = sign * int(digits) if len(digits) <= 6 else sign * 10**7
    magnitude = e + len(str(m.numerator)) - len(str(m.denominator))
    if magnitude > 40:
        return Fraction(10**41)
    if magnitude < -40:
        return Fraction(1, 10**41)
    return m * Fraction(10) ** e


def _whole(value: Fraction, text: object, what: str, one: str, top: int, allow_zero: bool) -> int:
    """``value`` as a whole number in ``[1, top]`` (``[0, top]`` with ``allow_zero``); ``ValueError``
    names the value and the range."""
    allowed = f"allowed: {0 if allow_zero else 1} to {top:.0e} {one}s".replace("e+0", "e").replace("e+", "e")
    if one == "byte":
        allowed += f" ({top // 10**12:,} TB)"
    shown = repr(text) if len(repr(text)) <= 40 else f"{repr(text)[:24]}… ({len(repr(text))} characters)"
    if value == 0 and allow_zero:
        return 0
    if value <= 0:
        raise ValueError(f"{shown} is not a positive {what}; {allowed}")
    if value > top:
        raise ValueError(f"{shown} is out of range; {allowed}")
    if value < 1:
        raise ValueError(f"{shown} is less than one {one}; {allowed}")
    if one == "parameter" and value != int(value):  # bytes round down; a count of parameters is whole
        raise ValueError(f"{shown} is not a whole number of parameters; {allowed}")
    return int(value)


def parse_size(text: str | float | int, bare_unit: int = 10**9, allow_zero: bool = False) -> int:
    """Bytes from ``24GB`` (decimal), ``80GiB`` (binary) or a bare number (``bare_unit``, GB), at most
    ``MAX_BYTES``; 0 only with ``allow_zero``."""
    s = _as_text(text)
    if s.strip().startswith("-"):
        raise ValueError(f"{text!r} is not a positive size")
    m = _SIZE.fullmatch(s)
    if not m or m.group(3).lower() not in _SIZE_UNITS:
        hint = _COMMA_HINT.replace("B)", "GB)") if "," in s else ""
        raise ValueError(f"{text!r} is not a size; use e.g. 24GB, 80GiB, 512MB or a number of GB{hint}")
    factor = _SIZE_UNITS[m.group(3).lower()] if m.group(3) else bare_unit
    return _whole(_scientific(m.group(1), m.group(2)) * factor, text, "size", "byte", MAX_BYTES, allow_zero)


def parse_count(text: str | float | int) -> int:
    """A parameter count from ``7e9``, ``7B``, ``1.3b``, ``125M``, ``7000000000`` or
    ``7,000,000,000``, at most ``MAX_COUNT``."""
    s = _as_text(text).strip().lower().replace("_", "")
    if s.startswith("-"):
        raise ValueError(f"{text!r} is not a positive count")
    m = _COUNT.fullmatch(s)
    if not m:
        hint = _COMMA_HINT if "," in s else ""
        raise ValueError(f"{text!r} is not a count; use e.g. 7e9, 7B, 1.3b, 125M or 7000000000{hint}")
    count = _scientific(m.group(1), m.group(2)) * _COUNT_UNITS[m.group(3)]
    return _whole(count, text, "count", "parameter", MAX_COUNT, allow_zero=False)


def exact(value: float | int | Fraction) -> Fraction:
    """An exact rational from a number as a person wrote it (0.9 → 9/10, not its binary float)."""
    return value if isinstance(value, Fraction) else Fraction(repr(value))


_DECIMAL_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B"))
_BINARY_UNITS = ((2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB"), (1.0, "B"))
Unit = tuple[float, str]


def unit_for(*values: float | int | Fraction | None, binary: bool = False) -> Unit:
    """One unit (GB at most) for a set of byte counts, so a table, a message or an axis reads in one unit."""
    units = _BINARY_UNITS if binary else _DECIMAL_UNITS
    top = max((abs(float(v)) for v in values if v is not None), default=0.0)
    return next(((d, u) for d, u in units if top >= d), units[-1])


def in_unit(value: float | int | Fraction | None, unit: Unit) -> str:
    """A byte count as a number in ``unit`` (two decimals), without the unit's name."""
    if value is None:
        return "—"
    return f"{float(value) / unit[0]:,.2f}" if unit[1] != "B" else f"{float(value):,.0f}"


def fmt_bytes(value: float | int | Fraction | None, unit: Unit | None = None) -> str:
    """A byte count with its unit, in ``unit`` or the one that suits it: ``64.72 MB``, ``163.63 GB``."""
    if value is None:
        return "—"
    unit = unit or unit_for(value)
    return f"{in_unit(value, unit)} {unit[1]}"
