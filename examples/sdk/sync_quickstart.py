"""The blocking client, for scripts and threaded apps: resolve, cart, events, check-in.

CONTINUUM_TOKEN=... python examples/sdk/sync_quickstart.py
"""

from __future__ import annotations

import os
import uuid

from continuum_sdk import ClientConfig, Continuum, EventBuilder, customer
from continuum_sdk import errors as e
from continuum_sdk.identifiers import email, loyalty

SKU = os.environ.get("CONTINUUM_EXAMPLE_SKU", "ARIA-RUN-BLK-39")
STORE = os.environ.get("CONTINUUM_EXAMPLE_STORE", "store-paris-marais")


def main() -> None:
    tag = uuid.uuid4().hex[:8]
    with Continuum(ClientConfig.from_env()) as cx:
        resolution = cx.resolve(email(f"{tag}@example.com"), loyalty(f"L-{tag}"))
        owner = customer(resolution.customer_id)
        print(f"customer {resolution.customer_id}")

        added = cx.carts.add(owner, SKU, quantity=1)
        print(f"cart etag {added.cart.etag}, {added.cart.item_count} item(s)")

        events = EventBuilder([email(f"{tag}@example.com")])
        with cx.tracker() as tracker:
            tracker.track(events.product_viewed(SKU, size="39", colour="black"))
            tracker.track(events.cart_item_added(SKU, cart_id=added.cart.cart_id))
        print(f"events: {tracker.total.accepted} accepted")

        check_in = cx.check_in(STORE, loyalty(f"L-{tag}"))
        print(f"check-in status {check_in.status}")  # no consent given: not briefed

        try:
            cx.carts.add(owner, "NO-SUCH-SKU")
        except e.NotFound as missing:
            print(f"not found: {missing.reason} {missing.metadata}")


if __name__ == "__main__":
    main()
