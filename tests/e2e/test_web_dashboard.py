"""The dashboard in a real browser: `meshdev up --web PORT` on the example (process runtime),
a headless Chromium driven by chromedriver opens the page, the dashboard streams the mesh's
live figures into it, a key pressed in the page switches the view, the header and pods are
`up`'s (a save shows up in the page), and a demo key acts on the mesh through `up`.

xterm.js paints the terminal on a canvas, so the page has no text to read; what the browser
received is read instead: a script installed before the page's own wraps its WebSocket and
keeps every frame the dashboard sent (the terminal's output, escape sequences and all)."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from tests.e2e.meshrun import MeshUp, env_for, example_copy, get
from tests.support import free_port

pytestmark = [pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Runs before the page's scripts: every WebSocket it opens reports what it receives.
RECORD_FRAMES = """
window.__frames = [];
const Native = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
  ws.addEventListener('message', (ev) => {
    const d = ev.data;
    if (typeof d === 'string') window.__frames.push(d);
    else if (d instanceof ArrayBuffer) window.__frames.push(new TextDecoder().decode(d));
    else if (d instanceof Blob) d.text().then((t) => window.__frames.push(t));
  });
  return ws;
};
window.WebSocket.prototype = Native.prototype;
Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
"""
ESCAPES = re.compile(r"\x1b(\[[0-9;?$]*[a-zA-Z~]|\][^\x07]*\x07|[()][A-Z0-9])")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromium-driver are required in CI (scripts/test.sh)")
        pytest.skip("chromium/chromium-driver not installed (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(arg)
    options.add_argument("--disable-dev-shm-usage")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_FRAMES})
    try:
        yield driver
    finally:
        driver.quit()


def received(driver: webdriver.Chrome) -> str:
    """Everything the page's terminal received so far, escape sequences removed."""
    frames = driver.execute_script("return window.__frames || []")
    return ESCAPES.sub("", "".join(frames))


def wait_text(
    driver: webdriver.Chrome, ok: Callable[[str], bool], what: str, timeout: float = 60
) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = received(driver)
        if ok(text):
            return text
        time.sleep(0.25)
    raise AssertionError(f"the page never showed {what}; it received:\n{text[-3000:]}")


def test_the_dashboard_in_a_real_browser(tmp_path: Path, browser: webdriver.Chrome) -> None:
    name = f"web-{os.getpid()}"
    port, web = free_port(), free_port()
    mesh_file = example_copy(tmp_path, name, port)
    up = MeshUp(mesh_file, env_for(tmp_path), "--runtime", "process", "--web", str(web))
    try:
        assert up.wait_for("web dashboard:") == (
            f"web dashboard: http://127.0.0.1:{web}/ (it shows the mesh once it is ready)"
        )
        up.wait_for("ready:")
        browser.get(f"http://127.0.0.1:{web}/")
        text = wait_text(browser, lambda t: "sidecars 7/7 live" in t, "every sidecar streaming")
        # The header is `up`'s: its runtime, config version and how the start went (the tab
        # follows the session through its state file).
        wait_text(browser, lambda t: "applied v1 to 7/7 sidecars" in t, "up's last reload")
        assert "process" in text and "not running the mesh" not in text

        # Live figures: while requests flow, the /items route shows a non-zero rate.
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                get(f"http://127.0.0.1:{port}/items")
                time.sleep(0.05)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            text = wait_text(
                browser,
                lambda t: re.search(r"backend/items\s+[1-9]", t) is not None,
                "the /items route's live rate",
            )
        finally:
            stop.set()
            sender.join(15)
        assert "Clusters" in text and "Routes" in text

        # A key pressed in the page reaches the dashboard: 2 switches to the Pods view, which
        # lists the pods by name.
        before = len(received(browser))
        browser.find_element(By.CSS_SELECTOR, ".textual-terminal").click()
        ActionChains(browser).send_keys("2").perform()
        text = wait_text(
            browser,
            lambda t: "Services and pods" in t[before:] and "greeter-1" in t[before:],
            "the Pods view after pressing 2",
        )
        # Each pod with the state `up` knows it in (the session's, not the telemetry's).
        assert re.search(r"greeter-1\s+greeter\s+(\S+\s+)?running", text[before:]), text[-3000:]

        # A save reaches the page: `up` applies it, the tab's header says so.
        before = len(received(browser))
        mesh_file.write_text(mesh_file.read_text().replace("timeout: 2s", "timeout: 3s", 1))
        up.wait_for("applied v2")
        wait_text(browser, lambda t: "applied v2" in t[before:], "the save applied, in the page")

        # A demo key acts on the mesh through `up`: l starts the load there (the page's load
        # bar is up's), l again stops it and says how many requests went.
        before = len(received(browser))
        ActionChains(browser).send_keys("l").perform()
        wait_text(browser, lambda t: "load on" in t[before:], "the load that l started")
        ActionChains(browser).send_keys("l").perform()
        stopped = wait_text(browser, lambda t: "load stopped:" in t[before:], "l again")
        sent = re.search(r"load stopped: (\d+) requests", stopped[before:])
        assert sent is not None and int(sent.group(1)) > 0, stopped[-2000:]

        # The Logs view reads the pods' logs where the runtime keeps them: the gateway's
        # access log has the load's requests.
        before = len(received(browser))
        ActionChains(browser).send_keys("4").perform()
        wait_text(browser, lambda t: '"GET /items HTTP/1.1" 200' in t[before:], "the access log")
        shot = tmp_path / "web.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        res = up.run("down", str(mesh_file))
        up.stop()
    assert res.returncode == 0, res.stderr
    # Stopping `up` closed the page's dashboard process too.
    assert up.proc.returncode == 0
    left = subprocess.run(["pgrep", "-f", f"watch --mesh {mesh_file}"], capture_output=True)
    assert left.returncode == 1, left.stdout
