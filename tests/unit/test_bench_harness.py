"""The pure parts of `make bench` (bench/all.py, bench/measuring.py, bench/charts.py): the
percentiles, the per-second series, the targets' verdicts and margins, reading a benchmark's
results defensively, and the PNG charts. No suite is started."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from bench.all import MODULES, markdown_table, read_results, target_rows
from bench.charts import write_chart
from bench.measuring import (
    margin,
    per_second_counts,
    per_second_percentile,
    percentile,
    target,
    targets_table,
    write_json,
)


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert percentile(list(reversed(values)), 0) == 1.0


def test_series_count_per_second_and_take_percentiles_of_what_finished_in_each_second() -> None:
    start = 1000.0
    counts = per_second_counts([1000.1, 1000.9, 1001.5, 1003.2, 999.0, 1004.0], start=start, end=1004.0)
    assert counts == [[1.0, 2.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]]
    finished = [(1000.2, 10.0), (1000.8, 30.0), (1002.5, 5.0)]
    assert per_second_percentile(finished, 50, start=start, end=1003.0) == [[1.0, 20.0], [3.0, 5.0]]


def test_a_target_is_met_from_its_value_and_the_margin_says_by_how_much() -> None:
    ceiling = target("cpu", "CPU per application", 4.0, "ms", 10.0, "<=", "sqlite")
    assert ceiling["met"] is True
    assert margin(4.0, 10.0, "<=") == "met, 2.50× under"
    assert margin(25.0, 10.0, "<=") == "MISSED, 2.50× over"
    assert target("rate", "sustained", 30.0, "app/s", 300.0, ">=")["met"] is False
    assert margin(30.0, 300.0, ">=") == "MISSED, 10.00× short"
    assert margin(360.0, 300.0, ">=") == "met, 1.20× above"
    assert margin(float("nan"), 1.0, "<=") == "no value"
    with pytest.raises(ValueError, match="comparison"):
        target("x", "x", 1.0, "", 1.0, "<")


def test_target_rows_recompute_met_and_say_why_a_module_has_none() -> None:
    results = {
        "targets": [
            target("a", "fast enough", 50.0, "ms", 100.0, "<=", "postgres"),
            {**target("b", "claims met", 500.0, "ms", 100.0, "<="), "met": True},
            {"id": "c", "label": "no value"},
        ]
    }
    rows = target_rows("e2e", results)
    assert [row["met"] for row in rows] == [True, False, None]
    assert rows[1]["note"] == "MISSED, 5.00× over (the module said met=True)"
    assert rows[2]["note"] == "malformed target"
    assert target_rows("login", {"benchmark": "login"})[0]["note"] == "no targets"
    assert target_rows("login", None)[0]["note"] == "no results"

    table = targets_table(rows)
    assert "fast enough" in table and "met, 2.00× under" in table
    assert table.splitlines()[-1] == "1 of 2 targets met; 1 row(s) without a value"
    assert "**MISSED, 5.00× over (the module said met=True)**" in markdown_table(rows)


def test_results_left_from_an_earlier_run_are_not_read_as_this_runs(tmp_path: Path) -> None:
    path = tmp_path / "login-latest.json"
    assert read_results(path, written_after=0.0) == (None, "no results written")
    path.write_text(json.dumps({"targets": []}))
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert read_results(path, written_after=time.time() - 60) == (None, "no results written by this run")
    assert read_results(path, written_after=old - 1) == ({"targets": []}, None)
    path.write_text("{not json")
    data, problem = read_results(path, written_after=0.0)
    assert data is None and problem is not None and problem.startswith("unreadable results")


def test_a_chart_is_a_png_with_a_panel_per_unit_and_nothing_without_points(tmp_path: Path) -> None:
    series = {
        "letters (sqlite)": {"unit": "applications/s", "points": [[1, 10.0], [2, 12.0], [3, 11.0]]},
        "letter latency p99 (sqlite)": {"unit": "ms", "points": [[1, 900.0], [2, "bad"], [3, 950.0]]},
        "suite RSS (sqlite)": {"unit": "MB", "points": [[0.5, 1280.0], [1.0, 1290.0]]},
        "broken": "not a series",
    }
    path = write_chart(series, tmp_path / "charts" / "e2e.png", title="e2e")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    assert path.stat().st_size < 300_000
    assert write_chart({"empty": {"unit": "ms", "points": []}}, tmp_path / "none.png", title="x") is None
    assert not (tmp_path / "none.png").exists()


def test_results_are_written_whole_with_each_point_on_one_line(tmp_path: Path) -> None:
    results = {
        "series": {"x": {"unit": "ms", "points": [[1.0, 2.5], [2.0, -3e-05], [3, None]]}},
        "n": [1, 2, 3],
    }
    path = tmp_path / "results" / "e2e-latest.json"
    write_json(results, path)
    text = path.read_text()
    assert json.loads(text) == results
    assert "[1.0, 2.5]" in text and "[2.0, -3e-05]" in text and "[3, null]" in text
    assert not list(path.parent.glob("*.tmp"))


def test_every_module_of_make_bench_exists() -> None:
    bench_dir = Path(__file__).resolve().parents[2] / "bench"
    for module in MODULES:
        assert (bench_dir / f"{module.name}.py").is_file(), module.name
