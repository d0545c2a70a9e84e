"""Configuration of the inventory service (environment variables ``CONTINUUM_*``)."""

from pydantic import Field

from continuum_runtime.config import ServiceSettings


class InventorySettings(ServiceSettings):
    service_name: str = "inventory"
    port: int = 50054
    # Hold time of a reservation whose request sets no ttl, per kind (seconds).
    checkout_ttl_s: float = 72 * 3600.0
    click_and_collect_ttl_s: float = 72 * 3600.0
    # Units per SKU held back from pickup promises at stores that set no buffer of their own.
    default_pickup_buffer: int = 1
    # The default low-stock rule until SetLowStockThreshold replaces it.
    default_low_threshold: int = 5
    default_recover_threshold: int = 10
    default_back_in_stock_quantity: int = 1
    # FindNearbyStock radius when the request gives none (km).
    default_nearby_km: float = 50.0
    # ReserveStock calls that arrive together are decided in one transaction (group
    # commit): at most this many per transaction, by this many workers, each serving the
    # calls of its own share of the SKUs.
    reserve_batch: int = Field(default=128, ge=1, le=10_000)
    reserve_workers: int = Field(default=4, ge=1, le=64)
    # The expiry sweeper: how often it looks for expired reservations and how many it takes
    # per pass (every replica sweeps; rows are claimed with FOR UPDATE SKIP LOCKED).
    sweep_interval_s: float = 1.0
    sweep_batch: int = 200
    # Consume cart.order_placed (demand history for forecasts).
    consume_orders: bool = True
