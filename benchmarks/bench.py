"""Publisher-confirm throughput benchmark: aiopublish against other Python AMQP clients.

Workload: N JSON messages of about 150 bytes, delivery_mode 2, to a durable queue
through the default exchange, publisher confirms on; a run's clock stops when every
message is confirmed. The queue is purged before each run and its depth is checked
after it (it must equal the number published, else the run is marked failed).

Each (mode, repetition) runs in a fresh worker process (``bench.py --worker MODE``);
modes alternate round-robin across repetitions, every other repetition in reverse order,
and medians are reported. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
BASELINE = "aiopika-512"
THROUGHPUT = (
    "aiopika-seq",
    "aiopika-512",
    "aiormq-seq",
    "aiormq-512",
    "faststream-seq",
    "kombu-seq",
    "pika-seq",
    "rawlimit",
    "aiopublish-seq",
    "aiopublish-512",
    "aiopublish-many",
)
EXTRAS = ("ttfp-aiopublish", "ttfp-aiopika", "rss-aiopublish", "rss-aiopika")
LIBRARIES = (
    "aiopublish",
    "aio-pika",
    "aiormq",
    "pamqp",
    "faststream",
    "kombu",
    "amqp",
    "pika",
    "matplotlib",
    "psutil",
)
# A worker error of one of these types means the API under test is missing or differs
# from what the benchmark was written against: the mode is reported "not available".
API_ERRORS = ("ImportError", "ModuleNotFoundError", "AttributeError", "TypeError", "NotImplementedError")

SUMMARY_KEYS = (
    "msgs_per_s",
    "wall_s",
    "cpu_us_per_msg",
    "broker_cpu_us_per_msg",
    "maxrss_kb",
    "p50_ms",
    "p99_ms",
    "ttfp_s",
    "startup_s",
    "import_s",
    "connect_s",
    "first_publish_s",
    "rss_before_kb",
    "child_cpu_total_s",
)

Json = dict[str, Any]


# =========================================================================== worker


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def worker_main(args: argparse.Namespace) -> int:
    """Run one mode once and print one JSON line to stdout."""
    import clients  # sibling module; the script's directory is on sys.path

    mode = clients.MODES[args.worker]
    result: Json = {"mode": mode.name, "n": args.n, "pid": os.getpid()}
    try:
        outcome = mode.run(args.url, args.queue, args.n, args.spawn_time)
    except Exception as exc:
        traceback.print_exc()
        result.update(status="error", error_type=type(exc).__name__, error=f"{type(exc).__name__}: {exc}")
    else:
        n = args.n if mode.kind != "ttfp" else 1
        result.update(
            status="ok" if outcome.failures == 0 else "error",
            confirmed=outcome.confirmed,
            failures=outcome.failures,
            wall_s=outcome.wall_s,
            msgs_per_s=n / outcome.wall_s if outcome.wall_s > 0 else None,
            cpu_s=outcome.cpu_s,
            cpu_us_per_msg=outcome.cpu_s / n * 1e6,
            **outcome.extra,
        )
        if outcome.failures:
            result.update(error_type="Failures", error=f"{outcome.failures} of {n} publishes not confirmed")
        if outcome.latencies:
            lat = sorted(outcome.latencies)
            result.update(p50_ms=percentile(lat, 0.50) * 1e3, p99_ms=percentile(lat, 0.99) * 1e3)
    result["maxrss_kb"] = clients.maxrss_kb()
    print(json.dumps(result), flush=True)
    return 0


# =========================================================================== broker admin


class Admin:
    """Queue housekeeping from the parent process: a short aiormq connection per call."""

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue

    def _call(self, operation: Callable[[Any, Any], Awaitable[Any]]) -> Any:
        async def run() -> Any:
            import aiormq

            connection = await aiormq.connect(self.url)
            try:
                return await operation(connection, await connection.channel())
            finally:
                await connection.close()

        return asyncio.run(run())

    def server_properties(self) -> Json:
        async def op(connection: Any, channel: Any) -> Json:
            props = dict(connection.server_properties)
            props.pop("capabilities", None)
            return {k: v.decode() if isinstance(v, bytes) else v for k, v in props.items()}

        result: Json = self._call(op)
        return result

    def declare(self) -> None:
        async def op(connection: Any, channel: Any) -> None:
            await channel.queue_declare(self.queue, durable=True)

        self._call(op)

    def purge(self) -> None:
        async def op(connection: Any, channel: Any) -> None:
            await channel.queue_purge(self.queue)

        self._call(op)

    def depth(self) -> int:
        async def op(connection: Any, channel: Any) -> int:
            declare_ok = await channel.queue_declare(self.queue, passive=True)
            return int(declare_ok.message_count)

        depth: int = self._call(op)
        return depth

    def delete(self) -> None:
        async def op(connection: Any, channel: Any) -> None:
            await channel.queue_delete(self.queue)

        self._call(op)


def find_broker_process(url: str) -> Any:
    """The local beam.smp listening on the URL's port, to read its CPU time; else None."""
    try:
        import psutil
    except ImportError:
        return None
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or 5672
    for process in psutil.process_iter(["name"]):
        if process.info["name"] != "beam.smp":
            continue
        try:
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    return process
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return None


def process_cpu(process: Any) -> float | None:
    if process is None:
        return None
    try:
        times = process.cpu_times()
        return float(times.user + times.system)
    except Exception:
        return None


# =========================================================================== machine info


# Compiled to bytecode before the runs, as `pip install` leaves an installed package. In an editable
# install (`pip install -e .`) under PYTHONDONTWRITEBYTECODE=1, aiopublish would otherwise be compiled
# from source in every worker while aio-pika loads its .pyc files: the ttfp-* extras then measured
# the compiler (about 40 ms of aiopublish's "import"), not the import.
BYTECODE_PACKAGES = ("aiopublish", "aio_pika", "aiormq", "pamqp", "yarl", "multidict", "propcache")


def compile_bytecode(packages: Iterable[str] = BYTECODE_PACKAGES) -> list[str]:
    """Write the .pyc files of `packages` where the import system looks for them; return those found."""
    import compileall
    import importlib.util

    compiled = []
    for name in packages:
        spec = importlib.util.find_spec(name)  # a top-level name: nothing is imported
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            compileall.compile_dir(location, quiet=2)
        compiled.append(name)
    return compiled


def machine_info(admin: Admin) -> Json:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import clients  # sibling module

    versions: Json = dict(clients.installed_versions(LIBRARIES))
    info: Json = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "event_loop": "asyncio default (no uvloop)",
        "libraries": versions,
        "loadavg_start": os.getloadavg(),
    }
    try:
        import psutil

        info["memory_total_mb"] = round(psutil.virtual_memory().total / 2**20)
    except ImportError:
        pass
    try:
        props = admin.server_properties()
        info["rabbitmq"] = {k: props.get(k) for k in ("product", "version", "platform", "cluster_name")}
    except Exception as exc:
        info["rabbitmq"] = {"error": repr(exc)}
    return info


# =========================================================================== orchestration


def kind_of(mode: str) -> str:
    return "ttfp" if mode.startswith("ttfp-") else "rss" if mode.startswith("rss-") else "throughput"


def library_of(mode: str) -> str:
    return mode.split("-")[1] if kind_of(mode) != "throughput" else mode.split("-")[0]


def is_sequential(mode: str) -> bool:
    return mode.endswith("-seq")


def parse_worker_output(stdout: str) -> Json | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                parsed: Json = json.loads(line)
                return parsed
            except ValueError:
                return None
    return None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin = Admin(args.url, args.queue)
        self.broker_process = find_broker_process(args.url)
        self.runs: list[Json] = []
        self.unavailable: dict[str, str] = {}

    def expected_depth(self, mode: str) -> int:
        kind = kind_of(mode)
        return 1 if kind == "ttfp" else self.args.rss_n if kind == "rss" else self.args.n

    def run_once(self, mode: str, repetition: int) -> Json:
        args = self.args
        n = self.expected_depth(mode)
        self.admin.purge()
        loadavg = os.getloadavg()[0]
        broker_cpu0 = process_cpu(self.broker_process)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        command = [sys.executable, str(HERE / "bench.py"), "--worker", mode, "--n", str(n)]
        command += ["--queue", args.queue, "--url", args.url, "--spawn-time", repr(time.time())]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False)
            stdout, stderr, returncode = completed.stdout, completed.stderr, completed.returncode
        except subprocess.TimeoutExpired as exc:  # subprocess.run has killed the worker
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            stderr = f"timed out after {args.timeout} s"
            returncode = None
        process_s = time.perf_counter() - started
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        broker_cpu1 = process_cpu(self.broker_process)

        run: Json = parse_worker_output(stdout) or {"mode": mode, "status": "error", "error_type": "NoOutput"}
        run.update(
            mode=mode,
            repetition=repetition,
            returncode=returncode,
            process_s=process_s,
            child_cpu_total_s=(children1.ru_utime - children0.ru_utime) + (children1.ru_stime - children0.ru_stime),
            loadavg_1m=loadavg,
        )
        if broker_cpu0 is not None and broker_cpu1 is not None:
            run["broker_cpu_s"] = broker_cpu1 - broker_cpu0
            run["broker_cpu_us_per_msg"] = run["broker_cpu_s"] / n * 1e6
        if run["status"] != "ok" and "error" not in run:
            tail = [line for line in stderr.strip().splitlines() if line.strip()][-3:]
            run["error"] = " | ".join(tail) or f"worker exited with {returncode}"

        if run["status"] == "error" and library_of(mode) == "aiopublish" and run.get("error_type") in API_ERRORS:
            run["status"] = "unavailable"
        elif run["status"] == "ok":
            run["depth"] = depth = self.admin.depth()
            run["depth_expected"] = n
            if depth != n:
                run["status"] = "failed"
                run["error"] = f"queue depth {depth} after the run, expected {n}"
        else:
            run["status"] = "failed"
            with contextlib.suppress(Exception):
                run["depth"] = self.admin.depth()
        return run

    def run_all(self, modes: list[str]) -> None:
        args = self.args
        for repetition in range(1, args.repeat + 1):
            # Every other repetition in reverse order (A B, B A, ...): on a shared machine the first
            # worker after the parent's own broker calls ran measurably slower (ttfp: 15-20 ms on a
            # 0.2 s start), which a fixed order charged to the same mode every time.
            for mode in modes if repetition % 2 else modes[::-1]:
                if mode in self.unavailable:
                    continue
                run = self.run_once(mode, repetition)
                self.runs.append(run)
                if run["status"] == "unavailable":
                    self.unavailable[mode] = run.get("error", "not available")
                log(describe_run(run, args.repeat))


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def describe_run(run: Json, repeat: int) -> str:
    head = f"[{run['repetition']}/{repeat}] {run['mode']:<16}"
    if run["status"] == "unavailable":
        return f"{head} not available: {run.get('error')}"
    if run["status"] != "ok":
        return f"{head} FAILED: {run.get('error')}"
    kind = kind_of(run["mode"])
    if kind == "ttfp":
        return f"{head} first confirmed publish {run['ttfp_s']:.3f} s after process start"
    text = f"{head} {run['msgs_per_s']:>9,.0f} msg/s  cpu {run['cpu_us_per_msg']:6.1f} us/msg"
    if kind == "rss":
        text += f"  peak RSS {run['maxrss_kb'] / 1024:.0f} MB"
    if "p50_ms" in run:
        text += f"  p50 {run['p50_ms']:.2f} ms  p99 {run['p99_ms']:.2f} ms"
    return text


# =========================================================================== summary


def median_of(runs: Iterable[Json], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[Json], modes: list[str], unavailable: dict[str, str]) -> dict[str, Json]:
    summary: dict[str, Json] = {}
    baseline = {run["repetition"]: run for run in runs if run["mode"] == BASELINE and run["status"] == "ok"}
    for mode in modes:
        mine = [run for run in runs if run["mode"] == mode]
        ok = [run for run in mine if run["status"] == "ok"]
        entry: Json = {
            "kind": kind_of(mode),
            "runs": len(mine),
            "runs_ok": len(ok),
            "available": mode not in unavailable,
        }
        if mode in unavailable:
            entry["unavailable_reason"] = unavailable[mode]
        failed = [run.get("error") for run in mine if run["status"] == "failed"]
        if failed:
            entry["errors"] = failed
        for key in SUMMARY_KEYS:
            value = median_of(ok, key)
            if value is not None:
                entry[key] = value
        rates = [run["msgs_per_s"] for run in ok if run.get("msgs_per_s")]
        if rates:
            entry["msgs_per_s_min"], entry["msgs_per_s_max"] = min(rates), max(rates)
        # Ratio to the baseline, paired within each repetition (the two ran minutes apart at
        # most), then the median of those ratios: steadier than a ratio of medians when the
        # shared machine's load drifts during the benchmark.
        ratios = [
            run["msgs_per_s"] / baseline[run["repetition"]]["msgs_per_s"]
            for run in ok
            if run["repetition"] in baseline and run.get("msgs_per_s")
        ]
        if ratios and entry["kind"] == "throughput":
            entry["ratio_to_baseline"] = statistics.median(ratios)
        summary[mode] = entry
    return summary


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "\u2013" if value is None else f"{value:{spec}}{suffix}"


def markdown(summary: dict[str, Json], meta: Json, args: argparse.Namespace) -> str:
    rabbit = meta.get("rabbitmq", {})
    lines = [
        f"{args.n:,} persistent ~150-byte JSON messages, confirms on, median of {args.repeat} "
        f"run(s) per mode; {meta['cpu_model']}, {meta['cores']} cores shared with the broker, "
        f"Python {meta['python']}, RabbitMQ {rabbit.get('version', '?')}.",
        "",
        f"| mode | msgs/s (median) | \u00d7 {BASELINE} | client CPU µs/msg | broker CPU µs/msg "
        "| p50 ms | p99 ms | runs ok |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, entry in summary.items():
        if entry["kind"] != "throughput":
            continue
        if not entry["available"]:
            reason = entry.get("unavailable_reason", "")
            lines.append(f"| {mode} | not available ({reason[:90]}) | | | | | | 0/{entry['runs']} |")
            continue
        if entry["runs_ok"] == 0:
            reason = "; ".join(str(e) for e in entry.get("errors", []))
            lines.append(f"| {mode} | failed ({reason[:90]}) | | | | | | 0/{entry['runs']} |")
            continue
        seq = is_sequential(mode)
        lines.append(
            f"| {mode} | {fmt(entry.get('msgs_per_s'), ',.0f')} | {fmt(entry.get('ratio_to_baseline'), '.2f')} "
            f"| {fmt(entry.get('cpu_us_per_msg'), '.1f')} | {fmt(entry.get('broker_cpu_us_per_msg'), '.1f')} "
            f"| {fmt(entry.get('p50_ms') if seq else None, '.2f')} "
            f"| {fmt(entry.get('p99_ms') if seq else None, '.2f')} "
            f"| {entry['runs_ok']}/{entry['runs']} |"
        )
    extras = [(mode, entry) for mode, entry in summary.items() if entry["kind"] != "throughput"]
    if extras:
        lines += ["", "| extra | median | detail | runs ok |", "| --- | ---: | --- | ---: |"]
        for mode, entry in extras:
            if not entry["available"]:
                reason = entry.get("unavailable_reason", "")
                lines.append(f"| {mode} | not available | {reason[:90]} | 0/{entry['runs']} |")
                continue
            if entry["runs_ok"] == 0:
                lines.append(f"| {mode} | failed | {'; '.join(entry.get('errors', []))[:90]} | 0/{entry['runs']} |")
                continue
            if entry["kind"] == "ttfp":
                value = f"{entry['ttfp_s']:.3f} s to first confirm"
                detail = (
                    f"interpreter+harness {entry['startup_s'] * 1e3:.0f} ms, import {entry['import_s'] * 1e3:.0f} ms, "
                    f"connect {entry['connect_s'] * 1e3:.0f} ms, publish {entry['first_publish_s'] * 1e3:.1f} ms"
                    " (bytecode compiled beforehand)"
                )
            else:
                value = f"{entry['maxrss_kb'] / 1024:.0f} MB peak RSS"
                detail = (
                    f"{args.rss_n:,} publishes started at once, all confirmed (depth checked) in "
                    f"{entry['wall_s']:.1f} s; {entry['rss_before_kb'] / 1024:.0f} MB before publishing"
                )
            lines.append(f"| {mode} | {value} | {detail} | {entry['runs_ok']}/{entry['runs']} |")
    return "\n".join(lines)


def plot(summary: dict[str, Json], meta: Json, args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = [(mode, e) for mode, e in summary.items() if e["kind"] == "throughput"]
    measured = sorted((r for r in rows if r[1].get("msgs_per_s")), key=lambda r: r[1]["msgs_per_s"])
    missing = [r for r in rows if not r[1].get("msgs_per_s")]
    ordered = missing + measured  # barh draws bottom-up: fastest on top, missing at the bottom
    if not ordered:
        return
    names = [mode for mode, _ in ordered]
    values = [e.get("msgs_per_s", 0.0) for _, e in ordered]
    low = [e.get("msgs_per_s", 0.0) - e.get("msgs_per_s_min", e.get("msgs_per_s", 0.0)) for _, e in ordered]
    high = [e.get("msgs_per_s_max", e.get("msgs_per_s", 0.0)) - e.get("msgs_per_s", 0.0) for _, e in ordered]

    def colour(mode: str) -> str:
        if mode.startswith("aiopublish"):
            return "#2a9d3f"
        if mode == "rawlimit":
            return "#9a9a9a"
        if mode == BASELINE:
            return "#1f5fa8"
        return "#6f93c2"

    fig, ax = plt.subplots(figsize=(11, 0.55 * len(ordered) + 2.2))
    whiskers: dict[str, Any] = {"xerr": [low, high], "capsize": 3, "ecolor": "#444"} if args.repeat > 1 else {}
    ax.barh(names, values, color=[colour(m) for m in names], **whiskers)
    top = max(values) if max(values) > 0 else 1.0
    for y, (_mode, entry) in enumerate(ordered):
        if not entry["available"]:
            text = "not available"
        elif not entry.get("msgs_per_s"):
            text = "failed"
        else:
            ratio = entry.get("ratio_to_baseline")
            text = f"{entry['msgs_per_s']:,.0f}/s" + (f"   \u00d7{ratio:.2f}" if ratio is not None else "")
        x = float(entry.get("msgs_per_s_max") or entry.get("msgs_per_s") or 0.0)
        ax.text(x + top * 0.01, y, text, va="center", fontsize=9)
    ax.set_xlim(0, top * 1.3)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))
    ax.set_xlabel(f"confirmed msgs/s (median of {args.repeat}; whiskers min\u2013max; \u00d7: ratio to {BASELINE})")
    ax.set_title(f"{args.n:,} persistent ~150-B JSON messages, publisher confirms, durable queue", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    rabbit = meta.get("rabbitmq", {})
    fig.text(
        0.01,
        0.01,
        f"{meta['date']}  ·  {meta['cpu_model']}, {meta['cores']} cores shared by client and broker  ·  "
        f"Python {meta['python']}  ·  RabbitMQ {rabbit.get('version', '?')}",
        fontsize=7,
        color="#555",
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# =========================================================================== main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", help=f"comma-separated modes (default: all of {', '.join(THROUGHPUT)})")
    parser.add_argument("--n", type=int, default=20_000, help="messages per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per mode (default 3)")
    parser.add_argument("--smoke", action="store_true", help="n=500, repeat=1, small RSS run: a quick check")
    parser.add_argument("--url", default=os.environ.get("AIOPUBLISH_BENCH_URL", DEFAULT_URL), help="broker URL")
    parser.add_argument("--queue", default=f"aiopublish-bench-{os.getpid()}", help="benchmark queue")
    parser.add_argument("--json", type=Path, default=HERE / "results.json", help="raw results file")
    parser.add_argument("--png", type=Path, default=HERE / "results.png", help="bar chart file")
    parser.add_argument(
        "--extras",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"also run {', '.join(EXTRAS)} (default on)",
    )
    parser.add_argument("--rss-n", type=int, default=100_000, help="publishes started at once in rss-* extras")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a worker is killed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--spawn-time", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.repeat = 500, 1
        args.rss_n = min(args.rss_n, 2_000)
    return args


def select_modes(args: argparse.Namespace) -> list[str]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else list(THROUGHPUT)
    unknown = [m for m in modes if m not in THROUGHPUT + EXTRAS]
    if unknown:
        raise SystemExit(f"unknown mode(s): {', '.join(unknown)}; known: {', '.join(THROUGHPUT + EXTRAS)}")
    if args.extras:
        modes += [m for m in EXTRAS if m not in modes]
    return list(dict.fromkeys(modes))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)

    modes = select_modes(args)
    started = time.perf_counter()
    bench = Bench(args)
    meta = machine_info(bench.admin)
    meta["broker_cpu_measured"] = bench.broker_process is not None
    meta["bytecode_compiled"] = compile_bytecode()
    log(
        f"{len(modes)} modes \u00d7 {args.repeat} repetition(s), n={args.n:,}, queue {args.queue!r}, "
        f"RabbitMQ {meta['rabbitmq'].get('version', '?')}"
    )
    bench.admin.declare()
    try:
        bench.run_all(modes)
    finally:
        bench.admin.delete()
    duration = time.perf_counter() - started
    meta["loadavg_end"] = os.getloadavg()
    meta["duration_s"] = duration

    summary = summarize(bench.runs, modes, bench.unavailable)
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "spawn_time", "url")}
    settings.update(json=str(args.json), png=str(args.png), modes=modes, url=mask_password(args.url))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"meta": meta, "settings": settings, "summary": summary, "runs": bench.runs}, indent=2) + "\n"
    )
    plot(summary, meta, args, args.png)
    print(markdown(summary, meta, args))
    failed = [run for run in bench.runs if run["status"] == "failed"]
    log(f"\n{len(bench.runs)} runs in {duration:.0f} s; {len(failed)} failed; wrote {args.json} and {args.png}")
    return 1 if failed else 0


def mask_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


if __name__ == "__main__":
    sys.exit(main())
