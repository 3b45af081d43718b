"""Mutual TLS handshakes per second on one sidecar's inbound listener (STRICT), full and resumed,
against a reference in the same run: a bare uvloop server with the same TLS contexts (the
loop's own TLS, Cython in uvloop) that answers the same way.

Each client connection: TCP connect, TLS 1.3 handshake with a workload certificate of the test
CA (ECDSA P-256), a malformed request line (the sidecar's HTTP engine answers 400 and closes
without touching an upstream, so the handshake is nearly all the work), read to the end,
close. `full`: no session resumption; `resumed`: each client thread offers the session ticket
of its previous connection. Clients are threads of this process (OpenSSL releases the GIL in
its handshakes), pinned to the other core than the server when `taskset` exists.

Measured per target and mode: handshakes per second (the server's own count for the sidecar,
`listener.<addr>.ssl.handshake`; completed exchanges for the reference) and the server
process's CPU time per handshake, the stable number on a shared machine: 1e6 / that is what one
core would sustain once the server is what limits.

    .venv/bin/python benchmarks/tls_handshakes.py [--seconds 5] [--threads 8] [--rounds 2]

Prints a summary to stderr and JSON to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from meshdev.testing.certs import TestCA, spiffe, tls_context

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
LOCALHOST = "127.0.0.1"
SERVER_CORE, CLIENT_CORE = "0", "1"
BAD_REQUEST = b"BAD\r\n\r\n"

REFERENCE = """
import asyncio, json, sys
import uvloop
from meshdev.common.workload_certs import WorkloadCerts
from meshdev.sidecar.tls.material import load_material

certs = WorkloadCerts.model_validate_json(sys.stdin.read())
material = load_material(certs, "{spiffe_id}")

ANSWER = b"HTTP/1.1 400 Bad Request\\r\\ncontent-length: 0\\r\\n\\r\\n"

class Answer(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d):
        self.t.write(ANSWER)
        self.t.close()

async def main():
    server = await asyncio.get_running_loop().create_server(
        Answer, "127.0.0.1", {port}, ssl=material.server, backlog=2048)
    print("ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        port: int = s.getsockname()[1]
        return port


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if shutil.which("taskset") else argv


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def certs_json(certs: Any) -> str:
    return json.dumps(
        {
            "ca": certs.ca,
            "cert_chain": certs.cert_chain,
            "private_key": certs.private_key.get_secret_value(),
        }
    )


def start_sidecar(workdir: Path, ca: TestCA) -> tuple[subprocess.Popen[bytes], int, int]:
    port, admin = free_port(), free_port()
    config = {
        "version": 1,
        "mesh": "test",
        "node": "bench-0",
        "service": "bench",
        "spiffe_id": spiffe("bench"),
        "admin": {"address": LOCALHOST, "port": admin},
        "listeners": [
            {
                "name": "inbound",
                "kind": "inbound",
                "address": LOCALHOST,
                "port": port,
                "cluster": "inbound|app",
                "mtls": "STRICT",
            }
        ],
        "clusters": [
            {"name": "inbound|app", "endpoints": [{"address": LOCALHOST, "port": free_port()}]}
        ],
        "access_log": "off",
    }
    path = workdir / "sidecar.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "MESHDEV_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen(
        pinned(SERVER_CORE, [sys.executable, "-m", "meshdev", "sidecar", "--config", str(path)]),
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if b"ready" not in line:
        raise SystemExit(f"the sidecar did not start: {line!r}")
    request = urllib.request.Request(
        f"http://{LOCALHOST}:{admin}/certs",
        data=certs_json(ca.issue(spiffe("bench"))).encode(),
        headers={"x-meshdev-token": TOKEN},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    return proc, port, admin


def start_reference(ca: TestCA) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    script = REFERENCE.format(port=port, spiffe_id=spiffe("bench"))
    proc = subprocess.Popen(
        pinned(SERVER_CORE, [sys.executable, "-c", script]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(certs_json(ca.issue(spiffe("bench"))).encode())
    proc.stdin.close()
    if b"ready" not in proc.stdout.readline():
        raise SystemExit("the reference server did not start")
    return proc, port


def handshake_count(admin: int, port: int) -> tuple[int, int]:
    url = f"http://{LOCALHOST}:{admin}/stats?format=json&filter=ssl"
    with urllib.request.urlopen(url, timeout=10) as resp:
        stats = {s["name"]: s.get("value", 0) for s in json.load(resp)["stats"] if "name" in s}
    prefix = f"listener.{LOCALHOST}_{port}.ssl."
    return int(stats.get(prefix + "handshake", 0)), int(stats.get(prefix + "session_reused", 0))


def clients(port: int, context: ssl.SSLContext, threads: int, seconds: float, resume: bool) -> int:
    """Run `threads` clients for `seconds`; the number of exchanges that completed."""
    done = [0] * threads
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        session: ssl.SSLSession | None = None
        while time.monotonic() < stop:
            try:
                with socket.create_connection((LOCALHOST, port)) as raw:
                    tls = context.wrap_socket(raw, session=session if resume else None)
                    with tls:
                        tls.sendall(BAD_REQUEST)
                        while tls.recv(4096):
                            pass
                        session = tls.session
            except (OSError, ssl.SSLError):
                continue
            done[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done)


def measure(
    name: str,
    pid: int,
    port: int,
    context: ssl.SSLContext,
    args: argparse.Namespace,
    resume: bool,
    admin: int | None,
) -> dict[str, Any]:
    clients(port, context, args.threads, 0.5, resume)  # warm-up
    before_cpu = cpu_seconds(pid)
    before = handshake_count(admin, port) if admin is not None else (0, 0)
    start = time.monotonic()
    exchanges = clients(port, context, args.threads, args.seconds, resume)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(pid) - before_cpu
    if admin is not None:
        after = handshake_count(admin, port)
        handshakes, reused = after[0] - before[0], after[1] - before[1]
    else:
        handshakes, reused = exchanges, -1
    per_s = handshakes / elapsed
    return {
        "target": name,
        "mode": "resumed" if resume else "full",
        "handshakes_per_s": round(per_s, 1),
        "server_cpu_us_per_handshake": round(cpu / max(handshakes, 1) * 1e6, 1),
        "server_cpu_share": round(cpu / elapsed, 2),
        "session_reused": reused,
        "client_exchanges": exchanges,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {int(CLIENT_CORE)})
    ca = TestCA.create()
    context = tls_context(ca.issue(spiffe("client")), trust=ca.pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="meshdev-bench-tls-") as folder:
        sidecar, port, admin = start_sidecar(Path(folder), ca)
        reference, ref_port = start_reference(ca)
        try:
            for _ in range(args.rounds):
                for resume in (False, True):
                    results.append(
                        measure("sidecar", sidecar.pid, port, context, args, resume, admin)
                    )
                    results.append(
                        measure("reference", reference.pid, ref_port, context, args, resume, None)
                    )
        finally:
            for proc in (sidecar, reference):
                proc.terminate()
                proc.wait(timeout=20)
    summary: dict[str, Any] = {}
    for target in ("sidecar", "reference"):
        for mode in ("full", "resumed"):
            rows = [r for r in results if r["target"] == target and r["mode"] == mode]
            summary[f"{target}/{mode}"] = {
                "handshakes_per_s_median": statistics.median(r["handshakes_per_s"] for r in rows),
                "cpu_us_per_handshake_median": statistics.median(
                    r["server_cpu_us_per_handshake"] for r in rows
                ),
            }
    for key, row in summary.items():
        rate, cpu = row["handshakes_per_s_median"], row["cpu_us_per_handshake_median"]
        print(
            f"{key:18} {rate:8.1f} handshakes/s   server CPU {cpu:7.1f} us/handshake "
            f"(one core: {1e6 / cpu if cpu else 0:7.0f}/s)",
            file=sys.stderr,
        )
    print(json.dumps({"runs": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
