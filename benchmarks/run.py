"""One command for the whole benchmark: ``python benchmarks/run.py [--quick]``.

Starts the benchmark engine (``engine.py``) in a process of its own, one long-lived
driver for our library and the raw floor (``sync_driver.py``, this interpreter) and
one for the official async SDK (``official_driver.py``, run by the official SDK's
own virtualenv, ``.venv-compat``), then measures side by side: every repetition runs
every variant once, in a rotated order, and the table shows medians.

* Throughput: events/s reaching the consumer for a flood of N ``message_delta``
  frames, first delta to last (the engine writes the whole flood at once, so the
  consumer is what is measured).
* Latency: server send to consumer's hands at a paced rate (CLOCK_MONOTONIC is one
  clock for every process on Linux), and the client's CPU per event at that pace:
  with one event per wake-up, that is what a wake-up costs, whoever the client is.
* Connect: ``create_session()`` + ``connect()``, warm; then again over ``wss://``
  the way production connects: the server's certificate is signed by a CA in the
  default store (a ``trustme`` CA added to the system's bundle, ``SSL_CERT_FILE``),
  and neither side is given TLS settings.
* Scale: many sessions streaming at once in one fresh process (ours): threads, RSS,
  events lost with unbounded listeners.

``--quick`` is a smoke run (seconds, not minutes). Without ``.venv-compat`` the
official rows are left out in ``--quick`` mode; the full mode builds the virtualenv
first (as the compat tests do) and leaves them out only if that is impossible.
Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OFFICIAL_VERSION = "0.1.15"

THROUGHPUT_VARIANTS = [
    ("raw_default", "sync"),
    ("raw", "sync"),
    ("connection", "sync"),
    ("listen", "official"),
    ("listen", "sync"),
    ("callbacks", "sync"),
]
LATENCY_VARIANTS = [("listen", "official"), ("listen", "sync"), ("callbacks", "sync")]


class Driver:
    """A driver process: one JSON command per line in, one JSON result per line out."""

    def __init__(self, name: str, argv: List[str], env: Dict[str, str], log: IO[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            text=True,
            cwd=str(REPO),
        )

    def ask(self, command: Dict[str, Any], timeout: float = 180.0) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = _readline(self.proc.stdout, timeout)
        if not line:
            raise RuntimeError(f"{self.name} driver exited (code {self.proc.poll()})")
        result: Dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _readline(stream: IO[str], timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no answer within {timeout:.0f}s")
    return stream.readline()


def _clean_env(extra: Dict[str, str]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VECTORSHIFT_")}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env.pop(name, None)  # loopback only
    env.update(extra)
    return env


# --- the official SDK's interpreter ----------------------------------------------------


def official_python(build: bool) -> Tuple[Optional[Path], str]:
    """The compat virtualenv's interpreter, or None and why not."""
    venv = Path(os.environ.get("VS_COMPAT_VENV") or REPO / ".venv-compat")
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if _sdk_version(python) == OFFICIAL_VERSION:
        return python, ""
    if not build:
        return None, f"no vectorshift=={OFFICIAL_VERSION} in {venv} (a full run builds it)"
    try:  # the compat tests' own builder: same virtualenv, same marker, same lock
        sys.path.insert(0, str(REPO))
        from tests.compat.conftest import ensure_official_sdk
    except Exception as exc:  # pytest not installed, say
        return None, f"cannot build {venv}: {exc}"
    print(f"building {venv} (vectorshift=={OFFICIAL_VERSION}) ...", file=sys.stderr, flush=True)
    try:
        return ensure_official_sdk(), ""
    except Exception as exc:
        return None, f"cannot build {venv}: {exc}"


def _shown(path: Path) -> str:
    """A path relative to the repository when it is inside it (tables get pasted)."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(REPO))
    except ValueError:
        return str(path)


def _sdk_version(python: Path) -> Optional[str]:
    if not python.exists():
        return None
    probe = "import importlib.metadata as m, vectorshift; print(m.version('vectorshift'))"
    env = _clean_env({})
    env.pop("PYTHONPATH", None)
    try:
        out = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, env=env
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --- the run ---------------------------------------------------------------------------


def start_engine(
    log: IO[str], extra: Sequence[str] = ()
) -> Tuple[subprocess.Popen, Dict[str, Any]]:  # type: ignore[type-arg]
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "engine.py"), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=str(REPO),
    )
    assert proc.stdout is not None
    line = _readline(proc.stdout, 30.0)
    if not line:
        raise RuntimeError(f"the benchmark engine did not start (code {proc.poll()})")
    return proc, json.loads(line)


def stop_engine(proc: "subprocess.Popen[str]") -> None:
    if proc.stdin is not None:
        proc.stdin.close()  # engine.py stops when its stdin closes
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_drivers(env: Dict[str, str], python: Optional[Path], log: IO[str]) -> Dict[str, Driver]:
    """Ours (this interpreter) and, with ``python``, the official SDK's."""
    drivers = {"sync": Driver("sync", [sys.executable, str(HERE / "sync_driver.py")], env, log)}
    if python is not None:
        official_env = dict(env)
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
            official_env.pop(name, None)
        drivers["official"] = Driver(
            "official", [str(python), str(HERE / "official_driver.py")], official_env, log
        )
    return drivers


def make_tls(directory: str) -> Dict[str, str]:
    """A throwaway CA (``ca``) and a certificate for 127.0.0.1 (``cert``, ``key``)."""
    import trustme

    ca = trustme.CA()
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(paths["key"])
    with open(paths["cert"], "wb") as handle:
        for blob in server.cert_chain_pems:
            handle.write(blob.bytes())
    return paths


def system_bundle() -> Optional[str]:
    """The CA bundle a default TLS context loads on this machine, if it is a file."""
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            return path
    return None


def wss_connects(
    args: argparse.Namespace, python: Optional[Path], log: IO[str]
) -> Dict[str, Any]:
    """``connect_times`` over ``wss://`` with the engine's CA in the default store.

    Both sides get the same environment: ``SSL_CERT_FILE`` (OpenSSL's default store,
    read by websocket-client's and aiohttp's default contexts) and
    ``REQUESTS_CA_BUNDLE`` (the HTTP fetch of the agent) name the system's bundle with
    the CA appended, so a context costs what it costs in production."""
    with tempfile.TemporaryDirectory() as directory:
        tls = make_tls(directory)
        system = system_bundle()
        bundle = os.path.join(directory, "bundle.pem")
        with open(bundle, "wb") as out:
            for path in ([system] if system else []) + [tls["ca"]]:
                with open(path, "rb") as part:
                    out.write(part.read().rstrip(b"\n") + b"\n")
        engine, info = start_engine(log, ["--cert", tls["cert"], "--key", tls["key"]])
        env = _clean_env(
            {
                **info["env"],
                "VS_BENCH_AGENTS": json.dumps(info["agents"]),
                "SSL_CERT_FILE": bundle,
                "REQUESTS_CA_BUNDLE": bundle,
            }
        )
        for name in ("SSL_CERT_DIR", "WEBSOCKET_CLIENT_CA_BUNDLE", "CURL_CA_BUNDLE"):
            env.pop(name, None)
        found: Dict[str, Any] = {"bundle": system or "(none: the CA alone)"}
        drivers: Dict[str, Driver] = {}
        try:
            drivers = start_drivers(env, python, log)
            for rep in range(args.reps):
                for side in rotated(sorted(drivers), rep):
                    result = drivers[side].ask({"op": "connect", "count": args.connects})
                    if "error" in result:
                        print(f"  connect_wss {side}: {result['error']}", file=sys.stderr)
                    found.setdefault(side, []).append(result)
        finally:
            for driver in drivers.values():
                driver.close()
            stop_engine(engine)
    return found


def rotated(items: Sequence[Any], k: int) -> List[Any]:
    if not items:
        return []
    k %= len(items)
    return list(items[k:]) + list(items[:k])


def run(args: argparse.Namespace) -> Dict[str, Any]:
    logs = open(args.log, "w") if args.log else open(os.devnull, "w")
    python, why_not = (
        (None, "--no-official") if args.no_official else official_python(build=not args.quick)
    )
    results: Dict[str, Any] = {
        "throughput": {},
        "latency": {},
        "connect": {},
        "date": _now(),
        "official": None if python is None else _shown(python),
        "official_missing": why_not,
    }
    if hasattr(os, "getloadavg"):  # other jobs on the machine skew the figures: say so
        results["load"] = [os.getloadavg()[0], None]
    engine, info = start_engine(logs)
    env = _clean_env({**info["env"], "VS_BENCH_AGENTS": json.dumps(info["agents"])})
    drivers: Dict[str, Driver] = {}
    try:
        drivers = start_drivers(env, python, logs)
        only = set(args.only.split(",")) if args.only else None
        tput = [v for v in THROUGHPUT_VARIANTS if v[1] in drivers]
        lat = [v for v in LATENCY_VARIANTS if v[1] in drivers]
        if only is not None:
            tput = tput if "throughput" in only else []
            lat = lat if "latency" in only else []

        def record(section: str, key: str, result: Dict[str, Any]) -> None:
            if "error" in result:
                print(f"  {section} {key}: {result['error']}", file=sys.stderr, flush=True)
            results[section].setdefault(key, []).append(result)

        # Warm-up: imports, first connections, JIT-free but cache-warm code paths.
        for variant, side in tput:
            drivers[side].ask({"op": "throughput", "variant": variant, "n": min(args.n, 2000)})
        for rep in range(args.reps):
            print(f"repetition {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
            for variant, side in rotated(tput, rep):
                command = {"op": "throughput", "variant": variant, "n": args.n}
                record("throughput", f"{side}:{variant}", drivers[side].ask(command))
            for variant, side in rotated(lat, rep):
                command = {
                    "op": "latency",
                    "variant": variant,
                    "n": args.latency_n,
                    "rate": args.rate,
                }
                record("latency", f"{side}:{variant}", drivers[side].ask(command))
            for side in rotated(sorted(drivers), rep) if only is None or "connect" in only else []:
                command = {"op": "connect", "count": args.connects}
                record("connect", side, drivers[side].ask(command))
        for driver in drivers.values():
            driver.close()
        drivers.clear()
        if only is None or "connect" in only:
            results["connect_wss"] = wss_connects(args, python, logs)
        if "load" in results:  # before the scale test's sessions count as load
            results["load"][1] = os.getloadavg()[0]
        if only is not None and "scale" not in only:
            return results
        print(f"scale: {args.sessions} sessions", file=sys.stderr, flush=True)
        scale_cmd = {"sessions": args.sessions, "n": args.scale_n, "rate": args.scale_rate}
        try:
            proc = subprocess.run(
                [sys.executable, str(HERE / "sync_driver.py"), "scale", json.dumps(scale_cmd)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=logs,
                text=True,
                timeout=300,
                cwd=str(REPO),
            )
        except subprocess.TimeoutExpired:
            results["scale"] = {"error": "scale run did not finish within 300 s"}
        else:
            lines = proc.stdout.strip().splitlines()
            results["scale"] = (
                json.loads(lines[-1])
                if proc.returncode == 0 and lines
                else {"error": f"scale run failed (exit {proc.returncode})"}
            )
    finally:
        for driver in drivers.values():
            driver.close()
        stop_engine(engine)
        logs.close()
    return results


# --- the table -----------------------------------------------------------------------


def _median(runs: List[Dict[str, Any]], field: str) -> Optional[float]:
    values = [r[field] for r in runs if r.get(field) is not None and "error" not in r]
    return statistics.median(values) if values else None


def _spread(runs: List[Dict[str, Any]], field: str) -> str:
    values = [r[field] for r in runs if r.get(field) is not None and "error" not in r]
    if len(values) < 2:
        return ""
    return f"{min(values):,.0f}-{max(values):,.0f}"


def _paired(
    ours: List[Dict[str, Any]], theirs: List[Dict[str, Any]], field: str
) -> Optional[float]:
    """Median over repetitions of ours/theirs measured in the same repetition: robust
    to load that drifts between repetitions (both sides of a pair see the same)."""
    ratios = [
        a[field] / b[field]
        for a, b in zip(ours, theirs)
        if a.get(field) and b.get(field) and "error" not in a and "error" not in b
    ]
    return statistics.median(ratios) if ratios else None


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu})"


def versions() -> str:
    import websocket
    import websockets

    return (
        f"Python {platform.python_version()}, websockets {websockets.__version__}, "
        f"websocket-client {websocket.__version__}"
    )


def table(results: Dict[str, Any], args: argparse.Namespace) -> str:
    now = results.get("date") or _now()
    out: List[str] = []
    add = out.append
    add(f"vectorshift_sync benchmark, {now}{' (--quick)' if args.quick else ''}")
    load = results.get("load")
    add(
        f"machine: {machine()}; nproc {os.cpu_count()}"
        + (f"; load average {load[0]:.2f} at start, {load[1]:.2f} before scale" if load else "")
    )
    add(f"ours: {versions()}")
    if results["official"]:
        add(f"official: vectorshift {OFFICIAL_VERSION} (aiohttp) in {results['official']}")
    else:
        add(f"official: NOT MEASURED ({results['official_missing']})")
    add(
        f"{args.reps} interleaved repetitions, medians; engine on 127.0.0.1 in its own process; "
        "listeners unbounded (maxsize=0) on both sides"
    )
    targets: List[str] = []
    for section in (_throughput, _latency, _connect, _scale):
        lines = section(results, args, targets)
        if lines:
            add("")
            out.extend(lines)
    if targets:
        add("")
        add("Targets (issues 10 and 11), as measured in this run:")
        out.extend(f"  {line}" for line in targets)
    return "\n".join(out)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _verdict(ok: Optional[bool]) -> str:
    return "n/a " if ok is None else "MET " if ok else "NOT MET"


def _throughput(results: Dict[str, Any], args: argparse.Namespace, targets: List[str]) -> List[str]:
    tp = results["throughput"]
    if not tp:
        return []
    official = _median(tp.get("official:listen", []), "rate")
    floor = _median(tp.get("sync:raw", []), "rate")
    listen = _median(tp.get("sync:listen", []), "rate")
    callbacks = _median(tp.get("sync:callbacks", []), "rate")
    rows = [
        ("(a) raw websocket-client recv()+json.loads, defaults", "sync:raw_default"),
        ("(a) raw websocket-client, skip_utf8_validation: floor", "sync:raw"),
        ("ours, connection only: I/O thread+framing+json.loads", "sync:connection"),
        ("(b) official SDK listen()", "official:listen"),
        ("(c) ours listen()", "sync:listen"),
        ("(d) ours callbacks, session.on()", "sync:callbacks"),
    ]
    lines = [
        f"Throughput: {args.n:,} message_delta, events/s at the consumer (send to last event)",
        f"  {'variant':54} {'median':>9} {'min-max':>17} {'/official':>9} {'paired':>7} "
        f"{'/floor':>7}",
    ]
    official_runs = tp.get("official:listen", [])
    for label, key in rows:
        runs = tp.get(key)
        if not runs:
            continue
        value = _median(runs, "rate")
        shown = f"{value:,.0f}" if value else "failed"
        paired = _paired(runs, official_runs, "rate")
        lines.append(
            f"  {label:54} {shown:>9} {_spread(runs, 'rate'):>17} "
            f"{_ratio(value, official):>9} {_f(paired, 2):>6}x {_ratio(value, floor):>7}"
        )
    paired_cb = _paired(tp.get("sync:callbacks", []), tp.get("sync:listen", []), "rate")
    lines.append(f"  callbacks / listen: {_ratio(callbacks, listen)} (paired {_f(paired_cb, 2)}x)")
    lines.append("  /official: ratio of the medians; paired: median over repetitions of the ratio")
    lines.append("  within one repetition, where both ran back to back under the same load")
    paired_listen = _paired(tp.get("sync:listen", []), official_runs, "rate")
    if official and listen:
        ratio = listen / official
        stretch = " (stretch 3x: " + ("met)" if ratio >= 3.0 else "not met)")
        targets.append(
            f"{_verdict(ratio >= 2.0)} listen() >= 2.0x official: {ratio:.2f}x "
            f"(paired {_f(paired_listen, 2)}x){stretch}"
        )
    if listen and callbacks:
        ratio = callbacks / listen
        targets.append(
            f"{_verdict(ratio >= 0.9)} callbacks >= 0.9x listen(): {ratio:.2f}x "
            f"(paired {_f(paired_cb, 2)}x)"
        )
    return lines


def _latency(results: Dict[str, Any], args: argparse.Namespace, targets: List[str]) -> List[str]:
    lt = results["latency"]
    if not lt:
        return []
    lines = [
        f"Latency: {args.latency_n:,} deltas at {args.rate:,.0f}/s, server send -> consumer, ms",
        f"  {'variant':54} {'p50':>9} {'p99':>9} {'max':>9} {'p99/official':>12} {'paired':>7}"
        f" {'CPU us/ev':>10} {'CPU/official':>12}",
    ]
    official_runs = lt.get("official:listen", [])
    official_p99 = _median(official_runs, "p99_ms")
    official_cpu = _median(official_runs, "cpu_us_per_event")
    for label, key in (
        ("official SDK listen()", "official:listen"),
        ("ours listen()", "sync:listen"),
        ("ours callbacks", "sync:callbacks"),
    ):
        runs = lt.get(key)
        if not runs:
            continue
        p50, p99 = _median(runs, "p50_ms"), _median(runs, "p99_ms")
        worst = _median(runs, "max_ms")
        paired = _paired(runs, official_runs, "p99_ms")
        cpu = _median(runs, "cpu_us_per_event")
        lines.append(
            f"  {label:54} {_f(p50, 3):>9} {_f(p99, 3):>9} {_f(worst, 2):>9} "
            f"{_ratio(p99, official_p99):>12} {_f(paired, 2):>6}x "
            f"{_f(cpu, 1):>10} {_ratio(cpu, official_cpu):>12}"
        )
        if key.startswith("sync:") and official_p99 and p99:
            targets.append(
                f"{_verdict(p99 <= 1.1 * official_p99)} p99 {label} <= 1.1x official: "
                f"{p99:.3f} vs {official_p99:.3f} ms (paired {_f(paired, 2)}x)"
            )
    return lines


def _connect(results: Dict[str, Any], args: argparse.Namespace, targets: List[str]) -> List[str]:
    cn = results["connect"]
    if not cn:
        return []
    official_c = _median(cn.get("official", []), "median_ms")
    ours_c = _median(cn.get("sync", []), "median_ms")
    lines = [
        f"Connect: create_session() + connect(), warm, median of {args.connects} per repetition"
    ]
    if official_c is not None:
        label = "official SDK (returns before the connect_session ack)"
        lines.append(f"  {label:54} {_f(official_c, 2):>9} ms")
    lines.append(
        f"  {'ours (waits for the connect_session ack)':54} {_f(ours_c, 2):>9} ms"
        f"  {_ratio(ours_c, official_c)} of official"
    )
    running = _median(cn.get("sync", []), "running_loop_median_ms")
    if running is not None:
        label = "  with the I/O thread already running (a session open)"
        lines.append(
            f"  {label:54} {_f(running, 2):>9} ms  {_ratio(running, official_c)} of official"
        )
    official_r = _median(cn.get("official", []), "resume_median_ms")
    ours_r = _median(cn.get("sync", []), "resume_median_ms")
    if ours_r is not None:
        lines.append("  resuming an existing session (both wait for the connect_session ack):")
        if official_r is not None:
            lines.append(f"  {'official SDK':54} {_f(official_r, 2):>9} ms")
        lines.append(
            f"  {'ours':54} {_f(ours_r, 2):>9} ms  {_ratio(ours_r, official_r)} of official"
        )
    if official_c and ours_c:
        ratio = ours_c / official_c
        like = f"; resuming, the same work on both sides: {ours_r / official_r:.2f}x" if (
            official_r and ours_r
        ) else ""
        targets.append(
            f"{_verdict(ratio <= 1.3)} connect <= 1.3x official: {ratio:.2f}x{like}"
        )
    wss = results.get("connect_wss")
    if wss:
        official_w = _median(wss.get("official", []), "median_ms")
        ours_w = _median(wss.get("sync", []), "median_ms")
        lines.append(
            "  over wss://, the CA in the default store (production's case), bundle "
            f"{wss['bundle']}:"
        )
        if official_w is not None:
            lines.append(f"  {'official SDK':54} {_f(official_w, 2):>9} ms")
        lines.append(
            f"  {'ours':54} {_f(ours_w, 2):>9} ms  {_ratio(ours_w, official_w)} of official"
        )
    return lines


def _scale(results: Dict[str, Any], args: argparse.Namespace, targets: List[str]) -> List[str]:
    if "scale" not in results:
        return []
    sc = results["scale"]
    lines = [
        f"Scale (ours): {args.sessions:,} sessions in one process, each streaming "
        f"{args.scale_n} deltas at {args.scale_rate:g}/s at once, listen(maxsize=0)"
    ]
    if "error" in sc:
        lines.append(f"  FAILED: {sc['error']}")
        return lines
    added = sc["threads_streaming"] - sc["threads_before"]
    lines += [
        f"  threads while streaming: {sc['threads_streaming']:,} ({added:+,} for "
        f"{sc['sessions']:,} sessions); before connecting: {sc['threads_before']}",
        f"  RSS: {sc['rss_base_mb']:.0f} MB before, {sc['rss_idle_mb']:.0f} MB connected, "
        f"{sc['rss_streaming_mb']:.0f} MB streaming, {sc['rss_peak_mb']:.0f} MB peak",
        f"  events: {sc['received']:,} of {sc['expected']:,}, lost {sc['lost']:,}",
        f"  time: connect all {sc['connect_s']:.1f} s; stream all {sc['stream_s']:.1f} s "
        f"(the engine paces {args.scale_n / args.scale_rate:.1f} s), client CPU "
        f"{sc.get('cpu_s', 0):.1f} s = {sc.get('cpu_us_per_event', 0):.0f} us/event",
    ]
    targets.append(
        f"{_verdict(added <= 32)} <= 32 library threads whatever N: "
        f"{added:+,} threads for {sc['sessions']:,} sessions"
    )
    targets.append(f"{_verdict(sc['rss_peak_mb'] < 200)} RSS < 200 MB: {sc['rss_peak_mb']:.0f} MB")
    targets.append(f"{_verdict(sc['lost'] == 0)} 0 events lost: {sc['lost']:,}")
    return lines


def _f(value: Optional[float], digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (7; quick 1)")
    parser.add_argument("--n", type=int, help="deltas per throughput run (20,000; quick 3,000)")
    parser.add_argument("--latency-n", type=int, help="deltas per latency run (6,000; quick 400)")
    parser.add_argument("--rate", type=float, default=2000.0, help="latency pace, events/s")
    parser.add_argument("--connects", type=int, help="connects per repetition (20; quick 5)")
    parser.add_argument("--sessions", type=int, help="scale: sessions (1,000; quick 50)")
    parser.add_argument("--scale-n", type=int, help="scale: deltas per session (100; quick 20)")
    parser.add_argument("--scale-rate", type=float, help="scale: deltas/s per session (20)")
    parser.add_argument("--no-official", action="store_true", help="leave the official SDK out")
    parser.add_argument(
        "--only", help="comma-separated sections: throughput,latency,connect,scale (all)"
    )
    parser.add_argument("--json", help="also write every measurement to this file")
    parser.add_argument("--log", help="drivers' and engine's stderr go here (default: discarded)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "reps": 1 if quick else 7,
        "n": 3000 if quick else 20000,
        "latency_n": 400 if quick else 6000,
        "connects": 5 if quick else 20,
        "sessions": 50 if quick else 1000,
        "scale_n": 20 if quick else 100,
        "scale_rate": 20.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    started = time.monotonic()
    results = run(args)
    text = table(results, args)
    print(text)
    print(f"(run took {time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
