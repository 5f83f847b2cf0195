"""Client cost of per-message routing keys and headers, against a uniform batch.

Every case publishes N persistent ~150-byte JSON messages (the workload of bench.py)
with confirms on, to 4 fresh durable queues through the default exchange:

- many-uniform:   publish_many(payloads, routing_key=q0)          (the benchmark's batch)
- many-one-key:   publish_many(payloads, routing_keys=[q0] * N)
- many-4-keys:    publish_many(payloads, routing_keys=round-robin over q0..q3)
- many-headers:   publish_many(payloads, routing_key=q0, headers=[{"n": i, "kind": ...}])
- 512-one-key:    512 concurrent publish(payload, routing_key=q0)
- 512-4-keys:     512 concurrent publish(payload, routing_key=q[i % 4])

Each case runs in a fresh process (cases alternate across repetitions) and reports the
client CPU per message (time.process_time over the publishing: connect and building the
batch's payload, key and header lists excluded) and
the wall rate; the queues' depths are checked against what was published. With
``--callgrind`` each case also runs twice under ``valgrind --tool=callgrind`` (at n and
n/4 messages) and reports (Ir(n) - Ir(n/4)) / (3n/4) instructions per message: start-up
and connect cancel out, and the count does not depend on what else the machine does (it
does include building the input lists: about 1,500 instructions per message for the
header dicts of many-headers, a few hundred for the payloads and keys).

    python benchmarks/routing_cost.py [--n 40000] [--repeat 3] [--callgrind] [--callgrind-n 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
CASES = ("many-uniform", "many-one-key", "many-4-keys", "many-headers", "512-one-key", "512-4-keys")
WINDOW = 512


def payload(i: int) -> dict[str, Any]:
    return {"id": i, "body": "x" * 120}


def _batch_inputs(queues: list[str], case: str, n: int) -> tuple[list[Any], dict[str, Any]]:
    """The payloads and keywords of a publish_many case: the caller's data, built before the clock starts."""
    payloads = [payload(i) for i in range(n)]
    kwargs: dict[str, Any] = {}
    if case == "many-uniform":
        kwargs["routing_key"] = queues[0]
    elif case == "many-one-key":
        kwargs["routing_keys"] = [queues[0]] * n
    elif case == "many-4-keys":
        kwargs["routing_keys"] = [queues[i % 4] for i in range(n)]
    elif case == "many-headers":
        kwargs["routing_key"] = queues[0]
        kwargs["headers"] = [{"n": i, "kind": "even" if i % 2 == 0 else "odd"} for i in range(n)]
    return payloads, kwargs


async def _many(publisher: Any, inputs: tuple[list[Any], dict[str, Any]], case: str, n: int) -> int:
    payloads, kwargs = inputs
    results = await publisher.publish_many(payloads, **kwargs)
    return sum(not result.ok for result in results)


async def _concurrent(publisher: Any, queues: list[str], case: str, n: int) -> int:
    keys = queues if case == "512-4-keys" else queues[:1]  # payloads are built per publish, as an app would
    indices: Iterator[int] = iter(range(n))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in indices:
            result = await publisher.publish(payload(i), routing_key=keys[i % len(keys)])
            failures += not result.ok

    await asyncio.gather(*(worker() for _ in range(min(WINDOW, n))))
    return failures


async def run_case(url: str, queues: list[str], case: str, n: int) -> dict[str, Any]:
    from aiopublish import Publisher

    run: Callable[[Any, Any, str, int], Awaitable[int]] = _concurrent
    inputs: Any = queues
    if case.startswith("many"):
        run, inputs = _many, _batch_inputs(queues, case, n)
    async with Publisher(url) as publisher:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        failures = await run(publisher, inputs, case, n)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"case": case, "n": n, "failures": failures, "cpu_us_per_msg": cpu / n * 1e6, "msgs_per_s": n / wall}


# -------------------------------------------------------------------------------- broker admin


async def _admin(url: str, queues: list[str], action: str) -> list[int]:
    import aiormq

    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        depths = []
        for queue in queues:
            if action == "declare":
                await channel.queue_declare(queue, durable=True)
            elif action == "purge":
                await channel.queue_purge(queue)
            elif action == "depth":
                depths.append((await channel.queue_declare(queue, passive=True)).message_count or 0)
            elif action == "delete":
                await channel.queue_delete(queue)
        return depths
    finally:
        await connection.close()


def admin(url: str, queues: list[str], action: str) -> list[int]:
    return asyncio.run(_admin(url, queues, action))


# -------------------------------------------------------------------------------- parent


def spawn(args: argparse.Namespace, queues: list[str], case: str, n: int, prefix: list[str]) -> dict[str, Any]:
    admin(args.url, queues, "purge")
    command = [*prefix, sys.executable, __file__, "--worker", case, "--n", str(n), "--url", args.url]
    command += ["--queues", ",".join(queues)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    depth = sum(admin(args.url, queues, "depth"))
    if depth != n or result["failures"]:
        raise RuntimeError(f"{case}: {depth} messages queued for {n} published, {result['failures']} failed")
    return result


def callgrind_ir(args: argparse.Namespace, queues: list[str], case: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        spawn(args, queues, case, n, prefix)
        with open(out) as f:
            match = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError("no instruction total in the callgrind output")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--url", default=os.environ.get("AIOPUBLISH_BENCH_URL", DEFAULT_URL))
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per message")
    parser.add_argument("--callgrind-n", type=int, default=8_000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--queues", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = asyncio.run(run_case(args.url, args.queues.split(","), args.worker, args.n))
        print(json.dumps(result), flush=True)
        return 0
    cases = args.cases.split(",")
    queues = [f"aiopublish-routing-cost-{os.getpid()}-{i}" for i in range(4)]
    admin(args.url, queues, "declare")
    try:
        cpu: dict[str, list[float]] = {case: [] for case in cases}
        rate: dict[str, list[float]] = {case: [] for case in cases}
        for _ in range(args.repeat):
            for case in cases:
                result = spawn(args, queues, case, args.n, [])
                cpu[case].append(result["cpu_us_per_msg"])
                rate[case].append(result["msgs_per_s"])
        instructions: dict[str, float] = {}
        if args.callgrind:
            if shutil.which("valgrind") is None:
                print("valgrind is not installed: no instruction counts", file=sys.stderr)
            else:
                small = args.callgrind_n // 4
                for case in cases:
                    big_ir = callgrind_ir(args, queues, case, args.callgrind_n)
                    small_ir = callgrind_ir(args, queues, case, small)
                    instructions[case] = (big_ir - small_ir) / (args.callgrind_n - small)
    finally:
        admin(args.url, queues, "delete")
    uniform = statistics.median(cpu["many-uniform"]) if "many-uniform" in cpu else None
    print(f"n={args.n}, repeat={args.repeat} (medians; runs in brackets)")
    print(f"{'case':<14} {'client CPU us/msg':>18} {'vs uniform':>10} {'msg/s':>8} {'instr/msg':>10}  runs")
    for case in cases:
        median = statistics.median(cpu[case])
        ratio = f"{median / uniform:.2f}x" if uniform else "-"
        ir = f"{instructions[case]:,.0f}" if case in instructions else "-"
        runs = ", ".join(f"{value:.2f}" for value in cpu[case])
        print(f"{case:<14} {median:>18.2f} {ratio:>10} {statistics.median(rate[case]):>8,.0f} {ir:>10}  [{runs}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
