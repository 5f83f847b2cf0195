"""The README's two "Try it" commands work from a fresh clone with Debian's packaged python3.

Debian's python3 refuses `pip install` outside a virtual environment (PEP 668), which is what
broke the old `python3 -m pip install nox` commands. Here the commands run exactly as the README
gives them (`python3 dev.py example`, `python3 dev.py tests`) in a `git clone` of this checkout's
HEAD, with /usr/bin first on PATH so that `python3` is Debian's and nothing exists yet: no .venv,
no .nox, no nox.

- `example` must publish and read the message back. It runs on a vhost of its own (through the
  AIOPUBLISH_URL the example reads), so its fixed queue name meets no one else's.
- `tests` would run the whole suite inside the suite (minutes, and private broker nodes): it is
  given a pytest selection instead (arguments after `tests` go to pytest, as the README says), a
  few real tests against the broker, which must pass. What is checked is the command: the
  bootstrap, the nox session on Debian's python3, the install from the clone, pytest's run.
- With no broker answering, both fail with the line that says how to start one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from yarl import URL

import dev
from tests.admin import broker_admin
from tests.broker import test_url as broker_url

REPO = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")
TIMEOUT = 300.0
# A few real tests against the broker: publish and read back, masking, the aiormq hooks.
SELECTION = [
    "-q",
    "-p",
    "no:cacheprovider",
    "tests/test_pool.py::test_get_producer_confirm_mode_and_pooling",
    "tests/test_masking.py",
    "tests/test_aiormq_hooks.py",
]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh clone of this checkout's HEAD (committed work only, as a newcomer would get it)."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    target = tmp_path_factory.mktemp("newcomer") / "aiopublish"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(target)], check=True, timeout=120)
    subprocess.run(["git", "-C", str(target), "checkout", "-q", head.stdout.strip()], check=True, timeout=120)
    try:
        yield target
    finally:
        shutil.rmtree(target, ignore_errors=True)  # .venv and .nox: a few hundred MB


@pytest.fixture(scope="module")
def vhost_url() -> Iterator[str]:
    """A vhost of its own on the test broker for the example, deleted afterwards."""
    vhost = f"aiopublish-newcomer-{uuid.uuid4().hex[:8]}"
    base = URL(broker_url())
    admin = broker_admin(str(base))
    admin.add_vhost(vhost)
    try:
        admin.set_permissions(vhost, base.user or "guest", ".*", ".*", ".*")
        yield str(base.with_path("/" + vhost))
    finally:
        admin.delete_vhost(vhost)


def newcomer_env(**extra: str) -> dict[str, str]:
    """This process's environment without its virtualenv and pytest, with /usr/bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "AIOPUBLISH_")) and k != "VIRTUAL_ENV"}
    inherited = [part for part in env.get("PATH", "").split(os.pathsep) if part and not part.startswith(str(REPO))]
    env["PATH"] = os.pathsep.join(["/usr/bin", "/bin", *inherited])
    env.update(extra)
    return env


def run(clone: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["/bin/sh", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    print(f"$ {command}\n{result.stdout}{result.stderr}")  # shown when the test fails
    return result


def test_debian_python_comes_first() -> None:
    """The precondition: /usr/bin/python3 is Debian's python3 (3.11+) and is what `python3` finds first."""
    assert DEBIAN_PYTHON.exists(), "Debian's python3 is not installed at /usr/bin/python3 (apt-get install python3)"
    assert shutil.which("python3", path=newcomer_env()["PATH"]) == str(DEBIAN_PYTHON)
    marker = Path(f"/usr/lib/python3.{_debian_minor()}/EXTERNALLY-MANAGED")
    assert marker.exists(), f"{marker} missing: this python3 would not show the PEP 668 refusal"


def _debian_minor() -> int:
    out = subprocess.run([str(DEBIAN_PYTHON), "-c", "import sys; print(sys.version_info[1])"], capture_output=True)
    return int(out.stdout)


@pytest.mark.slow
def test_try_it_commands_from_a_fresh_clone(clone: Path, vhost_url: str) -> None:
    """`python3 dev.py example` publishes and reads back, `python3 dev.py tests ...` passes, on Debian's python3."""
    assert not (clone / ".venv").exists() and not (clone / ".nox").exists()
    example = run(clone, "python3 dev.py example", newcomer_env(AIOPUBLISH_URL=vhost_url))
    assert example.returncode == 0
    assert f"dev.py: making .venv/ with {DEBIAN_PYTHON}" in example.stdout
    assert "dev.py: installing nox" in example.stdout
    assert "published and confirmed: queue 'aiopublish-quickstart'" in example.stdout
    assert 'read back: body={"order": 42, "status": "paid"}' in example.stdout

    tests = run(clone, "python3 dev.py tests " + " ".join(SELECTION), newcomer_env())
    assert tests.returncode == 0
    assert "dev.py: using .venv/" in tests.stdout
    passed = re.search(r"(\d+) passed", tests.stdout)
    assert passed is not None and int(passed.group(1)) >= 10, tests.stdout
    assert not re.search(r"\d+ (failed|skipped|error)", tests.stdout)
    assert "Session tests was successful" in tests.stdout + tests.stderr


@pytest.mark.slow
def test_try_it_commands_without_a_broker(clone: Path) -> None:
    """With no broker answering, both commands fail and say in one line how to start one."""
    nowhere = "amqp://guest:guest@127.0.0.1:1/"
    example = run(clone, f"python3 dev.py example {nowhere}", newcomer_env())
    assert example.returncode != 0
    assert "rabbitmq-server -detached" in example.stdout
    tests = run(clone, "python3 dev.py tests", newcomer_env(AIOPUBLISH_TEST_URL=nowhere))
    assert tests.returncode != 0
    lines = [line for line in (tests.stdout + tests.stderr).splitlines() if "No RabbitMQ answers" in line]
    assert len(lines) == 1 and "rabbitmq-server -detached" in lines[0], tests.stdout + tests.stderr


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "The virtual environment was not created successfully because ensurepip is not\navailable.",
            "this Python has no ensurepip; install Debian's venv support: `apt-get install python3-venv`",
        ),
        ("Error: [Errno 13] Permission denied: '/x/.venv'", "(Error: [Errno 13] Permission denied: '/x/.venv')"),
    ],
)
def test_dev_py_says_what_to_install_when_venv_fails(
    output: str, expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """dev.py names python3-venv when ensurepip is missing, and only then; it leaves no half-made .venv."""
    if not Path("/etc/debian_version").exists():
        expected = expected.replace("install Debian's venv support: `apt-get install python3-venv`", "install")
    venv = tmp_path / ".venv"
    monkeypatch.setattr(dev, "VENV", venv)
    monkeypatch.setattr(dev, "VENV_PYTHON", venv / "bin" / "python")
    real_run = subprocess.run

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        if command[1:3] == ["-m", "venv"]:
            venv.mkdir()  # as a failed venv leaves it
            return subprocess.CompletedProcess(command, 1, output, "")
        return real_run(command, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(dev.subprocess, "run", fake_run)
    with pytest.raises(SystemExit) as exited:
        dev.make_venv()
    assert expected in str(exited.value)
    assert ("python3-venv" in str(exited.value)) == ("ensurepip" in output)
    assert not venv.exists()


def _venv_by(python: str, venv: Path) -> None:
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True, timeout=120)


def _point_dev_at(venv: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """dev.py aimed at `venv` in a scratch root; returns the list make_venv() calls are recorded in."""
    monkeypatch.setattr(dev, "ROOT", venv.parent)
    monkeypatch.setattr(dev, "VENV", venv)
    monkeypatch.setattr(dev, "VENV_PYTHON", venv / "bin" / "python")
    made: list[str] = []
    monkeypatch.setattr(dev, "make_venv", lambda: made.append("made"))
    return made


def test_dev_py_makes_again_a_venv_another_python_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .venv made by Debian's python3, run with another Python: dev.py names both and makes .venv (and .nox) anew."""
    version, path = dev.this_python()
    # Debian's python3 made the .venv, unless it runs this suite (a newcomer on stock Debian): then pyenv's.
    candidates = [DEBIAN_PYTHON, *sorted(Path.home().glob(".pyenv/versions/3.1*/bin/python3"))]
    other = next((c for c in candidates if c.exists() and os.path.realpath(c) != path), DEBIAN_PYTHON)
    assert os.path.realpath(other) != path, "needs two different Pythons: /usr/bin/python3 is this one"
    venv = tmp_path / ".venv"
    _venv_by(str(other), venv)
    (tmp_path / ".nox" / "tests").mkdir(parents=True)
    made = _point_dev_at(venv, monkeypatch)
    debian_version = subprocess.run(
        [str(other), "-c", "import platform; print(platform.python_version())"], capture_output=True, text=True
    ).stdout.strip()

    dev.ensure_venv()

    said = capsys.readouterr().out
    assert f".venv/ was made by Python {debian_version} ({os.path.realpath(other)})" in said
    assert f"not by the Python running dev.py, {version} ({path}): making it again" in said
    assert made == ["made"]
    assert not venv.exists() and not (tmp_path / ".nox").exists()


def test_dev_py_reuses_a_venv_this_python_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same Python again: dev.py says it uses .venv/ and makes nothing."""
    venv = tmp_path / ".venv"
    _venv_by(sys.executable, venv)
    made = _point_dev_at(venv, monkeypatch)
    dev.ensure_venv()
    assert "using .venv/" in capsys.readouterr().out
    assert made == [] and venv.exists()
