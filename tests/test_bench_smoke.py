"""The benchmark suite on tiny sizes, so that it cannot rot (its figures mean nothing here)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_benchmark_runs_end_to_end_on_tiny_sizes(tmp_path):
    # When the whole suite runs with --quick into a scratch folder
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Then it wrote the table, with both systems and the peers, and the chart
    results = (tmp_path / "RESULTS.md").read_text()
    for expected in ("| measure | asyncq | Celery | ratio |", "drain", "latency p50",
                     "HTTP POST", "commands per task", "Dramatiq 2x8", "RQ, 2 SimpleWorkers"):
        assert expected in results, f"{expected!r} missing from:\n{results}"
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
