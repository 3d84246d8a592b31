"""examples/flask_sse.py in a real headless browser: the page shows the streamed reply.

Debian's chromium (``apt-get install chromium``), driven by Playwright for Python
through ``executable_path``, never ``playwright install``: Playwright speaks the
DevTools protocol over a pipe to the exact binary given, needs no separate driver
binary matched to the browser's version (Selenium needs ``chromium-driver``), and
its auto-waiting ``wait_for_function`` reads the page's state without sleeps.

Without /usr/bin/chromium the test is skipped with a loud reason;
``VS_BROWSER_REQUIRED=1`` (for CI, which installs chromium) makes that a failure.
"""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

# conftest.py's timing knob, read here rather than imported: with a second
# conftest.py under tests/, ``from conftest import ...`` can find the wrong one.
TIME_SCALE = float(os.environ.get("VS_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIME_SCALE


pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_TAIL = "running on the local VectorShift engine."


@pytest.fixture
def chromium(request: pytest.FixtureRequest) -> str:
    """The browser binary, or a loud skip when it is missing."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    reason = (
        f"BROWSER TEST NOT RUN: {CHROMIUM} is missing. Install Debian's chromium "
        "(apt-get install -y chromium) to run it."
    )
    if os.environ.get("VS_BROWSER_REQUIRED") == "1":
        pytest.fail(reason + " (VS_BROWSER_REQUIRED=1: CI must have it)")
    # Shown on the terminal even without -rs: a skipped browser test is easy to miss.
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n{'!' * 8} {reason} {'!' * 8}", yellow=True, bold=True)
    pytest.skip(reason)


@pytest.fixture
def flask_url(local_engine: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """flask_sse's app served by werkzeug on 127.0.0.1, an ephemeral port, a thread."""
    from werkzeug.serving import make_server

    monkeypatch.syspath_prepend(str(EXAMPLES))
    flask_sse = importlib.import_module("flask_sse")
    local_engine.stream_delay = 0.02  # slow enough to watch the page fill in
    server = make_server("127.0.0.1", 0, flask_sse.create_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="flask-sse-test-server")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(scaled(5))
        server.server_close()


def test_page_shows_the_whole_streamed_reply(chromium: str, flask_url: str) -> None:
    from playwright.sync_api import sync_playwright

    timeout_ms = scaled(20) * 1000
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_ms)
            page.goto(flask_url)
            page.fill("#message", "Hello from a real browser")
            page.click("#send")

            # Part of the reply is on the page while it is still streaming ...
            page.wait_for_function(
                "document.getElementById('status').textContent === 'streaming...'"
                " && document.getElementById('reply').textContent.length > 0"
            )
            partial = page.text_content("#reply") or ""
            # ... and after the end event, all of it.
            page.wait_for_function("document.getElementById('status').textContent === 'done'")
            reply = page.text_content("#reply") or ""
        finally:
            browser.close()

    assert reply.startswith('You said: "Hello from a real browser". That is 5 words')
    assert reply.endswith(DEMO_TAIL)
    assert reply.startswith(partial) and len(partial) < len(reply)
