"""The headline flow end to end: the six services as processes, the demo seed, the handoff
story played through the services' APIs, and the briefing the associate's stream delivers,
checked field by field."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from continuum.inventory.v1 import inventory_service_pb2 as inv_pb
from continuum.notification.v1 import notification_resources_pb2 as note
from continuum_cli import state
from continuum_cli.seed import (
    BAG_SKU,
    BY_SKU,
    CART_SKU,
    CATALOGUE,
    DEMO_SHOPPER,
    DEMO_STORE,
    OTHER_STORE,
    SHOE_CATEGORY,
    SHOE_COLOUR,
    VIEWED_SKUS,
    SeedReport,
    seed,
)
from continuum_cli.story import DEMO_DEVICE, StoryResult, play
from continuum_cli.suite import RunningSuite
from continuum_runtime.auth import PrincipalKind
from continuum_runtime.testing import TestStores
from continuum_sdk.config import SERVICES
from tests.cli.runner import cli
from tests.e2e.conftest import six_services

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The demo's short abandonment (continuum run uses the same kind of setting).
SERVICE_ENV = {
    "cart": {"CONTINUUM_ABANDON_AFTER_S": "2", "CONTINUUM_ABANDON_CHECK_INTERVAL_S": "0.5"},
}


@dataclass
class Played:
    suite: RunningSuite
    report: SeedReport
    story: StoryResult

    @property
    def briefing(self) -> note.Briefing:
        return self.story.briefing


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def played(
    test_stores: TestStores, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Played]:
    data_dir: Path = tmp_path_factory.mktemp("handoff-story")
    async with six_services(test_stores, data_dir, service_env=SERVICE_ENV) as suite:
        # Generous deadlines and briefing budget: the tests check what the briefing holds,
        # not how fast a loaded machine assembles it.
        cx = suite.client(token=suite.token("handoff-test", PrincipalKind.SERVICE), deadline_s=60.0)
        associate = suite.client(
            token=suite.token("associate-1", PrincipalKind.ASSOCIATE, stores=(DEMO_STORE,)),
            deadline_s=60.0,
        )
        try:
            report = await seed(cx, briefing_budget_s=15)
            story = await play(cx, associate, seeded=report)
            yield Played(suite, report, story)
        finally:
            await cx.close()
            await associate.close()


async def test_the_check_in_is_briefed_and_the_briefing_arrives_on_the_stream(
    played: Played,
) -> None:
    story = played.story
    assert story.check_in.status == note.CHECK_IN_STATUS_BRIEFED
    assert not story.deduplicated
    assert story.abandoned, story.notes
    assert played.briefing.briefing_id == story.check_in.briefing_id
    assert played.briefing.store_id == DEMO_STORE
    assert played.briefing.check_in_source == note.CHECK_IN_SOURCE_APP_GEOFENCE


async def test_the_customer_is_identified(played: Played) -> None:
    briefing = played.briefing
    sam = played.report.demo_customer_id
    # The anonymous phone was linked at sign-in: the check-in by device id finds her.
    assert played.story.customer_id == sam
    assert briefing.customer_id == sam
    assert briefing.HasField("customer")
    assert briefing.customer.customer_id == sam
    assert briefing.customer.display_name == "Sam K."
    assert briefing.customer.loyalty_tier == DEMO_SHOPPER.loyalty_tier
    assert briefing.headline.startswith("Sam K. (gold)")


async def test_the_sizes_and_colour_looked_at_are_named(played: Played) -> None:
    customer = played.briefing.customer
    shoes = [p for p in customer.category_preferences if p.category == SHOE_CATEGORY]
    assert len(shoes) == 1
    viewed_sizes = {BY_SKU[sku].size for sku in VIEWED_SKUS}
    assert set(shoes[0].sizes) == viewed_sizes
    # The size she came back to (and carted) leads.
    assert shoes[0].sizes[0] == BY_SKU[CART_SKU].size
    assert customer.colours[0] == SHOE_COLOUR
    assert any("Aria runner (39, black)" in point for point in customer.talking_points)
    # Her earlier in-store purchase is part of the profile.
    assert [p.sku for p in customer.recent_purchases] == ["LUNE-SCARF-GRY"]
    assert customer.recent_purchases[0].store_id == OTHER_STORE


async def test_the_cart_items_carry_this_stores_stock_and_sizes(played: Played) -> None:
    briefing = played.briefing
    assert briefing.HasField("cart")
    assert briefing.cart.abandon_time.seconds > 0
    assert [i.sku for i in briefing.cart.items] == [CART_SKU]
    item = briefing.cart.items[0]
    shoe = BY_SKU[CART_SKU]
    assert (item.name, item.size, item.colour, item.quantity) == ("Aria runner", "39", "black", 1)
    assert item.unit_price.amount_minor == shoe.price_minor
    availability = item.availability
    assert availability.store_id == DEMO_STORE
    assert availability.available_count == shoe.stock[DEMO_STORE] == 3
    # 3 is at or below the default low-stock threshold (5).
    assert availability.status == note.AVAILABILITY_STATUS_LOW_STOCK
    # Every black size in stock here, with its count (41 has none here).
    sizes = {s.size: s.available_count for s in availability.sizes_available}
    assert sizes == {"37": 2, "38": 2, "39": 3, "40": 1}
    # Low here: the nearby store with more is named, with its distance.
    assert [n.store_id for n in availability.nearby] == [OTHER_STORE]
    nearby = availability.nearby[0]
    assert nearby.available_count == shoe.stock[OTHER_STORE] == 6
    assert nearby.store_name == "Paris Opéra"
    assert 2000 < nearby.distance_meters < 3500


async def test_the_matching_bag_is_among_the_complements(played: Played) -> None:
    complements = played.briefing.complements
    skus = [c.sku for c in complements]
    assert BAG_SKU in skus
    bag = complements[skus.index(BAG_SKU)]
    assert bag.name == "Mara leather tote"
    assert bag.reason.related_sku == CART_SKU
    assert bag.reason.text
    assert bag.availability.available_count == BY_SKU[BAG_SKU].stock[DEMO_STORE]
    assert "Mara leather tote goes with it" in played.briefing.headline


async def test_there_is_a_next_best_action_and_nothing_is_missing(played: Played) -> None:
    briefing = played.briefing
    assert briefing.next_best_actions
    first = briefing.next_best_actions[0]
    assert first.kind == note.ACTION_KIND_REMIND_CART_ITEM
    assert first.title
    assert first.state == note.ACTION_STATE_PROPOSED
    assert CART_SKU in [i.sku for i in first.items]
    assert list(briefing.missing_parts) == []
    assert briefing.recommendation_ids


# --- the `continuum` command against this suite (after the story) --------------------------


def _cli_dir(played: Played) -> Path:
    """What `continuum run` leaves for the other commands: the token key and the targets."""
    data_dir = played.suite.data_dir
    (data_dir / "dev-token-key").write_text(played.suite.token_key)
    state.write_state(
        data_dir,
        state.SuiteState(pid=os.getpid(), targets=played.suite.targets, started="test", log_dir=""),
    )
    return data_dir


def _seed_row(out: str, kind: str) -> tuple[int, int]:
    """(new, already there) of a row of the seed's table."""
    found = re.search(rf"{kind}\s*\S\s*(\d+)\s*\S\s*(\d+)", out)
    assert found is not None, out
    return int(found.group(1)), int(found.group(2))


async def test_cli_status_shows_every_service_serving(played: Played) -> None:
    code, out = await cli("status", data_dir=_cli_dir(played))
    assert code == 0, out
    for name in SERVICES:
        target = re.escape(played.suite.targets[name])
        assert re.search(rf"{name}\s*\S\s*{target}\s*\S\s*SERVING", out), out


async def test_cli_seed_again_changes_nothing(played: Played) -> None:
    assert sum(played.report.created.values()) > 0
    code, out = await cli("seed", data_dir=_cli_dir(played))
    assert code == 0, out
    for kind in ("locations", "items", "stock levels", "customers", "consents", "orders"):
        new, existing = _seed_row(out, kind)
        assert new == 0, (kind, out)
        assert existing == played.report.created[kind] + played.report.existing.get(kind, 0)
    async with played.suite.client(token=played.suite.token(kind=PrincipalKind.SERVICE)) as cx:
        items = await cx.inventory.ListItems(inv_pb.ListItemsRequest(page_size=100))
    assert len(items.items) == len(CATALOGUE)


async def test_cli_customer_shows_what_each_service_knows(played: Played) -> None:
    code, out = await cli("customer", DEMO_SHOPPER.email, data_dir=_cli_dir(played))
    assert code == 0, out
    assert played.story.customer_id in out
    assert "Sam K." in out
    assert "s***@example.com" in out  # identifiers are shown masked
    assert DEMO_SHOPPER.email not in out
    assert re.search(r"store recognition\s+allowed", out)
    assert re.search(r"sizes in Women > Shoes\s+39, 38, 40", out), out
    assert "Lune wool scarf" in out  # her earlier purchase
    assert "(abandoned, €129.00)" in out  # the cart
    assert played.briefing.headline in out  # recent briefings
    code, by_device = await cli("customer", f"device:{DEMO_DEVICE}", data_dir=_cli_dir(played))
    assert code == 0
    assert played.story.customer_id in by_device
    code, out = await cli("customer", "nobody@example.com", data_dir=_cli_dir(played))
    assert code == 1
    assert "no customer has nobody@example.com" in out


async def test_cli_feed_replays_the_stores_current_briefing(played: Played) -> None:
    code, out = await cli("feed", DEMO_STORE, "--count", "1", data_dir=_cli_dir(played))
    assert code == 0, out
    assert "Briefing for the associates at Paris Marais" in out
    assert played.briefing.briefing_id in out
    assert "Mara leather tote" in out
    assert "Missing parts: none" in out
