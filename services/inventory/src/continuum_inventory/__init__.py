"""Continuum inventory service: owns the item master, locations, stock levels, reservations, the stock ledger and forecasts.

Layers: ``servicer`` (gRPC, validation and mapping), ``settings`` (configuration),
``migrations`` (Alembic), ``__main__`` (entry point). Behaviour arrives with issue #5.
"""
