"""Client instructions per published message, counted by valgrind's callgrind: a guard that ignores machine noise.

Wall-clock and CPU-time benchmarks move with whatever else the machine does. The
number of instructions the client executes per message does not: this script runs
each workload under ``valgrind --tool=callgrind`` (every instruction of the Python
process counted, interpreter included) at two sizes, three times each, and reports
the difference of the medians divided by the extra messages, so interpreter
start-up, imports, connecting and warming up cancel out:

    instructions/message = (I(n_large) - I(n_small)) / (n_large - n_small)

Workloads (the ~150-byte JSON messages of benchmarks/clients.py, persistent, confirms on):

- ``publish-512``: 512 tasks each awaiting ``Publisher.publish`` in turn (the
  benchmark's aiopublish-512);
- ``publish-many``: one ``Publisher.publish_many`` of every message.

What makes it repeatable (three runs agree to the instruction, whatever the load):

- the peer is a FakeBroker in the client's own event loop (see its docstring), not
  RabbitMQ, whose confirm batching follows its fsyncs and the machine's load (runs
  against it, ``--url amqp://...``, spread 0.5-2.5% on a busy machine);
- the cyclic GC is off in the measured process (``--gc`` turns it on): whether a
  full collection falls inside a run moved the count by about 4%; allocations
  themselves are still counted;
- ``PYTHONHASHSEED=0``, so dicts and sets are laid out alike in every run.

Usage:

    python benchmarks/instructions.py            # measure and print
    python benchmarks/instructions.py --check    # compare with benchmarks/instructions-baseline.json
    python benchmarks/instructions.py --update   # measure and rewrite the baseline

``--check`` exits 1 when a workload costs more than ``--tolerance`` (default 3%) above
the baseline and says which; an improvement beyond the tolerance passes but asks for
the baseline to be refreshed (``--update``) in the same commit. Counts depend on the
Python build and on what is installed: the baseline records the versions, and
``--check`` notes when they differ from the machine's. The committed baseline is taken
in the nox session (``python3 -m nox -s instructions -- --update``), which installs
aiopublish alone with pinned aiormq, pamqp, yarl and orjson; with opentelemetry-api
installed too, publish() checks for an active span and publish-512 counts about 8% more.

Needs valgrind (Debian: ``apt-get install valgrind``); debug symbols are not needed,
only callgrind's total is read. About two minutes on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "instructions-baseline.json"
MODES = ("publish-512", "publish-many")
SIZES = (1_000, 3_000)
LIBRARIES = ("aiopublish", "aiormq", "pamqp", "yarl", "orjson", "opentelemetry-api", "uvloop")
# The same interpreter behaviour in every run: hash randomisation changes dict and set
# layouts, and with them the instruction count, by a few tenths of a percent.
WORKER_ENV = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}

Json = dict[str, Any]


# =========================================================================== the in-process peer


class FakeBroker(asyncio.Protocol):
    """Just enough of an AMQP 0-9-1 broker for a confirm-mode publisher, run in the client's own loop.

    Against a real RabbitMQ the client's work per message depends on how the broker
    batches its confirms, which follows its fsyncs and the machine's load: one run in
    three came out 0.6-2.5% off on a busy machine. This peer answers the handshake and
    acknowledges, after each read, every publish read so far with one `multiple` ack.
    Client and peer share one thread and talk over a Unix socket, so every run sees the
    same sequence of events and executes the same instructions. The peer's own share is
    counted too (parsing three frame headers per message: a small, fixed part).
    """

    def __init__(self) -> None:
        self.published = 0
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._greeted = False
        self._tags: dict[int, int] = {}  # channel -> publishes seen (the last delivery tag)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def _send(self, channel: int, method: Any) -> None:
        from pamqp import frame

        assert self._transport is not None
        self._transport.write(frame.marshal(method, channel))

    def data_received(self, data: bytes) -> None:
        from pamqp import commands

        buffer = self._buffer
        buffer += data
        if not self._greeted:
            if len(buffer) < 8:
                return
            del buffer[:8]  # b"AMQP\x00\x00\x09\x01"
            self._greeted = True
            capabilities = dict.fromkeys(
                ("publisher_confirms", "basic.nack", "connection.blocked", "consumer_cancel_notify"), True
            )
            properties: Any = {"product": "aiopublish fake broker", "version": "0", "capabilities": capabilities}
            self._send(0, commands.Connection.Start(server_properties=properties, mechanisms="PLAIN AMQPLAIN"))
        offset, end = 0, len(buffer)
        acked = dict(self._tags)
        while end - offset >= 8:
            kind, channel, size = struct.unpack_from(">BHI", buffer, offset)
            if end - offset < size + 8:
                break
            if kind == 1:
                if buffer[offset + 7 : offset + 11] == b"\x00\x3c\x00\x28":  # basic.publish: count it
                    self._tags[channel] = self._tags.get(channel, 0) + 1
                    self.published += 1
                else:
                    self._method(channel, bytes(buffer[offset : offset + size + 8]))
            offset += size + 8
        del buffer[:offset]
        for channel, tag in self._tags.items():
            if tag != acked.get(channel):
                self._send(channel, commands.Basic.Ack(delivery_tag=tag, multiple=True))

    def _method(self, channel: int, raw: bytes) -> None:
        from pamqp import commands, frame

        _, _, method = frame.unmarshal(raw)
        replies: dict[type, Any] = {
            commands.Connection.StartOk: lambda: commands.Connection.Tune(
                channel_max=2047, frame_max=131072, heartbeat=0
            ),
            commands.Connection.Open: commands.Connection.OpenOk,
            commands.Channel.Open: commands.Channel.OpenOk,
            commands.Confirm.Select: commands.Confirm.SelectOk,
            commands.Basic.Qos: commands.Basic.QosOk,
            commands.Channel.Close: commands.Channel.CloseOk,
            commands.Connection.Close: commands.Connection.CloseOk,
        }
        if isinstance(method, commands.Connection.TuneOk):
            return
        if isinstance(method, commands.Channel.Open):
            self._tags[channel] = 0
        reply = replies.get(type(method))
        if reply is None:
            raise RuntimeError(f"the fake broker cannot answer {method!r}")
        self._send(channel, reply())
        if isinstance(method, commands.Connection.Close):
            assert self._transport is not None
            self._transport.close()


# =========================================================================== worker (runs under valgrind)


async def workload(mode: str, url: str, queue: str, n: int) -> int:
    """Publish `n` messages to `queue` in `mode` (to an in-process FakeBroker if `url` is "fake")."""
    if url != "fake":
        return await publish(mode, url, queue, n)
    fake = FakeBroker()
    with tempfile.TemporaryDirectory(prefix="aiopublish-fake-broker-") as tmp:
        path = str(Path(tmp) / "socket")
        server = await asyncio.get_running_loop().create_unix_server(lambda: fake, path)

        # aiormq connects with asyncio.open_connection(host=..., port=...): redirect that to the
        # Unix socket. Bytes sent on a Unix socket are readable by the peer when send() returns;
        # on loopback TCP the kernel may deliver them a little later when the machine is busy,
        # which changes how many confirms each read finds.
        async def open_unix(host: Any = None, port: Any = None, *, ssl: Any = None, **kwargs: Any) -> Any:
            return await asyncio.open_unix_connection(path, **kwargs)

        asyncio.open_connection = open_unix  # type: ignore[assignment]
        try:
            confirmed = await publish(mode, "amqp://guest:guest@127.0.0.1:5672/", queue, n)
        finally:
            server.close()
            await server.wait_closed()
    if fake.published != n:
        raise RuntimeError(f"the fake broker saw {fake.published} publishes, expected {n}")
    return confirmed


async def publish(mode: str, url: str, queue: str, n: int) -> int:
    """Publish `n` messages to `queue` in `mode`; return how many were confirmed."""
    import clients  # sibling module: the benchmark's shared workload

    from aiopublish import Publisher

    async with Publisher(url) as publisher:
        if mode == "publish-many":
            results = await publisher.publish_many([clients.payload(i) for i in range(n)], routing_key=queue)
            return sum(result.status == "confirmed" for result in results)

        async def one(i: int) -> bool:
            await publisher.publish(clients.payload(i), routing_key=queue)
            return True

        outcome = await clients.run_window(one, n, clients.WINDOW)
        return outcome.confirmed


def worker_main(args: argparse.Namespace) -> int:
    if not args.gc:
        # Whether a full collection falls inside a run moves with tiny differences in how many
        # loop turns it took, and one costs millions of instructions: off, allocations still count.
        gc.disable()
    confirmed = asyncio.run(workload(args.worker, args.url, args.queue, args.n))
    print(json.dumps({"confirmed": confirmed}), flush=True)
    return 0 if confirmed == args.n else 1


# =========================================================================== broker admin


def admin(url: str, operation: str, queue: str) -> int:
    """declare / purge / depth / delete `queue` over a short aiormq connection (not under valgrind)."""

    async def run() -> int:
        import aiormq

        connection = await aiormq.connect(url)
        try:
            channel = await connection.channel()
            if operation == "declare":
                await channel.queue_declare(queue, durable=True)
            elif operation == "purge":
                await channel.queue_purge(queue)
            elif operation == "depth":
                declare_ok = await channel.queue_declare(queue, passive=True)
                return int(declare_ok.message_count or 0)
            elif operation == "delete":
                await channel.queue_delete(queue)
            return 0
        finally:
            await connection.close()

    return asyncio.run(run())


# =========================================================================== measuring


def count_instructions(args: argparse.Namespace, mode: str, n: int, tag: str) -> int:
    """Run `mode` with `n` messages under callgrind; return the instructions executed."""
    queue = f"aiopublish-instructions-{os.getpid()}-{tag}"
    real = args.url != "fake"
    if real:
        admin(args.url, "declare", queue)
        admin(args.url, "purge", queue)
    try:
        with tempfile.TemporaryDirectory(prefix="aiopublish-callgrind-") as tmp:
            out = Path(tmp) / "callgrind.out"
            command = [
                args.valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                # Only the total is needed: no per-line or jump data, a little faster.
                "--dump-line=no",
                "--dump-instr=no",
                sys.executable,
                str(Path(__file__).resolve()),
                "--worker",
                mode,
                "--n",
                str(n),
                "--queue",
                queue,
                "--url",
                args.url,
                *(["--gc"] if args.gc else []),
            ]
            env = {**os.environ, **WORKER_ENV}
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout, check=False)
            if done.returncode != 0:
                tail = "\n".join(done.stderr.strip().splitlines()[-15:])
                raise SystemExit(f"{mode} n={n}: the worker failed (exit {done.returncode}):\n{tail}")
            total = read_total(out)
        if real and (depth := admin(args.url, "depth", queue)) != n:
            raise SystemExit(f"{mode} n={n}: queue depth {depth} after the run, expected {n}")
        return total
    finally:
        if real:
            admin(args.url, "delete", queue)


def read_total(path: Path) -> int:
    """The instruction total of a callgrind output file (its `totals:` or `summary:` line)."""
    text = path.read_text()
    match = re.search(r"^(?:totals|summary):\s+(\d+)", text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"no instruction total in {path}")
    return int(match.group(1))


def measure(args: argparse.Namespace) -> dict[str, Json]:
    """Instructions per message of each mode, from the median of `--runs` runs at each of the two sizes.

    The median, because the broker's timing still leaks in a little: now and then it
    acknowledges in larger batches than usual and the client does less work for that
    run (seen: one run in three 0.6% under two that agreed to 0.01%).
    """
    small, large = args.sizes
    jobs = [(mode, n, run) for run in range(args.runs) for mode in args.modes for n in (small, large)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        counted = list(pool.map(lambda job: count_instructions(args, job[0], job[1], "-".join(map(str, job))), jobs))
    log(f"{len(jobs)} valgrind runs in {time.perf_counter() - started:.0f} s")
    totals: dict[tuple[str, int], list[int]] = {}
    for (mode, n, _), total in zip(jobs, counted, strict=True):
        totals.setdefault((mode, n), []).append(total)
    results: dict[str, Json] = {}
    for mode in args.modes:
        low, high = statistics.median(totals[(mode, small)]), statistics.median(totals[(mode, large)])
        results[mode] = {
            "instructions_per_message": round((high - low) / (large - small)),
            "totals_small": totals[(mode, small)],
            "totals_large": totals[(mode, large)],
        }
    return results


def environment() -> Json:
    import clients  # sibling module

    versions: Json = dict(clients.installed_versions(LIBRARIES))
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "valgrind": valgrind,
        "libraries": versions,
    }


# =========================================================================== baseline


def check(results: dict[str, Json], baseline: Json, tolerance: float, env: Json) -> int:
    """Compare with the baseline: 1 on a regression beyond `tolerance`, else 0 (asking for an update if faster)."""
    differs = {key: (baseline.get("environment", {}).get(key), value) for key, value in env.items()}
    differs = {key: pair for key, pair in differs.items() if pair[0] != pair[1]}
    if differs:
        for key, (then, now) in differs.items():
            log(f"note: the baseline was taken with {key} {then!r}, this machine has {now!r}")
    regressions, improvements = [], []
    for mode, result in results.items():
        expected = baseline.get("modes", {}).get(mode, {}).get("instructions_per_message")
        if expected is None:
            log(f"{mode}: not in the baseline; run with --update to add it")
            continue
        measured = result["instructions_per_message"]
        change = measured / expected - 1
        line = f"{mode}: {measured:,} instructions/message, baseline {expected:,} ({change:+.1%})"
        if change > tolerance:
            regressions.append(line)
        elif change < -tolerance:
            improvements.append(line)
        else:
            log(f"{line}: within ±{tolerance:.0%}")
    for line in improvements:
        log(f"{line}: faster than the baseline by more than {tolerance:.0%}.")
    if improvements and not regressions:
        log(
            "The hot path got cheaper: refresh the baseline in this commit with "
            "`python benchmarks/instructions.py --update`."
        )
    if regressions:
        for line in regressions:
            log(f"REGRESSION {line}: more than {tolerance:.0%} above the baseline.")
        log(
            "The client now executes more instructions per message. Find out why (e.g. `python -m cProfile "
            "benchmarks/instructions.py --worker publish-512 --n 3000 --queue q --url fake`); if the cost "
            "is deliberate, refresh the baseline with `python benchmarks/instructions.py --update` and say "
            "why in the commit."
        )
        return 1
    return 0


# =========================================================================== main


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="the two message counts (default 1000,3000)")
    parser.add_argument("--check", action="store_true", help="compare with the baseline; exit 1 on a regression")
    parser.add_argument("--update", action="store_true", help="measure and rewrite the baseline file")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="baseline file")
    parser.add_argument("--tolerance", type=float, default=0.03, help="allowed relative change (default 0.03)")
    parser.add_argument("--runs", type=int, default=3, help="valgrind runs per size, median taken (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="measure this many times (to see the spread)")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind runs at once (default 2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--url",
        default="fake",
        help='"fake" (default): an in-process fake broker, repeatable; or a RabbitMQ URL (noisier)',
    )
    parser.add_argument("--valgrind", default="valgrind", help="the valgrind executable")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a valgrind run is killed")
    parser.add_argument("--gc", action="store_true", help="leave the cyclic GC on in the workers (noisier)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in args.modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    try:
        small, large = (int(size) for size in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes takes two counts such as 1000,3000, not {args.sizes!r}")
    if not 0 < small < large:
        parser.error(f"--sizes must be two counts, the first smaller and above 0, not {args.sizes!r}")
    args.sizes = (small, large)
    if args.check and args.update:
        parser.error("--check and --update exclude each other")
    if shutil.which(args.valgrind) is None:
        parser.error(f"{args.valgrind!r} not found: install valgrind (Debian: apt-get install valgrind)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    env = environment()
    log(f"callgrind, {', '.join(args.modes)} at {args.sizes[0]:,} and {args.sizes[1]:,} messages; {env['valgrind']}")
    rounds = [measure(args) for _ in range(args.repeat)]
    results = rounds[-1]
    lines = ["| workload | instructions/message |" + (" spread |" if args.repeat > 1 else ""), "| --- | ---: |"]
    if args.repeat > 1:
        lines[1] += " ---: |"
    for mode in args.modes:
        counts = [r[mode]["instructions_per_message"] for r in rounds]
        row = f"| {mode} | {', '.join(f'{c:,}' for c in counts)} |"
        if args.repeat > 1:
            row += f" {(max(counts) - min(counts)) / min(counts):.2%} |"
        lines.append(row)
    print("\n".join(lines))
    document = {"environment": env, "sizes": list(args.sizes), "modes": results}
    if args.repeat > 1:
        document["rounds"] = rounds
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    if args.update:
        args.baseline.write_text(
            json.dumps({"environment": env, "sizes": list(args.sizes), "modes": results}, indent=2) + "\n"
        )
        log(f"wrote {args.baseline}")
    if args.check:
        if not args.baseline.exists():
            log(f"no baseline at {args.baseline}: create it with --update")
            return 1
        return check(results, json.loads(args.baseline.read_text()), args.tolerance, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
