"""``bench.summary`` (what ``make bench`` writes to bench/LAST_RUN.md) over recorded results: no benchmark runs here.

``freshness_recorded.json`` is what ``python -m bench --only freshness`` wrote in the run that bench/README.md
reports (3 runs at a 15 s interval), its delays rounded to 10 ms and its temporary work directory left out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench.summary import main, summarize

RECORDED = Path(__file__).with_name("freshness_recorded.json")


def _results(tmp_path: Path, **changes) -> Path:
    doc = json.loads(RECORDED.read_text())
    doc.update(changes)
    (tmp_path / "freshness.json").write_text(json.dumps(doc))
    return tmp_path


def test_the_summary_carries_the_freshness_figures_beside_the_official_logic(tmp_path):
    text = summarize(_results(tmp_path), commit="test")
    assert "Freshness on real Petals servers (3 runs; both sides crawl every 15 s" in text
    assert "Ours within the target for every event: yes." in text
    assert "| join | 3.6 s (2.6, 3.6, 3.9) | 267.9 s (296.6, 12.6, 267.9) | 20 s |" in text
    assert "| crash (SIGKILL) | 9.6 s (9.6, 8.1, 13.6) | 108.6 s (108.6, 32.1, 112.7) | 20 s |" in text
    assert "freshness 18.3" in text  # the load when it wrote its results
    missing = next(line for line in text.splitlines() if line.startswith("- not in this run:"))
    assert "freshness" not in missing and "crawl" in missing


def test_an_event_shown_late_or_never_says_no(tmp_path):
    doc = json.loads(RECORDED.read_text())
    doc["results"]["crash (SIGKILL)"]["ours"] = {"runs": [9.6, None, 31.0], "median": 20.3, "max": 31.0, "missed": 1}
    text = summarize(_results(tmp_path, results=doc["results"]), commit="test")
    assert "Ours within the target for every event: **no**." in text
    assert "| crash (SIGKILL) | 20.3 s (9.6, —, 31.0), 1 not shown |" in text


def test_a_full_run_without_freshness_says_so_and_a_quick_one_does_not(tmp_path):
    crawl_only = tmp_path / "full"
    crawl_only.mkdir()
    (crawl_only / "scaling.json").write_text(json.dumps({"rows": []}))
    assert "freshness" in summarize(crawl_only, commit="test")  # "- not in this run: ..., freshness"
    (crawl_only / "scaling.json").write_text(json.dumps({"rows": [], "quick": True}))
    text = summarize(crawl_only, commit="test")
    assert "quick mode" in text and "freshness" not in text


def test_the_command_writes_the_file_make_bench_commits(tmp_path):
    (tmp_path / "results").mkdir()
    results = _results(tmp_path / "results")
    out = tmp_path / "LAST_RUN.md"
    assert main([str(results), "--out", str(out), "--commit", "abc1234"]) == 0
    assert "- commit: abc1234" in out.read_text() and "| leave (SIGINT) |" in out.read_text()
    shutil.rmtree(results)
    assert main([str(results)]) == 2  # not a directory of results: one line, exit 2
