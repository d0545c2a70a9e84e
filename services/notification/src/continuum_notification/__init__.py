"""Continuum notification service: owns associate subscriptions and feed, briefings, customer messages and chat handoffs.

Layers: ``servicer`` (gRPC, validation and mapping), ``settings`` (configuration),
``migrations`` (Alembic), ``__main__`` (entry point). Behaviour arrives with issue #8.
"""
