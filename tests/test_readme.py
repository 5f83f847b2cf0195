"""Every ```python block of README.md and of the pages in docs/ runs, so a snippet that cannot run fails.

Each block is written to a file and run as a program (`python block.py`), exactly as a reader
who pastes it into a file would, in a fresh process and an empty directory; it must exit 0.
Blocks are treated alike; an HTML comment on the line just before a block changes that:

- `<!-- snippet: continues -->`: the block goes on from the blocks before it (the previous block
  and whatever that one continued): they run together as one file, once.
- `<!-- snippet: pytest -->`: the block is a test file, run by pytest in pytest-asyncio's default
  (strict) mode with warnings as errors; every test in it must pass.
- `<!-- snippet: skip (reason) -->`: a fragment that cannot run alone; it must still parse. The
  reason is required.

A ```py block is Python that is not aiopublish's (nameko's "before" code): it must carry a
`skip` comment with its reason, and it is parsed like any other.

Blocks talk to the real broker: every `amqp://guest:guest@localhost/` in them is pointed at a
vhost made for this test run on the test broker (AIOPUBLISH_TEST_URL) and deleted afterwards, so
their queues ("orders"...) never meet anyone else's. Other URLs run as written (`memory://`
needs no broker; a Publisher that is only constructed does not connect).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from yarl import URL

from tests.admin import broker_admin
from tests.broker import test_url as broker_url

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# README.md and every page of the docs site (the Chinese pages, *.zh.md, included).
DOCUMENTS = [README, *sorted((ROOT / "docs").rglob("*.md"))]
README_URL = "amqp://guest:guest@localhost/"
RUN_TIMEOUT = 90.0

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*snippet:\s*(?P<kind>[a-z]+)\s*(?:\((?P<reason>.*)\))?\s*-->\s*$")


@dataclass
class Snippet:
    """One runnable unit: a block, or a block with the blocks it continues."""

    line: int  # where its last block starts in its document
    kind: str  # "run", "pytest" or "skip"
    source: str
    reason: str = ""
    document: str = "README.md"

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def _blocks(text: str, document: str = "README.md") -> Iterator[tuple[int, str | None, str | None, str]]:
    """(line, directive kind, directive reason, source) of every ```python (and ```py) block."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        start = index
        end = start + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if fence.group(1) in ("python", "py"):
            directive = _DIRECTIVE.match(lines[start - 1]) if start else None
            if directive is None and start and lines[start - 1].lstrip().startswith("<!-- snippet"):
                raise ValueError(f"{document}:{start}: cannot read the snippet comment {lines[start - 1]!r}")
            kind = directive.group("kind") if directive else None
            if fence.group(1) == "py" and kind != "skip":
                raise ValueError(f"{document}:{start + 1}: a ```py block is not run: say why with `snippet: skip`")
            reason = directive.group("reason") if directive else None
            yield start + 1, kind, reason, "\n".join(lines[start + 1 : end]) + "\n"
        index = end + 1


def snippets(text: str, document: str = "README.md") -> list[Snippet]:
    """A document's python blocks as snippets to run, chains of `continues` joined into one."""
    result: list[Snippet] = []
    for line, kind, reason, source in _blocks(text, document):
        if kind == "continues":
            if not result or result[-1].kind == "skip":
                raise ValueError(f"{document}:{line}: `continues` needs a runnable python block before it")
            previous = result.pop()
            result.append(Snippet(line, previous.kind, previous.source + "\n\n" + source, document=document))
        elif kind == "skip":
            if not (reason or "").strip():
                raise ValueError(f"{document}:{line}: `snippet: skip` needs a reason: <!-- snippet: skip (why) -->")
            result.append(Snippet(line, "skip", source, reason or "", document))
        elif kind in (None, "pytest"):
            result.append(Snippet(line, kind or "run", source, document=document))
        else:
            raise ValueError(f"{document}:{line}: unknown snippet kind {kind!r} (continues, pytest, skip)")
    return result


SNIPPETS = [
    snippet for document in DOCUMENTS for snippet in snippets(document.read_text(), str(document.relative_to(ROOT)))
]


@pytest.fixture(scope="module")
def readme_url() -> Iterator[str]:
    """A fresh vhost on the test broker for the README's blocks, deleted afterwards."""
    vhost = f"aiopublish-readme-{uuid.uuid4().hex[:8]}"
    base = URL(broker_url())
    admin = broker_admin(str(base))
    admin.add_vhost(vhost)
    try:
        admin.set_permissions(vhost, base.user or "guest", ".*", ".*", ".*")
        yield str(base.with_path("/" + vhost))
    finally:
        admin.delete_vhost(vhost)


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def test_readme_has_python_blocks() -> None:
    """The python blocks of the README and the docs are found (a broken parser would make the rest vacuous)."""
    assert len(SNIPPETS) >= 25
    in_readme = [snippet for snippet in SNIPPETS if snippet.document == "README.md"]
    assert any("asyncio.run(main())" in snippet.source for snippet in in_readme)
    documents = {snippet.document for snippet in SNIPPETS}
    assert {"docs/index.md", "docs/index.zh.md", "docs/guides/testing.md"} <= documents, documents
    skipped = [snippet.where for snippet in SNIPPETS if snippet.kind == "skip"]
    assert len(skipped) * 4 <= len(SNIPPETS), f"skip is for the odd fragment, not {len(skipped)}: {skipped}"


def test_the_parser_reads_directives() -> None:
    """continues joins blocks, skip needs a reason, an unknown kind is refused."""
    text = "```python\na = 1\n```\n<!-- snippet: continues -->\n```python\nprint(a)\n```\n"
    assert [(s.kind, s.source) for s in snippets(text)] == [("run", "a = 1\n\n\nprint(a)\n")]
    with pytest.raises(ValueError, match="needs a reason"):
        snippets("<!-- snippet: skip -->\n```python\nx\n```\n")
    with pytest.raises(ValueError, match="unknown snippet kind 'later'"):
        snippets("<!-- snippet: later -->\n```python\nx\n```\n")
    with pytest.raises(ValueError, match=r"page.md:1: a ```py block is not run"):
        snippets("```py\nx\n```\n", "page.md")
    assert [s.kind for s in snippets("<!-- snippet: skip (no nameko here) -->\n```py\nx\n```\n")] == ["skip"]


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.where for s in SNIPPETS])
def test_readme_snippet_runs(snippet: Snippet, readme_url: str, tmp_path: Path) -> None:
    """The block at this line of the README or a docs page runs as written (the broker URL on a private vhost)."""
    if snippet.kind == "skip":
        # Not runnable alone, but it must be Python (top-level await allowed: it is a fragment).
        compile(snippet.source, snippet.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        return
    source = snippet.source.replace(README_URL, readme_url)
    if snippet.kind == "pytest":
        # Not the project settings: pytest-asyncio in its default strict mode.
        (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
        (tmp_path / "test_snippet.py").write_text(source)
        result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"], tmp_path)
        assert result.returncode == 0, f"{snippet.where} failed under pytest:\n{result.stdout}{result.stderr}"
        assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
        assert not re.search(r"\b(skipped|failed|error)\b", result.stdout), result.stdout
        return
    (tmp_path / "snippet.py").write_text(source)
    result = _run([sys.executable, "-X", "dev", "snippet.py"], tmp_path)
    assert result.returncode == 0, f"{snippet.where} failed:\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr


def _documented_signature(text: str) -> str:
    """The `Publisher(amqp_uri, ...)` signature a page writes out, on one line."""
    match = re.search(r"Publisher\((amqp_uri,.*?\*\*publish_kwargs)\)", text, re.S)
    assert match, "no Publisher(amqp_uri, ..., **publish_kwargs) signature on the page"
    return " ".join(match.group(1).split())


@pytest.mark.parametrize("page", ["docs/guides/publishing.md", "docs/api/nameko.zh.md"])
def test_the_documented_publisher_signature_is_publishers(page: str) -> None:
    """The signature the guides write out has Publisher's parameters, in order, with their defaults (spool= too)."""
    import inspect

    from aiopublish import Publisher

    parameters = []
    for parameter in inspect.signature(Publisher).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            parameters.append(f"**{parameter.name}")
            continue
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and not any(p == "*" for p in parameters):
            parameters.append("*")
        default = "" if parameter.default is inspect.Parameter.empty else f"={parameter.default!r}"
        parameters.append(parameter.name + default)
    assert _documented_signature((ROOT / page).read_text()) == ", ".join(parameters)
    assert "spool=None" in parameters
