"""Stored rows to protobuf messages, and the page tokens of the List RPCs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from google.type import latlng_pb2, postal_address_pb2

from continuum.common.v1 import money_pb2
from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum_inventory import domain
from continuum_inventory.domain import Threshold
from continuum_inventory.store import json_value
from continuum_runtime.paging import bad_page_token, decode_page_token, encode_page_token

DEFAULT_PAGE, MAX_PAGE = 100, 1000


def page_size(requested: int) -> int:
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def encode_token(value: Any) -> str:
    return encode_page_token([value])


def decode_token(token: str, default: Any) -> Any:
    """The value of a page token, ``default`` without one; it must be of the default's type."""
    values = decode_page_token(token, 1)
    if values is None:
        return default
    if type(values[0]) is not type(default):
        raise bad_page_token()
    return values[0]


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


def item_message(row: Any) -> res.Item:
    item = res.Item(
        sku=row.sku,
        product_id=row.product_id,
        name=row.name,
        description=row.description,
        brand=row.brand,
        category=row.category,
        colour=row.colour,
        size=row.size,
        price=money_pb2.Money(currency_code=row.currency, amount_minor=row.price_minor),
        attributes=json_value(row.attributes),
        image_url=row.image_url,
        state=row.state,
        gtin=row.gtin,
        etag=row.etag,
    )
    item.create_time.FromDatetime(row.create_time)
    item.update_time.FromDatetime(row.update_time)
    return item


def location_message(row: Any) -> res.Location:
    location = res.Location(
        location_id=row.location_id,
        name=row.name,
        type=row.type,
        coordinates=latlng_pb2.LatLng(latitude=row.latitude, longitude=row.longitude),
        time_zone=row.time_zone,
        pickup_capable=row.pickup_capable,
        ship_from_capable=row.ship_from_capable,
        state=row.state,
        etag=row.etag,
    )
    if row.address is not None:
        location.address.CopyFrom(postal_address_pb2.PostalAddress.FromString(bytes(row.address)))
    if row.pickup_buffer is not None:
        location.pickup_buffer = row.pickup_buffer
    location.create_time.FromDatetime(row.create_time)
    location.update_time.FromDatetime(row.update_time)
    return location


def level_message(
    row: Any,
    rule: Threshold,
    *,
    pickup_capable: bool,
    location_active: bool,
    buffer: int,
) -> res.StockLevel:
    """A stored level (row with the level's columns) as a StockLevel."""
    atp = domain.available_to_promise(row.on_hand, row.reserved, row.safety_stock)
    level = res.StockLevel(
        sku=row.sku,
        location_id=row.location_id,
        on_hand=row.on_hand,
        reserved=row.reserved,
        safety_stock=row.safety_stock,
        incoming=row.incoming,
        available_to_promise=atp,
        pickup_available=domain.pickup_available(atp, pickup_capable, location_active, buffer),
        status=domain.status_of(atp, rule.low),
        low_stock=row.low_stock,
        reserved_shortfall=max(0, row.reserved - row.on_hand),
        revision=row.revision,
    )
    if row.next_incoming_time is not None:
        level.next_incoming_time.FromDatetime(row.next_incoming_time)
    level.update_time.FromDatetime(row.update_time)
    return level


def empty_level(sku: str, location_id: str) -> res.StockLevel:
    return res.StockLevel(sku=sku, location_id=location_id, status=domain.NOT_STOCKED)


def ledger_message(row: Any) -> res.LedgerEntry:
    entry = res.LedgerEntry(
        entry_id=str(row.entry_id),
        sequence=row.sequence,
        sku=row.sku,
        location_id=row.location_id,
        type=row.type,
        delta=res.StockCounts(
            on_hand=row.d_on_hand,
            reserved=row.d_reserved,
            safety_stock=row.d_safety_stock,
            incoming=row.d_incoming,
        ),
        balance=res.StockCounts(
            on_hand=row.on_hand,
            reserved=row.reserved,
            safety_stock=row.safety_stock,
            incoming=row.incoming,
        ),
        reason=row.reason,
        note=row.note,
        request_id=row.request_id,
        reservation_id=row.reservation_id,
        reference=row.reference,
        actor=row.actor,
    )
    entry.create_time.FromDatetime(row.create_time)
    return entry


def reservation_message(row: Any) -> res.Reservation:
    reservation = res.Reservation(
        reservation_id=row.reservation_id,
        kind=row.kind,
        state=row.state,
        lines=[
            res.ReservationLine(sku=s, location_id=loc, quantity=q)
            for s, loc, q in zip(row.skus, row.location_ids, row.quantities, strict=True)
        ],
        reference=row.reference,
        customer_id=row.customer_id,
        request_id=row.request_id,
        release_reason=row.release_reason,
    )
    reservation.create_time.FromDatetime(row.create_time)
    reservation.expire_time.FromDatetime(row.expire_time)
    if row.commit_time is not None:
        reservation.commit_time.FromDatetime(row.commit_time)
    if row.release_time is not None:
        reservation.release_time.FromDatetime(row.release_time)
    return reservation


def threshold_message(rule: Threshold) -> res.LowStockThreshold:
    message = res.LowStockThreshold(
        sku=rule.sku,
        location_id=rule.location_id,
        low_threshold=rule.low,
        recover_threshold=rule.recover,
        back_in_stock_quantity=rule.back_in_stock,
        scope=rule.scope,  # type: ignore[arg-type]
    )
    if rule.cooldown_s > 0:
        message.cooldown.FromNanoseconds(int(rule.cooldown_s * 1e9))
    if rule.update_time is not None:
        message.update_time.FromDatetime(rule.update_time)
    return message
