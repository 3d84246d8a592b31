"""Many sessions at once, shaped like a web server: ``python benchmarks/scale.py``.

    python benchmarks/scale.py [--quick] [--n 200,1000,2000] [--forms listen,callbacks]
                               [--reps 1] [--tls] [--chaos] [--timeout 120] [--json FILE]

Every row is one run in fresh processes: the benchmark engine (``engine.py``, its
``Burst`` agent) in one, the client in another, so threads, CPU and peak RSS are the
client's own. Ours (``scale_ours.py``, public API only, so it measures any version of
the library) connects N sessions, gives each ONE consumer thread doing
``for event in session.listen(maxsize=0)`` until its turn ends (``listen`` form) or a
``session.on()`` callback that sets a per-session event at the turn's end
(``callbacks`` form), then triggers every session's turn at once: each streams one
reply of ``--deltas`` deltas. The official async SDK (``scale_official.py``, run by
``.venv-compat``'s interpreter) runs the same scenario on one event loop, one task per
session. Per row:

* wall: from triggering the turns to the last turn's end;
* CPU/event: the client's user+sys CPU over that window / events delivered (every
  event the consumers saw, deltas and the rest);
* threads: the most seen during the window (sampled every 50 ms) minus the consumer
  threads and the main thread ("lib"), and in total;
* peak RSS: ``ru_maxrss`` of the client process;
* lost: deltas expected minus deltas delivered (sessions that were not cut);
* extra: ERROR and SESSION_CONNECTED events no fault caused (any ERROR, any
  SESSION_CONNECTED but the connect's own);
* unfinished: turns whose end the consumer never saw within ``--timeout``.

A second table splits ours' CPU by thread (the I/O thread, the consumer threads, the
callback pool, the main thread's sends, the rest), each read from the thread's own
CPU clock.

``--tls``: ``wss://`` rows (a ``trustme`` CA; ours passes ``sslopt={"ca_certs": ...}``,
the official SDK gets the CA through ``SSL_CERT_FILE``): one session streaming
``--tls-one-deltas`` deltas (throughput) and ``--tls-n`` sessions.
``--chaos``: ``--chaos-n`` sessions, every 5th cut mid-reply by the engine (aborted,
no close frame) while the reply completes in history; ours must end every turn and
recover each cut reply once (reconnect + history); the official SDK has no
reconnect and is reported as it fares.

The engine writes every turn's deltas from one thread, a delta per session in turn
(``engine.py``'s ``Writer``). It once gave each turn a thread of its own; with 2,000
sessions those 2,000 writers kept the engine's connection threads from its GIL for
over 15 s, so that links went silent (not even a pong) and ours, rightly, declared
them half-open: the run measured the engine's scheduling, not the clients.

``--idle-timeout S`` gives ours ``Session(idle_timeout=S)`` (default 15 s; the
official SDK gives a silent server about 45 s: aiohttp's 30 s heartbeat, then 15 s
for the pong). ``--idle-timeout 45`` compares the two at the same tolerance.

``--reps K`` runs every scale row K times, interleaved (official, ours listen, ours
callbacks, then again), and adds a table of medians and of paired ratios (ours over
the official row of the same repetition): on a shared VM one run's ratio can swing
by 2x, a median of paired ratios much less.

``--quick`` is a smoke run (a few sessions, seconds). A run that outlives its bound is
a row that says so, never a crash. The table is printed and, with ``--json``, written
with every figure. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from engine import raise_fd_limit  # noqa: E402
from run import (  # noqa: E402
    OFFICIAL_VERSION,
    _clean_env,
    _now,
    _readline,
    _shown,
    machine,
    make_tls,
    official_python,
    versions,
)

CUT_EVERY = 5  # chaos: every 5th session, 20%


def _load() -> Optional[float]:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


class Engine:
    """``engine.py`` in a process of its own, for one row."""

    def __init__(self, log: IO[str], tls: Optional[Tuple[str, str]]) -> None:
        argv = [sys.executable, str(HERE / "engine.py")]
        if tls is not None:
            argv += ["--cert", tls[0], "--key", tls[1]]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=str(REPO),
        )
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, 30.0)
        if not line:
            raise RuntimeError(f"the benchmark engine did not start (code {self.proc.poll()})")
        self.info: Dict[str, Any] = json.loads(line)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # engine.py stops when its stdin closes
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Runner:
    def __init__(self, args: argparse.Namespace, log: IO[str]) -> None:
        self.args = args
        self.log = log
        self.official: Optional[Path] = None
        self.tls: Optional[Dict[str, str]] = None

    def row(
        self,
        side: str,
        form: str,
        n: int,
        *,
        deltas: int,
        tls: bool = False,
        cut_every: int = 0,
        section: str = "scale",
    ) -> Dict[str, Any]:
        args = self.args
        label = f"{section} {side} {form} N={n}"
        print(f"  {label} ...", file=sys.stderr, flush=True)
        base = {"section": section, "side": side, "form": form, "n": n, "deltas": deltas}
        base["write"] = args.write
        base.update(tls=tls, cut_every=cut_every, load_before=_load())
        cfg = {
            "n": n,
            "form": form,
            "deltas": deltas,
            "timeout": args.timeout,
            "cut_every": cut_every,
            "connect_workers": args.connect_workers,
            "idle_timeout": args.idle_timeout,
            "write": args.write,
        }
        certs = None
        extra_env: Dict[str, str] = {}
        if tls:
            assert self.tls is not None
            certs = (self.tls["cert"], self.tls["key"])
            if side == "ours":
                cfg["ca"] = self.tls["ca"]
            else:
                extra_env["SSL_CERT_FILE"] = self.tls["ca"]
        engine = Engine(self.log, certs)
        try:
            info = engine.info
            env = _clean_env(
                {**info["env"], "VS_BENCH_AGENTS": json.dumps(info["agents"]), **extra_env}
            )
            for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "WEBSOCKET_CLIENT_CA_BUNDLE"):
                if name not in extra_env:
                    env.pop(name, None)
            if side == "ours":
                argv = [sys.executable, str(HERE / "scale_ours.py"), json.dumps(cfg)]
            else:
                assert self.official is not None
                argv = [str(self.official), str(HERE / "scale_official.py"), json.dumps(cfg)]
                for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
                    env.pop(name, None)
            result = self._client(argv, env, n)
        finally:
            engine.stop()
        base["load_after"] = _load()
        base.update(result)
        return base

    def _client(self, argv: List[str], env: Dict[str, str], n: int) -> Dict[str, Any]:
        """Run one client; its first line is the row, its second the teardown. Bounded:
        connect (60 s + 50 ms a session), the window (--timeout), then the teardown."""
        args = self.args
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=str(REPO),
            env=env,
        )
        assert proc.stdout is not None
        result: Dict[str, Any]
        try:
            budget = 60 + 0.05 * n + args.timeout + 30
            try:
                line = _readline(proc.stdout, budget)
            except TimeoutError:
                return {"error": f"no result within {budget:.0f} s (connect + window); killed"}
            if not line:
                return {"error": f"the client exited with code {proc.wait(10)} and no result"}
            result = json.loads(line)
            if "error" in result:
                return result
            try:
                line = _readline(proc.stdout, args.teardown_timeout)
                result.update(json.loads(line) if line else {"teardown_s": None})
            except TimeoutError:
                result["teardown_s"] = None
                result["teardown_note"] = f"disconnect took over {args.teardown_timeout:.0f} s"
            return result
        finally:
            if proc.poll() is None:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _sides(runner: Runner) -> List[str]:
    return (["official"] if runner.official is not None else []) + ["ours"]


def run(args: argparse.Namespace) -> Dict[str, Any]:
    required = os.environ.get("VS_COMPAT_REQUIRED", "") not in ("", "0")
    if args.no_official:
        python, why_not = None, "--no-official"
    else:
        python, why_not = official_python(build=not args.quick or required)
        if python is None and required:
            raise SystemExit(f"VS_COMPAT_REQUIRED is set, the official SDK is missing: {why_not}")
    results: Dict[str, Any] = {
        "date": _now(),
        "machine": machine(),
        "ours": versions(),
        "official": None if python is None else _shown(python),
        "official_missing": why_not,
        "fd_limit": raise_fd_limit(),  # inherited by the engine and the clients
        "load_start": _load(),
        "rows": [],
    }
    log = open(args.log, "w") if args.log else open(os.devnull, "w")
    runner = Runner(args, log)
    runner.official = python
    rows: List[Dict[str, Any]] = results["rows"]
    with tempfile.TemporaryDirectory(prefix="vs-scale-") as tmp, log:
        for n in args.n:
            if results["fd_limit"] < n + 256:
                rows.append(
                    {
                        "section": "scale",
                        "n": n,
                        "side": "-",
                        "form": "-",
                        "error": f"open-files limit {results['fd_limit']} < {n} + 256",
                    }
                )
                continue
            for repetition in range(args.reps):  # interleaved: a load swing hits every side
                for side in _sides(runner):
                    for form in args.forms if side == "ours" else ["listen"]:
                        row = runner.row(side, form, n, deltas=args.deltas)
                        row["rep"] = repetition
                        rows.append(row)
        if args.tls:
            runner.tls = make_tls(tmp)
            for n, deltas in ((1, args.tls_one_deltas), (args.tls_n, args.deltas)):
                for side in _sides(runner):
                    for form in args.forms if side == "ours" else ["listen"]:
                        rows.append(
                            runner.row(side, form, n, deltas=deltas, tls=True, section="wss")
                        )
        if args.chaos:
            for side in _sides(runner):
                for form in args.forms if side == "ours" else ["listen"]:
                    rows.append(
                        runner.row(
                            side,
                            form,
                            args.chaos_n,
                            deltas=args.deltas,
                            cut_every=CUT_EVERY,
                            section="chaos",
                        )
                    )
    results["load_end"] = _load()
    return results


# --- the table -----------------------------------------------------------------------


def _f(value: Optional[float], digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def _official_for(rows: List[Dict[str, Any]], row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    for other in rows:
        if (
            other["side"] == "official"
            and other["section"] == row["section"]
            and other["n"] == row["n"]
            and other.get("deltas") == row.get("deltas")
            and other.get("rep") == row.get("rep")  # the same repetition: paired
            and "error" not in other
        ):
            return other
    return None


def _ratio(ours: Optional[float], theirs: Optional[float]) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def _wall(row: Dict[str, Any]) -> str:
    if row.get("unfinished"):
        return f"> {row['window_s']:.1f}" if row.get("timed_out") else _f(row.get("wall_s"), 2)
    return _f(row.get("wall_s"), 2)


def scale_table(rows: List[Dict[str, Any]], section: str) -> List[str]:
    picked = [r for r in rows if r["section"] == section]
    if not picked:
        return []
    out = [
        "| N | side | form | wall s | events/s | CPU µs/event | lib threads (total) "
        "| peak RSS MB | lost | extra | unfinished | wall /official | CPU /official | load |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: |",
    ]
    for row in picked:
        n = f"{row['n']:,}" + (f" ({row['deltas']:,} deltas)" if row["n"] == 1 else "")
        if "error" in row:
            out.append(
                f"| {n} | {row['side']} | {row['form']} | FAILED: {row['error']} "
                "| | | | | | | | | | |"
            )
            continue
        official = (_official_for(rows, row) if row["side"] == "ours" else None) or {}
        wall = row.get("wall_s")
        wall_ratio = "-" if row["unfinished"] else _ratio(wall, official.get("wall_s"))
        cpu_ratio = _ratio(row.get("cpu_us_per_event"), official.get("cpu_us_per_event"))
        rate = row["events"] / wall if wall else None
        load = row.get("load_before")
        out.append(
            f"| {n} | {row['side']} | {row['form']} | {_wall(row)} | {_f(rate)} "
            f"| {_f(row.get('cpu_us_per_event'), 1)} "
            f"| {row['library_threads']:,} ({row['threads_max']:,}) "
            f"| {_f(row['rss_peak_mb'])} | {row['deltas_lost']:,} | {row['extra_events']:,} "
            f"| {row['unfinished']:,} "
            f"| {wall_ratio} | {cpu_ratio} "
            f"| {_f(load, 2)} |"
        )
    return out


def summary_table(rows: List[Dict[str, Any]]) -> List[str]:
    """With ``--reps``: per N, side and form, the medians over the repetitions and the
    median of the paired ratios (ours over the official row of the same repetition)."""
    picked = [r for r in rows if r["section"] == "scale" and "error" not in r]
    groups: Dict[Tuple[int, str, str], List[Dict[str, Any]]] = {}
    for row in picked:
        groups.setdefault((row["n"], row["side"], row["form"]), []).append(row)
    if not any(len(group) > 1 for group in groups.values()):
        return []
    out = [
        "| N | side | form | reps | wall s, median (range) | CPU µs/event, median (range) "
        "| wall /official, paired median | CPU /official, paired median "
        "| lost | extra | unfinished |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (n, side, form), group in groups.items():
        walls = [r["wall_s"] for r in group if r.get("wall_s") and not r["unfinished"]]
        cpus = [r["cpu_us_per_event"] for r in group if r.get("cpu_us_per_event")]
        wall_ratios: List[float] = []
        cpu_ratios: List[float] = []
        for row in group if side == "ours" else []:
            official = _official_for(rows, row)
            if official is None:
                continue
            if row.get("wall_s") and official.get("wall_s") and not row["unfinished"]:
                wall_ratios.append(row["wall_s"] / official["wall_s"])
            if row.get("cpu_us_per_event") and official.get("cpu_us_per_event"):
                cpu_ratios.append(row["cpu_us_per_event"] / official["cpu_us_per_event"])
        out.append(
            f"| {n:,} | {side} | {form} | {len(group)} | {_spread(walls, 2)} "
            f"| {_spread(cpus, 1)} "
            f"| {_f(_median(wall_ratios), 2, 'x')} | {_f(_median(cpu_ratios), 2, 'x')} "
            f"| {sum(r['deltas_lost'] for r in group):,} "
            f"| {sum(r['extra_events'] for r in group):,} "
            f"| {sum(r['unfinished'] for r in group):,} |"
        )
    return out


def cpu_table(rows: List[Dict[str, Any]]) -> List[str]:
    """Per scale row of ours: the window's CPU by thread (``scale_ours._cpu_split``)."""
    picked = [r for r in rows if r["side"] == "ours" and r.get("cpu_split")]
    if not picked:
        return []
    out = [
        "| section | N | form | I/O thread | consumer threads | callback pool | main thread "
        "| other | total | official total |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in picked:
        split = row["cpu_split"]
        official = _official_for(rows, row) or {}
        out.append(
            f"| {row['section']} | {row['n']:,} | {row['form']} | {_f(split['io'], 1)} "
            f"| {_f(split['consumers'] or None, 1)} | {_f(split['callbacks'] or None, 1)} "
            f"| {_f(split['main'], 1)} | {_f(split['other'], 1)} "
            f"| {_f(row.get('cpu_us_per_event'), 1)} "
            f"| {_f(official.get('cpu_us_per_event'), 1)} |"
        )
    return out


def _median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _spread(values: List[float], digits: int) -> str:
    if not values:
        return "-"
    return f"{_f(_median(values), digits)} ({_f(min(values), digits)}–{_f(max(values), digits)})"


def chaos_table(rows: List[Dict[str, Any]]) -> List[str]:
    picked = [r for r in rows if r["section"] == "chaos"]
    if not picked:
        return []
    out = [
        "| N | side | form | cut | turns ended | replies lost | cut recovered (twice) "
        "| cut reconnected | wall s | extra | deltas lost (uncut) | teardown s |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in picked:
        if "error" in row:
            out.append(
                f"| {row['n']:,} | {row['side']} | {row['form']} | FAILED: {row['error']} "
                "| | | | | | | | |"
            )
            continue
        ended = row["n"] - row["unfinished"]
        out.append(
            f"| {row['n']:,} | {row['side']} | {row['form']} | {row['cut']} "
            f"| {ended:,} of {row['n']:,} | {row['completes_lost']:,} "
            f"| {row['cut_recovered']} ({row['cut_recovered_twice']}) "
            f"| {row['cut_reconnected']} | {_wall(row)} | {row['extra_events']:,} "
            f"| {row['deltas_lost']:,} | {_f(row.get('teardown_s'), 1)} |"
        )
    return out


def table(results: Dict[str, Any], args: argparse.Namespace) -> str:
    rows = results["rows"]
    out = [
        f"## vectorshift_sync scale benchmark, {results['date']}"
        + (" (--quick)" if args.quick else ""),
        "",
        f"machine: {results['machine']}; load average {_f(results['load_start'], 2)} at start, "
        f"{_f(results.get('load_end'), 2)} at end (per row: the load column)",
        f"ours: {results['ours']}",
        (
            f"official: vectorshift {OFFICIAL_VERSION} (aiohttp, one event loop) in "
            f"{results['official']}"
            if results["official"]
            else f"official: NOT MEASURED ({results['official_missing']})"
        ),
        f"engine in its own process, a fresh one per row; each session streams one reply of "
        f"{args.deltas} deltas, all sessions at once, "
        + (
            "each delta written on its own (--write frames)"
            if args.write == "frames"
            else "a reply's deltas in one write (--write burst)"
        )
        + f"; window bound {args.timeout:.0f} s; connect: {args.connect_workers} at a time"
        + (
            f"; ours with idle_timeout={args.idle_timeout:g} s (the default is 15 s)"
            if args.idle_timeout is not None
            else ""
        ),
    ]
    sections = [
        (
            "### Scale: one consumer thread per session (listen) or session.on() (callbacks)",
            scale_table(rows, "scale"),
        ),
        (
            f"### Scale over {args.reps} interleaved repetitions (every row above is one)",
            summary_table(rows),
        ),
        (
            "### Where our client's CPU went (µs per delivered event, by thread; "
            "the official SDK's total beside it)",
            cpu_table(rows),
        ),
        ("### wss:// (trustme CA)", scale_table(rows, "wss")),
        (
            f"### Chaos: every {CUT_EVERY}th connection cut mid-reply (no close frame), "
            "the reply completing on the engine meanwhile"
            + ("; the official SDK has no reconnect" if results["official"] else ""),
            chaos_table(rows),
        ),
    ]
    for heading, lines in sections:
        if lines:
            out += ["", heading, ""] + lines
    teardowns = [
        f"{r['side']} {r['form']} N={r['n']:,} ({r['section']}): "
        + (r.get("teardown_note") or f"{r['teardown_s']:.1f} s")
        for r in rows
        if "error" not in r and (r.get("teardown_s") is None or r["teardown_s"] > 5)
    ]
    if teardowns:
        out += ["", "Slow disconnects (over 5 s for all sessions): " + "; ".join(teardowns)]
    return "\n".join(out)


def _ints(text: str) -> List[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--n", type=_ints, help="sessions per row (200,1000,2000[,5000])")
    parser.add_argument("--forms", help="ours: listen,callbacks (both)")
    parser.add_argument("--deltas", type=int, default=100, help="deltas per reply (100)")
    parser.add_argument(
        "--reps",
        type=int,
        default=1,
        help="repetitions of each scale row, interleaved; adds medians and paired ratios (1)",
    )
    parser.add_argument(
        "--write",
        choices=("frames", "burst"),
        default="frames",
        help="the engine writes each delta on its own, a delta per session in turn (frames, "
        "as a server streaming many replies does), or a reply's deltas in one write (burst)",
    )
    parser.add_argument("--tls", action="store_true", help="add the wss:// rows")
    parser.add_argument("--tls-n", type=int, help="wss:// many-sessions row (1,000; quick 20)")
    parser.add_argument(
        "--tls-one-deltas", type=int, help="wss:// one-session row's deltas (20,000; quick 2,000)"
    )
    parser.add_argument("--chaos", action="store_true", help="add the chaos rows")
    parser.add_argument("--chaos-n", type=int, help="chaos sessions (300; quick 20)")
    parser.add_argument("--timeout", type=float, help="bound of each window, s (120; quick 30)")
    parser.add_argument("--teardown-timeout", type=float, help="disconnect bound, s (60; quick 20)")
    parser.add_argument("--connect-workers", type=int, default=8, help="connects at a time (8)")
    parser.add_argument(
        "--idle-timeout",
        type=float,
        help="ours: Session(idle_timeout=...), seconds of server silence before a link is "
        "declared half-open (the library's default, 15, unless given; the official SDK "
        "gives a silent server about 45: aiohttp's 30 s heartbeat, then 15 s for the pong)",
    )
    parser.add_argument("--no-official", action="store_true", help="leave the official SDK out")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--log", help="engines' and clients' stderr go here (default: discarded)")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.n is None:
        args.n = [20] if quick else [200, 1000, 2000]
        if not quick and raise_fd_limit() >= 5000 + 256:
            args.n.append(5000)
    args.forms = (args.forms or "listen,callbacks").split(",")
    for form in args.forms:
        if form not in ("listen", "callbacks"):
            parser.error(f"unknown form {form!r}")
    defaults = {
        "tls_n": 20 if quick else 1000,
        "tls_one_deltas": 2000 if quick else 20000,
        "chaos_n": 20 if quick else 300,
        "timeout": 30.0 if quick else 120.0,
        "teardown_timeout": 20.0 if quick else 60.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    started = time.monotonic()
    results = run(args)
    text = table(results, args)
    print(text)
    print(f"\n(run took {time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
