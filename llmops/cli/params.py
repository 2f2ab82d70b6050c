"""Click parameter types for what people type: sizes, counts, fractions, names with suggestions."""

from __future__ import annotations

import math
from typing import Any

import click

from llmops.units import closest, parse_count, parse_size


class _Parsed(click.ParamType):
    """Wrap a parser that raises ``ValueError`` so click reports one clean line."""

    def parse(self, value: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self.parse(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class Size(_Parsed):
    """``24GB`` (1e9), ``80GiB`` (2**30), a bare number is GB; ``allow_zero`` for what may be 0."""

    name = "SIZE"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def parse(self, value: Any) -> int:
        return parse_size(value, allow_zero=self.allow_zero)


class Count(_Parsed):
    """``7e9``, ``7B``, ``1.3b``, ``7000000000``."""

    name = "N"

    def parse(self, value: Any) -> int:
        return parse_count(value)


class PositiveInt(_Parsed):
    name = "INT"

    def parse(self, value: Any) -> int:
        try:
            n = int(str(value))
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
        if n < 1:
            raise ValueError(f"{value!r} must be a whole number ≥ 1")
        return n


class Seconds(_Parsed):
    """Seconds > 0 and finite (``nan`` or ``inf`` would turn a limit off)."""

    name = "SECONDS"

    def parse(self, value: Any) -> float:
        try:
            x = float(str(value))
        except ValueError:
            raise ValueError(f"{value!r} is not a number of seconds") from None
        if not math.isfinite(x) or x <= 0:
            raise ValueError(f"{value!r} is not allowed; seconds > 0 and finite")
        return x


class UnitFraction(_Parsed):
    """A fraction in (0, 1]."""

    name = "F"

    def parse(self, value: Any) -> float:
        try:
            f = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number; allowed: (0, 1]") from None
        if not 0 < f <= 1:
            raise ValueError(f"{value!r} is outside the allowed range (0, 1]")
        return f


class Name(click.ParamType):
    """One of a fixed set of names, case-insensitive, suggesting the closest on a typo."""

    name = "NAME"

    def __init__(self, choices: list[str] | tuple[str, ...], aliases: dict[str, str] | None = None):
        self.choices, self.aliases = list(choices), aliases or {}

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(self.choices) + "]"

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[click.shell_completion.CompletionItem]:
        """Tab completion (``eval "$(_LLMOPS_COMPLETE=bash_source llmops)"``): the names that start so."""
        from click.shell_completion import CompletionItem

        start = incomplete.lower()
        return [CompletionItem(c) for c in self.choices if c.startswith(start)]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        key = str(value).strip().lower()
        key = self.aliases.get(key, key)
        if key in self.choices:
            return key
        self.fail(f"{value!r} is not allowed{closest(str(value), self.choices)}; "
                  f"allowed: {', '.join(self.choices)}", param, ctx)
