"""Continuum's client SDK: ``AsyncContinuum`` / ``Continuum`` reach all six services.

from continuum_sdk import AsyncContinuum, ClientConfig

async with AsyncContinuum(ClientConfig.local(token)) as cx:
    cart = (await cx.cart.GetCart(request)).cart
"""

from continuum_sdk.client import AsyncContinuum, Continuum
from continuum_sdk.config import ClientConfig, RetryConfig, TLSConfig
from continuum_sdk.errors import ContinuumError, FieldViolation

__all__ = [
    "AsyncContinuum",
    "ClientConfig",
    "Continuum",
    "ContinuumError",
    "FieldViolation",
    "RetryConfig",
    "TLSConfig",
]
