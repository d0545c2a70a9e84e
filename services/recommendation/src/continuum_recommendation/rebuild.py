"""Full rebuild: ``python -m continuum_recommendation.rebuild [--activate] [--set key=value]``.

Reads all stored behaviour from the service's own database, builds a new model version with
a progress bar, stores it READY (or ACTIVE with ``--activate``; running replicas switch to it
within ``follow_interval_s``). Its events are published by the running service's outbox relay.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from tqdm import tqdm

from continuum.recommendation.v1 import recommendation_resources_pb2 as res
from continuum_recommendation import builds
from continuum_recommendation.__main__ import MIGRATIONS
from continuum_recommendation.settings import RecommendationSettings
from continuum_runtime.app import open_context
from continuum_runtime.errors import DomainError


async def rebuild(args: argparse.Namespace) -> int:
    settings = RecommendationSettings()
    ctx = await open_context(settings, MIGRATIONS)
    try:
        overrides = dict(item.split("=", 1) for item in args.set)
        try:
            async with ctx.db.transaction() as session:
                version = await builds.queue_version(
                    session,
                    parameters=overrides,
                    window=None,
                    description=args.description,
                    actor="cli:rebuild",
                    activate_when_ready=args.activate,
                )
        except DomainError as exc:
            print(f"{exc.reason}: {exc.message}", file=sys.stderr)
            return 2
        bars: dict[str, tqdm[Any]] = {}

        def progress(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=max(total, 1), desc=stage, unit="row", leave=True)
            bar.n = min(done, max(total, 1))
            bar.refresh()

        built = await builds.run_build(ctx.db, version.version_id, progress)
        for bar in bars.values():
            bar.close()
        state = res.ModelVersionState.Name(built.state)
        print(
            f"{built.version_id} {state} items={built.item_count} interactions={built.interaction_count}"
        )
        return 0 if built.state != res.MODEL_VERSION_STATE_FAILED else 1
    finally:
        await ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m continuum_recommendation.rebuild")
    parser.add_argument("--activate", action="store_true", help="activate the version when ready")
    parser.add_argument("--description", default="full rebuild from the command line")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="parameter override"
    )
    sys.exit(asyncio.run(rebuild(parser.parse_args())))


if __name__ == "__main__":
    main()
