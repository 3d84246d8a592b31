"""The benchmark's one command runs end to end (``--quick``) and prints its table.

Speed is measured by ``benchmarks/run.py``, never asserted here: a test that fails on
a busy machine proves nothing. What is checked is that every section ran and printed,
and correctness the benchmark observes on the way (no event lost at scale). Without
the official SDK's virtualenv (``.venv-compat``, built by the compat tests) the quick
run leaves the official rows out and says so; the test then checks that message,
unless ``VS_COMPAT_REQUIRED`` is set (CI): then it builds the virtualenv itself and
requires the official rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _official_available() -> bool:
    venv = Path(os.environ.get("VS_COMPAT_VENV") or REPO / ".venv-compat")
    return (venv / "bin" / "python").exists() and (venv / ".vectorshift-compat.json").exists()


@pytest.fixture(scope="module")
def official() -> bool:
    """Whether the quick run will have the official SDK's rows.

    With ``VS_COMPAT_REQUIRED`` (CI) they are required: the virtualenv is made here,
    with the compat tests' own builder, whichever test file ran first (or none did);
    if it cannot be made, that is a failure, not a quiet "NOT MEASURED".
    """
    if os.environ.get("VS_COMPAT_REQUIRED", "") not in ("", "0"):
        from compat.conftest import CompatUnavailable, ensure_official_sdk

        try:
            ensure_official_sdk()
        except CompatUnavailable as exc:
            pytest.fail(f"VS_COMPAT_REQUIRED is set, but the official SDK is missing: {exc}")
        assert _official_available()
        return True
    return _official_available()


def _run_script(script: str, *args: str) -> str:
    """Run one benchmark script like a user would; its output, once it exited 0."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=str(REPO),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.timeout(120)
def test_quick_benchmark_prints_the_table(tmp_path: Path, official: bool) -> None:
    results = tmp_path / "results.json"
    out = _run_script("run.py", "--quick", "--json", str(results))
    for heading in (
        "vectorshift_sync benchmark",
        "machine: ",
        "Throughput: ",
        "Latency: ",
        "Connect: ",
        "Scale (ours): ",
    ):
        assert heading in out, out
    for row in ("(c) ours listen()", "(d) ours callbacks", "floor", "ours listen()"):
        assert row in out, out
    assert "failed" not in out.lower(), out
    assert re.search(r"events: [\d,]+ of [\d,]+, lost 0$", out, re.M), out
    assert "Targets (issues 10 and 11)" in out, out
    assert re.search(r"(MET|NOT MET) +<= 32 library threads whatever N", out), out
    assert re.search(r"callbacks / listen: \d+\.\d\dx", out), out
    # The paced run also gives the client's CPU per event (one wake-up per event).
    assert "CPU us/ev" in out, out
    assert re.search(r"with the I/O thread already running .* \d+\.\d\d ms", out), out
    # Connect over wss:// as production does: the CA in the default store, no sslopt.
    assert re.search(r"^  ours +\d+\.\d\d ms", out, re.M), out
    assert "over wss://, the CA in the default store" in out, out
    assert "resuming an existing session (both wait for the connect_session ack)" in out, out
    assert re.search(r"^  ours listen\(\) .* \d+\.\d +\S+$", out, re.M), out
    paced = json.loads(results.read_text())["latency"]["sync:listen"]
    assert all(run["cpu_us_per_event"] > 0 for run in paced), paced
    if official:
        assert "official: NOT MEASURED" not in out, out
        assert "(b) official SDK listen()" in out, out
        assert re.search(r"^  official SDK +\d+\.\d\d ms", out, re.M), out
        assert re.search(r"\(c\) ours listen\(\) +[\d,]+ +\S* +\d+\.\d\dx", out), out
    else:
        assert "official: NOT MEASURED" in out, out
    assert results.exists()


@pytest.mark.timeout(120)
def test_breakdown_times_every_stage() -> None:
    """``breakdown.py`` calls session internals; it must say so loudly if they move
    (it once printed ``n/a`` for a renamed method and nobody noticed)."""
    out = _run_script("breakdown.py")
    assert "n/a" not in out, out
    stages = (
        "framing: Connection.on_readable (fast path)",
        "websockets' Protocol alone",
        "JSON decode",
        "event build",
        "read_frame",
        "Link.on_messages",
        "route + fan-out",
        "receive cost on the I/O thread",
        "next(listener)",
    )
    for stage in stages:
        assert re.search(re.escape(stage) + r".* +\d+\.\d\d$", out, re.M), out
    assert re.search(r"= [\d,]+ events/s on one core", out), out


@pytest.mark.timeout(120)
def test_latency_stages_split_a_paced_stream() -> None:
    out = _run_script("latency_stages.py", "--n", "300")
    for stage in ("wake-up", "read + framing", "parse + route", "to the consumer", "total"):
        assert re.search(re.escape(stage) + r".*( +\d+\.\d){3}$", out, re.M), out
    # Not a speed check: every delta is read and routed on the one I/O thread (the
    # stages really wrapped the live path), never by the consumer.
    assert re.search(r"read on the I/O thread \(vectorshift-io\): 300 of 300$", out, re.M), out


def _compat_required() -> bool:
    return os.environ.get("VS_COMPAT_REQUIRED", "") not in ("", "0")


@pytest.mark.timeout(150)
def test_quick_scale_run_covers_every_section(tmp_path: Path) -> None:
    """``scale.py --quick`` runs the web-server-shaped scenario, the ``wss://`` rows
    and the chaos run, and what it observes on the way is correct: at this size no
    delta is lost, every turn ends, nothing unexplained (ERROR, SESSION_CONNECTED)
    happens, and in the chaos run every cut session's reply arrives exactly once."""
    results = tmp_path / "scale.json"
    out = _run_script(
        "scale.py", "--quick", "--reps", "2", "--tls", "--chaos", "--json", str(results)
    )
    for heading in (
        "## vectorshift_sync scale benchmark",
        "### Scale",
        "### Scale over 2 interleaved repetitions",
        "### Where our client's CPU went",
        "### wss://",
        "### Chaos",
    ):
        assert heading in out, out
    assert "FAILED" not in out, out
    rows = json.loads(results.read_text())["rows"]
    scale_reps = sorted(row["rep"] for row in rows if row["section"] == "scale")
    assert scale_reps == sorted([0, 1] * (len(scale_reps) // 2)) and scale_reps, out
    assert re.search(r"^\| 20 \| ours \| listen \| 2 \| \d+\.\d\d \(", out, re.M), out
    ours = [row for row in rows if row["side"] == "ours"]
    seen = {(row["section"], row["form"], row["n"]) for row in ours}
    for section, n in (("scale", 20), ("wss", 1), ("wss", 20), ("chaos", 20)):
        for form in ("listen", "callbacks"):
            assert (section, form, n) in seen, out
    for row in ours:
        what = f"{row['section']} {row['form']} N={row['n']}: {row}"
        assert "error" not in row, what
        assert row["unfinished"] == 0 and row["deltas_lost"] == 0, what
        assert row["extra_events"] == 0, what
        assert row["completes_lost"] == 0 and row["completes_repeated"] == 0, what
        assert row["events"] >= row["deltas_expected"] > 0, what
        # The CPU split read each thread's own clock: the I/O thread read every
        # delta, and the consumers (listen) or the callback pool (callbacks) took them.
        split = row["cpu_split"]
        assert split["io"] > 0 and split["main"] > 0, what
        if row["form"] == "listen":
            assert split["consumers"] > 0 and split["callbacks"] == 0, what
        else:
            assert split["callbacks"] > 0 and split["consumers"] == 0, what
        if row["section"] == "chaos":
            assert row["cut"] == 4 and row["cut_reconnected"] == 4, what
            assert row["cut_recovered_twice"] == 0, what
    assert re.search(r"^\| 20 \| ours \| listen \| \d+\.\d\d \| [\d,]+ \| \d", out, re.M), out
    assert re.search(r"^\| scale \| 20 \| callbacks \| \d+\.\d \| - \| \d+\.\d \|", out, re.M), out
    if _official_available() or _compat_required():
        official = [row for row in rows if row["side"] == "official" and "error" not in row]
        assert re.search(r"^\| 20 \| ours \| callbacks \| 2 \|.*\| \d+\.\d\dx \|", out, re.M)
        assert {(row["section"], row["n"]) for row in official} == {
            ("scale", 20),
            ("wss", 1),
            ("wss", 20),
            ("chaos", 20),
        }, out
        assert all(row["deltas_lost"] == 0 for row in official if row["section"] != "chaos"), out
        assert re.search(r"^\| 20 \| ours \| listen \|.*\| \d+\.\d\dx \| \d+\.\d\dx \|", out, re.M)
    else:
        assert "official: NOT MEASURED" in out, out
