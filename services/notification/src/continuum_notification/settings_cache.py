"""The deployment's NotificationSettings (one database row, defaults until first changed),
cached briefly per process so that the check-in path does not read it every time."""

from __future__ import annotations

import time

from continuum.notification.v1 import notification_resources_pb2 as res
from continuum_notification import store
from continuum_notification.policy import default_settings
from continuum_runtime.db import Database


class PolicyCache:
    def __init__(self, db: Database, ttl_s: float = 5.0) -> None:
        self._db = db
        self._ttl = ttl_s
        self._value: res.NotificationSettings | None = None
        self._expires = 0.0

    async def get(self) -> res.NotificationSettings:
        now = time.monotonic()
        if self._value is None or now >= self._expires:
            async with self._db.reader() as conn:
                stored = await store.get_settings(conn)
            self._value = stored if stored is not None else default_settings()
            self._expires = now + self._ttl
        return self._value

    def put(self, value: res.NotificationSettings) -> None:
        self._value = value
        self._expires = time.monotonic() + self._ttl
