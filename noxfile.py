"""Sessions: tests, lint, typing, example, docs (and bench), on the Python that runs nox.

    python3 dev.py tests            # makes .venv, installs nox there, runs `nox -s tests`
    python3 -m nox -s tests         # the same with a nox you installed yourself

`tests`, `example`, `lint`, `typing` run on the interpreter running nox, whichever CPython 3.11+
that is. `tests-3.11`, `tests-3.12`, `tests-3.13` run the suite on one supported CPython each
(`nox -s tests-3.12 -- -m "not slow"` for the quick suite); a version that is not installed is an
error, never a silent skip.
"""

from __future__ import annotations

import sys

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True
# A requested interpreter that is missing fails the run instead of "skipped" and exit 0.
nox.options.error_on_missing_interpreters = True

# The CPython versions aiopublish supports and tests (keep in step with pyproject's classifiers).
SUPPORTED = ("3.11", "3.12", "3.13")
# None: the interpreter running nox. Below 3.11 the session fails with a sentence instead of
# pip's "requires a different Python" further down.
CURRENT = None


def _require_supported(session: nox.Session) -> None:
    # Sessions without a pinned python run on the interpreter running nox (sys.executable).
    if session.python is None and sys.version_info < (3, 11):
        found = sys.version.split()[0]
        session.error(f"aiopublish needs Python 3.11 or newer; nox runs on {found} ({sys.executable})")


def _tests(session: nox.Session) -> None:
    """The test suite on this CPython (posargs go to pytest, e.g. `-- -m "not slow"`)."""
    _require_supported(session)
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session(python=CURRENT)
def tests(session: nox.Session) -> None:
    """The whole test suite against the RabbitMQ at AIOPUBLISH_TEST_URL (default: local guest)."""
    _tests(session)


for _version in SUPPORTED:
    # One named session per version (tests-3.12), so `nox -s tests` stays the one on this Python.
    nox.session(name=f"tests-{_version}", python=_version)(_tests)


@nox.session(python=CURRENT)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the package, tests, examples and benchmarks."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=CURRENT)
def typing(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy==2.4.1")
    session.run("mypy", "--strict", "aiopublish")


@nox.session(python=CURRENT)
def example(session: nox.Session) -> None:
    """Publish one message with examples/quickstart.py and show what arrived."""
    _require_supported(session)
    session.install("-e", ".")
    session.run("python", "examples/quickstart.py", *session.posargs)


@nox.session(python=CURRENT)
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with warnings as errors, then check it in headless Chromium.

    The browser check (tests_site/, apart from the suite: it needs no broker but Debian's
    `chromium`, which .ci/run installs) opens the built pages; `-- --no-browser` only builds.
    """
    _require_supported(session)
    session.install("-e", ".[docs]", "pytest==9.2.0", "pytest-asyncio==1.5.0", "pytest-timeout==2.4.0")
    browser = "--no-browser" not in session.posargs
    session.run("mkdocs", "build", "--strict", *(arg for arg in session.posargs if arg != "--no-browser"))
    if browser:
        env = {"AIOPUBLISH_DOCS_SITE": "site"}
        session.run("pytest", "-q", "-p", "no:cacheprovider", "tests_site", env=env)


@nox.session(python=CURRENT)
def bench(session: nox.Session) -> None:
    """The side-by-side benchmark (benchmarks/bench.py); `-- --smoke` for the quick CI run."""
    session.install("-e", ".[speed]", "-r", "benchmarks/requirements.txt")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(python=CURRENT)
def instructions(session: nox.Session) -> None:
    """Client instructions per message under callgrind against the committed baseline; `-- --update` refreshes it.

    Needs valgrind. The counts depend on the library versions, so they are pinned here to those
    the baseline was taken with (benchmarks/instructions-baseline.json records them).
    """
    session.install("-e", ".", "aiormq==7.2.4", "pamqp==4.0.1", "yarl==1.25.1", "orjson==3.13.0")
    session.run("python", "benchmarks/instructions.py", *(session.posargs or ["--check"]))
