"""Continuum cart service: owns carts, wishlists and checkout.

Layers: ``servicer`` (gRPC, validation and mapping), ``settings`` (configuration),
``migrations`` (Alembic), ``__main__`` (entry point). Behaviour arrives with issue #6.
"""
