"""Continuum profile service: owns the behavioural event log, the unified profile, traits, intent signals and consent.

Layers: ``servicer`` (gRPC, validation and mapping), ``settings`` (configuration),
``migrations`` (Alembic), ``__main__`` (entry point). Behaviour arrives with issue #4.
"""
