"""Continuum notification service: owns associate subscriptions and feed, briefings, customer messages and chat handoffs.

Layers: ``servicer`` (gRPC, authorisation, delegation), ``checkins`` / ``briefing`` /
``feed`` / ``messages`` / ``handoffs`` / ``policy`` / ``senders`` (domain logic),
``store`` (every query), ``handlers`` (events consumed), ``dependencies`` (outbound
calls), ``settings``, ``migrations`` (Alembic), ``__main__`` (entry point). See
docs/notification.md.
"""
