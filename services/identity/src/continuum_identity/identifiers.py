"""Typed identifiers: normalisation, validation, keyed hashing and masking.

Every identifier is normalised per type (an email's case and surrounding whitespace, a
phone number to E.164, ...) and then stored only as an HMAC-SHA256 of ``type:value`` under
the configured key: the identity database never holds a raw email or phone number. Only
device ids, which are pseudonymous and which profile needs to re-key anonymous events,
are kept raw as well.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from continuum.common.v1 import identifier_pb2
from continuum_runtime.errors import FieldViolation, InvalidArgument

T = identifier_pb2.IdentifierType
EMAIL = T.IDENTIFIER_TYPE_EMAIL
PHONE = T.IDENTIFIER_TYPE_PHONE
LOYALTY_ID = T.IDENTIFIER_TYPE_LOYALTY_ID
PAYMENT_TOKEN = T.IDENTIFIER_TYPE_PAYMENT_TOKEN
PAYMENT_FINGERPRINT = T.IDENTIFIER_TYPE_PAYMENT_FINGERPRINT
DEVICE_ID = T.IDENTIFIER_TYPE_DEVICE_ID
ACCOUNT_ID = T.IDENTIFIER_TYPE_ACCOUNT_ID
POS_CUSTOMER_NUMBER = T.IDENTIFIER_TYPE_POS_CUSTOMER_NUMBER

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-:.=+/]{6,256}$")
_DEVICE = re.compile(r"^[\x21-\x7e]{1,256}$")
_PAN = re.compile(r"^\d{13,19}$")


@dataclass(frozen=True)
class NormalizedIdentifier:
    """An identifier after normalisation: what is hashed, and how it is shown."""

    type: int
    value: str
    value_hash: bytes
    masked: str

    @property
    def is_device(self) -> bool:
        return self.type == DEVICE_ID

    @property
    def key(self) -> tuple[int, bytes]:
        return (self.type, self.value_hash)

    @property
    def raw_device_id(self) -> str | None:
        """The value itself for a device id (kept raw), else None (never stored)."""
        return self.value if self.is_device else None


class IdentifierError(ValueError):
    """One identifier's value is not valid for its type."""


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def normalize_value(id_type: int, value: str, default_region: str = "US") -> str:
    """The canonical form of ``value`` for ``id_type``; IdentifierError when invalid."""
    value = value.strip()
    if not value:
        raise IdentifierError("must not be empty")
    if id_type == EMAIL:
        try:
            checked = validate_email(value, check_deliverability=False)
        except EmailNotValidError as exc:
            raise IdentifierError(f"not a valid email address: {exc}") from None
        return checked.normalized.lower()
    if id_type == PHONE:
        try:
            number = phonenumbers.parse(value, default_region or None)
        except phonenumbers.NumberParseException:
            raise IdentifierError("not a phone number") from None
        if not phonenumbers.is_valid_number(number):
            raise IdentifierError("not a valid phone number for its country")
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if id_type in (LOYALTY_ID, POS_CUSTOMER_NUMBER):
        compact = re.sub(r"[\s\-]", "", value).upper()
        if not _CODE.match(compact):
            raise IdentifierError("letters and digits only, at most 128")
        return compact
    if id_type == ACCOUNT_ID:
        if not _CODE.match(value):
            raise IdentifierError("letters, digits and . _ : - only, at most 128")
        return value
    if id_type in (PAYMENT_TOKEN, PAYMENT_FINGERPRINT):
        if _PAN.match(re.sub(r"[\s\-]", "", value)) and _luhn_ok(re.sub(r"[\s\-]", "", value)):
            raise IdentifierError("looks like a card number: send a PSP token, never a PAN")
        if not _TOKEN.match(value):
            raise IdentifierError("a token of 6 to 256 URL-safe characters")
        return value
    if id_type == DEVICE_ID:
        if not _DEVICE.match(value):
            raise IdentifierError("1 to 256 printable characters without spaces")
        return value
    raise IdentifierError("unknown identifier type")


def mask(id_type: int, value: str) -> str:
    """A form safe for logs and screens: enough for a person to recognise, not to use."""
    if id_type == EMAIL:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if id_type == PHONE:
        return f"{value[:3]}{'*' * max(len(value) - 6, 0)}{value[-3:]}"
    if id_type == DEVICE_ID:
        return value if len(value) <= 8 else f"{value[:4]}…{value[-4:]}"
    return f"…{value[-4:]}" if len(value) > 4 else "…"


class IdentifierHasher:
    """Normalises and hashes identifiers under one secret key."""

    def __init__(self, key: bytes, default_region: str = "US") -> None:
        if not key:
            raise ValueError("an identifier hashing key is required")
        self._key = key
        self.default_region = default_region

    def digest(self, id_type: int, normalized: str) -> bytes:
        return hmac.new(self._key, f"{id_type}:{normalized}".encode(), hashlib.sha256).digest()

    def normalize(
        self, id_type: int, value: str, default_region: str | None = None
    ) -> NormalizedIdentifier:
        canonical = normalize_value(id_type, value, default_region or self.default_region)
        return NormalizedIdentifier(
            type=id_type,
            value=canonical,
            value_hash=self.digest(id_type, canonical),
            masked=mask(id_type, canonical),
        )

    def normalize_all(
        self,
        identifiers: Sequence[identifier_pb2.Identifier],
        field: str = "identifiers",
        default_region: str | None = None,
    ) -> list[NormalizedIdentifier]:
        """Every identifier normalised, duplicates folded; INVALID_ARGUMENT names each bad one."""
        out: dict[tuple[int, bytes], NormalizedIdentifier] = {}
        violations: list[FieldViolation] = []
        for i, ident in enumerate(identifiers):
            try:
                item = self.normalize(ident.type, ident.value, default_region)
            except IdentifierError as exc:
                violations.append(
                    FieldViolation(f"{field}[{i}].value", str(exc), "INVALID_IDENTIFIER")
                )
                continue
            out.setdefault(item.key, item)
        if violations:
            raise InvalidArgument(
                "invalid identifiers", reason="INVALID_IDENTIFIER", violations=violations
            )
        return list(out.values())
