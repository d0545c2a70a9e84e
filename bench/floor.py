"""make bench-floor: the cost of one bare grpc.aio unary call on loopback.

A generic-handler echo server (no protobuf, no interceptors) runs in its own process; this
process drives it with a closed loop of `--concurrency` callers on one channel. Service
benchmarks measure the same floor in their own run and report their figures as ratios of it.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import signal
import sys

import grpc

from bench._harness import ECHO_METHOD, arguments, emit, measure_floor


async def serve(port: int) -> None:
    """The floor's server: echoes the request bytes back."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    service, method = ECHO_METHOD.strip("/").split("/")
    handler = grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await server.stop(grace=1)


async def run() -> None:
    parser = arguments(__doc__.splitlines()[0] if __doc__ else "bench-floor")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve)
        return
    result = await measure_floor(
        concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup
    )
    summary = result.summary()
    print(
        f"floor: {summary['requests_per_s']} requests/s, p50 {summary['p50_ms']} ms, "
        f"p99 {summary['p99_ms']} ms at concurrency {args.concurrency} "
        f"({summary['requests']} calls, {summary['errors']} errors)",
        file=sys.stderr,
    )
    emit(
        {
            "benchmark": "floor",
            **summary,
            "grpcio": grpc.__version__,
            "python": platform.python_version(),
        }
    )


if __name__ == "__main__":
    asyncio.run(run())
