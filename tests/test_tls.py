"""TLS: certificates are verified by default for ``wss://``; ``sslopt`` passes through.

The local engine serves HTTPS and ``wss://`` when given an ``ssl_context``; the
certificates are made at test time by ``trustme`` (a throwaway CA, self-signed) and,
for a self-signed server certificate, by ``cryptography`` (a dependency of trustme).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path
from typing import Iterator

import pytest
import requests
from conftest import scaled

from vectorshift_sync import Agent, ApiConnectionError, SessionEventType
from vectorshift_sync.session import Session, SessionConnectionError
from vectorshift_sync.testing import LocalEngine, TurnContext

trustme = pytest.importorskip("trustme")

pytestmark = pytest.mark.timeout(30)

E = SessionEventType
REPLY = "a reply that crossed TLS"


def _reply(ctx: TurnContext) -> None:
    ctx.stream(REPLY, chunk=5)


@pytest.fixture(autouse=True)
def _no_ca_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """websocket-client, requests and OpenSSL honour these; the machine's must not leak in
    (requests' REQUESTS_CA_BUNDLE even overrides a ``requests.Session``'s ``verify``)."""
    for name in (
        "WEBSOCKET_CLIENT_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def ca() -> "trustme.CA":
    return trustme.CA()


@pytest.fixture
def ca_file(ca: "trustme.CA", tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_context(ca: "trustme.CA", *names: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    return context


def _start(context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch) -> LocalEngine:
    engine = LocalEngine(ssl_context=context).start()
    for name, value in engine.env.items():
        monkeypatch.setenv(name, value)
    return engine


@pytest.fixture
def engine(ca: "trustme.CA", monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEngine]:
    running = _start(_server_context(ca, "127.0.0.1"), monkeypatch)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def agent_id(engine: LocalEngine) -> str:
    return engine.add_agent("TLS Agent", turn=_reply)


def test_the_engine_serves_https_and_wss_with_a_context(engine: LocalEngine) -> None:
    assert engine.tls
    assert engine.base_url.startswith("https://127.0.0.1:")
    assert engine.ws_url.startswith("wss://127.0.0.1:")
    assert "https://" in repr(engine)
    with pytest.raises(TypeError):
        LocalEngine(ssl_context="cert.pem")  # type: ignore[arg-type]


def test_an_untrusted_certificate_fails_with_a_clear_connection_error(
    engine: LocalEngine, agent_id: str
) -> None:
    session = Session(owner_type="agent", owner_id=agent_id, connect_timeout=scaled(5))
    with pytest.raises(SessionConnectionError) as caught:
        session.connect()
    message = str(caught.value)
    assert "certificate verify failed" in message, message
    assert engine.ws_url.replace("/v1", "") in message  # says where it tried
    assert not session.is_connected
    assert not engine.sessions  # the engine never saw a WebSocket frame


def test_with_the_ca_in_sslopt_a_turn_streams(
    engine: LocalEngine, agent_id: str, ca_file: str
) -> None:
    with Session(owner_type="agent", owner_id=agent_id, sslopt={"ca_certs": ca_file}) as session:
        events = list(session.stream("hello", timeout=scaled(10)))
        deltas = "".join(event.delta or "" for event in events if event.type is E.MESSAGE_DELTA)
        assert deltas == REPLY
        assert session.ask("again", timeout=scaled(10)).text == REPLY
    (connection,) = [c for c in engine.connections if c.frames]
    assert connection.headers["Authorization"] == f"Bearer {engine.api_key}"


def test_the_hostname_is_checked_too(
    ca: "trustme.CA", ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _start(_server_context(ca, "vectorshift.example"), monkeypatch)
    try:
        agent_id = engine.add_agent("TLS Agent", turn=_reply)
        session = Session(owner_type="agent", owner_id=agent_id, sslopt={"ca_certs": ca_file})
        with pytest.raises(SessionConnectionError) as caught:
            session.connect()
        assert "certificate verify failed" in str(caught.value)
        assert "mismatch" in str(caught.value).lower()
    finally:
        engine.stop()


def _self_signed_context(tmp_path: Path) -> ssl.SSLContext:
    """A server certificate for 127.0.0.1 that is its own issuer (no CA at all)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "self-signed.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pem))
    return context


def test_a_self_signed_server_certificate_is_refused_unless_verification_is_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _start(_self_signed_context(tmp_path), monkeypatch)
    try:
        agent_id = engine.add_agent("TLS Agent", turn=_reply)
        with pytest.raises(SessionConnectionError) as caught:
            Session(owner_type="agent", owner_id=agent_id).connect()
        assert "certificate verify failed: self-signed certificate" in str(caught.value)
        # Turning verification off is possible, and only explicitly.
        insecure = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        with Session(owner_type="agent", owner_id=agent_id, sslopt=insecure) as session:
            assert session.ask("hi", timeout=scaled(10)).text == REPLY
    finally:
        engine.stop()


def test_http_calls_verify_too_and_take_a_requests_session(
    engine: LocalEngine, ca_file: str
) -> None:
    with pytest.raises(ApiConnectionError) as caught:
        Agent.fetch(name="Demo Agent", api_key=engine.api_key, timeout=scaled(5))
    assert "certificate verify failed" in str(caught.value).lower()
    with requests.Session() as http:
        http.verify = ca_file
        agent = Agent.fetch(name="Demo Agent", api_key=engine.api_key, http=http)
    assert agent.name == "Demo Agent"


def test_fault_controls_work_over_tls(engine: LocalEngine, agent_id: str, ca_file: str) -> None:
    """A drop is recovered over TLS (the reconnect keeps sslopt); half-open is noticed."""
    with Session(owner_type="agent", owner_id=agent_id, sslopt={"ca_certs": ca_file}) as session:
        with session.listen(timeout=scaled(10)) as events:
            assert engine.drop_connections() == 1
            seen = []
            for event in events:
                seen.append(event)
                if event.type is E.SESSION_CONNECTED and event.data.get("reconnected"):
                    break
        assert any(e.type is E.ERROR and e.data.get("error") == "connection lost" for e in seen)
        assert session.ask("after the drop", timeout=scaled(10)).text == REPLY
    quick = Session(
        owner_type="agent",
        owner_id=agent_id,
        sslopt={"ca_certs": ca_file},
        ping_interval=0.1,
        idle_timeout=0.5,
        reconnect=False,
    )
    with quick:
        with quick.listen(timeout=scaled(5)) as events:
            engine.faults.half_open = True
            lost = next(e for e in events if e.type is E.ERROR)
        assert "half-open" in lost.data["reason"]


# --- one TLS context per setting ---------------------------------------------------------


def _context_of(session: Session) -> ssl.SSLContext:
    connection = session._link.connection
    assert connection is not None
    sock = connection._sock
    assert isinstance(sock, ssl.SSLSocket)
    return sock.context


def test_connects_with_the_same_tls_settings_share_one_context(
    engine: LocalEngine, agent_id: str, ca_file: str
) -> None:
    """websocket-client would build a context (and load the CA) for every connect;
    the same settings get the same verifying context, a renewed CA file a new one."""
    contexts = []
    for _ in range(2):
        with Session(owner_type="agent", owner_id=agent_id, sslopt={"ca_certs": ca_file}) as s:
            assert s.ask("hi", timeout=scaled(10)).text == REPLY
            contexts.append(_context_of(s))
    first, second = contexts
    assert first is second
    assert first.verify_mode is ssl.CERT_REQUIRED and first.check_hostname

    other = Session(
        owner_type="agent",
        owner_id=agent_id,
        sslopt={"ca_certs": ca_file, "check_hostname": False},
    )
    with other:
        assert _context_of(other) is not first
        assert not _context_of(other).check_hostname

    # Renewed the way `cp -p` or a package upgrade does it: another file moved into
    # place, with the old modification time kept.
    stamp = Path(ca_file).stat()
    renewed = Path(ca_file).with_suffix(".new")
    renewed.write_bytes(Path(ca_file).read_bytes())
    os.utime(renewed, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    os.replace(renewed, ca_file)
    with Session(owner_type="agent", owner_id=agent_id, sslopt={"ca_certs": ca_file}) as s:
        assert _context_of(s) is not first


def test_other_tls_settings_are_left_to_websocket_client(
    engine: LocalEngine, agent_id: str, ca_file: str, tmp_path: Path
) -> None:
    """Settings the shared context is not built from (here ciphers) get
    websocket-client's own context per connect; a CA file that cannot be read is
    reported by websocket-client as before."""
    sslopt = {"ca_certs": ca_file, "ciphers": "ECDHE+AESGCM"}
    contexts = []
    for _ in range(2):
        with Session(owner_type="agent", owner_id=agent_id, sslopt=sslopt) as session:
            assert session.ask("hi", timeout=scaled(10)).text == REPLY
            contexts.append(_context_of(session))
    assert contexts[0] is not contexts[1]

    missing = str(tmp_path / "no-such-ca.pem")
    session = Session(owner_type="agent", owner_id=agent_id, sslopt={"ca_certs": missing})
    with pytest.raises(SessionConnectionError, match="CA certificate loading failed"):
        session.connect()


def test_the_shared_context_follows_websocket_client_rules() -> None:
    from vectorshift_sync._tls import with_shared_context

    assert with_shared_context("ws://127.0.0.1:1/ws", None) is None
    assert with_shared_context("ws://h/ws", {"ca_certs": "x"}) == {"ca_certs": "x"}
    insecure = with_shared_context("wss://h/ws", {"cert_reqs": ssl.CERT_NONE})
    assert insecure is not None
    assert insecure["context"].verify_mode is ssl.CERT_NONE
    assert not insecure["context"].check_hostname
    # websocket-client refuses this combination itself: it is left to say so.
    refused = {"cert_reqs": ssl.CERT_NONE, "check_hostname": True}
    assert with_shared_context("wss://h/ws", refused) == refused
    mine = ssl.create_default_context()
    assert with_shared_context("wss://h/ws", {"context": mine}) == {"context": mine}
    # An explicit None is websocket-client's "no hostname check", unlike no setting.
    unchecked = with_shared_context("wss://h/ws", {"check_hostname": None})
    assert unchecked is not None and not unchecked["context"].check_hostname
    assert unchecked["context"].verify_mode is ssl.CERT_REQUIRED
    for odd in ({"cert_reqs": 2.0}, {"check_hostname": "yes"}, {"ca_certs": 7}):
        assert with_shared_context("wss://h/ws", odd) == odd  # left to websocket-client
    default = with_shared_context("WSS://h/ws", {"server_hostname": "vectorshift.example"})
    assert default is not None and default["server_hostname"] == "vectorshift.example"
    assert default["context"].verify_mode is ssl.CERT_REQUIRED
    assert default["context"] is with_shared_context("wss://other/ws", None)["context"]


def test_the_default_store_is_read_again_when_it_changes(
    ca: "trustme.CA", tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CA removed from the system's store (``update-ca-certificates``) is not
    trusted by the next connect: the shared default context follows the store."""
    from vectorshift_sync._tls import with_shared_context

    store = tmp_path / "store.pem"
    ca.cert_pem.write_to_path(str(store))
    monkeypatch.setenv("SSL_CERT_FILE", str(store))
    first = with_shared_context("wss://h/ws", None)
    assert first is not None and first["context"].cert_store_stats()["x509_ca"] == 1
    again = with_shared_context("wss://h/ws", None)
    assert again is not None and again["context"] is first["context"]

    stamp = store.stat()
    emptied = tmp_path / "store.new"
    emptied.write_bytes(b"")
    os.utime(emptied, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    os.replace(emptied, store)  # the CA is gone
    after = with_shared_context("wss://h/ws", None)
    assert after is not None and after["context"] is not first["context"]
    assert after["context"].cert_store_stats()["x509_ca"] == 0
