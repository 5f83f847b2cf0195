"""Run a nox session from a fresh clone with nothing but Python 3.11+ (no pip install into your Python).

    python3 dev.py example [AMQP_URL]     # publish one message and show what arrived
    python3 dev.py tests [PYTEST_ARGS]    # the whole test suite against the real broker
    python3 dev.py docs                   # build the docs site into site/ and check it in Chromium
    python3 dev.py lint | typing | tests-3.12 ...   # any other session of noxfile.py

Makes a virtual environment `.venv` next to this file with the Python running this script (once;
again, saying so, when `.venv` was made by another Python), installs nox into it (once), then
runs `.venv/bin/python -m nox -s SESSION -- ARGS`. Nothing is installed into the Python you run it
with, so it works where pip refuses to
(`externally-managed-environment`, PEP 668: Debian's and Ubuntu's packaged python3). The sessions
run on this same Python. Only the standard library is used here.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

NOX = "nox==2026.10.20"
ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
USAGE = "usage: python3 dev.py SESSION [ARGS...]   (SESSION: example, tests, docs, lint, typing, tests-3.12, ...)"


def say(text: str) -> None:
    print(f"dev.py: {text}", flush=True)


def venv_hint() -> str:
    """What to install when this Python cannot make a virtual environment."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if Path("/etc/debian_version").exists():
        return f"install Debian's venv support: `apt-get install python3-venv` (or python{version}-venv)"
    return "install your Python's venv/ensurepip support, or use a Python from python.org or pyenv"


def make_venv() -> None:
    say(f"making {VENV.name}/ with {sys.executable} (Python {sys.version.split()[0]})")
    result = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
    if result.returncode != 0 or not VENV_PYTHON.exists():
        detail = (result.stderr or result.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit {result.returncode}"
        # A half-made .venv (no pip in it) would be reused next time: remove it.
        subprocess.run([sys.executable, "-c", f"import shutil; shutil.rmtree({str(VENV)!r}, True)"], check=False)
        output = (result.stderr or "") + (result.stdout or "")
        # Debian and Ubuntu ship venv's ensurepip in a separate package (python3-venv).
        missing = "ensurepip" in output or "No module named venv" in output
        if missing:
            sys.exit(f"dev.py: cannot make a virtual environment: this Python has no ensurepip; {venv_hint()}")
        sys.exit(f"dev.py: cannot make a virtual environment in {VENV} ({reason})")


def this_python() -> tuple[str, str]:
    """(version, real path) of the interpreter running dev.py; a venv's Python counts as its base."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return platform.python_version(), os.path.realpath(base)


def venv_made_by() -> tuple[str, str] | None:
    """(version, real path) of the Python that made .venv, or None when .venv's Python no longer runs."""
    code = "import os, platform, sys; print(platform.python_version()); print(os.path.realpath(sys._base_executable))"
    probe = subprocess.run([str(VENV_PYTHON), "-c", code], capture_output=True, text=True)
    lines = probe.stdout.splitlines()
    if probe.returncode != 0 or len(lines) < 2:
        return None
    return lines[0], lines[1]


def ensure_venv() -> None:
    """Make .venv with this Python, or use the one there if this Python made it.

    A .venv made by another python3 (Debian's, then pyenv's) would run the sessions on that one,
    against what the user asked for: it is made again, and .nox/ with it (nox made its
    environments from .venv's Python).
    """
    if not VENV_PYTHON.exists():
        make_venv()
        return
    made_by, mine = venv_made_by(), this_python()
    if made_by == mine:
        say(f"using {VENV.name}/ (delete it to start afresh)")
        return
    what = "a Python that no longer runs" if made_by is None else f"Python {made_by[0]} ({made_by[1]})"
    say(
        f"{VENV.name}/ was made by {what}, not by the Python running dev.py, {mine[0]} ({mine[1]}): "
        f"making it again, and .nox/ with it"
    )
    shutil.rmtree(VENV)
    shutil.rmtree(ROOT / ".nox", ignore_errors=True)
    make_venv()


def has_nox() -> bool:
    probe = subprocess.run([str(VENV_PYTHON), "-c", "import nox"], capture_output=True)
    return probe.returncode == 0


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 the user has
        print(f"dev.py: aiopublish needs Python 3.11 or newer; this is {sys.version.split()[0]} ({sys.executable})")
        return 2
    if not argv or argv[0].startswith("-"):
        print(USAGE)
        return 2
    session, posargs = argv[0], argv[1:]
    ensure_venv()
    if not has_nox():
        say(f"installing {NOX} into {VENV.name}/")
        pip = [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", NOX]
        if subprocess.run(pip).returncode != 0:
            print(f"dev.py: pip could not install {NOX} into {VENV.name}/ (see above)")
            return 1
    command = [str(VENV_PYTHON), "-m", "nox", "-s", session]
    if posargs:
        command += ["--", *posargs]
    say("running " + " ".join(["nox", "-s", session, *(["--", *posargs] if posargs else [])]))
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
