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
confirmed plus the warm-up ones). Clients: aiopublish (``Publisher.publish``) on
asyncio's default loop and on uvloop (``aiopublish-uvloop``), aio-pika
(``Exchange.publish``), aiormq (``Channel.basic_publish``) and FastStream
(``RabbitBroker.publish``), each run in a fresh process, clients alternated within
each repetition (the order rotates from run to run). 200 warm-up messages, awaited
one by one, go out before the clock starts.

Each rate runs ``--repeat`` times per client (3); the table holds the medians of
achieved msg/s, p50, p99 and p99.9. Rates go up in order and stop after the first
one at which aiopublish keeps up on neither loop (median achieved under 97% of the
offered rate, or a run failed), so the table ends where aiopublish stops keeping up.

The load average is printed at the start and the end (read once the runs' own load has
decayed, up to 4 minutes after the last run). Latency on a shared machine
measures the machine: unless both are under 1, the script refuses to publish the
table (``--write-docs``: docs/guides/performance.md; and the default benchmarks/latency.json
and .png) and exits 3; ``--allow-busy`` publishes it anyway, with a line in the
table saying it comes from a busy machine. ``--smoke``: one short, low rate per
client (a check for CI that every client still publishes and confirms; exits 1 if
any run fails).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import DEFAULT_URL, Admin, mask_password, percentile  # noqa: E402 - the sibling script

CLIENTS = ("aiopublish", "aiopublish-uvloop", "aio-pika", "aiormq", "faststream")
# Clients that run another client's code on another event loop: (client, loop).
ON_LOOP = {"aiopublish-uvloop": ("aiopublish", "uvloop")}
AIOPUBLISH = ("aiopublish", "aiopublish-uvloop")
RATES = (1_000, 2_000, 3_000, 4_500, 6_000, 8_000, 10_000, 12_500, 15_000, 20_000)
REPEAT = 3
WARMUP = 200
# How long the last messages may take to be confirmed once all are scheduled.
DRAIN_S = 60.0
# Keeping up: the median run confirmed at least this share of the offered rate.
KEEPS_UP = 0.97
# A table is published only from a run whose 1-minute load average was under this at start and end.
QUIET_LOAD = 1.0
# The runs load the machine themselves (broker and client share its cores), so the load at the end is read
# once that has decayed: up to this long after the last run. Other work keeps it up and the table is refused.
SETTLE_S = 240.0
DOCS = HERE.parent / "docs" / "guides" / "performance.md"
DOCS_CHART = "latency.png"  # the chart's copy beside the page (mkdocs sees only docs/)
TABLE_START = "<!-- latency.py table: start (written by benchmarks/latency.py --write-docs) -->"
TABLE_END = "<!-- latency.py table: end -->"

Json = dict[str, Any]


# =========================================================================== worker


async def open_loop(client: str, url: str, queue: str, rate: float, duration: float) -> Json:
    """Publish `rate * duration` messages on schedule with `client`; return the latency summary."""
    import clients

    n = max(1, round(rate * duration))
    interval = 1.0 / rate
    latencies: list[float] = []
    lags: list[float] = []
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
            # How late the task got to run: the event loop's (and the machine's) share of the latency,
            # before the client's own code is even called.
            lags.append(perf() - scheduled)
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
            p999_ms=percentile(lat, 0.999) * 1e3,
            max_ms=lat[-1] * 1e3,
        )
    if lags:
        lags.sort()
        result.update(lag_p50_ms=percentile(lags, 0.50) * 1e3, lag_p99_ms=percentile(lags, 0.99) * 1e3)
    result["event_loop"] = type(asyncio.get_running_loop()).__module__
    return result


def worker_main(args: argparse.Namespace) -> int:
    code, loop = ON_LOOP.get(args.worker, (args.worker, "asyncio"))
    try:
        loop_factory = None
        if loop == "uvloop":
            import uvloop

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(open_loop(code, args.url, args.queue, args.rate, args.duration))
        result["client"] = args.worker
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
    head = f"{run['client']:<17} {run['rate']:>7,} msg/s offered"
    if run["status"] != "ok":
        return f"{head}: FAILED {run.get('error')}"
    return (
        f"{head}: {run['achieved_per_s']:>7,.0f} achieved  p50 {run['p50_ms']:8.2f} ms  "
        f"p99 {run['p99_ms']:8.2f} ms  p99.9 {run['p999_ms']:8.2f} ms  (start lag p99 {run['lag_p99_ms']:7.2f} ms)  "
        f"cpu {run['cpu_us_per_msg']:5.1f} us/msg  (load {run['loadavg_1m']:.2f})"
    )


def fmt_ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def summarize(runs: list[Json], clients: list[str], rates: list[int]) -> dict[tuple[str, int], Json]:
    """Per (client, rate): the medians over its runs, how many ran and how many were ok."""
    summary: dict[tuple[str, int], Json] = {}
    for client in clients:
        for rate in rates:
            mine = [r for r in runs if r["client"] == client and r["rate"] == rate]
            if not mine:
                continue
            ok = [r for r in mine if r["status"] == "ok"]
            entry: Json = {"client": client, "rate": rate, "runs": len(mine), "runs_ok": len(ok)}
            if ok:
                for key in ("achieved_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms", "lag_p99_ms", "cpu_us_per_msg"):
                    entry[key] = _median([r[key] for r in ok])
            summary[(client, rate)] = entry
    return summary


def keeps_up(entry: Json | None) -> bool:
    """Every run of it confirmed everything, and the median one at (nearly) the offered rate."""
    if entry is None or entry["runs_ok"] < entry["runs"] or entry["runs_ok"] == 0:
        return False
    return bool(entry["achieved_per_s"] >= KEEPS_UP * entry["rate"])


def settle(limit: float) -> tuple[tuple[float, float, float], float]:
    """The load average once the 1-minute figure is under QUIET_LOAD, or after `limit` seconds; and the wait."""
    started = time.monotonic()
    while os.getloadavg()[0] >= QUIET_LOAD and time.monotonic() - started < limit:
        time.sleep(5)
    return os.getloadavg(), time.monotonic() - started


def is_quiet(meta: Json) -> bool:
    """Whether the 1-minute load average was under QUIET_LOAD at the start and at the end."""
    return bool(meta["loadavg_start"][0] < QUIET_LOAD and meta["loadavg_end"][0] < QUIET_LOAD)


def conditions(meta: Json, settings: Json) -> str:
    """The line that goes with the table: when, where, how, and under what load."""
    rabbit = meta.get("rabbitmq", {})
    start, end = meta["loadavg_start"][0], meta["loadavg_end"][0]
    text = (
        f"Taken {meta['date'][:10]} on {meta['cpu_model']}, {meta['cores']} cores shared by client and broker, "
        f"Python {meta['python']}, RabbitMQ {rabbit.get('version', '?')}; {settings['duration_s']:g} s of scheduled "
        f"messages per run, {settings['repeat']} run(s) per client and rate, medians; "
        f"load average {start:.2f} at the start, {end:.2f} at the end"
        f" (read {meta.get('settle_s', 0.0):.0f} s after the last run, once the runs' own load had decayed)."
    )
    if not is_quiet(meta):
        text += (
            f" **Busy machine (load average {QUIET_LOAD:g} or more): these figures measure the machine's other "
            "work as much as the clients and are not representative.**"
        )
    return text


def markdown(
    summary: dict[tuple[str, int], Json], clients: list[str], rates: list[int], meta: Json, settings: Json
) -> str:
    lines = [
        conditions(meta, settings),
        "",
        "| offered msg/s | " + " | ".join(f"{c} achieved / p50 / p99 / p99.9 ms" for c in clients) + " |",
        "| ---: | " + " | ".join("---" for _ in clients) + " |",
    ]
    for rate in rates:
        if not any((client, rate) in summary for client in clients):
            continue
        cells = []
        for client in clients:
            entry = summary.get((client, rate))
            if entry is None:
                cells.append("-")
            elif entry["runs_ok"] == 0:
                cells.append(f"failed ({entry['runs']} runs)")
            else:
                cell = (
                    f"{entry['achieved_per_s']:,.0f} / {fmt_ms(entry['p50_ms'])} / {fmt_ms(entry['p99_ms'])} / "
                    f"{fmt_ms(entry['p999_ms'])}"
                )
                if entry["runs_ok"] < entry["runs"]:
                    cell += f" ({entry['runs'] - entry['runs_ok']} of {entry['runs']} runs failed)"
                cells.append(cell)
        lines.append(f"| {rate:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_table(document: str, table: str) -> str:
    """`document` with the text between the table markers replaced by `table`; ValueError without them."""
    start, end = document.find(TABLE_START), document.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"no {TABLE_START!r} ... {TABLE_END!r} markers to write the table between")
    return document[: start + len(TABLE_START)] + "\n" + table + "\n" + document[end:]


COLOURS = {
    "aiopublish": "#2a9d3f",
    "aiopublish-uvloop": "#7cc46a",
    "aio-pika": "#1f5fa8",
    "aiormq": "#d08a1e",
    "faststream": "#9b4fb0",
}


def plot(
    summary: dict[tuple[str, int], Json], clients: list[str], meta: Json, args: argparse.Namespace, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fig, (lat_ax, rate_ax) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    for client in clients:
        mine = sorted((e for e in summary.values() if e["client"] == client and e["runs_ok"]), key=lambda e: e["rate"])
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
    lat_ax.set_title("latency at offered load, medians of runs (lower is better)", fontsize=10)
    lat_ax.grid(alpha=0.3, which="both")
    lat_ax.legend(fontsize=7, ncol=2)
    top = max(e["rate"] for e in summary.values())
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
        f"Python {meta['python']}  ·  RabbitMQ {rabbit.get('version', '?')}  ·  load "
        f"{meta['loadavg_start'][0]:.2f} at start, {meta['loadavg_end'][0]:.2f} at end"
        + ("" if is_quiet(meta) else "  ·  BUSY MACHINE: not representative"),
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

    versions: Json = dict(
        clients.installed_versions(("aiopublish", "aio-pika", "aiormq", "pamqp", "faststream", "uvloop"))
    )
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
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="offered msg/s, comma-separated, ascending")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of scheduled messages per run (5)")
    parser.add_argument("--repeat", type=int, default=REPEAT, help=f"runs per client and rate; medians ({REPEAT})")
    parser.add_argument(
        "--all-rates", action="store_true", help="run every rate, not only up to where aiopublish stops keeping up"
    )
    parser.add_argument("--smoke", action="store_true", help="one 1 s run at 500 msg/s per client")
    parser.add_argument("--url", default=os.environ.get("AIOPUBLISH_BENCH_URL", DEFAULT_URL), help="broker URL")
    parser.add_argument("--queue", default=f"aiopublish-latency-{os.getpid()}", help="benchmark queue")
    parser.add_argument(
        "--json", type=Path, help="raw results file (default, for a run that may be published: benchmarks/latency.json)"
    )
    parser.add_argument("--png", type=Path, help="chart file (default, likewise: benchmarks/latency.png)")
    parser.add_argument("--write-docs", action="store_true", help="write the table into --docs")
    parser.add_argument("--docs", type=Path, default=DOCS, help=f"the page (default {DOCS.relative_to(HERE.parent)})")
    parser.add_argument(
        "--allow-busy",
        action="store_true",
        help=f"publish even when the load average was {QUIET_LOAD:g} or more (the table then says so)",
    )
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
    if args.rates != sorted(args.rates):
        parser.error("--rates must go up: the run stops after the first rate aiopublish cannot keep up with")
    if args.duration <= 0:
        parser.error("--duration must be above 0")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.smoke:
        if args.write_docs:
            parser.error("--smoke runs are never published: drop --write-docs")
        args.rates, args.duration, args.repeat, args.all_rates = [500], 1.0, 1, True
    return args


def run_rates(args: argparse.Namespace, admin: Admin) -> tuple[list[Json], list[int]]:
    """Every client `args.repeat` times per rate, rates in order; stop after the first aiopublish falls behind at."""
    runs: list[Json] = []
    done: list[int] = []
    turn = 0
    for rate in args.rates:
        for _ in range(args.repeat):
            shift = turn % len(args.clients)
            turn += 1
            for client in args.clients[shift:] + args.clients[:shift]:
                run = run_once(args, admin, client, rate)
                runs.append(run)
                log(describe(run))
        done.append(rate)
        ours = [client for client in args.clients if client in AIOPUBLISH]
        summary = summarize(runs, ours, [rate])
        if ours and not args.all_rates and not any(keeps_up(summary.get((client, rate))) for client in ours):
            log(f"aiopublish did not keep up with {rate:,} msg/s on any loop: no higher rate is run")
            break
    return runs, done


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.write_docs:
        replace_table(args.docs.read_text(), "")  # no markers: say so now, not after the whole run
    admin = Admin(args.url, args.queue)
    meta = machine(admin)
    log(
        f"{len(args.clients)} clients x up to {len(args.rates)} rates x {args.repeat} runs, {args.duration:g} s each, "
        f"queue {args.queue!r}; load average at the start {meta['loadavg_start'][0]:.2f}"
    )
    admin.declare()
    started = time.perf_counter()
    try:
        runs, rates = run_rates(args, admin)
    finally:
        admin.delete()
    meta["duration_s"] = time.perf_counter() - started
    if not args.smoke:
        log("waiting for the runs' own load to decay before reading the load average at the end")
    meta["loadavg_end"], meta["settle_s"] = settle(0.0 if args.smoke else SETTLE_S)
    settings: Json = {"clients": args.clients, "rates": rates, "duration_s": args.duration, "repeat": args.repeat}
    settings["url"] = mask_password(args.url)
    summary = summarize(runs, args.clients, rates)
    table = markdown(summary, args.clients, rates, meta, settings)
    print(table)
    start, end = meta["loadavg_start"][0], meta["loadavg_end"][0]
    log(f"\nload average {start:.2f} at the start, {end:.2f} at the end")
    failed = [run for run in runs if run["status"] != "ok"]
    log(f"{len(runs)} runs in {meta['duration_s']:.0f} s, {len(failed)} failed")

    if args.smoke:  # a check that every client works, never a table to publish
        for path in (args.json, args.png):
            if path is not None:
                log(f"--smoke writes no {path}")
        return 1 if failed else 0
    publishable = is_quiet(meta) or args.allow_busy
    json_path = args.json or (HERE / "latency.json" if publishable else None)
    png_path = args.png or (HERE / "latency.png" if publishable else None)
    if json_path is not None:
        entries = [summary[key] for key in sorted(summary, key=lambda key: (key[1], key[0]))]
        document = {"meta": meta, "settings": settings, "summary": entries, "runs": runs}
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        log(f"wrote {json_path}")
    if png_path is not None and summary:
        plot(summary, args.clients, meta, args, png_path)
        log(f"wrote {png_path}")
    if not publishable:
        log(
            f"NOT PUBLISHED: the load average was {max(start, end):.2f} (published tables come from a machine under "
            f"{QUIET_LOAD:g}); run again on a quiet machine, or pass --allow-busy to publish it marked as busy"
        )
        return 3
    if args.write_docs:
        section = table
        if png_path is not None and summary:
            # The site is built from docs/ alone: the chart goes beside the page, which links it there.
            image = args.docs.parent / DOCS_CHART
            shutil.copyfile(png_path, image)
            alt = "latency from scheduled time to confirm, and achieved rate, per offered rate"
            section += f"\n\n![{alt}]({DOCS_CHART})"
        args.docs.write_text(replace_table(args.docs.read_text(), section))
        log(f"wrote the table into {args.docs}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
