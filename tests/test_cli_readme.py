"""The command-line guide's examples, run as written (names made unique) against the real broker.

The commands are the first ```sh block of docs/guides/cli.md, one per line
(a line ending in a backslash continues on the next). Each runs with /bin/sh in a scratch
directory holding `report.pdf` and a copy of `examples/`, with the `aiopublish` of this
environment first on PATH and AIOPUBLISH_URL set to the test broker. The queue and exchange
names (`jobs`, `orders`, `reports`, `shop`) are replaced, as whole names only (routing keys
such as `orders.paid` stay as written), by unique ones, so the broker is as good as empty for
them and the test removes them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path

from tests.broker import Broker

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("jobs", "orders", "reports", "shop")


def readme_cli_commands() -> list[str]:
    """The commands of the first sh block of the command-line guide (docs/guides/cli.md)."""
    page = (ROOT / "docs/guides/cli.md").read_text()
    block = re.search(r"```sh\n(.*?)```", page, re.S)
    assert block, "no ```sh block in docs/guides/cli.md"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def test_the_guide_lists_every_property_the_cli_takes() -> None:
    """The --property row of the guide's option table names every property `-p` accepts (delivery_mode too)."""
    from aiopublish.cli._arguments import _PROPERTIES

    page = (ROOT / "docs/guides/cli.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `--property`"))
    missing = [name for name in _PROPERTIES if f"`{name}`" not in row]
    assert missing == [], f"docs/guides/cli.md's --property row lacks {missing}"
    assert len(_PROPERTIES) >= 13


def unique_names(command: str, names: dict[str, str]) -> str:
    """`command` with each queue/exchange name replaced, where it stands as a whole name."""
    pattern = re.compile(r"(?<![\w.#-])(" + "|".join(names) + r")(?![\w.#-])")
    return pattern.sub(lambda match: names[match.group(1)], command)


def test_unique_names_leaves_routing_keys_alone() -> None:
    """The substitution renames `orders` and `shop:topic` but not `orders.paid` or 'orders.#'."""
    names = {"orders": "o1", "shop": "s1"}
    command = "x -e shop -k orders.paid --declare-exchange shop:topic --declare-queue orders --bind-key 'orders.#'"
    assert unique_names(command, names) == (
        "x -e s1 -k orders.paid --declare-exchange s1:topic --declare-queue o1 --bind-key 'orders.#'"
    )


async def test_readme_cli_examples_deliver_in_order(broker: Broker, amqp_url: str, tmp_path: Path) -> None:
    """The guide's four CLI examples, in order on a broker without their names: each exits 0 and delivers."""
    commands = readme_cli_commands()
    assert len(commands) == 4, commands
    names = {name: broker.name(name) for name in NAMES}
    report = os.urandom(3000)
    (tmp_path / "report.pdf").write_bytes(report)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "aiopublish").exists(), "the aiopublish command is not installed in this environment"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "AIOPUBLISH_URL": amqp_url}

    for command in commands:
        process = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            unique_names(command, names),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await process.communicate()
        assert process.returncode == 0, f"{command}\n{out.decode()}{err.decode()}"
        assert err == b"", f"{command}: {err.decode()}"

    assert [m.body for m in await broker.get_all(names["jobs"])] == [b"hello"]
    (pdf,) = await broker.get_all(names["reports"])
    assert pdf.body == report
    assert pdf.header.properties.content_type == "application/pdf"
    orders = await broker.get_all(names["orders"])
    assert json.loads(orders[0].body) == {"order": 42}
    assert orders[0].header.properties.headers == {"source": "cli"}
    assert orders[0].header.properties.correlation_id == "abc"
    paid = [
        json.loads(line) for line in (ROOT / "examples/publish_lines.jsonl").read_text().splitlines() if "paid" in line
    ]
    assert len(paid) == 3
    assert [json.loads(m.body) for m in orders[1:]] == paid
