"""Continuum identity service: owns identifiers (as keyed hashes), the identity graph, merge rules and the merge log.

Layers: ``servicer`` (gRPC, validation and mapping), ``settings`` (configuration),
``migrations`` (Alembic), ``__main__`` (entry point). Behaviour arrives with issue #3.
"""
