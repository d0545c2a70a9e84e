"""Demo data for the handoff story, loaded through the services' public APIs.

What it loads (see docs/cli.md):

* **catalogue** (inventory's item master): the Aria runner in black (sizes 37-41) and in
  white (38-40), the Mara leather tote that goes with it, a trench coat, a wool scarf,
  canvas sneakers and socks;
* **locations** with coordinates: two Paris stores about 2.5 km apart (Marais, where the
  demo shopper checks in, and Opéra) and a ship-from warehouse north of Paris, with stock;
* **customers with history**: eight shoppers, seven of whom ordered the runners together
  with the tote (online and at the tills), and other baskets, so that recommendation has
  learned that the tote goes with the runners; the **demo shopper** (Sam Keller, gold tier,
  loyalty card, one earlier in-store purchase) with consent to be recognised in store;
* **notification settings** for a local demo: a briefing budget that a loaded laptop meets
  and a one-minute check-in deduplication window, so the story can be replayed.

Running it again adds nothing: what exists is looked up first (locations, items, consent,
settings), every mutation carries a fixed request id (a replay returns the first answer)
and every event a fixed event id (profile answers DUPLICATE, or EVENT_ID_CONFLICT when an
earlier run sent it with times relative to that run). :class:`SeedReport` says what was new
and what was already there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.type import latlng_pb2

from continuum.common.v1 import channel_pb2, identifier_pb2, money_pb2
from continuum.identity.v1 import identity_service_pb2 as id_pb
from continuum.inventory.v1 import inventory_resources_pb2 as inv
from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.notification.v1 import notification_resources_pb2 as note
from continuum.notification.v1 import notification_service_pb2 as note_pb
from continuum.profile.v1 import profile_resources_pb2 as prof
from continuum.profile.v1 import profile_service_pb2 as prof_pb
from continuum.recommendation.v1 import recommendation_resources_pb2 as rec
from continuum.recommendation.v1 import recommendation_service_pb2 as rec_pb
from continuum_sdk import AsyncContinuum
from continuum_sdk.errors import AlreadyExists, ContinuumError, FailedPrecondition

T = TypeVar("T")
Progress = Callable[[str], None]

CURRENCY = "EUR"
WEB = channel_pb2.CHANNEL_WEB
STORE = channel_pb2.CHANNEL_STORE
EMAIL = identifier_pb2.IDENTIFIER_TYPE_EMAIL
LOYALTY = identifier_pb2.IDENTIFIER_TYPE_LOYALTY_ID
DEVICE = identifier_pb2.IDENTIFIER_TYPE_DEVICE_ID

# Where the demo shopper walks in, and the other places.
DEMO_STORE = "store-paris-marais"
OTHER_STORE = "store-paris-opera"
WAREHOUSE = "warehouse-paris-nord"

SHOE_PRODUCT = "aria-runner"
SHOE_CATEGORY = "Women > Shoes"
SHOE_COLOUR = "black"
BAG_SKU = "MARA-TOTE-BLK"
# The variant the demo shopper puts in the cart, and the others she looks at.
CART_SKU = "ARIA-RUN-BLK-39"
VIEWED_SKUS = ("ARIA-RUN-BLK-38", "ARIA-RUN-BLK-39", "ARIA-RUN-BLK-40")


COLOUR_CODES = {"black": "BLK", "white": "WHT"}


def shoe_sku(colour: str, size: str) -> str:
    return f"ARIA-RUN-{COLOUR_CODES[colour]}-{size}"


@dataclass(frozen=True)
class Product:
    """One variant of the demo catalogue, with its stock per location."""

    sku: str
    product_id: str
    name: str
    brand: str
    category: str
    colour: str
    size: str
    price_minor: int
    stock: dict[str, int] = field(default_factory=dict)

    def item(self) -> inv.Item:
        return inv.Item(
            sku=self.sku,
            product_id=self.product_id,
            name=self.name,
            brand=self.brand,
            category=self.category,
            colour=self.colour,
            size=self.size,
            price=money(self.price_minor),
            state=inv.ITEM_STATE_ACTIVE,
        )

    def ref(self) -> prof.ProductRef:
        return prof.ProductRef(
            sku=self.sku,
            product_id=self.product_id,
            name=self.name,
            category=self.category,
            brand=self.brand,
            size=self.size,
            colour=self.colour,
            unit_price=money(self.price_minor),
        )


def money(amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=CURRENCY, amount_minor=amount_minor)


def _shoes() -> list[Product]:
    # Marais: a few of each black size, none of 41 (so "sizes here" is a real answer);
    # Opéra has more of the popular sizes (the nearby alternative); the warehouse ships.
    marais = {"37": 2, "38": 2, "39": 3, "40": 1, "41": 0}
    opera = {"37": 1, "38": 4, "39": 6, "40": 3, "41": 2}
    black = [
        Product(
            sku=shoe_sku("black", size),
            product_id=SHOE_PRODUCT,
            name="Aria runner",
            brand="Atelier Nord",
            category=SHOE_CATEGORY,
            colour="black",
            size=size,
            price_minor=12900,
            stock={DEMO_STORE: marais[size], OTHER_STORE: opera[size], WAREHOUSE: 20},
        )
        for size in ("37", "38", "39", "40", "41")
    ]
    white = [
        Product(
            sku=shoe_sku("white", size),
            product_id=SHOE_PRODUCT,
            name="Aria runner",
            brand="Atelier Nord",
            category=SHOE_CATEGORY,
            colour="white",
            size=size,
            price_minor=12900,
            stock={DEMO_STORE: 2, OTHER_STORE: 2, WAREHOUSE: 10},
        )
        for size in ("38", "39", "40")
    ]
    return black + white


CATALOGUE: tuple[Product, ...] = (
    *_shoes(),
    Product(
        sku=BAG_SKU,
        product_id="mara-tote",
        name="Mara leather tote",
        brand="Atelier Nord",
        category="Women > Bags",
        colour="black",
        size="",
        price_minor=18900,
        stock={DEMO_STORE: 4, OTHER_STORE: 3, WAREHOUSE: 15},
    ),
    *(
        Product(
            sku=f"SEINE-TRENCH-NVY-{size}",
            product_id="seine-trench",
            name="Seine trench coat",
            brand="Maison Quai",
            category="Women > Coats",
            colour="navy",
            size=size,
            price_minor=24900,
            stock={DEMO_STORE: 2, OTHER_STORE: 3, WAREHOUSE: 8},
        )
        for size in ("S", "M", "L")
    ),
    Product(
        sku="LUNE-SCARF-GRY",
        product_id="lune-scarf",
        name="Lune wool scarf",
        brand="Maison Quai",
        category="Women > Accessories",
        colour="grey",
        size="",
        price_minor=5900,
        stock={DEMO_STORE: 9, OTHER_STORE: 7, WAREHOUSE: 30},
    ),
    *(
        Product(
            sku=f"PONT-SNEAKER-WHT-{size}",
            product_id="pont-sneaker",
            name="Pont canvas sneaker",
            brand="Atelier Nord",
            category="Women > Shoes",
            colour="white",
            size=size,
            price_minor=7900,
            stock={DEMO_STORE: 5, OTHER_STORE: 5, WAREHOUSE: 20},
        )
        for size in ("38", "39", "40")
    ),
    Product(
        sku="TRAIL-SOCKS-3PK",
        product_id="trail-socks",
        name="Trail socks (3 pairs)",
        brand="Atelier Nord",
        category="Women > Accessories",
        colour="black",
        size="",
        price_minor=1500,
        stock={DEMO_STORE: 25, OTHER_STORE: 25, WAREHOUSE: 100},
    ),
)
BY_SKU: dict[str, Product] = {p.sku: p for p in CATALOGUE}


@dataclass(frozen=True)
class Place:
    location_id: str
    name: str
    type: int
    latitude: float
    longitude: float
    locality: str

    def location(self) -> inv.Location:
        store = self.type == inv.LOCATION_TYPE_STORE
        return inv.Location(
            location_id=self.location_id,
            name=self.name,
            type=self.type,  # type: ignore[arg-type]
            coordinates=latlng_pb2.LatLng(latitude=self.latitude, longitude=self.longitude),
            time_zone="Europe/Paris",
            pickup_capable=store,
            ship_from_capable=not store,
            state=inv.LOCATION_STATE_ACTIVE,
        )


LOCATIONS: tuple[Place, ...] = (
    Place(DEMO_STORE, "Paris Marais", inv.LOCATION_TYPE_STORE, 48.8590, 2.3620, "Paris"),
    Place(OTHER_STORE, "Paris Opéra", inv.LOCATION_TYPE_STORE, 48.8712, 2.3320, "Paris"),
    Place(
        WAREHOUSE, "Paris Nord warehouse", inv.LOCATION_TYPE_WAREHOUSE, 48.9850, 2.4470, "Gonesse"
    ),
)


@dataclass(frozen=True)
class Shopper:
    key: str
    given_name: str
    family_name: str
    email: str
    loyalty_id: str = ""
    loyalty_tier: str = ""

    def identifiers(self) -> list[identifier_pb2.Identifier]:
        out = [identifier_pb2.Identifier(type=EMAIL, value=self.email)]
        if self.loyalty_id:
            out.append(identifier_pb2.Identifier(type=LOYALTY, value=self.loyalty_id))
        return out


DEMO_SHOPPER = Shopper(
    key="sam",
    given_name="Sam",
    family_name="Keller",
    email="sam.keller@example.com",
    loyalty_id="LOY-100042",
    loyalty_tier="gold",
)


@dataclass(frozen=True)
class PastOrder:
    """An order in a shopper's history: (sku, quantity) lines, days ago, where."""

    order_id: str
    lines: tuple[tuple[str, int], ...]
    days_ago: int
    store_id: str = ""


def _others() -> list[tuple[Shopper, tuple[PastOrder, ...]]]:
    names = (
        ("Lea", "Martin"),
        ("Nina", "Dubois"),
        ("Ines", "Moreau"),
        ("Chloe", "Laurent"),
        ("Emma", "Girard"),
        ("Zoe", "Bernard"),
        ("Alice", "Roux"),
        ("Jade", "Fournier"),
    )
    # Everyone but the last bought the runners with the tote (most in size 39, the size the
    # demo shopper wants); a few baskets pair other things, so the tote is not simply popular.
    sizes = ("39", "38", "39", "40", "39", "37", "39", "")
    out = []
    for n, ((given, family), size) in enumerate(zip(names, sizes, strict=True)):
        shopper = Shopper(
            key=f"shopper{n + 1}",
            given_name=given,
            family_name=family,
            email=f"{given.lower()}.{family.lower()}@example.com",
            loyalty_id=f"LOY-2000{n + 1:02d}",
            loyalty_tier=("silver", "gold", "")[n % 3],
        )
        orders: list[PastOrder] = []
        if size:
            orders.append(
                PastOrder(
                    f"seed-order-{n + 1}-a",
                    ((shoe_sku("black", size), 1), (BAG_SKU, 1)),
                    days_ago=5 + 3 * n,
                    store_id=(DEMO_STORE, "", OTHER_STORE)[n % 3],
                )
            )
        if n % 2 == 0:
            orders.append(
                PastOrder(
                    f"seed-order-{n + 1}-b",
                    (("PONT-SNEAKER-WHT-39", 1), ("TRAIL-SOCKS-3PK", 2)),
                    days_ago=30 + n,
                )
            )
        else:
            orders.append(
                PastOrder(
                    f"seed-order-{n + 1}-b",
                    (("SEINE-TRENCH-NVY-M", 1), ("LUNE-SCARF-GRY", 1)),
                    days_ago=40 + n,
                    store_id=OTHER_STORE,
                )
            )
        out.append((shopper, tuple(orders)))
    return out


OTHER_SHOPPERS: tuple[tuple[Shopper, tuple[PastOrder, ...]], ...] = tuple(_others())
DEMO_HISTORY: tuple[PastOrder, ...] = (
    PastOrder("seed-order-sam-1", (("LUNE-SCARF-GRY", 1),), days_ago=60, store_id=OTHER_STORE),
)
# Fixed, so that a replayed consent request is the same request.
CONSENT_TIME = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


@dataclass
class SeedReport:
    """What a seed run did: per kind of thing, how many were new and how many were there."""

    created: dict[str, int] = field(default_factory=dict)
    existing: dict[str, int] = field(default_factory=dict)
    customers: dict[str, str] = field(default_factory=dict)  # shopper key -> customer id

    def count(self, kind: str, new: bool) -> None:
        table = self.created if new else self.existing
        table[kind] = table.get(kind, 0) + 1

    @property
    def demo_customer_id(self) -> str:
        return self.customers[DEMO_SHOPPER.key]


def timestamp(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


async def _once(call: Awaitable[T]) -> T | None:
    """Run a create-like call; None when the thing already exists (a create with another
    request id, or the same request id with other content: seeded before)."""
    try:
        return await call
    except AlreadyExists:
        return None
    except FailedPrecondition as err:
        if err.reason == "REQUEST_ID_REUSED":
            return None
        raise


async def _gather(jobs: Sequence[Awaitable[T]], limit: int = 8) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def _fresh(ts: timestamp_pb2.Timestamp, since: float) -> bool:
    """True when a resource's create time is from this seed run (not a replayed answer)."""
    return ts.seconds + ts.nanos / 1e9 >= since


async def seed_inventory(cx: AsyncContinuum, report: SeedReport, since: float) -> None:
    """Locations and items that are missing, and stock levels as counts (a replayed count
    sets nothing twice)."""
    known = await cx.inventory.ListLocations(inv_pb.ListLocationsRequest(page_size=1000))
    have = {loc.location_id for loc in known.locations}
    for place in LOCATIONS:
        if place.location_id in have:
            report.count("locations", False)
            continue
        made = await _once(
            cx.inventory.CreateLocation(
                inv_pb.CreateLocationRequest(
                    request_id=f"seed-location-{place.location_id}", location=place.location()
                )
            )
        )
        report.count("locations", made is not None and _fresh(made.location.create_time, since))
    found = await cx.inventory.BatchGetItems(
        inv_pb.BatchGetItemsRequest(skus=[p.sku for p in CATALOGUE], allow_missing=True)
    )
    have = {item.sku for item in found.items}
    report.created["items"] = 0
    report.existing["items"] = len(have)
    items = await _gather(
        [
            _once(
                cx.inventory.CreateItem(
                    inv_pb.CreateItemRequest(request_id=f"seed-item-{p.sku}", item=p.item())
                )
            )
            for p in CATALOGUE
            if p.sku not in have
        ]
    )
    for made_item in items:
        report.count("items", made_item is not None and _fresh(made_item.item.create_time, since))
    adjustments = [
        _once(
            cx.inventory.AdjustStock(
                inv_pb.AdjustStockRequest(
                    request_id=f"seed-stock-{p.sku}-{location}",
                    sku=p.sku,
                    location_id=location,
                    type=inv.STOCK_CHANGE_TYPE_ADJUSTMENT,
                    set_quantity=units,
                    reason="demo seed: opening count",
                )
            )
        )
        for p in CATALOGUE
        for location, units in p.stock.items()
    ]
    for adjusted in await _gather(adjustments):
        fresh = adjusted is not None and _fresh(adjusted.ledger_entry.create_time, since)
        report.count("stock levels", fresh)


async def seed_shopper(
    cx: AsyncContinuum,
    shopper: Shopper,
    orders: Sequence[PastOrder],
    report: SeedReport,
    *,
    now: datetime,
    since: float,
    consent: bool,
) -> str:
    """The shopper in identity, name and tier in profile, optional recognition consent, and
    the orders as behavioural events."""
    resolved = await cx.identity.ResolveIdentity(
        id_pb.ResolveIdentityRequest(
            request_id=f"seed-resolve-{shopper.key}",
            identifiers=shopper.identifiers(),
            channel=WEB,
            actor="continuum-seed",
        )
    )
    customer_id = resolved.resolution.customer_id
    report.customers[shopper.key] = customer_id
    customer = await cx.identity.GetCustomer(id_pb.GetCustomerRequest(customer_id=customer_id))
    report.count("customers", _fresh(customer.customer.create_time, since))
    paths = ["contact"] + (["loyalty_tier"] if shopper.loyalty_tier else [])
    await _once(
        cx.profile.UpdateProfile(
            prof_pb.UpdateProfileRequest(
                request_id=f"seed-profile-{shopper.key}",
                profile=prof.Profile(
                    customer_id=customer_id,
                    contact=prof.ContactDetails(
                        given_name=shopper.given_name,
                        family_name=shopper.family_name,
                        email=shopper.email,
                    ),
                    loyalty_tier=shopper.loyalty_tier,
                    time_zone="Europe/Paris",
                ),
                update_mask=field_mask_pb2.FieldMask(paths=[*paths, "time_zone"]),
            )
        )
    )
    if consent:
        await grant_store_recognition(cx, shopper, customer_id, report)
    events = [_order_event(shopper, order, now) for order in orders]
    if events:
        await ingest(cx, events, report, "orders")
    return customer_id


async def grant_store_recognition(
    cx: AsyncContinuum, shopper: Shopper, customer_id: str, report: SeedReport
) -> None:
    """The shopper's consent to be recognised in store, unless already granted."""
    consents = await cx.profile.GetConsents(prof_pb.GetConsentsRequest(customer_id=customer_id))
    if any(
        c.channel == STORE
        and c.purpose == prof.CONSENT_PURPOSE_STORE_RECOGNITION
        and c.status == prof.CONSENT_STATUS_GRANTED
        for c in consents.consents
    ):
        report.count("consents", False)
        return
    await _once(
        cx.profile.UpdateConsent(
            prof_pb.UpdateConsentRequest(
                request_id=f"seed-consent-{shopper.key}",
                customer_id=customer_id,
                consents=[
                    prof.Consent(
                        channel=STORE,
                        purpose=prof.CONSENT_PURPOSE_STORE_RECOGNITION,
                        status=prof.CONSENT_STATUS_GRANTED,
                        source_channel=WEB,
                        source="web_account_privacy_settings",
                        consent_time=timestamp(CONSENT_TIME),
                        policy_version="2026-01",
                    )
                ],
            )
        )
    )
    report.count("consents", True)


async def ingest(
    cx: AsyncContinuum, events: Sequence[prof.BehaviouralEvent], report: SeedReport, kind: str
) -> None:
    """Send events to profile, counting new ones and ones it already has (DUPLICATE, or
    EVENT_ID_CONFLICT for an event sent on an earlier run with times relative to that run);
    any other rejection is an error."""
    answer = await cx.profile.IngestEvents(prof_pb.IngestEventsRequest(events=events))
    for result in answer.results:
        if result.status == prof_pb.EVENT_RESULT_STATUS_ACCEPTED:
            report.count(kind, True)
        elif (
            result.status == prof_pb.EVENT_RESULT_STATUS_DUPLICATE
            or result.rejection_reason == prof_pb.EVENT_REJECTION_REASON_EVENT_ID_CONFLICT
        ):
            report.count(kind, False)
        else:
            reason = prof_pb.EventRejectionReason.Name(result.rejection_reason)
            fields = ", ".join(f"{v.field}: {v.description}" for v in result.field_violations)
            raise ValueError(f"profile rejected event {result.event_id}: {reason} {fields}")


def _order_event(shopper: Shopper, order: PastOrder, now: datetime) -> prof.BehaviouralEvent:
    lines = []
    total = 0
    for sku, quantity in order.lines:
        product = BY_SKU[sku]
        total += product.price_minor * quantity
        lines.append(
            prof.OrderLine(
                product=product.ref(),
                quantity=quantity,
                line_total=money(product.price_minor * quantity),
            )
        )
    at = (now - timedelta(days=order.days_ago)).replace(microsecond=0)
    return prof.BehaviouralEvent(
        event_id=f"seed-event-{order.order_id}",
        channel=STORE if order.store_id else WEB,
        occur_time=timestamp(at),
        identifiers=shopper.identifiers(),
        store_id=order.store_id,
        source="continuum-seed",
        order_placed=prof.OrderPlaced(
            order_id=order.order_id,
            lines=lines,
            subtotal=money(total),
            total=money(total),
            fulfilment_method=(
                prof.FULFILMENT_METHOD_CARRY_OUT
                if order.store_id
                else prof.FULFILMENT_METHOD_DELIVERY
            ),
        ),
    )


# Local-demo notification settings: a briefing budget that a laptop running all six services
# meets (the default, 250 ms, is meant for production hardware), and a one-minute check-in
# window so that the story can be played again soon.
DEMO_BRIEFING_BUDGET_S = 5
DEMO_CHECK_IN_WINDOW_S = 60


async def seed_settings(
    cx: AsyncContinuum, report: SeedReport, budget_s: int = DEMO_BRIEFING_BUDGET_S
) -> None:
    current = (
        await cx.notification.GetNotificationSettings(note_pb.GetNotificationSettingsRequest())
    ).settings
    if current.briefing_budget.ToTimedelta() == timedelta(
        seconds=DEMO_BRIEFING_BUDGET_S
    ) and current.check_in_dedup_window.ToTimedelta() == timedelta(seconds=DEMO_CHECK_IN_WINDOW_S):
        report.count("settings", False)
        return
    await _once(
        cx.notification.UpdateNotificationSettings(
            note_pb.UpdateNotificationSettingsRequest(
                # Per settings revision: a later change by hand is changed back once.
                request_id=f"seed-notification-settings-r{current.revision}",
                settings=note.NotificationSettings(
                    briefing_budget=duration_pb2.Duration(seconds=budget_s),
                    check_in_dedup_window=duration_pb2.Duration(seconds=DEMO_CHECK_IN_WINDOW_S),
                ),
                update_mask=field_mask_pb2.FieldMask(
                    paths=["briefing_budget", "check_in_dedup_window"]
                ),
                actor="continuum-seed",
            )
        )
    )
    report.count("settings", True)


async def complements_learned(cx: AsyncContinuum, store_id: str = DEMO_STORE) -> list[str]:
    """The SKUs recommendation offers with the demo cart's shoes at ``store_id`` now."""
    answer = await cx.recommendation.GetComplements(
        rec_pb.GetComplementsRequest(
            skus=[CART_SKU],
            context=rec.RecommendationContext(
                channel=STORE,
                store_id=store_id,
                placement="continuum_seed_check",
                availability_filter=rec.AVAILABILITY_FILTER_IN_STORE,
            ),
            limit=5,
        )
    )
    return [item.sku for item in answer.items]


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60.0
) -> None:
    """Poll ``check`` (errors count as not yet) until it is true; TimeoutError naming
    ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except ContinuumError as err:
            last = err
        await asyncio.sleep(0.25)
    raise TimeoutError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


async def seed(
    cx: AsyncContinuum,
    progress: Progress | None = None,
    *,
    now: datetime | None = None,
    wait_learned_s: float = 60.0,
    briefing_budget_s: int = DEMO_BRIEFING_BUDGET_S,
) -> SeedReport:
    """Load the demo data (idempotent); returns what was new and what was there.

    ``cx`` needs a service token (notification settings are an operator's). Waits until
    recommendation has learned that the tote goes with the runners (within about a second
    of the orders arriving; up to ``wait_learned_s``).
    """
    say = progress or (lambda _: None)
    now = now or datetime.now(UTC)
    # Resources created from here on are new (a second early: the services' clocks are
    # this machine's, and timestamps are cut to microseconds).
    since = time.time() - 1.0
    report = SeedReport()
    say("stores, warehouse, catalogue and stock (inventory)")
    await seed_inventory(cx, report, since)
    say("shoppers, consent and order history (identity, profile)")
    await seed_shopper(cx, DEMO_SHOPPER, DEMO_HISTORY, report, now=now, since=since, consent=True)
    await _gather(
        [
            seed_shopper(cx, shopper, orders, report, now=now, since=since, consent=False)
            for shopper, orders in OTHER_SHOPPERS
        ],
        limit=4,
    )
    say("local demo settings (notification)")
    await seed_settings(cx, report, briefing_budget_s)
    say("recommendation learning that the tote goes with the runners")

    async def learned() -> bool:
        return BAG_SKU in await complements_learned(cx)

    await wait_until(
        learned, "recommendation to learn the tote goes with the runners", wait_learned_s
    )
    return report


def describe(report: SeedReport) -> list[tuple[str, int, int]]:
    """(kind, new, already there) rows for printing."""
    order = ("locations", "items", "stock levels", "customers", "consents", "orders")
    seen = list(dict.fromkeys([*report.created, *report.existing]))
    kinds = [k for k in order if k in seen] + [k for k in seen if k not in order]
    return [(k, report.created.get(k, 0), report.existing.get(k, 0)) for k in kinds]


__all__ = [
    "BAG_SKU",
    "BY_SKU",
    "CART_SKU",
    "CATALOGUE",
    "DEMO_SHOPPER",
    "DEMO_STORE",
    "LOCATIONS",
    "OTHER_STORE",
    "SHOE_COLOUR",
    "VIEWED_SKUS",
    "SeedReport",
    "describe",
    "seed",
    "wait_until",
]
