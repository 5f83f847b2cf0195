"""The documentation site, built with `mkdocs build --strict` and opened in a real browser.

Headless Chromium (Debian's `chromium`; .ci/run installs it) loads pages of the built site from
a local HTTP server (from file:// Material hides its search box: its search index cannot load
there) and prints the DOM as it stands after the page's scripts ran (`--dump-dom`). The DOM, not
the HTML file, is what is checked: Material's script turns `<html class="no-js">` into `js`, so
a page whose scripts did not run fails. Checked: the navigation, the search box (present and
not hidden) and the language switch render; the API page has the entry for `Publisher.publish`; every link of the opened
pages that stays inside the site leads to a file of the site, and its `#fragment` to an element
of that file with that id. The same link check runs over every page of the site without the
browser (except 404.html, whose links start at the server's root).

The site is built into a temporary folder, or taken from AIOPUBLISH_DOCS_SITE (the `docs` nox
session builds it once and passes it). This folder is not in the suite's testpaths: it needs no
broker but the `docs` extra and Chromium, and `python3 dev.py docs` runs it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    # Chromium as root needs --no-sandbox; the rest keep it off the network and quiet.
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = {
    "home": "index.html",
    "api": "api/index.html",
    "guide": "guides/retries-and-timeouts.html",
    "chinese": "zh/api/nameko.html",
}


class _Page(HTMLParser):
    """The ids, links and a few landmarks of one HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.html_classes: list[str] = []
        self.primary_nav = False
        self.search_input = False
        self.search_hidden: bool | None = None  # None: no search component at all
        self.languages: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if "id" in attributes:
            self.ids.add(attributes["id"])
        if tag == "html":
            self.html_classes = attributes.get("class", "").split()
        if tag == "a" and "href" in attributes:
            self.links.append(attributes["href"])
            if "hreflang" in attributes:
                self.languages.add(attributes["hreflang"])
        if tag == "nav" and "md-nav--primary" in attributes.get("class", "").split():
            self.primary_nav = True
        if tag == "input" and "md-search__input" in attributes.get("class", "").split():
            self.search_input = True
        if attributes.get("data-md-component") == "search":
            self.search_hidden = "hidden" in attributes


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def site() -> Iterator[Path]:
    """The built site: AIOPUBLISH_DOCS_SITE, or a fresh `mkdocs build --strict` into a temporary folder."""
    given = os.environ.get("AIOPUBLISH_DOCS_SITE")
    if given:
        path = (ROOT / given).resolve()
        assert (path / "index.html").exists(), f"AIOPUBLISH_DOCS_SITE={given}: no index.html there"
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="aiopublish-site-") as folder:
        build = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", folder],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        )
        assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}{build.stderr}"
        yield Path(folder)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium; missing, the test says how to install it (never a silent skip)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed for the docs check: apt-get install chromium (.ci/run does)"
    return found


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the test output is the report
        pass


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The site served over HTTP on a free port of 127.0.0.1, as a reader's browser would get it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def dump_dom(chromium: str, url: str) -> str:
    """The DOM of the page at `url` after its scripts ran, as Chromium prints it."""
    with tempfile.TemporaryDirectory(prefix="aiopublish-chromium-") as profile:
        result = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, f"chromium failed on {url}:\n{result.stderr[-2000:]}"
    assert "<html" in result.stdout, f"chromium printed no document for {url}:\n{result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def rendered(served: str, chromium: str) -> dict[str, _Page]:
    """The four pages as Chromium rendered them."""
    return {name: parse(dump_dom(chromium, served + path)) for name, path in PAGES.items()}


def broken_links(site: Path, page: Path, links: list[str], documents: dict[Path, _Page]) -> list[str]:
    """The links of `page` that stay in the site and lead to no file, or to no element with their id."""
    broken = []
    for link in links:
        parts = urlsplit(link)
        if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
            continue  # outside the site
        target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if target.is_dir():
            target = target / "index.html"
        if not target.is_relative_to(site.resolve()) or not target.is_file():
            broken.append(f"{link} (no file {target})")
            continue
        if parts.fragment and target.suffix == ".html":
            if target not in documents:
                documents[target] = parse(target.read_text(encoding="utf-8"))
            if unquote(parts.fragment) not in documents[target].ids:
                broken.append(f"{link} (no id {parts.fragment!r} in {target.relative_to(site)})")
    return broken


def test_the_pages_render_with_navigation_search_and_languages(rendered: dict[str, _Page]) -> None:
    """Home, API, a guide and a Chinese page: scripts ran, primary navigation, search box, language switch."""
    for name, page in rendered.items():
        assert "js" in page.html_classes and "no-js" not in page.html_classes, f"{name}: the page's scripts did not run"
        assert page.primary_nav, f"{name}: no primary navigation"
        assert page.search_input, f"{name}: no search box"
        assert page.search_hidden is False, f"{name}: the search box is hidden (search_hidden={page.search_hidden})"
        assert {"en", "zh"} <= page.languages, f"{name}: no switch between English and Chinese ({page.languages})"


def test_the_api_page_has_publisher_publish(rendered: dict[str, _Page]) -> None:
    """The API reference renders the entries for Publisher, Publisher.publish and publish_many, from the docstrings."""
    ids = rendered["api"].ids
    assert {"aiopublish.Publisher", "aiopublish.Publisher.publish", "aiopublish.Publisher.publish_many"} <= ids
    assert {"aiopublish.UndeliverableMessage", "aiopublish.get_connection", "aiopublish.get_producer"} <= ids


def test_no_internal_link_of_the_rendered_pages_is_broken(site: Path, rendered: dict[str, _Page]) -> None:
    """Every link of the four rendered pages that stays in the site finds its file and its anchor."""
    documents: dict[Path, _Page] = {}
    for name, page in rendered.items():
        assert page.links, f"{name}: no links at all"
        assert broken_links(site, site / PAGES[name], page.links, documents) == [], name


def test_no_internal_link_of_any_page_is_broken(site: Path) -> None:
    """The same check over every HTML page of the built site (as built, without the browser)."""
    documents: dict[Path, _Page] = {}
    # 404.html is served for any missing path, so its links start at the server's root: not checked.
    pages = sorted(path for path in site.rglob("*.html") if path.name != "404.html")
    assert len(pages) > 40, pages
    problems = {}
    for path in pages:
        page = documents.setdefault(path.resolve(), parse(path.read_text(encoding="utf-8")))
        broken = broken_links(site, path, page.links, documents)
        if broken:
            problems[str(path.relative_to(site))] = broken
    assert problems == {}


def test_the_link_check_sees_a_broken_link(site: Path) -> None:
    """The checker itself: a missing file and a missing anchor are reported, a good link is not."""
    page = site / "index.html"
    documents: dict[Path, _Page] = {}
    links = ["install.html", "install.html#no-such-anchor", "no-such-page.html", "https://example.org/x"]
    assert broken_links(site, page, links, documents) == [
        "install.html#no-such-anchor (no id 'no-such-anchor' in install.html)",
        f"no-such-page.html (no file {(site / 'no-such-page.html').resolve()})",
    ]
