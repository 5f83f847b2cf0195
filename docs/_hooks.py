"""MkDocs hooks: the benchmark charts come from benchmarks/, where the benchmarks write them.

Copying them into docs/ would leave two copies to keep in step; this adds the files of
benchmarks/ the pages show to the build instead, under the same path (`benchmarks/x.png`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
CHARTS = ("benchmarks/results.png", "benchmarks/latency.png")


def on_files(files: Files, config: Any) -> Files:
    for chart in CHARTS:
        files.append(File(chart, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
