"""Leverage brackets (DOMAIN.md §1): maintenance margin and max leverage by notional.

A table is data in the shape of Binance's ``leverageBracket`` API
(``config/brackets/<SYMBOL>.json``)::

    {"symbol": "BTCUSDT", "brackets": [
        {"bracket": 1, "initialLeverage": 125, "notionalFloor": 0,
         "notionalCap": 50000, "maintMarginRatio": "0.004", "cum": 0}, ...]}

Numbers may be ints or strings (or ``Decimal``); a ``float`` is refused because it
cannot represent 0.004 exactly — load JSON with ``parse_float=Decimal`` or quote it.

Bracket k covers ``notionalFloor < notional ≤ notionalCap``; bracket 1 also takes 0.
``cum`` makes MM continuous: ``cum_k = cum_{k−1} + floor_k × (MMR_k − MMR_{k−1})``.
When ``cum`` is absent it is computed; when present it must match exactly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from watcher.domain.account import ZERO, exact, to_decimal

_KEYS = ("bracket", "initialLeverage", "notionalFloor", "notionalCap", "maintMarginRatio")


class BracketError(ValueError):
    """A bracket table is malformed, or a notional lies outside it."""


@dataclass(frozen=True)
class Bracket:
    bracket: int
    initial_leverage: int
    notional_floor: Decimal
    notional_cap: Decimal
    maint_margin_ratio: Decimal
    cum: Decimal

    def contains(self, notional: Decimal) -> bool:
        """``floor < notional ≤ cap`` (bracket 1 also takes 0)."""
        if self.bracket == 1 and notional == 0:
            return True
        return self.notional_floor < notional <= self.notional_cap

    def maintenance_margin(self, notional: Decimal) -> Decimal:
        """MM = notional × MMR − cum (exact)."""
        with exact():
            return notional * self.maint_margin_ratio - self.cum


def _dec(value: object, what: str) -> Decimal:
    """``to_decimal`` with a malformed value reported as a :class:`BracketError`."""
    try:
        return to_decimal(value, what)
    except TypeError:
        raise
    except ValueError as exc:
        raise BracketError(str(exc)) from exc


def _to_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected an int, got bool")
    if isinstance(value, int):
        return value
    dec = _dec(value, what)
    if dec != dec.to_integral_value():
        raise BracketError(f"{what}: {value!r} is not an integer")
    return int(dec)


def _bracket_from_row(row: Mapping[str, object], index: int) -> tuple[Bracket, bool]:
    """Parse one API row; returns the bracket and whether ``cum`` was given."""
    if not isinstance(row, Mapping):
        raise BracketError(f"bracket row {index} is not an object")
    missing = [key for key in _KEYS if key not in row]
    if missing:
        raise BracketError(f"bracket row {index} lacks {', '.join(missing)}")
    where = f"bracket row {index}"
    cum_raw = row.get("cum")
    bracket = Bracket(
        bracket=_to_int(row["bracket"], f"{where} bracket"),
        initial_leverage=_to_int(row["initialLeverage"], f"{where} initialLeverage"),
        notional_floor=_dec(row["notionalFloor"], f"{where} notionalFloor"),
        notional_cap=_dec(row["notionalCap"], f"{where} notionalCap"),
        maint_margin_ratio=_dec(row["maintMarginRatio"], f"{where} maintMarginRatio"),
        cum=ZERO if cum_raw is None else _dec(cum_raw, f"{where} cum"),
    )
    return bracket, cum_raw is not None


def _with_computed_cum(rows: Sequence[tuple[Bracket, bool]]) -> tuple[Bracket, ...]:
    """Check given ``cum`` values against the continuity formula; fill absent ones."""
    out: list[Bracket] = []
    prev: Bracket | None = None
    for bracket, given in rows:
        with exact():
            expected = (
                ZERO
                if prev is None
                else prev.cum
                + bracket.notional_floor * (bracket.maint_margin_ratio - prev.maint_margin_ratio)
            )
        if given and bracket.cum != expected:
            raise BracketError(
                f"bracket {bracket.bracket}: cum {bracket.cum} ≠ {expected} "
                "(cum_k = cum_k−1 + floor_k × (MMR_k − MMR_k−1))"
            )
        fixed = Bracket(
            bracket=bracket.bracket,
            initial_leverage=bracket.initial_leverage,
            notional_floor=bracket.notional_floor,
            notional_cap=bracket.notional_cap,
            maint_margin_ratio=bracket.maint_margin_ratio,
            cum=expected,
        )
        out.append(fixed)
        prev = fixed
    return tuple(out)


@dataclass(frozen=True)
class BracketTable:
    """A validated, contiguous leverage-bracket table for one symbol."""

    brackets: tuple[Bracket, ...]
    symbol: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "brackets", tuple(self.brackets))
        self._validate()

    @classmethod
    def from_brackets(
        cls, rows: Sequence[Mapping[str, object]], symbol: str | None = None
    ) -> BracketTable:
        """Build from the API's ``brackets`` list (rows in any order of ``bracket``)."""
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise BracketError("brackets must be a list of objects")
        if not rows:
            raise BracketError("a bracket table needs at least one bracket")
        parsed = sorted(
            (_bracket_from_row(row, i) for i, row in enumerate(rows)),
            key=lambda item: item[0].bracket,
        )
        numbers = [b.bracket for b, _ in parsed]
        if numbers != list(range(1, len(parsed) + 1)):
            raise BracketError(f"bracket numbers must be 1..{len(parsed)}, got {numbers}")
        return cls(_with_computed_cum(parsed), symbol)

    @classmethod
    def from_json_obj(cls, obj: object) -> BracketTable:
        """Build from ``{"symbol": ..., "brackets": [...]}`` (one element of the API's list)."""
        if not isinstance(obj, Mapping):
            raise BracketError('expected an object {"symbol": ..., "brackets": [...]}')
        symbol = obj.get("symbol")
        if symbol is not None and not isinstance(symbol, str):
            raise BracketError("symbol must be a string")
        rows = obj.get("brackets")
        if not isinstance(rows, list):
            raise BracketError('"brackets" must be a list')
        return cls.from_brackets(rows, symbol)

    def _validate(self) -> None:
        if not self.brackets:
            raise BracketError("a bracket table needs at least one bracket")
        prev: Bracket | None = None
        for index, b in enumerate(self.brackets, start=1):
            if b.bracket != index:
                raise BracketError(f"bracket numbers must run 1..n, found {b.bracket}")
            if b.initial_leverage < 1:
                raise BracketError(f"bracket {index}: initialLeverage must be ≥ 1")
            if not ZERO <= b.maint_margin_ratio < 1:
                raise BracketError(f"bracket {index}: maintMarginRatio must be in [0, 1)")
            if b.notional_cap <= b.notional_floor:
                raise BracketError(f"bracket {index}: notionalCap must exceed notionalFloor")
            if prev is None:
                if b.notional_floor != 0:
                    raise BracketError("bracket 1 must start at notionalFloor 0")
                if b.cum != 0:
                    raise BracketError("bracket 1 must have cum 0")
            else:
                if b.notional_floor != prev.notional_cap:
                    raise BracketError(
                        f"bracket {index}: floor {b.notional_floor} ≠ previous cap "
                        f"{prev.notional_cap} (brackets must be contiguous)"
                    )
                if b.maint_margin_ratio < prev.maint_margin_ratio:
                    raise BracketError(f"bracket {index}: maintMarginRatio decreases")
                if b.initial_leverage > prev.initial_leverage:
                    raise BracketError(f"bracket {index}: initialLeverage increases")
                with exact():
                    expected = prev.cum + b.notional_floor * (
                        b.maint_margin_ratio - prev.maint_margin_ratio
                    )
                if b.cum != expected:
                    raise BracketError(f"bracket {index}: cum {b.cum} ≠ {expected}")
            prev = b

    @property
    def max_notional(self) -> Decimal:
        return self.brackets[-1].notional_cap

    def bracket_for(self, notional: Decimal) -> Bracket:
        """The bracket with ``floor < notional ≤ cap`` (0 → bracket 1)."""
        if notional < 0:
            raise BracketError(f"notional must be ≥ 0, got {notional}")
        caps = [b.notional_cap for b in self.brackets]
        index = bisect_left(caps, notional)
        if index >= len(self.brackets):
            raise BracketError(
                f"notional {notional} exceeds the last bracket cap {self.max_notional}"
                + (f" of {self.symbol}" if self.symbol else "")
            )
        return self.brackets[index]

    def maintenance_margin(self, notional: Decimal) -> Decimal:
        """MM = notional × MMR − cum with the notional's bracket (exact)."""
        return self.bracket_for(notional).maintenance_margin(notional)

    def max_leverage(self, notional: Decimal) -> int:
        """The highest leverage a position of this notional may use."""
        return self.bracket_for(notional).initial_leverage

    def to_json_obj(self) -> dict[str, object]:
        """The API shape back, with decimals as strings."""
        return {
            "symbol": self.symbol,
            "brackets": [
                {
                    "bracket": b.bracket,
                    "initialLeverage": b.initial_leverage,
                    "notionalFloor": str(b.notional_floor),
                    "notionalCap": str(b.notional_cap),
                    "maintMarginRatio": str(b.maint_margin_ratio),
                    "cum": str(b.cum),
                }
                for b in self.brackets
            ],
        }
