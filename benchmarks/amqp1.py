"""AMQP 1.0 against 0-9-1 aiopublish, on the same RabbitMQ 4.x node, in one run.

    python benchmarks/amqp1.py amqp1://guest:guest@127.0.0.1:5743/ [--messages 20000] [--repeat 3]
        [--official-client-python /path/to/venv/bin/python]

Workload as bench.py's: N JSON messages of about 150 bytes, durable, to a durable
classic queue through the default exchange (0-9-1) or its /queues/ address (AMQP 1.0),
every message confirmed (0-9-1: publisher confirms; AMQP 1.0: an accepted outcome).
Two modes: 512 concurrent publish() in flight, and one publish_many of all N. The
queue is purged before each run and its depth checked after it. Client CPU is this
process's user+system time per message; broker CPU is the broker's (the local beam.smp listening on
the URL's port, found as bench.py finds it) user+system time per message, read from
/proc/PID/stat (psutil) before and after each run. It
counts whatever else the broker did meanwhile: on a node shared with other clients it is
an upper bound. Reported: msgs/s medians, and the AMQP 1.0 / 0-9-1 ratio of the same run
(speed is only compared within one run).

With --official-client-python (an interpreter where `pip install rabbitmq-amqp-python-client`
was run), RabbitMQ's official Python AMQP 1.0 client publishes the same messages too, in a
process of its own: its publish() blocks until the message is settled, so it sends one
message at a time (the "sequential" row); its CPU is that process's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiormq
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import find_broker_process, process_cpu  # the sibling script: one way to find the broker

from aiopublish import Publisher

QUEUE = "aiopublish-bench-amqp1"
PAYLOAD = {"order_id": 12345, "customer": "c-42", "items": [{"sku": "A-1", "qty": 2}], "note": "x" * 60}


# Run by the official client's interpreter: argv = uri, queue, count; prints {"rate", "cpu_us"}.
_OFFICIAL = """
import json, sys, time
from rabbitmq_amqp_python_client import AddressHelper, Environment, Message, OutcomeState
uri, queue, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = json.dumps(PAYLOAD).encode()
environment = Environment(uri=uri)
connection = environment.connection()
connection.dial()
publisher = connection.publisher(AddressHelper.queue_address(queue))
started, cpu = time.perf_counter(), time.process_time()
for _ in range(count):
    status = publisher.publish(Message(body=body))
    assert status.remote_state == OutcomeState.ACCEPTED, status.remote_state
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
publisher.close()
connection.close()
environment.close()
print(json.dumps({"rate": count / elapsed, "cpu_us": cpu / count * 1e6}))
""".replace("PAYLOAD", repr(PAYLOAD), 1)


# One run's figures: msgs/s, client CPU µs per message, broker CPU µs per message.
Figures = tuple[float, float, float]


def _official(python: str, amqp1_url: str, count: int, broker: Any) -> Figures:
    uri = str(URL(amqp1_url).with_scheme("amqp"))
    # The broker's CPU spans the whole process (its connect too: a few ms of 20,000 messages' seconds).
    broker_cpu = _process_cpu(broker)
    out = subprocess.run([python, "-c", _OFFICIAL, uri, QUEUE, str(count)], check=True, capture_output=True, text=True)
    broker_cpu = _process_cpu(broker) - broker_cpu
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["rate"]), float(result["cpu_us"]), broker_cpu / count * 1e6


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(broker: Any) -> float:
    """User + system CPU seconds of the broker's process so far (psutil reads /proc/PID/stat)."""
    seconds = process_cpu(broker)
    if seconds is None:
        raise SystemExit(f"cannot read the CPU time of the broker's process {broker}")
    return seconds


async def _run(url: str, mode: str, count: int, broker: Any) -> Figures:
    """(msgs/s, client CPU µs per message, broker CPU µs per message) of one run."""
    async with Publisher(url, routing_key=QUEUE, max_in_flight=512, timeout=120) as publisher:
        await publisher.connect()
        started, cpu, broker_cpu = time.perf_counter(), _cpu(), _process_cpu(broker)
        if mode == "512":
            gate = asyncio.Semaphore(512)

            async def one() -> None:
                async with gate:
                    await publisher.publish(PAYLOAD)

            await asyncio.gather(*(one() for _ in range(count)))
        else:
            results = await publisher.publish_many([PAYLOAD] * count)
            assert all(r.status == "confirmed" for r in results)
        elapsed, cpu, broker_cpu = time.perf_counter() - started, _cpu() - cpu, _process_cpu(broker) - broker_cpu
    return count / elapsed, cpu / count * 1e6, broker_cpu / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="amqp1:// URL of a RabbitMQ 4.x node (0-9-1 uses the same host and port)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--official-client-python", help="an interpreter with rabbitmq-amqp-python-client installed")
    args = parser.parse_args()
    amqp1_url = args.url
    classic_url = str(URL(amqp1_url).with_scheme("amqp"))
    broker = find_broker_process(classic_url)
    if broker is None:
        raise SystemExit("no local beam.smp listens on the URL's port: broker CPU cannot be read (psutil needed)")
    print(f"broker process: {broker.pid} ({broker.name()}); load average at start: {_load()}")
    connection = await aiormq.connect(classic_url)
    channel = await connection.channel()
    await channel.queue_declare(QUEUE, durable=True)
    runs: dict[tuple[str, str], list[Figures]] = {}
    try:
        for _ in range(args.repeat):
            for mode in ("512", "many"):
                for protocol, url in (("0-9-1", classic_url), ("amqp1", amqp1_url)):
                    await channel.queue_purge(QUEUE)
                    figures = await _run(url, mode, args.messages, broker)
                    depth = (await channel.queue_declare(QUEUE, passive=True)).message_count
                    if depth != args.messages:
                        raise SystemExit(f"{protocol} {mode}: {depth} messages in the queue, {args.messages} sent")
                    runs.setdefault((mode, protocol), []).append(figures)
            if args.official_client_python:
                await channel.queue_purge(QUEUE)
                figures = _official(args.official_client_python, amqp1_url, args.messages, broker)
                depth = (await channel.queue_declare(QUEUE, passive=True)).message_count
                if depth != args.messages:
                    raise SystemExit(f"official client: {depth} messages in the queue, {args.messages} sent")
                runs.setdefault(("official", "amqp1"), []).append(figures)
    finally:
        await channel.queue_delete(QUEUE)
        await connection.close()
    print(f"load average at the end: {_load()}")
    print(f"{args.messages} messages x {args.repeat} runs, medians; RabbitMQ at {URL(amqp1_url).host}")
    print(f"{'client, mode':<44}{'msg/s':>9}{'/ 0-9-1':>9}{'client CPU µs/msg':>19}{'broker CPU µs/msg':>19}")
    for mode, label in (("512", "512 publish() in flight"), ("many", "publish_many")):
        baseline = statistics.median(f[0] for f in runs[(mode, "0-9-1")])
        for protocol in ("0-9-1", "amqp1"):
            _row(f"aiopublish {protocol}, {label}", runs[(mode, protocol)], baseline)
    official = runs.get(("official", "amqp1"))
    if official:
        _row("official client, sequential", official, None)


def _row(label: str, figures: list[Figures], baseline: float | None) -> None:
    rate = statistics.median(f[0] for f in figures)
    client = statistics.median(f[1] for f in figures)
    broker = statistics.median(f[2] for f in figures)
    ratio = f"{rate / baseline:.2f}" if baseline else "-"
    print(f"{label:<44}{rate:>9.0f}{ratio:>9}{client:>19.1f}{broker:>19.1f}")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    asyncio.run(main())
