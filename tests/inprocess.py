"""Identity, inventory, profile and cart in-process on loopback, each on a fresh database
of the test server and one Redis namespace: what notification (and a channel app using
the SDK) talks to. Test suites build on it with their own notification service(s)."""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from continuum_cart.__main__ import MIGRATIONS as CART_MIGRATIONS
from continuum_cart.__main__ import make_server as make_cart
from continuum_cart.settings import CartSettings
from continuum_identity.__main__ import MIGRATIONS as IDENTITY_MIGRATIONS
from continuum_identity.__main__ import make_server as make_identity
from continuum_identity.settings import IdentitySettings
from continuum_inventory.__main__ import MIGRATIONS as INVENTORY_MIGRATIONS
from continuum_inventory.__main__ import make_server as make_inventory
from continuum_inventory.settings import InventorySettings
from continuum_notification.settings import NotificationSettings, SenderSettings
from continuum_profile.__main__ import MIGRATIONS as PROFILE_MIGRATIONS
from continuum_profile.__main__ import make_server as make_profile
from continuum_profile.settings import DeriveSettings, ProfileSettings
from continuum_runtime.app import ServiceContext
from continuum_runtime.config import AuthSettings, EventSettings
from continuum_runtime.server import ServiceServer
from continuum_runtime.testing import TestStores, fresh_database, service_fields, serving

FAST_EVENTS = EventSettings(consumer_block_ms=50, relay_poll_interval_s=0.02)


def free_port() -> int:
    """A loopback port free now (for a server about to bind it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Sockets bound and never listening, held for the test process's lifetime.
_held: list[socket.socket] = []


def down_target() -> str:
    """The address of a service that is down: a loopback port held bound without
    listening, so a connection is refused at once and no server started later in the
    same run can take it (a port merely free now could be)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _held.append(sock)
    return f"127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class Running:
    """A service started in-process: its server, its context and its database URL."""

    server: ServiceServer
    ctx: ServiceContext
    url: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@dataclass
class CoreServices:
    identity: Running
    inventory: Running
    profile: Running
    cart: Running
    common: dict[str, Any]

    def notification_settings(
        self, database_url: str, outbox_file: Path, **targets: str
    ) -> NotificationSettings:
        """Settings of a notification service in front of these four; ``profile=``,
        ``cart=`` and ``recommendation=`` override those targets (recommendation is down by
        default)."""
        return NotificationSettings(
            database_url=SecretStr(database_url),
            identity_target=self.identity.target,
            profile_target=targets.get("profile", self.profile.target),
            cart_target=targets.get("cart", self.cart.target),
            inventory_target=self.inventory.target,
            recommendation_target=targets.get("recommendation", down_target()),
            send_interval_s=0.05,
            maintenance_interval_s=0.2,
            sender=SenderSettings(kind="file", file_path=outbox_file),
            **self.common,
        )


async def start(stack: AsyncExitStack, settings: Any, migrations: Path, make: Any) -> Running:
    """``serving()`` entered on ``stack`` (drained when the stack closes)."""
    server, ctx = await stack.enter_async_context(serving(settings, migrations, make))
    return Running(server, ctx, settings.database_url.get_secret_value())


async def start_core(
    stack: AsyncExitStack,
    test_stores: TestStores,
    auth_settings: AuthSettings,
    *,
    namespace: str,
    prefix: str,
) -> CoreServices:
    """Start the four services on ``stack`` (databases dropped when it closes)."""
    common = service_fields(test_stores, namespace, auth_settings, events=FAST_EVENTS)
    urls = {
        name: await stack.enter_async_context(fresh_database(test_stores, f"{prefix}{name[:3]}"))
        for name in ("identity", "inventory", "profile", "cart")
    }
    identity = await start(
        stack,
        IdentitySettings(
            database_url=SecretStr(urls["identity"]),
            identifier_key=SecretStr(f"{prefix}-identity-key"),
            **common,
        ),
        IDENTITY_MIGRATIONS,
        make_identity,
    )
    inventory = await start(
        stack,
        InventorySettings(database_url=SecretStr(urls["inventory"]), **common),
        INVENTORY_MIGRATIONS,
        make_inventory,
    )
    profile = await start(
        stack,
        ProfileSettings(
            database_url=SecretStr(urls["profile"]),
            identity_target=identity.target,
            derive=DeriveSettings(delay_s=0.0, poll_interval_s=0.05, publish_interval_s=0.0),
            **common,
        ),
        PROFILE_MIGRATIONS,
        make_profile,
    )
    cart = await start(
        stack,
        CartSettings(
            database_url=SecretStr(urls["cart"]),
            inventory_target=inventory.target,
            item_cache_ttl_s=0.0,
            abandon_after_s=3600.0,
            abandon_check_interval_s=3600.0,
            **common,
        ),
        CART_MIGRATIONS,
        make_cart,
    )
    return CoreServices(identity, inventory, profile, cart, common)
