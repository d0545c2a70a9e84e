"""Configuration from the environment, store URL resolution, and log redaction."""

from __future__ import annotations

import json
import logging

import pytest
import redis.asyncio as aioredis
from opentelemetry import trace
from sqlalchemy import text

from continuum_runtime.config import ServiceSettings
from continuum_runtime.db import Database
from continuum_runtime.embedded import asyncpg_url_from_libpq, resolve_store_urls, with_database
from continuum_runtime.logs import JsonFormatter, RedactingFormatter, redact
from continuum_runtime.testing import TestStores


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUUM_PORT", "6001")
    monkeypatch.setenv("CONTINUUM_AUTH__TOKEN_KEY", "k" * 40)
    monkeypatch.setenv("CONTINUUM_DB__STATEMENT_TIMEOUT_MS", "1234")
    monkeypatch.setenv("CONTINUUM_TLS__ENABLED", "true")
    settings = ServiceSettings()
    assert settings.port == 6001
    assert settings.auth.token_key.get_secret_value() == "k" * 40
    assert settings.db.statement_timeout_ms == 1234
    assert settings.tls.enabled is True
    assert "k" * 40 not in repr(settings)  # secrets never show in reprs or logs


def test_pgserver_uri_becomes_an_asyncpg_url() -> None:
    url = asyncpg_url_from_libpq(
        "postgresql://postgres:@/postgres?host=/tmp/x/pg", "continuum_cart"
    )
    assert url == "postgresql+asyncpg://postgres@/continuum_cart?host=/tmp/x/pg"
    assert with_database(url, "other").startswith("postgresql+asyncpg://postgres@/other?")


async def test_configured_urls_are_used_and_the_database_is_created(
    test_stores: TestStores, database_url: str
) -> None:
    # A configured URL naming a database that does not exist yet: it is created.
    fresh = database_url.replace("/t_", "/u_", 1)
    urls = await resolve_store_urls("cart", fresh, test_stores.redis_url, data_dir=None)  # type: ignore[arg-type]
    assert urls.embedded is False
    assert urls.database_url == fresh
    db = Database(urls.database_url)
    try:
        async with db.transaction() as session:
            timeout = (await session.execute(text("SHOW statement_timeout"))).scalar_one()
            assert timeout == "5s"
            idle = (
                await session.execute(text("SHOW idle_in_transaction_session_timeout"))
            ).scalar_one()
            assert idle == "10s"
    finally:
        await db.dispose()
        from continuum_runtime.embedded import drop_database

        await drop_database(fresh)
    client = aioredis.from_url(urls.redis_url)
    assert await client.ping()
    await client.aclose()


def test_redaction_masks_contact_details_and_tokens() -> None:
    line = (
        "resolve jane.doe+shop@example.co.uk phone +44 20 7946 0958 "
        "authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl sku SKU-123"
    )
    masked = redact(line)
    assert "jane.doe" not in masked
    assert "7946" not in masked
    assert "eyJ" not in masked
    assert "SKU-123" in masked  # ordinary identifiers stay readable


def test_json_logs_carry_trace_id_and_no_raw_email(span_exporter) -> None:  # type: ignore[no-untyped-def]
    formatter = JsonFormatter("cart")
    record = logging.LogRecord(
        "cart", logging.INFO, __file__, 1, "customer %s checked out", ("a@b.example",), None
    )
    record.customer_email = "a@b.example"
    with trace.get_tracer("test").start_as_current_span("checkout") as span:
        entry = json.loads(formatter.format(record))
        expected_trace = format(span.get_span_context().trace_id, "032x")
    assert entry["trace_id"] == expected_trace
    assert "a@b.example" not in json.dumps(entry)
    assert entry["service"] == "cart"


def test_human_log_lines_keep_their_timestamp_and_redact_the_message() -> None:
    formatter = RedactingFormatter("%(asctime)s %(levelname)s [%(trace)s] %(message)s")
    record = logging.LogRecord(
        "cart", logging.INFO, __file__, 1, "call %s back", ("+44 20 7946 0958",), None
    )
    line = formatter.format(record)
    assert "REDACTED" not in line.split(" INFO ")[0]  # the timestamp is left alone
    assert "7946" not in line
    assert line.endswith("call [REDACTED-PHONE] back")


async def test_a_remembered_token_still_expires() -> None:
    import asyncio

    from pydantic import SecretStr

    from continuum_runtime.auth import PrincipalKind, TokenVerifier, issue_token
    from continuum_runtime.config import AuthSettings
    from continuum_runtime.errors import Unauthenticated

    settings = AuthSettings(token_key=SecretStr("k" * 64), leeway_s=0)
    verifier = TokenVerifier(settings)
    token = issue_token(settings, subject="app", kind=PrincipalKind.CHANNEL_APP, ttl_s=3)
    assert verifier.verify(token).subject == "app"
    assert verifier.verify(token).subject == "app"  # from the cache
    await asyncio.sleep(3.2)  # exp is whole seconds: at most 3 s after issue
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    assert caught.value.reason == "TOKEN_EXPIRED"


def test_a_service_runs_on_uvloop_unless_configured_otherwise(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import uvloop

    from continuum_runtime.app import run_event_loop

    loops: list[type] = []

    async def record() -> None:
        loops.append(type(asyncio.get_running_loop()))

    run_event_loop(record(), ServiceSettings().event_loop)
    monkeypatch.setenv("CONTINUUM_EVENT_LOOP", "asyncio")
    run_event_loop(record(), ServiceSettings().event_loop)
    assert loops[0] is uvloop.Loop
    assert not issubclass(loops[1], uvloop.Loop)
