"""The install commands of the README and of docs/install.md, run as written from a fresh clone (slow).

aiopublish is installed from a clone, into a virtual environment made first: the blocks say
`/path/to/aiopublish`, which is replaced by a `git clone` of this checkout's HEAD. They run with
Debian's python3 first on PATH, the one that refuses `pip install` outside a venv (PEP 668), so
a block that skipped the venv would fail here as it would for a reader. Afterwards every extra
the blocks name must import in that venv.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.test_newcomer import DEBIAN_PYTHON, clone, newcomer_env

__all__ = ["clone"]

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "/path/to/aiopublish"


def sh_blocks(page: Path, heading: str) -> list[str]:
    """The ```sh blocks of the section of `page` under `heading` (up to the next heading of that level)."""
    text = page.read_text()
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n") if not text.startswith(f"{heading}\n") else 0
    rest = text[start + len(heading) + 1 :]
    end = rest.find(f"\n{level} ")
    section = rest if end < 0 else rest[:end]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_install_blocks_are_found() -> None:
    """The README's block and the docs' two blocks, each using the placeholder path (else the test is vacuous)."""
    readme = sh_blocks(ROOT / "README.md", "## Install")
    docs = sh_blocks(ROOT / "docs/install.md", "# Install")
    assert len(readme) == 1 and len(docs) == 2, (readme, docs)
    assert all(PLACEHOLDER in block and ".venv/bin/pip install" in block for block in [*readme, *docs])
    assert "python3 -m venv .venv" in readme[0] and "python3 -m venv .venv" in docs[0]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # pip installs aiopublish and six extras from the package index
def test_install_commands_work_from_a_clone_with_debians_python(clone: Path, tmp_path: Path) -> None:
    """Run in order in an empty folder, the blocks make a venv and install aiopublish and every extra named."""
    blocks = [
        *sh_blocks(ROOT / "README.md", "## Install"),
        *sh_blocks(ROOT / "docs/install.md", "# Install"),
    ]
    env = newcomer_env()
    for block in blocks:
        script = "set -e\n" + block.replace(PLACEHOLDER, str(clone))
        result = subprocess.run(
            ["/bin/sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"{block}\n{result.stdout}{result.stderr}"
    venv_python = tmp_path / ".venv" / "bin" / "python"
    base = subprocess.run(
        [str(venv_python), "-c", "import sys; print(sys._base_executable)"], capture_output=True, text=True
    )
    assert Path(base.stdout.strip()).resolve() == DEBIAN_PYTHON.resolve()
    imports = "import aiopublish, aiopublish.fastapi, msgpack, zstandard, orjson, opentelemetry.sdk, asyncpg"
    check = subprocess.run([str(venv_python), "-c", imports], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
