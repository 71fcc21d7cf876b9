"""The load test's pieces that can break silently: the locustfile loads, the photos are made alike.

The load test itself (`make loadtest`) is too long for the suite; these checks are cheap.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.load import run, seed

ROOT = Path(__file__).resolve().parents[1]


def test_locust_loads_the_locustfile_and_finds_both_kinds_of_user():
    # A subprocess: importing locust monkey-patches the standard library (gevent).
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "locust"), "-f", str(ROOT / "tests/load/locustfile.py"), "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert {"Attendee", "Visitor"} <= set(listed.stdout.split())


def test_generated_photos_are_deterministic_and_never_use_a_selfie(tmp_path):
    first = seed.generate(tmp_path / "a", 6, seed=3)
    second = seed.generate(tmp_path / "b", 6, seed=3)
    assert first == second and len(first) == 6
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        with Image.open(tmp_path / "a" / name) as image:
            assert max(image.size) <= seed.MAX_SIDE
    assert all(first.values())  # everyone labelled
    assert not set(seed.SELFIES) & set(seed.SOURCES)
    # A second call with the same seed reuses the files instead of making them again.
    assert seed.generate(tmp_path / "a", 6, seed=3) == first


def test_run_time_and_scenarios_parse_like_locust():
    assert run.seconds("10m") == 600
    assert run.seconds("1h2m3s") == 3723
    assert run.seconds("90") == 90
    assert run.Scenario.parse("100:10:3m") == run.Scenario(100, 10.0, "3m")
    with pytest.raises(Exception, match="USERS:SPAWN_RATE:RUN_TIME"):
        run.Scenario.parse("100:10")


def test_the_user_count_where_p95_first_passes_a_second_is_read_from_locust_history(tmp_path):
    header = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,95%\n"
    rows = [
        "1,10,,Aggregated,5,0,20,200\n",
        "2,40,,Aggregated,20,0,60,N/A\n",
        "3,60,,Aggregated,30,0,300,1100\n",
        "4,80,,Aggregated,30,0,500,1500\n",
    ]
    (tmp_path / "locust_stats_history.csv").write_text(header + "".join(rows))
    assert run.first_p95_over(tmp_path / "locust", 1000) == {"users": 60, "p95_ms": 1100.0, "timestamp": "3"}
    assert run.first_p95_over(tmp_path / "locust", 2000) is None


def test_results_are_not_committed():
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "tests/load/results/x/report.html"], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0
