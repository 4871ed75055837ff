"""The benchmark script runs end to end on a tiny configuration and writes its outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from experiments.bench_store import main, markdown_table


def test_bench_store_tiny(tmp_path: Path) -> None:
    out = main(
        [
            "--out",
            str(tmp_path / "run"),
            "--image-mib",
            "2",
            "--versions",
            "1",
            "--tar-files",
            "40",
            "--no-restic",
        ]
    )
    res = json.loads((out / "results.json").read_text())
    assert set(res["summary"]) == {"mem_dirty1pct", "mem_dirty5pct", "mem_dirty20pct", "fs_tar"}
    one = res["summary"]["mem_dirty1pct"]["persona"]
    assert 0 < one["mean_added_bytes_per_version"] < one["base_added_bytes"]
    assert one["restore_mb_s"] > 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["tool"] for r in rows} == {"persona"} and len(rows) == 4 * 2 + 4
    assert (out / "plot.png").stat().st_size > 1000
    assert "| mem_dirty1pct | persona |" in markdown_table(res)
