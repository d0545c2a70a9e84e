"""Configuration of the cart service (environment variables ``CONTINUUM_*``)."""

from continuum_runtime.config import ServiceSettings


class CartSettings(ServiceSettings):
    service_name: str = "cart"
    port: int = 50053
    # The inventory service (item master and reservations), host:port
    # (CONTINUUM_INVENTORY_TARGET).
    inventory_target: str = "127.0.0.1:50054"
    # How long an item read from inventory's item master is reused for pricing new lines.
    # Checkout always re-reads prices.
    item_cache_ttl_s: float = 10.0
    # How long inventory holds a checkout's stock until fulfilment commits it (0: inventory's
    # default for the kind).
    checkout_reservation_ttl_s: float = 0.0
    # A cart with lines and no owner activity for this long is abandoned
    # (CONTINUUM_ABANDON_AFTER_S).
    abandon_after_s: float = 3600.0
    # How often the abandonment detector looks for idle carts, and how many it marks per
    # transaction.
    abandon_check_interval_s: float = 30.0
    abandon_batch_size: int = 200
    # Consume identity's events (device linked, customers merged, customer forgotten).
    consume_identity_events: bool = True
