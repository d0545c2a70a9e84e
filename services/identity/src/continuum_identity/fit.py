"""Fit the probabilistic matcher to the stored trait records (EM) and save it.

``python -m continuum_identity.fit`` (same configuration as the service): builds candidate
pairs from the blocks the service itself uses, estimates m, u and the prior by EM, and
stores the model; running services pick it up within seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from continuum_identity import store
from continuum_identity.matching import FIELDS, Model, compare, fit_em
from continuum_identity.settings import IdentitySettings
from continuum_runtime.app import store_urls
from continuum_runtime.db import Database

log = logging.getLogger(__name__)


async def fit_model(
    session: AsyncSession, *, max_block: int = 200, max_pairs: int = 2_000_000
) -> Model:
    """EM over every pair of stored records that share a block (none from one identifier)."""
    records = {r.record_id: r for r in await store.all_trait_records(session)}
    pairs: set[tuple[int, int]] = set()
    for members in await store.block_members(session, max_block):
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                if records[a].identifier_id != records[b].identifier_id:
                    pairs.add((a, b))
        if len(pairs) >= max_pairs:
            break
    vectors = np.array(
        [compare(records[a].traits, records[b].traits) for a, b in sorted(pairs)], dtype=np.int8
    ).reshape(-1, len(FIELDS))
    model = fit_em(vectors)
    if model.fitted_pairs:  # nothing to learn from yet: keep the model in use
        await store.save_model(session, model.to_json())
    return model


async def _main() -> None:
    settings = IdentitySettings()
    urls = await store_urls(settings)
    db = Database(urls.database_url, settings.db)
    try:
        async with db.transaction() as session:
            model = await fit_model(session)
    finally:
        await db.dispose()
    print(json.dumps(model.to_json()))


if __name__ == "__main__":
    asyncio.run(_main())
