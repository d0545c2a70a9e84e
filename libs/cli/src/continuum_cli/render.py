"""Rich renderings of what the suite returns: the associate's briefing, a customer's view."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from continuum.cart.v1 import cart_resources_pb2 as cart_res
from continuum.common.v1 import channel_pb2, identifier_pb2, money_pb2
from continuum.identity.v1 import identity_resources_pb2 as id_res
from continuum.notification.v1 import notification_resources_pb2 as note
from continuum.profile.v1 import profile_resources_pb2 as prof_res

_STATUS = {
    note.AVAILABILITY_STATUS_IN_STOCK: ("in stock", "green"),
    note.AVAILABILITY_STATUS_LOW_STOCK: ("low stock", "yellow"),
    note.AVAILABILITY_STATUS_OUT_OF_STOCK: ("out of stock", "red"),
    note.AVAILABILITY_STATUS_NOT_STOCKED: ("not carried", "red"),
    note.AVAILABILITY_STATUS_UNKNOWN: ("unknown", "magenta"),
}
_PRIORITY = {
    note.ACTION_PRIORITY_HIGH: ("high", "bold red"),
    note.ACTION_PRIORITY_MEDIUM: ("medium", "yellow"),
    note.ACTION_PRIORITY_LOW: ("low", "dim"),
}
_SYMBOLS = {"EUR": "€", "GBP": "£", "USD": "$"}


def money(value: money_pb2.Money) -> str:
    if not value.currency_code:
        return ""
    amount = f"{value.amount_minor / 100:,.2f}"
    symbol = _SYMBOLS.get(value.currency_code)
    return f"{symbol}{amount}" if symbol else f"{amount} {value.currency_code}"


def when(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds:
        return ""
    at = datetime.fromtimestamp(ts.seconds, UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def day(ts: timestamp_pb2.Timestamp) -> str:
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d") if ts.seconds else ""


def channel(value: int) -> str:
    if not value:
        return ""
    name = channel_pb2.Channel.Name(value)  # type: ignore[arg-type]
    return name.removeprefix("CHANNEL_").lower().replace("_", " ")


def availability(item: note.ItemSummary) -> Text:
    if not item.HasField("availability"):
        return Text("not checked", style="magenta")
    status, style = _STATUS.get(item.availability.status, ("?", ""))
    count = item.availability.available_count
    if item.availability.status in (
        note.AVAILABILITY_STATUS_IN_STOCK,
        note.AVAILABILITY_STATUS_LOW_STOCK,
    ):
        return Text(f"{count} here ({status})", style=style)
    return Text(status, style=style)


def sizes_here(item: note.ItemSummary) -> str:
    sizes = item.availability.sizes_available if item.HasField("availability") else []
    return ", ".join(f"{s.size}: {s.available_count}" for s in sizes) or "-"


def nearby(item: note.ItemSummary) -> str:
    places = item.availability.nearby if item.HasField("availability") else []
    return (
        "; ".join(
            f"{p.store_name or p.store_id} ({p.distance_meters / 1000:.1f} km): {p.available_count}"
            for p in places
        )
        or "-"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _label(item: note.ItemSummary) -> str:
    return item.name or item.sku


def _who(briefing: note.Briefing) -> RenderableType:
    customer = briefing.customer
    if not briefing.HasField("customer"):
        return Text(f"Customer {briefing.customer_id} (profile part missing)", style="magenta")
    line = Text()
    line.append(customer.display_name or customer.customer_id, style="bold")
    if customer.loyalty_tier:
        line.append(f"  {customer.loyalty_tier} member", style="bold yellow")
    line.append("  agreed to be recognised in store", style="green")
    visits = customer.visits
    if customer.HasField("visits"):
        here = (
            "first visit to this store"
            if visits.first_visit_to_this_store
            else _plural(visits.visit_count_this_store, "earlier visit") + " here"
        )
        line.append(f"\n{_plural(visits.visit_count, 'store visit')} in 12 months, {here}")
    if customer.order_count:
        line.append(
            f"\n{_plural(customer.order_count, 'order')}, "
            f"lifetime value {money(customer.lifetime_value)}"
        )
    return line


def _looked_at(customer: note.CustomerSummary, stores: Mapping[str, str]) -> RenderableType:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    for pref in customer.category_preferences:
        sizes = ", ".join(pref.sizes)
        colours = f" ({', '.join(pref.colours)})" if pref.colours else ""
        table.add_row(pref.category, f"sizes {sizes}{colours}")
    if customer.colours:
        table.add_row("colours", ", ".join(customer.colours))
    if customer.categories:
        table.add_row("categories", ", ".join(customer.categories))
    if customer.brands:
        table.add_row("brands", ", ".join(customer.brands))
    if customer.price_tier:
        table.add_row("price", customer.price_tier)
    for purchase in customer.recent_purchases:
        where = (
            f" at {stores.get(purchase.store_id, purchase.store_id)}"
            if purchase.store_id
            else f" ({channel(purchase.channel)})"
        )
        table.add_row(
            "bought", f"{purchase.name or purchase.sku}{where}, {day(purchase.order_time)}"
        )
    parts: list[RenderableType] = [table]
    for point in customer.talking_points:
        parts.append(Text(f"• {point}", style="italic"))
    return Group(*parts)


def _items(title: str, items: Sequence[note.ItemSummary], *, quantity: bool) -> RenderableType:
    """One block per item: what it is, then its stock here, the sizes here, nearby."""
    lines: list[RenderableType] = [Text(title, style="bold")]
    for item in items:
        head = Text("  ")
        head.append(_label(item), style="bold")
        details = [d for d in (item.size and f"size {item.size}", item.colour) if d]
        if quantity:
            details.append(f"qty {item.quantity}")
        details.append(money(item.unit_price))
        head.append("  " + " · ".join(d for d in details if d))
        lines.append(head)
        stock = Text("     this store: ")
        stock.append_text(availability(item))
        stock.append(f"   sizes here: {sizes_here(item)}")
        lines.append(stock)
        if item.HasField("availability") and item.availability.nearby:
            lines.append(Text(f"     nearby: {nearby(item)}"))
    return Group(*lines)


def _complements(items: Sequence[note.ItemSummary]) -> RenderableType:
    lines: list[RenderableType] = [Text("Goes with it (in stock here)", style="bold")]
    for item in items:
        line = Text("  ")
        line.append(_label(item), style="bold")
        line.append(f"  {money(item.unit_price)} · ")
        line.append_text(availability(item))
        if item.reason.text:
            line.append(f"\n     {item.reason.text}", style="italic")
        lines.append(line)
    return Group(*lines)


def _actions(actions: Iterable[note.NextBestAction]) -> RenderableType:
    lines: list[RenderableType] = [Text("Next best actions", style="bold")]
    for n, action in enumerate(actions, 1):
        priority, style = _PRIORITY.get(action.priority, ("", ""))
        line = Text(f"{n}. ")
        line.append(action.title, style="bold")
        if priority:
            line.append(f"  [{priority}]", style=style)
        if action.explanation:
            line.append(f"\n   {action.explanation}")
        lines.append(line)
    if len(lines) == 1:
        lines.append(Text("none suggested", style="dim"))
    return Group(*lines)


def _missing(briefing: note.Briefing) -> RenderableType:
    if not briefing.missing_parts:
        return Text("Missing parts: none (every service answered in time)", style="green")
    out = Text("Missing parts:", style="bold red")
    for part in briefing.missing_parts:
        out.append(f"\n  {part.part}: {part.service} {part.code} {part.reason}", style="red")
    return out


def briefing_panel(briefing: note.Briefing, stores: Mapping[str, str] | None = None) -> Panel:
    """The associate's briefing as a panel: who, what they looked at, the cart with stock
    here, what goes with it, what to do, and what is missing. ``stores`` names stores by id."""
    stores = stores or {}
    parts: list[RenderableType] = [
        Text(briefing.headline, style="bold"),
        Text(""),
        _who(briefing),
    ]
    if briefing.HasField("customer"):
        parts += [
            Text(""),
            Text("Looked at and likes", style="bold"),
            _looked_at(briefing.customer, stores),
        ]
    if briefing.HasField("cart") and briefing.cart.items:
        cart = briefing.cart
        abandoned = f", abandoned {when(cart.abandon_time)}" if cart.abandon_time.seconds else ""
        title = (
            f"Cart ({channel(cart.channel)}, {money(cart.subtotal)}{abandoned})"
            if cart.channel
            else "Cart"
        )
        parts += [Text(""), _items(title, cart.items, quantity=True)]
    else:
        parts.append(Text("No open cart", style="dim"))
    if briefing.wishlist_items:
        parts += [Text(""), _items("Wishlist", briefing.wishlist_items, quantity=False)]
    if briefing.complements:
        parts += [Text(""), _complements(briefing.complements)]
    parts += [Text(""), _actions(briefing.next_best_actions), Text(""), _missing(briefing)]
    assembly = briefing.assembly_duration
    took = assembly.seconds * 1000 + assembly.nanos / 1e6
    where = stores.get(briefing.store_id, briefing.store_id)
    return Panel(
        Group(*parts),
        title=f"[bold]Briefing for the associates at {where}[/]",
        subtitle=f"briefing {briefing.briefing_id} · assembled in {took:.0f} ms · "
        f"{when(briefing.check_in_time)}",
        border_style="cyan",
    )


def _kv_table(title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_header=False)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    return table


def customer_view(
    customer: id_res.Customer,
    identifiers: Sequence[id_res.IdentifierRecord],
    summary: prof_res.ProfileSummary | None,
    cart: cart_res.Cart | None,
    wishlist: cart_res.Wishlist | None,
    briefings: Sequence[note.Briefing],
) -> RenderableType:
    """What the suite knows about one customer, service by service."""
    parts: list[RenderableType] = []
    who = _kv_table("Identity")
    who.add_row("customer id", customer.customer_id)
    who.add_row(
        "state", id_res.CustomerState.Name(customer.state).removeprefix("CUSTOMER_STATE_").lower()
    )
    who.add_row("anonymous", "yes" if customer.anonymous else "no")
    if customer.alias_customer_ids:
        who.add_row("merged in", ", ".join(customer.alias_customer_ids))
    who.add_row(
        "first seen", f"{channel(customer.first_seen_channel)} {when(customer.create_time)}"
    )
    who.add_row("last seen", when(customer.last_seen_time))
    parts.append(who)
    ids = Table(
        title="Identifiers (stored as keyed hashes; shown masked)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    ids.add_column("type")
    ids.add_column("value")
    ids.add_column("first seen")
    ids.add_column("last seen")
    for record in identifiers:
        kind = identifier_pb2.IdentifierType.Name(record.identifier.type)
        ids.add_row(
            kind.removeprefix("IDENTIFIER_TYPE_").lower(),
            record.identifier.masked_value,
            f"{channel(record.first_seen_channel)} {when(record.first_seen_time)}",
            when(record.last_seen_time),
        )
    parts.append(ids)
    if summary is not None:
        prof_table = _kv_table("Profile summary")
        prof_table.add_row("name", summary.display_name or "-")
        prof_table.add_row("loyalty tier", summary.loyalty_tier or "-")
        prof_table.add_row(
            "store recognition", "allowed" if summary.store_recognition_allowed else "not allowed"
        )
        for pref in summary.sizes:
            sizes = [pref.size.value, *(a.value for a in pref.alternatives)]
            prof_table.add_row(f"sizes in {pref.category}", ", ".join(s for s in sizes if s))
        if summary.colours:
            prof_table.add_row("colours", ", ".join(summary.colours))
        if summary.categories:
            prof_table.add_row("categories", ", ".join(summary.categories))
        if summary.brands:
            prof_table.add_row("brands", ", ".join(summary.brands))
        for signal in summary.left_in_cart:
            prof_table.add_row("left in cart", _ref(signal.product))
        for signal in summary.viewed_repeatedly:
            prof_table.add_row("viewed repeatedly", f"{_ref(signal.product)}, {signal.count} views")
        for line in summary.recent_purchases:
            prof_table.add_row("bought", f"{_ref(line.product)} {day(line.order_time)}")
        if summary.order_count:
            prof_table.add_row(
                "orders", f"{summary.order_count} ({money(summary.lifetime_value)} lifetime)"
            )
        for point in summary.highlights:
            prof_table.add_row("highlight", point)
        parts.append(prof_table)
    else:
        parts.append(Text("No profile yet", style="dim"))
    lines = Table(title="Cart", title_justify="left", box=box.SIMPLE_HEAD)
    lines.add_column("item")
    lines.add_column("size")
    lines.add_column("colour")
    lines.add_column("qty", justify="right")
    lines.add_column("price", justify="right")
    lines.add_column("added")
    if cart is not None:
        state = cart_res.CartState.Name(cart.state).removeprefix("CART_STATE_").lower()
        lines.title = f"Cart {cart.cart_id} ({state}, {money(cart.subtotal)})"
        for cart_line in cart.lines:
            lines.add_row(
                cart_line.product.name or cart_line.sku,
                cart_line.product.size,
                cart_line.product.colour,
                str(cart_line.quantity),
                money(cart_line.unit_price),
                f"{channel(cart_line.channel)} {when(cart_line.add_time)}",
            )
    parts.append(lines if cart is not None and cart.lines else Text("No open cart", style="dim"))
    if wishlist is not None and wishlist.items:
        wish = Table(title="Wishlist", title_justify="left", box=box.SIMPLE_HEAD)
        wish.add_column("item")
        wish.add_column("size")
        wish.add_column("colour")
        wish.add_column("added")
        for item in wishlist.items:
            wish.add_row(
                item.product.name or item.sku,
                item.product.size,
                item.product.colour,
                f"{channel(item.channel)} {when(item.add_time)}",
            )
        parts.append(wish)
    if briefings:
        recent = Table(title="Recent briefings", title_justify="left", box=box.SIMPLE_HEAD)
        recent.add_column("check-in")
        recent.add_column("store")
        recent.add_column("headline")
        recent.add_column("missing")
        for briefing in sorted(briefings, key=lambda b: -b.check_in_time.seconds)[:5]:
            recent.add_row(
                when(briefing.check_in_time),
                briefing.store_id,
                briefing.headline,
                ", ".join(m.part for m in briefing.missing_parts) or "-",
            )
        parts.append(recent)
    else:
        parts.append(Text("No briefings", style="dim"))
    title = (summary.display_name if summary is not None else "") or customer.customer_id
    return Panel(Group(*parts), title=f"[bold]{title}[/]", border_style="cyan")


def _ref(product: prof_res.ProductRef) -> str:
    detail = ", ".join(v for v in (product.size, product.colour) if v)
    name = product.name or product.sku
    return f"{name} ({detail})" if detail else name
