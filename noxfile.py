"""Sessions: tests, lint, typing, example (and bench). Run `python3 -m nox -s tests`."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite against the RabbitMQ at AIOPUBLISH_TEST_URL (default: local guest)."""
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the package, tests, examples and benchmarks."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy==2.4.1")
    session.run("mypy", "--strict", "aiopublish")


@nox.session(python=PYTHON)
def example(session: nox.Session) -> None:
    """Publish one message with examples/quickstart.py and show what arrived."""
    session.install("-e", ".")
    session.run("python", "examples/quickstart.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The side-by-side benchmark (benchmarks/bench.py); `-- --smoke` for the quick CI run."""
    session.install("-e", ".[speed]", "-r", "benchmarks/requirements.txt")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(python=PYTHON)
def instructions(session: nox.Session) -> None:
    """Client instructions per message under callgrind against the committed baseline; `-- --update` refreshes it.

    Needs valgrind. The counts depend on the library versions, so they are pinned here to those
    the baseline was taken with (benchmarks/instructions-baseline.json records them).
    """
    session.install("-e", ".", "aiormq==7.2.4", "pamqp==4.0.1", "yarl==1.25.1", "orjson==3.13.0")
    session.run("python", "benchmarks/instructions.py", *(session.posargs or ["--check"]))
