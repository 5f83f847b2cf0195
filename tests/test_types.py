"""Users' type checkers see real types: a correct program passes mypy --strict and pyright, each typo is reported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aiopublish import BatchOptions, DefaultOptions, PublishOptions
from aiopublish._options import CALL_ONLY_OPTIONS, CONSTRUCTOR_PUBLISH_KWARGS, PUBLISH_OPTIONS

GOOD = textwrap.dedent(
    """
    import asyncio
    from datetime import timedelta

    from aiopublish import Exchange, Publisher, PublishResult, PublishStatus, Queue


    async def main() -> None:
        orders = Queue("orders")
        async with Publisher(
            ["amqp://guest:guest@a/", "amqp://guest:guest@b/"],
            declare=[orders],
            routing_key="orders",
            timeout=5,
            transport_options={"heartbeat": 10},
            max_in_flight=64,
        ) as publisher:
            result: PublishResult = await publisher.publish(
                {"n": 1}, priority=5, mandatory=True, delivery_mode="persistent", expiration=timedelta(seconds=3)
            )
            status: PublishStatus = result.status
            print(result.message_id, status)
            results = await publisher.publish_many(
                [1, 2], routing_keys=["a", "b"], headers=[{"x": 1}, None], exchange=Exchange("shop")
            )
            print([r.ok for r in results])


    asyncio.run(main())
    """
)

# Each line is one mistake a type checker must report (the line number is what is checked).
BAD_CALLS = [
    "await publisher.publish({}, priorty=5)",
    'await publisher.publish({}, routing_kye="q")',
    'await publisher.publish({}, mandatory="yes")',
    "await publisher.publish({}, delivery_mode=3)",
    'await publisher.publish({}, timeout="10")',
    "await publisher.publish({}, headers=[1, 2])",
    'await publisher.publish_many([1], serializr="json")',
    'await publisher.publish_many([1], routing_keys="abc", retry="no")',
    'Publisher("amqp://x/", {"heartbeat": 10})',
    'Publisher("amqp://x/", max_in_flight="many")',
    'Publisher("amqp://x/", routing_key=5)',
    'Publisher("amqp://x/", priority="high")',
    "status: int = (await publisher.publish({})).status",
]


def _bad_program() -> tuple[str, list[int]]:
    lines = [
        "from aiopublish import Publisher",
        "",
        "",
        "async def main(publisher: Publisher) -> None:",
    ]
    numbers = []
    for call in BAD_CALLS:
        lines.append(f"    {call}")
        numbers.append(len(lines))
    return "\n".join(lines) + "\n", numbers


# The checkers read the package from this checkout: an editable install is invisible to them.
REPO = Path(__file__).resolve().parent.parent
CHECKERS = {
    "mypy": [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental"],
    "pyright": [sys.executable, "-m", "pyright", "--pythonpath", sys.executable, "-p", "pyrightconfig.json"],
}


def _run(checker: str, path: Path) -> subprocess.CompletedProcess[str]:
    (path.parent / "pyrightconfig.json").write_text(
        json.dumps({"extraPaths": [str(REPO)], "typeCheckingMode": "strict"})
    )
    env = {**os.environ, "MYPYPATH": str(REPO)}
    return subprocess.run(
        [*CHECKERS[checker], str(path)], capture_output=True, text=True, timeout=300, cwd=path.parent, env=env
    )


def test_option_types_list_exactly_the_options_the_code_accepts() -> None:
    """The TypedDicts and the run-time option lists name the same keywords, so neither drifts."""
    assert set(PublishOptions.__optional_keys__) == set(PUBLISH_OPTIONS | CALL_ONLY_OPTIONS)
    assert set(DefaultOptions.__optional_keys__) == set(CONSTRUCTOR_PUBLISH_KWARGS)
    assert set(BatchOptions.__optional_keys__) == set(PUBLISH_OPTIONS) - {"headers"}


@pytest.mark.parametrize("checker", sorted(CHECKERS))
def test_a_correct_program_type_checks(checker: str, tmp_path: Path) -> None:
    """The README-style program (failover list, typed options, results) has no type error."""
    path = tmp_path / "good.py"
    path.write_text(GOOD)
    done = _run(checker, path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("checker", sorted(CHECKERS))
def test_each_mistake_is_reported(checker: str, tmp_path: Path) -> None:
    """Every misspelt option or wrongly typed value is an error on its own line."""
    source, numbers = _bad_program()
    path = tmp_path / "bad.py"
    path.write_text(source)
    done = _run(checker, path)
    output = done.stdout + done.stderr
    reported = {int(n) for n in re.findall(r"bad\.py:(\d+)", output)}
    missed = [BAD_CALLS[i] for i, number in enumerate(numbers) if number not in reported]
    assert missed == [], f"{checker} did not report: {missed}\n{output}"


@pytest.mark.slow
def test_public_types_are_complete(tmp_path: Path) -> None:
    """`pyright --verifytypes aiopublish` on an installed copy scores 100%: users' checkers see every type."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", purelib, str(REPO)],
        check=True, timeout=300,
    )  # fmt: skip
    # pyright finds the package through the environment it is run in, as a user's editor would.
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "pyright", "--verifytypes", "aiopublish", "--ignoreexternal"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert "Type completeness score: 100%" in done.stdout, done.stdout[-3000:]


def test_pyright_runs_without_downloading(tmp_path: Path) -> None:
    """pyright finds Node.js in the test dependencies: no node on PATH, no cache, no network, and it still runs."""
    env = {
        "PATH": str(Path(sys.executable).parent),  # this environment's bin only: no /usr/bin/node
        "HOME": str(tmp_path),  # no nodeenv cached under ~/.cache
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYRIGHT_PYTHON_ENV_DIR": str(tmp_path / "nodeenv"),
        # Any download would go through this proxy, where nothing listens.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [sys.executable, "-m", "pyright", "--version"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"pyright \d+\.\d+\.\d+", result.stdout), result.stdout
    assert not (tmp_path / "nodeenv").exists(), "pyright made a nodeenv: Node.js was downloaded"
