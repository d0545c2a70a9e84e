"""Resolve a shopper and send their browsing as behavioural events, in batches.

A shopper browses the app anonymously (a device id), looks at a runner in two sizes, adds
one to the cart, then signs in with an email: identity links the device to the customer,
and the events follow. One event is deliberately malformed to show how a rejection comes
back.

    CONTINUUM_TOKEN=... python examples/sdk/resolve_and_track.py

Targets come from CONTINUUM_<SERVICE>_TARGET (default: the local ports of `make run`);
CONTINUUM_EXAMPLE_SKU picks the product (default: the demo catalogue's runner).
"""

from __future__ import annotations

import asyncio
import os
import uuid

from continuum.common.v1 import channel_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum_sdk import AsyncContinuum, ClientConfig, EventBuilder, TrackResult, product
from continuum_sdk.identifiers import device, email

SKU = os.environ.get("CONTINUUM_EXAMPLE_SKU", "ARIA-RUN-BLK-39")


async def main() -> None:
    shopper = uuid.uuid4().hex[:8]
    phone_app = device(f"app-install-{shopper}")
    async with AsyncContinuum(ClientConfig.from_env()) as cx:
        # 1. Anonymous browsing, sent in batches (here: when 10 are waiting, every 0.5 s,
        #    and when the block ends).
        events = EventBuilder([phone_app], channel=channel_pb2.CHANNEL_APP, source="example/1")
        runner = product(SKU, name="Aria runner", category="Women > Shoes", brand="Aria")

        def report(result: TrackResult) -> None:
            print(f"batch: {result.accepted} accepted, {result.duplicates} duplicate(s)")
            for rejection in result.rejected:
                print(f"  {rejection}")

        async with cx.tracker(max_batch=10, flush_interval_s=0.5, on_result=report) as tracker:
            await tracker.track(
                events.product_viewed(runner, size="38", colour="black", referrer="search"),
                events.product_viewed(runner, size="39", colour="black"),
                events.product_viewed(runner, size="39", colour="black", dwell_s=42),
                events.cart_item_added(runner, quantity=1, size="39", colour="black"),
                events.cart_item_added(runner, quantity=0),  # rejected: quantity must be > 0
            )
        print(f"total: {tracker.total.accepted} accepted, {len(tracker.rejections)} rejected")

        # 2. The shopper signs in: the device is linked to the customer.
        resolution = await cx.resolve(email(f"{shopper}@example.com"), phone_app)
        outcome = id_pb.ResolveOutcome.Name(resolution.outcome)
        print(f"customer {resolution.customer_id}: {outcome}")
        print(f"the device now resolves to {await cx.customer_id(phone_app)}")


if __name__ == "__main__":
    asyncio.run(main())
