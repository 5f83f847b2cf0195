"""What OpenTelemetry costs a publish: aiopublish throughput without otel, with the API only, and traced.

Modes (each run in a fresh worker process, so imports and module state are its own):

- ``none``: opentelemetry cannot be imported at all (an import hook refuses it);
- ``api``: opentelemetry-api imports but the SDK cannot (as when FastAPI brings the
  API in): aiopublish must stay off and cost nothing;
- ``sdk-idle``: the SDK is installed but no provider is configured (tracing on,
  spans go to the global proxy provider and record nothing);
- ``sdk``: ``aiopublish.instrument()`` with an SDK TracerProvider and MeterProvider
  that export nowhere (the price of recording spans and metrics).

Workloads: ``seq`` (one publish awaited at a time) and ``512`` (512 concurrent
tasks, each awaiting its confirm), the benchmark's persistent ~150-byte JSON
messages to a durable queue through the default exchange, confirms on. Modes
alternate round-robin for ``--repeat`` repetitions; the queue is purged before each
run and its depth checked after. Prints the median msgs/s per mode and workload and
the ratio to ``none`` paired within each repetition.

    python benchmarks/otel_cost.py [--n-seq 3000] [--n-512 20000] [--repeat 5] [--modes none,api]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.abc
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
MODES = ("none", "api", "sdk-idle", "sdk")
WORKLOADS = {"seq": 1, "512": 512}
BLOCKED = {"none": "opentelemetry", "api": "opentelemetry.sdk"}


class _Refuse(importlib.abc.MetaPathFinder):
    """Makes a package (and everything under it) unimportable, as if it were not installed."""

    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == self.package or fullname.startswith(self.package + "."):
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by otel_cost.py)", name=fullname)
        return None


def worker(mode: str, workload: str, url: str, queue: str, n: int) -> dict[str, Any]:
    """One measured run in this process; returns msgs/s and what the mode really had."""
    if mode in BLOCKED:
        sys.meta_path.insert(0, _Refuse(BLOCKED[mode]))
    sys.path.insert(0, str(HERE))
    from clients import aiopublish_mode

    import aiopublish
    from aiopublish import _tracing

    if mode == "sdk":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider

        aiopublish.instrument(tracer_provider=TracerProvider(), meter_provider=MeterProvider())
    expected_on = mode in ("sdk-idle", "sdk")
    if _tracing.enabled is not expected_on:
        raise SystemExit(f"mode {mode}: tracing enabled={_tracing.enabled}, expected {expected_on}")
    outcome = asyncio.run(aiopublish_mode(url, queue, n, WORKLOADS[workload]))
    return {
        "rate": outcome.confirmed / outcome.wall_s,
        "cpu_us_per_msg": 1e6 * outcome.cpu_s / n,
        "failures": outcome.failures,
        "otel_modules": sorted({name.split(".")[1] for name in sys.modules if name.startswith("opentelemetry.")}),
    }


async def _queue_op(url: str, queue: str, op: str) -> int:
    import aiormq

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        if op == "declare":
            await channel.queue_declare(queue, durable=True)
        elif op == "purge":
            await channel.queue_purge(queue)
        elif op == "depth":
            declared = await channel.queue_declare(queue, passive=True)
            return int(declared.message_count or 0)
        elif op == "delete":
            await channel.queue_delete(queue)
        return 0
    finally:
        await connection.close()


def run_one(mode: str, workload: str, url: str, queue: str, n: int) -> dict[str, Any]:
    asyncio.run(_queue_op(url, queue, "purge"))
    command = [sys.executable, __file__, "--worker", mode, workload, queue, str(n), "--url", url]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {mode}/{workload} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    depth = asyncio.run(_queue_op(url, queue, "depth"))
    result["ok"] = depth == n and result["failures"] == 0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=4, metavar=("MODE", "WORKLOAD", "QUEUE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--url", default=os.environ.get("AIOPUBLISH_BENCH_URL", DEFAULT_URL))
    parser.add_argument("--modes", default="none,api,sdk-idle,sdk")
    parser.add_argument("--n-seq", type=int, default=3000)
    parser.add_argument("--n-512", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.worker:
        mode, workload, queue, n = args.worker
        print(json.dumps(worker(mode, workload, args.url, queue, int(n))))
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(MODES)
    if unknown or "none" not in modes:
        parser.error(f"--modes must include none and only {', '.join(MODES)}")
    queue = f"aiopublish-otel-cost-{os.getpid()}"
    asyncio.run(_queue_op(args.url, queue, "declare"))
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for _ in range(args.repeat):
            for workload, n in (("seq", args.n_seq), ("512", args.n_512)):
                for mode in modes:
                    runs.setdefault((mode, workload), []).append(run_one(mode, workload, args.url, queue, n))
    finally:
        asyncio.run(_queue_op(args.url, queue, "delete"))
    print(f"{args.repeat} repetitions, seq n={args.n_seq}, 512 n={args.n_512}, python {sys.version.split()[0]}")
    print("| mode | workload | msgs/s (median) | ratio to none (median of paired) | CPU µs/msg | otel imported | ok |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for workload in WORKLOADS:
        base = runs[("none", workload)]
        for mode in modes:
            results = runs[(mode, workload)]
            rate = statistics.median(r["rate"] for r in results)
            ratio = statistics.median(r["rate"] / b["rate"] for r, b in zip(results, base, strict=True))
            cpu = statistics.median(r["cpu_us_per_msg"] for r in results)
            imported = ",".join(results[0]["otel_modules"]) or "-"
            ok = sum(r["ok"] for r in results)
            print(f"| {mode} | {workload} | {rate:,.0f} | {ratio:.3f} | {cpu:.1f} | {imported} | {ok}/{len(results)} |")


if __name__ == "__main__":
    main()
