"""Continuum recommendation service: owns models learned from behaviour and their versions.

Layers: ``servicer`` (gRPC, validation and mapping), ``settings`` (configuration),
``migrations`` (Alembic), ``__main__`` (entry point). Behaviour arrives with issue #7.
"""
