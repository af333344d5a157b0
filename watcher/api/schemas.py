"""Request bodies: shape validation with pydantic, and the shared parsing helpers.

Shape errors (a missing field, a JSON number where a decimal string is required, an
unknown field) are 400 ``INVALID_REQUEST`` with every problem listed in
``details.errors`` as ``{field, message}``. Rules that need the configuration or the
database (unknown symbol, price ≤ 0, too many decimals, leverage above the bracket)
are checked by the handlers with their own codes.

Decimal amounts and prices travel as strings (``"12.5"``, ``"-3"``): a JSON number is
refused because a float cannot carry money exactly.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)

from watcher.api.errors import ApiError, bad_request
from watcher.domain.amounts import AmountFormatError, parse_decimal_amount, plain_decimal
from watcher.domain.parsing import (
    UINT256_MAX,
    InputError,
    check_json_depth,
    parse_address,
    parse_uint,
)

_DECIMAL_RE = re.compile(r"-?[0-9]{1,40}(\.[0-9]{1,40})?")


def _decimal_string(value: Any) -> Decimal:
    if isinstance(value, (Decimal, int, float)) and not isinstance(value, bool):
        raise ValueError(f'write the number as a decimal string (e.g. "{value}"), not a number')
    if not isinstance(value, str) or _DECIMAL_RE.fullmatch(value) is None:
        raise ValueError(f'{value!r} is not a plain decimal string like "-12.5"')
    return Decimal(value)


def _uint(value: Any) -> int:
    """uint256 given as a JSON integer or a string of ASCII digits (JS cannot hold 2^53+)."""
    try:
        return parse_uint(value, "value")
    except InputError as exc:
        raise ValueError(exc.message.removeprefix("value ")) from None


DecimalStr = Annotated[Decimal, BeforeValidator(_decimal_string)]
Uint256 = Annotated[int, BeforeValidator(_uint)]
MarginModeIn = Literal["cross", "isolated"]


def _mode(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.lower()
        return "cross" if lowered == "crossed" else lowered
    return value


Mode = Annotated[MarginModeIn, BeforeValidator(_mode)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        """An optional field is left out, never sent as null (the document's rule)."""
        if isinstance(data, dict):
            nulls = [str(k) for k, v in data.items() if v is None]
            if nulls:
                raise ValueError(f"{', '.join(nulls)}: null is not a value; leave the field out")
        return data


# --------------------------------------------------------------------------- engine


class EntryBody(_Body):
    account: str
    asset: str
    amount: str
    kind: Literal["realized_pnl", "funding_fee", "commission"]
    ref_id: str = Field(alias="refId", min_length=1, max_length=150)


class PositionBody(_Body):
    symbol: str = Field(min_length=1, max_length=32)
    position_amt: DecimalStr | None = Field(default=None, alias="positionAmt")
    size: DecimalStr | None = None
    entry_price: DecimalStr = Field(alias="entryPrice")
    leverage: StrictInt = Field(ge=1, le=1000)
    margin_mode: Mode = Field(alias="marginMode")
    isolated_wallet: DecimalStr | None = Field(default=None, alias="isolatedWallet")

    @model_validator(mode="after")
    def _one_size(self) -> PositionBody:
        if (self.position_amt is None) == (self.size is None):
            raise ValueError("give exactly one of positionAmt or size")
        return self

    @property
    def quantity(self) -> Decimal:
        value = self.position_amt if self.position_amt is not None else self.size
        assert value is not None
        return value


class OrderBody(_Body):
    symbol: str = Field(min_length=1, max_length=32)
    margin_mode: Mode = Field(alias="marginMode")
    initial_margin: DecimalStr = Field(alias="initialMargin")


class PriceBody(_Body):
    symbol: str | None = Field(default=None, min_length=1, max_length=32)
    asset: str | None = Field(default=None, min_length=1, max_length=16)
    mark_price: DecimalStr | None = Field(default=None, alias="markPrice")
    price: DecimalStr | None = None

    @model_validator(mode="after")
    def _one_each(self) -> PriceBody:
        if (self.symbol is None) == (self.asset is None):
            raise ValueError("give exactly one of symbol or asset")
        if (self.mark_price is None) == (self.price is None):
            raise ValueError("give exactly one of markPrice or price")
        return self

    @property
    def value(self) -> Decimal:
        value = self.mark_price if self.mark_price is not None else self.price
        assert value is not None
        return value


class ModeBody(_Body):
    multi_asset_mode: StrictBool = Field(alias="multiAssetMode")


# --------------------------------------------------------------------------- user-signed


class SignedBody(_Body):
    chain_id: StrictInt = Field(alias="chainId", ge=1)
    nonce: Uint256
    deadline: Uint256
    signature: str


class RebalanceBody(SignedBody):
    pass


class IsolatedMarginBody(_Body):
    symbol: str = Field(min_length=1, max_length=32)
    type: Literal[1, 2]
    amount: str
    # User-signed requests carry these; engine requests (bearer token) may carry refId.
    chain_id: StrictInt | None = Field(default=None, alias="chainId", ge=1)
    nonce: Uint256 | None = None
    deadline: Uint256 | None = None
    signature: str | None = None
    ref_id: str | None = Field(default=None, alias="refId", min_length=1, max_length=150)


# --------------------------------------------------------------------------- helpers

M = TypeVar("M", bound=BaseModel)


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def validation_error(exc: ValidationError) -> ApiError:
    errors = [
        {"field": _field(e["loc"]), "message": e["msg"].removeprefix("Value error, ")}
        for e in exc.errors()
    ]
    first = errors[0]
    return bad_request("INVALID_REQUEST", f"{first['field']}: {first['message']}", errors=errors)


def parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_list(model: type[M], data: Any, what: str) -> list[M]:
    if not isinstance(data, list):
        raise bad_request("INVALID_REQUEST", f"the body must be a JSON list of {what}")
    out: list[M] = []
    for index, item in enumerate(data):
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            err = validation_error(exc)
            for e in err.details["errors"]:
                e["field"] = f"[{index}]" + ("." + e["field"] if e["field"] != "body" else "")
            first = err.details["errors"][0]
            raise bad_request(
                "INVALID_REQUEST", f"{first['field']}: {first['message']}", **err.details
            ) from None
    return out


def input_error(exc: InputError) -> ApiError:
    """A parsing rule's refusal as a 400, naming the field."""
    details = {"field": exc.field} if exc.field else {}
    return bad_request(exc.code, exc.message, **details)


def _json_number(text: str) -> Decimal | int:
    """A JSON number written with a fraction or an exponent: an ``int`` when its value is
    whole (``7.0``, ``7e0``: JSON Schema's ``integer`` counts them, so a field documented
    as an integer takes them), a ``Decimal`` otherwise (never a float)."""
    value = Decimal(text)
    if value.is_finite() and abs(value.adjusted()) <= 80 and value == value.to_integral_value():
        return int(value)
    return value


async def read_json(request: web.Request) -> Any:
    """The body as JSON; JSON numbers with a fraction become ``Decimal`` (never float).

    Too deep a nesting is refused before parsing (see ``domain/parsing.py``); an integer
    longer than the interpreter converts (4,300 digits) is malformed, not a crash."""
    raw = await request.read()
    if not raw:
        raise bad_request("INVALID_REQUEST", "the request body is empty; send JSON")
    try:
        check_json_depth(raw)
        return json.loads(raw, parse_float=_json_number)
    except InputError as exc:
        raise input_error(exc) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request("MALFORMED_JSON", f"request body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise bad_request("MALFORMED_JSON", f"request body cannot be read: {exc}") from None


def address(text: str, what: str = "account") -> str:
    """Checksummed address, or 400 ``INVALID_ADDRESS`` naming the field. All lower or
    all upper case is accepted; mixed case must carry a valid EIP-55 checksum."""
    try:
        return parse_address(text, what)
    except InputError as exc:
        raise input_error(exc) from None


def uint_param(text: str, what: str, *, maximum: int = UINT256_MAX) -> int:
    """A path or query integer (ASCII digits only), or 400 ``INVALID_INTEGER``."""
    try:
        return parse_uint(text, what, maximum=maximum)
    except InputError as exc:
        raise input_error(exc) from None


def ledger_units(text: str, precision: int, *, what: str = "amount", signed: bool = False) -> int:
    """A decimal string in asset units → ledger units; 400 ``AMOUNT_PRECISION`` when it has
    more decimals than the asset's ledger precision, 400 ``INVALID_AMOUNT`` otherwise."""
    if not isinstance(text, str) or len(text) > 60:
        raise bad_request(
            "INVALID_AMOUNT",
            f'{what} must be a decimal string of ≤ 60 characters, e.g. "12.5"',
        )
    negative = signed and text.startswith("-")
    body = text[1:] if negative else text
    try:
        units = parse_decimal_amount(body, precision)
    except AmountFormatError as exc:
        message = str(exc)
        if "decimal places" in message:
            raise bad_request(
                "AMOUNT_PRECISION",
                f"{what} {text!r} has more than {precision} decimals",
                precision=precision,
            ) from None
        raise bad_request("INVALID_AMOUNT", f"{what}: {message}") from None
    return -units if negative else units


# --------------------------------------------------------------------------- wire format


def dec(value: Decimal) -> str:
    """A decimal as the API writes it: plain notation, no exponent, no trailing zeros,
    exact at any magnitude (see :func:`watcher.domain.amounts.plain_decimal`)."""
    return plain_decimal(value)


def jsonable(value: Any) -> Any:
    """Decimals → strings (recursively), for error details and documents."""
    if isinstance(value, Decimal):
        return dec(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
