"""benchmarks/latency.py's own rules: medians, when aiopublish keeps up, and when a table may be published."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import latency  # benchmarks/latency.py, found through the path above

SETTINGS = {"duration_s": 5.0, "repeat": 3}


def _meta(start: float, end: float) -> dict[str, Any]:
    return {
        "date": "2026-12-07T18:00:00+00:00",
        "cpu_model": "AMD EPYC",
        "cores": 2,
        "python": "3.11.7",
        "rabbitmq": {"version": "3.10.8"},
        "loadavg_start": (start, 0.5, 0.5),
        "loadavg_end": (end, 0.5, 0.5),
    }


def _run(client: str, rate: int, achieved: float, p99: float, status: str = "ok") -> dict[str, Any]:
    run: dict[str, Any] = {"client": client, "rate": rate, "status": status}
    if status == "ok":
        run.update(achieved_per_s=achieved, p50_ms=1.0, p99_ms=p99, p999_ms=p99 * 2, max_ms=p99 * 3)
        run.update(lag_p99_ms=p99 / 2, cpu_us_per_msg=9)
    return run


def test_summary_holds_the_medians_of_the_ok_runs() -> None:
    """Three runs of one client and rate give their medians; a failed run is counted, not averaged in."""
    runs = [
        _run("aiopublish", 1000, 990, 5.0),
        _run("aiopublish", 1000, 999, 9.0),
        _run("aiopublish", 1000, 995, 7.0),
        _run("aio-pika", 1000, 0, 0, status="failed"),
        _run("aio-pika", 1000, 900, 50.0),
    ]
    summary = latency.summarize(runs, ["aiopublish", "aio-pika"], [1000])
    ours = summary[("aiopublish", 1000)]
    assert (ours["runs"], ours["runs_ok"], ours["achieved_per_s"], ours["p99_ms"], ours["p999_ms"]) == (
        3,
        3,
        995,
        7,
        14,
    )
    theirs = summary[("aio-pika", 1000)]
    assert (theirs["runs"], theirs["runs_ok"], theirs["p99_ms"]) == (2, 1, 50.0)


@pytest.mark.parametrize(
    ("achieved", "failed", "keeps"),
    [(2_999, False, True), (2_910, False, True), (2_909, False, False), (3_000, True, False)],
)
def test_keeping_up_is_97_percent_of_the_offered_rate_with_no_failed_run(
    achieved: float, failed: bool, keeps: bool
) -> None:
    """A client keeps up when its median run confirmed 97% of the offered rate and none of its runs failed."""
    runs = [_run("aiopublish", 3000, achieved, 5.0) for _ in range(2)]
    runs.append(_run("aiopublish", 3000, 0, 0, status="failed") if failed else _run("aiopublish", 3000, achieved, 5))
    entry = latency.summarize(runs, ["aiopublish"], [3000])[("aiopublish", 3000)]
    assert latency.keeps_up(entry) is keeps
    assert latency.keeps_up(None) is False


@pytest.mark.parametrize(
    ("start", "end", "quiet"), [(0.3, 0.99, True), (1.0, 0.2, False), (0.2, 1.0, False), (3.7, 4.3, False)]
)
def test_only_a_run_under_load_1_at_start_and_end_is_quiet(start: float, end: float, quiet: bool) -> None:
    """is_quiet needs both 1-minute load averages under 1; a busy table says so in its conditions line."""
    meta = _meta(start, end)
    assert latency.is_quiet(meta) is quiet
    line = latency.conditions(meta, SETTINGS)
    assert f"load average {start:.2f} at the start, {end:.2f} at the end" in line
    assert ("Busy machine" in line) is not quiet


def test_the_table_names_its_conditions_and_every_client() -> None:
    """The markdown starts with the conditions line, has one column per client and marks failed runs."""
    runs = [_run("aiopublish", 1000, 999, 5.0), _run("aio-pika", 1000, 0, 0, status="failed")]
    clients = ["aiopublish", "aio-pika"]
    table = latency.markdown(latency.summarize(runs, clients, [1000]), clients, [1000], _meta(0.4, 0.5), SETTINGS)
    lines = table.splitlines()
    assert lines[0].startswith("Taken 2026-12-07") and "Busy" not in lines[0]
    assert "aiopublish achieved / p50 / p99 / p99.9 ms" in lines[2] and "aio-pika achieved" in lines[2]
    assert lines[4] == "| 1,000 | 999 / 1.00 / 5.00 / 10.0 | failed (1 runs) |"


def test_the_docs_section_is_replaced_between_its_markers_only() -> None:
    """replace_table swaps what is between the markers and keeps the rest; without markers it refuses."""
    page = f"intro\n{latency.TABLE_START}\nold table\n{latency.TABLE_END}\noutro\n"
    new = latency.replace_table(page, "new table")
    assert new == f"intro\n{latency.TABLE_START}\nnew table\n{latency.TABLE_END}\noutro\n"
    assert latency.replace_table(new, "again") == f"intro\n{latency.TABLE_START}\nagain\n{latency.TABLE_END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        latency.replace_table("no markers here", "table")


def test_the_docs_page_has_the_markers() -> None:
    """docs/guides/performance.md holds the markers latency.py --write-docs writes between."""
    latency.replace_table(latency.DOCS.read_text(), "")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rates", "3000,1000"], "--rates must go up"),
        (["--smoke", "--write-docs"], "never published"),
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--clients", "aiopublish,pika"], "unknown client"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Arguments that cannot make a valid run exit with a usage error naming the problem."""
    with pytest.raises(SystemExit) as exit_info:
        latency.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_cover_both_loops_three_runs_and_ascending_rates() -> None:
    """By default every client runs, aiopublish on asyncio and uvloop, three times per rate, rates going up."""
    args = latency.parse_args([])
    assert args.clients == list(latency.CLIENTS) and "aiopublish-uvloop" in args.clients
    assert args.repeat == 3
    assert args.rates == sorted(args.rates) and len(args.rates) > 3


def test_the_load_at_the_end_is_read_once_the_runs_own_load_has_decayed(monkeypatch: pytest.MonkeyPatch) -> None:
    """settle() polls until the 1-minute load is under 1 (or its limit), and the conditions line says how long."""
    loads = iter([2.4, 1.6, 1.1, 0.8])
    current = [2.4]

    def getloadavg() -> tuple[float, float, float]:
        return (current[0], 0.0, 0.0)

    def sleep(_seconds: float) -> None:
        current[0] = next(loads)

    monkeypatch.setattr(latency.os, "getloadavg", getloadavg)
    monkeypatch.setattr(latency.time, "sleep", sleep)
    end, _waited = latency.settle(240.0)
    assert end[0] == 0.8
    # A limit of 0 reads the load at once, busy or not: a busy machine is then refused, not waited out.
    current[0] = 3.0
    assert latency.settle(0.0)[0][0] == 3.0
    line = latency.conditions({**_meta(0.3, 0.8), "settle_s": 35.0}, SETTINGS)
    assert "0.80 at the end (read 35 s after the last run" in line
