"""The item master, locations and low-stock rules: validation beyond the contract's
protovalidate rules, field masks, etags, and the item_updated event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from continuum.inventory.v1 import inventory_events_pb2 as ev
from continuum.inventory.v1 import inventory_resources_pb2 as res
from continuum_inventory import domain, mapping, store
from continuum_inventory.domain import Threshold
from continuum_inventory.operations import Outbox, item_not_found, location_not_found
from continuum_inventory.store import Defaults, threshold_of
from continuum_runtime.errors import (
    Aborted,
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
)

ITEM_PATHS = {
    "product_id",
    "name",
    "description",
    "brand",
    "category",
    "colour",
    "size",
    "price",
    "attributes",
    "image_url",
    "state",
    "gtin",
}
LOCATION_PATHS = {
    "name",
    "coordinates",
    "time_zone",
    "address",
    "pickup_capable",
    "ship_from_capable",
    "pickup_buffer",
    "state",
}


def _invalid(violations: Sequence[FieldViolation]) -> InvalidArgument:
    return InvalidArgument(
        "; ".join(f"{v.field}: {v.description}" for v in violations), violations=violations
    )


def _check_paths(paths: Sequence[str], allowed: set[str], field: str) -> None:
    bad = [
        FieldViolation(f"update_mask.paths[{n}]", f"{p!r} is not a writable path")
        for n, p in enumerate(paths)
        if p not in allowed
    ]
    if not paths:
        bad.append(FieldViolation("update_mask", "names no field to update"))
    if bad:
        raise _invalid(bad)


# --- items -------------------------------------------------------------------------------


def _item_values(item: res.Item) -> dict[str, Any]:
    return {
        "product_id": item.product_id,
        "name": item.name,
        "description": item.description,
        "brand": item.brand,
        "category": item.category,
        "colour": item.colour,
        "size": item.size,
        "currency": item.price.currency_code,
        "price_minor": item.price.amount_minor,
        "attributes": dict(item.attributes),
        "image_url": item.image_url,
        "state": item.state or domain.ITEM_ACTIVE,
        "gtin": item.gtin,
    }


def _creation_violations(item: res.Item, prefix: str) -> list[FieldViolation]:
    missing = []
    for name in ("sku", "product_id", "name"):
        if not getattr(item, name):
            missing.append(FieldViolation(f"{prefix}.{name}", "required"))
    if not item.HasField("price"):
        missing.append(FieldViolation(f"{prefix}.price", "required"))
    return missing


async def create_item(session: AsyncSession, item: res.Item) -> res.Item:
    violations = _creation_violations(item, "item")
    if violations:
        raise _invalid(violations)
    row = await store.insert_item(session, {"sku": item.sku, **_item_values(item)})
    if row is None:
        raise AlreadyExists(
            f"item {item.sku} exists", reason="ITEM_ALREADY_EXISTS", metadata={"sku": item.sku}
        )
    created = mapping.item_message(row)
    outbox = Outbox()
    outbox.add(
        "inventory.item_updated", f"sku:{item.sku}", ev.ItemUpdatedEvent(item=created, created=True)
    )
    await outbox.flush(session)
    return created


async def update_item(
    session: AsyncSession, item: res.Item, paths: Sequence[str], allow_missing: bool
) -> res.Item:
    _check_paths(paths, ITEM_PATHS, "item")
    row = await store.get_item(session, item.sku, lock=True)
    if row is None:
        if allow_missing:
            return await create_item(session, item)
        raise item_not_found([item.sku])
    if item.etag and item.etag != row.etag:
        raise Aborted(
            "the item changed since it was read",
            reason="ETAG_MISMATCH",
            metadata={"sku": item.sku, "etag": row.etag},
        )
    violations: list[FieldViolation] = []
    for path in ("product_id", "name"):
        if path in paths and not getattr(item, path):
            violations.append(FieldViolation(f"item.{path}", "must not be empty"))
    if "price" in paths and not item.HasField("price"):
        violations.append(FieldViolation("item.price", "required"))
    if "state" in paths and item.state == res.ItemState.ITEM_STATE_UNSPECIFIED:
        violations.append(FieldViolation("item.state", "must be ACTIVE, INACTIVE or DISCONTINUED"))
    if violations:
        raise _invalid(violations)
    new = _item_values(item)
    current = {
        "product_id": row.product_id,
        "name": row.name,
        "description": row.description,
        "brand": row.brand,
        "category": row.category,
        "colour": row.colour,
        "size": row.size,
        "currency": row.currency,
        "price_minor": row.price_minor,
        "attributes": store.json_value(row.attributes),
        "image_url": row.image_url,
        "state": row.state,
        "gtin": row.gtin,
    }
    values: dict[str, Any] = {}
    changed: list[str] = []
    for path in dict.fromkeys(paths):
        columns = ("currency", "price_minor") if path == "price" else (path,)
        if any(new[c] != current[c] for c in columns):
            changed.append(path)
            values.update({c: new[c] for c in columns})
    if not values:
        return mapping.item_message(row)
    updated = mapping.item_message(await store.update_item(session, item.sku, values))
    outbox = Outbox()
    outbox.add(
        "inventory.item_updated",
        f"sku:{item.sku}",
        ev.ItemUpdatedEvent(item=updated, created=False, changed_fields=changed),
    )
    await outbox.flush(session)
    return updated


# --- locations ---------------------------------------------------------------------------


def _check_zone(time_zone: str) -> None:
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid(
            [FieldViolation("location.time_zone", f"unknown IANA time zone {time_zone!r}")]
        ) from None


def _location_values(location: res.Location) -> dict[str, Any]:
    return {
        "name": location.name,
        "type": location.type,
        "latitude": location.coordinates.latitude,
        "longitude": location.coordinates.longitude,
        "time_zone": location.time_zone,
        "address": location.address.SerializeToString(deterministic=True)
        if location.HasField("address")
        else None,
        "pickup_capable": location.pickup_capable,
        "ship_from_capable": location.ship_from_capable,
        "pickup_buffer": location.pickup_buffer if location.HasField("pickup_buffer") else None,
        "state": location.state or domain.LOCATION_ACTIVE,
    }


async def create_location(session: AsyncSession, location: res.Location) -> res.Location:
    _check_zone(location.time_zone)
    row = await store.insert_location(
        session, {"location_id": location.location_id, **_location_values(location)}
    )
    if row is None:
        raise AlreadyExists(
            f"location {location.location_id} exists",
            reason="LOCATION_ALREADY_EXISTS",
            metadata={"location_id": location.location_id},
        )
    return mapping.location_message(row)


async def update_location(
    session: AsyncSession, location: res.Location, paths: Sequence[str]
) -> res.Location:
    immutable = [
        FieldViolation(f"update_mask.paths[{n}]", f"{p!r} is immutable")
        for n, p in enumerate(paths)
        if p in ("location_id", "type")
    ]
    if immutable:
        raise _invalid(immutable)
    _check_paths(paths, LOCATION_PATHS, "location")
    row = await store.get_location(session, location.location_id, lock=True)
    if row is None:
        raise location_not_found(location.location_id)
    if location.etag and location.etag != row.etag:
        raise Aborted(
            "the location changed since it was read",
            reason="ETAG_MISMATCH",
            metadata={"location_id": location.location_id, "etag": row.etag},
        )
    violations: list[FieldViolation] = []
    if "name" in paths and not location.name:
        violations.append(FieldViolation("location.name", "must not be empty"))
    if "coordinates" in paths and not location.HasField("coordinates"):
        violations.append(FieldViolation("location.coordinates", "required"))
    if "state" in paths and location.state == res.LocationState.LOCATION_STATE_UNSPECIFIED:
        violations.append(FieldViolation("location.state", "must be ACTIVE or CLOSED"))
    if "pickup_capable" in paths and location.pickup_capable and row.type != domain.STORE:
        violations.append(
            FieldViolation("location.pickup_capable", "only stores can be pickup capable")
        )
    if violations:
        raise _invalid(violations)
    if "time_zone" in paths:
        _check_zone(location.time_zone)
    new = _location_values(location)
    values: dict[str, Any] = {}
    for path in dict.fromkeys(paths):
        columns = ("latitude", "longitude") if path == "coordinates" else (path,)
        values.update({c: new[c] for c in columns})
    return mapping.location_message(await store.update_location(session, row.location_id, values))


# --- low-stock rules ---------------------------------------------------------------------


async def set_threshold(
    session: AsyncSession, rule: res.LowStockThreshold
) -> res.LowStockThreshold:
    if rule.sku and await store.get_item(session, rule.sku) is None:
        raise item_not_found([rule.sku])
    if rule.location_id and await store.get_location(session, rule.location_id) is None:
        raise location_not_found(rule.location_id)
    row = await store.upsert_threshold(
        session,
        {
            "sku": rule.sku,
            "loc": rule.location_id,
            "low": rule.low_threshold,
            "recover": rule.recover_threshold,
            "back": rule.back_in_stock_quantity,
            "cooldown": rule.cooldown.ToNanoseconds() / 1e9 if rule.HasField("cooldown") else 0.0,
        },
    )
    return mapping.threshold_message(_rule(row))


def _rule(row: Any) -> Threshold:
    return Threshold(
        sku=row.t_sku,
        location_id=row.t_loc,
        low=row.low_threshold,
        recover=row.recover_threshold,
        back_in_stock=row.back_in_stock_quantity,
        cooldown_s=row.cooldown_s,
        update_time=row.t_time,
    )


async def threshold_in_force(
    session: AsyncSession, sku: str, location_id: str, defaults: Defaults
) -> res.LowStockThreshold:
    rows = await store.rules_for(session, [(sku, location_id)])
    return mapping.threshold_message(threshold_of(rows[(sku, location_id)], defaults))


async def list_thresholds(
    session: AsyncSession, sku: str, location_id: str, page_size: int, token: str
) -> tuple[list[res.LowStockThreshold], str]:
    offset = int(mapping.decode_token(token, 0))
    size = mapping.page_size(page_size)
    rows = await store.list_thresholds(session, sku, location_id, offset, size + 1)
    next_token = mapping.encode_token(offset + size) if len(rows) > size else ""
    return [mapping.threshold_message(_rule(r)) for r in rows[:size]], next_token


async def delete_threshold(session: AsyncSession, sku: str, location_id: str) -> None:
    if not await store.delete_threshold(session, sku, location_id):
        raise NotFound(
            "no low-stock rule for this scope",
            reason="THRESHOLD_NOT_FOUND",
            metadata={"sku": sku, "location_id": location_id},
        )


__all__ = [
    "create_item",
    "create_location",
    "delete_threshold",
    "list_thresholds",
    "location_not_found",
    "set_threshold",
    "threshold_in_force",
    "update_item",
    "update_location",
]
