"""Builders for the identifiers a shopper can be known by.

>>> from continuum_sdk.identifiers import email, device
>>> ids = [email("sam@example.com"), device("app-install-42")]

Values are sent as the channel saw them (over TLS); the identity service normalises them
(emails to lower case, phone numbers to E.164) and stores only keyed hashes, so there is no
need to normalise here.
"""

from __future__ import annotations

from continuum.common.v1 import identifier_pb2
from continuum.common.v1.identifier_pb2 import Identifier

__all__ = [
    "Identifier",
    "account",
    "device",
    "email",
    "identifier",
    "loyalty",
    "payment_fingerprint",
    "payment_token",
    "phone",
    "pos_customer",
]


def identifier(type_: identifier_pb2.IdentifierType.ValueType, value: str) -> Identifier:
    """An identifier of any type; ``value`` must not be empty."""
    if not value:
        raise ValueError("an identifier needs a value")
    return Identifier(type=type_, value=value)


def email(address: str) -> Identifier:
    """An email address, as typed (``IDENTIFIER_TYPE_EMAIL``)."""
    return identifier(identifier_pb2.IDENTIFIER_TYPE_EMAIL, address)


def phone(number: str) -> Identifier:
    """A phone number; E.164 (``+447700900123``) is safest (``IDENTIFIER_TYPE_PHONE``)."""
    return identifier(identifier_pb2.IDENTIFIER_TYPE_PHONE, number)


def loyalty(member_id: str) -> Identifier:
    """A loyalty card or member number (``IDENTIFIER_TYPE_LOYALTY_ID``)."""
    return identifier(identifier_pb2.IDENTIFIER_TYPE_LOYALTY_ID, member_id)


def device(device_id: str) -> Identifier:
    """A device, app-install or cookie id: anonymous until linked
    (``IDENTIFIER_TYPE_DEVICE_ID``)."""
    return identifier(identifier_pb2.IDENTIFIER_TYPE_DEVICE_ID, device_id)


def account(account_id: str) -> Identifier:
    """An e-commerce account id (``IDENTIFIER_TYPE_ACCOUNT_ID``)."""
    return identifier(identifier_pb2.IDENTIFIER_TYPE_ACCOUNT_ID, account_id)


def payment_token(token: str) -> Identifier:
    """A tokenised payment instrument, never a card number
    (``IDENTIFIER_TYPE_PAYMENT_TOKEN``)."""
    return identifier(identifier_pb2.IDENTIFIER_TYPE_PAYMENT_TOKEN, token)


def payment_fingerprint(fingerprint: str) -> Identifier:
    """A payment-instrument fingerprint (``IDENTIFIER_TYPE_PAYMENT_FINGERPRINT``)."""
    return identifier(identifier_pb2.IDENTIFIER_TYPE_PAYMENT_FINGERPRINT, fingerprint)


def pos_customer(number: str) -> Identifier:
    """A point-of-sale customer number (``IDENTIFIER_TYPE_POS_CUSTOMER_NUMBER``)."""
    return identifier(identifier_pb2.IDENTIFIER_TYPE_POS_CUSTOMER_NUMBER, number)
