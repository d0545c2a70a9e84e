"""The cart-to-associate handoff from the SDK: an associate device subscribes to its
store's feed, a known shopper checks in, and the briefing arrives on the feed.

    CONTINUUM_TOKEN=... python examples/sdk/store_feed.py

The subscription reconnects by itself after UNAVAILABLE (a restart of the notification
service) and resumes after the last cursor it saw. CONTINUUM_EXAMPLE_STORE picks the store
(default: the demo store of `make run`).
"""

from __future__ import annotations

import asyncio
import os
import uuid

from google.protobuf import timestamp_pb2

from continuum.common.v1 import channel_pb2
from continuum.notification.v1 import notification_resources_pb2 as notif
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum_sdk import AsyncContinuum, ClientConfig
from continuum_sdk.identifiers import email, loyalty

STORE = os.environ.get("CONTINUUM_EXAMPLE_STORE", "store-paris-marais")


async def new_shopper(cx: AsyncContinuum, tag: str) -> str:
    """A customer who agreed to be recognised in store (the generated stubs are right
    there on the client for everything the helpers do not cover)."""
    customer_id = (await cx.resolve(email(f"{tag}@example.com"), loyalty(f"L-{tag}"))).customer_id
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    await cx.profile.UpdateConsent(
        prof_pb.UpdateConsentRequest(
            request_id=str(uuid.uuid4()),
            customer_id=customer_id,
            consents=[
                prof.Consent(
                    channel=channel_pb2.CHANNEL_STORE,
                    purpose=prof.CONSENT_PURPOSE_STORE_RECOGNITION,
                    status=prof.CONSENT_STATUS_GRANTED,
                    source="example",
                    consent_time=now,
                )
            ],
        )
    )
    return customer_id


async def main() -> None:
    tag = uuid.uuid4().hex[:8]
    async with AsyncContinuum(ClientConfig.from_env()) as cx:
        customer_id = await new_shopper(cx, tag)
        feed = cx.subscribe_feed(STORE, include_markers=True)
        subscribed = asyncio.Event()

        async def associate_device() -> None:
            async for item in feed:
                if item.kind == notif.FEED_ITEM_KIND_CAUGHT_UP:
                    subscribed.set()
                elif item.briefing.customer_id == customer_id:
                    print(f"briefing: {item.briefing.headline}")
                    print(f"resume cursor: {feed.cursor}")
                    feed.close()

        device = asyncio.create_task(associate_device())
        await asyncio.wait_for(subscribed.wait(), timeout=30)
        check_in = await cx.check_in(STORE, loyalty(f"L-{tag}"))
        print(f"check-in {check_in.check_in_id}: {notif.CheckInStatus.Name(check_in.status)}")
        await asyncio.wait_for(device, timeout=30)


if __name__ == "__main__":
    asyncio.run(main())
