"""``lsr bench ingest`` end to end on the bundled sample (a real lsr serve on loopback)."""

import json

import pytest

from lsr import sample_dataset
from lsr.eval.ingest_bench import bench_ingest
from lsr.service.cli import main

pytestmark = [pytest.mark.http, pytest.mark.slow]


def test_ingest_report_on_the_sample(capsys):
    report = bench_ingest(
        sample_dataset(), n_docs=300, batch_sizes=(20, 100), flush_threshold=120, idle_seconds=0.3
    )
    assert [r.batch_size for r in report.runs] == [20, 100]
    for run in report.runs:
        assert run.docs == 300 and run.first_docs_per_s > 0 and run.last_docs_per_s > 0
        assert run.idle_p99_ms > 0 and run.searches_during > 0
        assert run.bytes_written > run.bytes_ingested > 0  # the log holds every document
    assert set(report.deleted) == {"auto", "maxscore", "bmw"}
    assert all(d["ratio"] > 0 and d["expunged_ratio"] > 0 for d in report.deleted.values())
    assert report.store["bytes_per_doc"] > 0
    text = report.table()
    assert "write amp" in text and "50% deleted, auto" in text
    json.dumps(report.to_dict())


def test_bad_ingest_options_are_refused(capsys):
    assert main(["bench", "ingest", "--batch-sizes", "0"]) == 2
    assert "batch-sizes" in capsys.readouterr().err
