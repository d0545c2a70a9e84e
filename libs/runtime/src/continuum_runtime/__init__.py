"""The runtime every Continuum service shares.

One place for what all six services need the same way: configuration (`config`), the
embedded PostgreSQL and Redis (`embedded`), the database engine and migrations (`db`,
`migrations`), errors and their gRPC mapping (`errors`), authentication (`auth`), server
and client interceptors (`interceptors`), the server bootstrap (`server`), outbound
channels (`client`), events through a transactional outbox and Redis Streams (`events`),
OpenTelemetry and structured logs (`telemetry`, `logs`), and pytest fixtures (`testing`).
"""

__version__ = "0.1.0"
