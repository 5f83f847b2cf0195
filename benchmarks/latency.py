"""Open-loop latency: publish at fixed offered rates and time each message from its scheduled moment to its confirm.

A closed-loop benchmark (N tasks, each waiting for its confirm before the next
publish) lets a slow client slow the offered load down with it, so its queueing
never shows. Here message i of a run is *scheduled* at ``t0 + i / rate`` whatever
happened before; a scheduler starts every message that is due (without waiting
for earlier ones) and each message's latency runs from its scheduled time to its
confirm. A client that cannot keep up falls behind its schedule and that delay is
in its latencies.

Workload (benchmarks/clients.py): persistent ~150-byte JSON messages to one durable
queue through the default exchange, publisher confirms on; the queue is purged
before each run and its depth checked after it (it must hold every message the run
confirmed plus the warm-up ones). Clients: aiopublish (``Publisher.publish``),
aio-pika (``Exchange.publish``), aiormq (``Channel.basic_publish``) and FastStream
(``RabbitBroker.publish``), each run in a fresh process, clients alternated within
each rate (the order rotates from rate to rate). 200 warm-up messages, awaited one
by one, go out before the clock starts.

Prints a markdown table (achieved msg/s, p50, p99 and max latency per client and
offered rate) and writes ``benchmarks/latency.json`` and a chart
``benchmarks/latency.png``. ``--smoke``: one short, low rate per client (a check for
CI that every client still publishes and confirms; exits 1 if any run fails).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import DEFAULT_URL, Admin, mask_password, percentile  # noqa: E402 - the sibling script

CLIENTS = ("aiopublish", "aio-pika", "aiormq", "faststream")
RATES = (1_000, 3_000, 6_000, 10_000, 15_000)
WARMUP = 200
# How long the last messages may take to be confirmed once all are scheduled.
DRAIN_S = 60.0

Json = dict[str, Any]


# =========================================================================== worker


async def open_loop(client: str, url: str, queue: str, rate: float, duration: float) -> Json:
    """Publish `rate * duration` messages on schedule with `client`; return the latency summary."""
    import clients

    n = max(1, round(rate * duration))
    interval = 1.0 / rate
    latencies: list[float] = []
    failures = 0
    errors: dict[str, int] = {}
    perf = time.perf_counter
    async with clients.OPEN_LOOP_CLIENTS[client](url, queue) as one:
        for i in range(WARMUP):
            await one(n + i)
        done = asyncio.Event()
        outstanding = n

        async def publish(i: int, scheduled: float) -> None:
            nonlocal failures, outstanding
            try:
                ok = await one(i)
            except Exception as exc:
                ok = False
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if ok:
                latencies.append(perf() - scheduled)
            else:
                failures += 1
            outstanding -= 1
            if outstanding == 0:
                done.set()

        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        t0 = perf()
        cpu0 = time.process_time()
        started = 0
        while started < n:
            now = perf()
            due = min(n, int((now - t0) / interval) + 1)
            while started < due:
                task = loop.create_task(publish(started, t0 + started * interval))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                started += 1
            if started < n:
                # Sleep until the next message is due; a client that is behind gets no sleep at all.
                await asyncio.sleep(max(0.0, t0 + started * interval - perf()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), DRAIN_S)
        finished = perf()
        cpu = time.process_time() - cpu0
        unfinished = len(tasks)
        for task in list(tasks):
            task.cancel()
    lat = sorted(latencies)
    result: Json = {
        "client": client,
        "rate": rate,
        "n": n,
        "confirmed": len(latencies),
        "failures": failures + unfinished,
        "errors": errors,
        "unfinished": unfinished,
        "warmup": WARMUP,
        "duration_s": finished - t0,
        "achieved_per_s": len(latencies) / (finished - t0),
        "cpu_us_per_msg": cpu / n * 1e6,
    }
    if lat:
        result.update(
            p50_ms=percentile(lat, 0.50) * 1e3,
            p99_ms=percentile(lat, 0.99) * 1e3,
            max_ms=lat[-1] * 1e3,
        )
    return result


def worker_main(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(open_loop(args.worker, args.url, args.queue, args.rate, args.duration))
        result["status"] = "ok" if result["failures"] == 0 else "failed"
    except Exception as exc:
        traceback.print_exc()
        result = {"client": args.worker, "rate": args.rate, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0


# =========================================================================== orchestration


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_once(args: argparse.Namespace, admin: Admin, client: str, rate: int) -> Json:
    admin.purge()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", client, "--rate", str(rate)]
    command += ["--duration", str(args.duration), "--queue", args.queue, "--url", args.url]
    load = os.getloadavg()[0]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=args.duration + DRAIN_S + 60, check=False
        )
        stdout, stderr = done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        stdout, stderr = "", "timed out"
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    run: Json = json.loads(lines[-1]) if lines else {"client": client, "rate": rate, "status": "failed"}
    run["loadavg_1m"] = load
    if not lines:
        run["error"] = " | ".join(stderr.strip().splitlines()[-3:]) or "no output"
    if run["status"] == "ok":
        expected = run["confirmed"] + WARMUP
        run["depth"] = depth = admin.depth()
        if depth != expected:
            run["status"] = "failed"
            run["error"] = f"queue depth {depth} after the run, expected {expected}"
    elif "error" not in run:
        run["error"] = f"{run.get('failures')} of {run.get('n')} not confirmed {run.get('errors') or ''}".strip()
    return run


def describe(run: Json) -> str:
    head = f"{run['client']:<11} {run['rate']:>7,} msg/s offered"
    if run["status"] != "ok":
        return f"{head}: FAILED {run.get('error')}"
    return (
        f"{head}: {run['achieved_per_s']:>7,.0f} achieved  p50 {run['p50_ms']:8.2f} ms  "
        f"p99 {run['p99_ms']:8.2f} ms  max {run['max_ms']:8.2f} ms  cpu {run['cpu_us_per_msg']:5.1f} us/msg"
    )


def fmt_ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def markdown(runs: list[Json], clients: list[str], rates: list[int]) -> str:
    lines = [
        "| offered msg/s | " + " | ".join(f"{c} achieved / p50 / p99 / max ms" for c in clients) + " |",
        "| ---: | " + " | ".join("---" for _ in clients) + " |",
    ]
    for rate in rates:
        cells = []
        for client in clients:
            run = next((r for r in runs if r["client"] == client and r["rate"] == rate), None)
            if run is None:
                cells.append("-")
            elif run["status"] != "ok":
                cells.append("failed")
            else:
                cells.append(
                    f"{run['achieved_per_s']:,.0f} / {fmt_ms(run['p50_ms'])} / {fmt_ms(run['p99_ms'])} / "
                    f"{fmt_ms(run['max_ms'])}"
                )
        lines.append(f"| {rate:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLOURS = {"aiopublish": "#2a9d3f", "aio-pika": "#1f5fa8", "aiormq": "#d08a1e", "faststream": "#9b4fb0"}


def plot(runs: list[Json], clients: list[str], meta: Json, args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig, (lat_ax, rate_ax) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for client in clients:
        mine = sorted((r for r in runs if r["client"] == client and r["status"] == "ok"), key=lambda r: r["rate"])
        if not mine:
            continue
        offered = [r["rate"] for r in mine]
        colour = COLOURS.get(client, "#555")
        lat_ax.plot(offered, [r["p99_ms"] for r in mine], "-o", color=colour, label=f"{client} p99")
        lat_ax.plot(
            offered, [r["p50_ms"] for r in mine], "--", marker=".", color=colour, alpha=0.7, label=f"{client} p50"
        )
        rate_ax.plot(offered, [r["achieved_per_s"] for r in mine], "-o", color=colour, label=client)
    lat_ax.set_yscale("log")
    lat_ax.set_xlabel("offered msg/s")
    lat_ax.set_ylabel("latency from scheduled time to confirm, ms (log)")
    lat_ax.set_title("latency at offered load (lower is better)", fontsize=10)
    lat_ax.grid(alpha=0.3, which="both")
    lat_ax.legend(fontsize=7, ncol=2)
    top = max(args.rates)
    rate_ax.plot([0, top], [0, top], ":", color="#999", label="offered")
    rate_ax.set_xlabel("offered msg/s")
    rate_ax.set_ylabel("achieved (confirmed) msg/s")
    rate_ax.set_title("achieved rate", fontsize=10)
    rate_ax.grid(alpha=0.3)
    rate_ax.legend(fontsize=7)
    for axis in (lat_ax, rate_ax):
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
    rate_ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
    rate_ax.xaxis.set_major_locator(MaxNLocator(4))
    rabbit = meta.get("rabbitmq", {})
    fig.suptitle(
        f"open loop, {args.duration:g} s per rate, persistent ~150-B JSON messages, confirms, one durable queue",
        fontsize=11,
    )
    fig.text(
        0.01,
        0.01,
        f"{meta['date']}  ·  {meta['cpu_model']}, {meta['cores']} cores shared by client and broker  ·  "
        f"Python {meta['python']}  ·  RabbitMQ {rabbit.get('version', '?')}  ·  load {meta['loadavg_start'][0]:.2f}",
        fontsize=7,
        color="#555",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine(admin: Admin) -> Json:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    import clients  # sibling module

    versions: Json = dict(clients.installed_versions(("aiopublish", "aio-pika", "aiormq", "pamqp", "faststream")))
    info: Json = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "libraries": versions,
        "loadavg_start": os.getloadavg(),
    }
    props = admin.server_properties()
    info["rabbitmq"] = {k: props.get(k) for k in ("product", "version")}
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated, of {', '.join(CLIENTS)}")
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="offered msg/s, comma-separated")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of scheduled messages per run (5)")
    parser.add_argument("--smoke", action="store_true", help="one 1 s run at 500 msg/s per client")
    parser.add_argument("--url", default=os.environ.get("AIOPUBLISH_BENCH_URL", DEFAULT_URL), help="broker URL")
    parser.add_argument("--queue", default=f"aiopublish-latency-{os.getpid()}", help="benchmark queue")
    parser.add_argument("--json", type=Path, default=HERE / "latency.json", help="raw results file")
    parser.add_argument("--png", type=Path, default=HERE / "latency.png", help="chart file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in args.clients if c not in CLIENTS]
    if unknown:
        parser.error(f"unknown client(s) {', '.join(unknown)}; known: {', '.join(CLIENTS)}")
    try:
        args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--rates takes whole msg/s values such as 1000,3000, not {args.rates!r}")
    if not args.rates or min(args.rates) <= 0:
        parser.error("--rates needs at least one rate above 0")
    if args.duration <= 0:
        parser.error("--duration must be above 0")
    if args.smoke:
        args.rates, args.duration = [500], 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    admin = Admin(args.url, args.queue)
    meta = machine(admin)
    log(
        f"{len(args.clients)} clients x {len(args.rates)} rates, {args.duration:g} s each, queue {args.queue!r}, "
        f"load average {meta['loadavg_start'][0]:.2f}"
    )
    admin.declare()
    runs: list[Json] = []
    started = time.perf_counter()
    try:
        for turn, rate in enumerate(args.rates):
            order = args.clients[turn % len(args.clients) :] + args.clients[: turn % len(args.clients)]
            for client in order:
                run = run_once(args, admin, client, rate)
                runs.append(run)
                log(describe(run))
    finally:
        admin.delete()
    meta["loadavg_end"] = os.getloadavg()
    meta["duration_s"] = time.perf_counter() - started
    settings = {"clients": args.clients, "rates": args.rates, "duration_s": args.duration}
    settings["url"] = mask_password(args.url)
    args.json.write_text(json.dumps({"meta": meta, "settings": settings, "runs": runs}, indent=2) + "\n")
    plot(runs, args.clients, meta, args, args.png)
    print(markdown(runs, args.clients, args.rates))
    failed = [run for run in runs if run["status"] != "ok"]
    log(f"\n{len(runs)} runs in {meta['duration_s']:.0f} s, {len(failed)} failed; wrote {args.json} and {args.png}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
