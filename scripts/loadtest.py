"""Load test of `fmnist serve` on this machine only: N requests at concurrency C against 127.0.0.1.

Starts its own server on a free loopback port, sends a bounded number of POST /v1/predict requests (real test
images as PNG uploads, or as JSON arrays), and writes throughput, p50/p99 latency, errors and the server's memory
(RSS) before and after to a JSON file. A benchmark, not a unit test:

    python scripts/loadtest.py runs/<id> --requests 5000 --concurrency 32 --output loadtest.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fmnist.data import load_dataset
from fmnist.serve import MAX_BATCH

try:
    import httpx
except ModuleNotFoundError:  # the test extra's, not the main install's
    sys.exit("scripts/loadtest.py needs httpx, which the test extra brings: bash scripts/setup.sh pytest, or "
             ".venv/bin/pip install -c constraints.txt httpx")

HOST = "127.0.0.1"  # never anything but this machine
START_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 60


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def payloads(kind: str, count: int, base: str) -> list[bytes]:
    """Whole HTTP/1.1 requests made of real test images: one PNG upload, or one JSON array of 784 pixels, each.

    httpx encodes them (multipart and all), once; sending them is left to ``fire``.
    """
    requests = []
    for i, image in enumerate(load_dataset().x_test[:count]):
        if kind == "json":
            body = {"json": {"inputs": [image.ravel().tolist()]}}
        else:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "PNG")
            body = {"files": {"files": (f"test{i}.png", buffer.getvalue(), "image/png")}}
        request = httpx.Request("POST", f"{base}/v1/predict", **body)
        content = request.read()
        head = "".join(f"{name}: {value}\r\n" for name, value in request.headers.items())
        requests.append(f"POST /v1/predict HTTP/1.1\r\n{head}\r\n".encode() + content)
    return requests


async def fire(base: str, requests: list[bytes], count: int, concurrency: int) -> tuple[list[float], dict[str, int]]:
    """Send ``count`` requests over ``concurrency`` keep-alive connections; return latencies (s) and error counts.

    A bare asyncio client: httpx's async client spent twice the server's CPU time on this 2-core machine
    (measured with this script), so it measured itself more than the server.
    """
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_index = iter(range(count))
    port = int(base.rsplit(":", 1)[1])

    async def worker() -> None:
        reader = writer = None
        for i in next_index:
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(requests[i % len(requests)])
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                outcome = None if head.startswith(b"HTTP/1.1 200 ") else head[9:12].decode()
                if re.search(rb"(?i)\r\nconnection: *close", head):
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
                outcome, writer = type(exc).__name__, None
            latencies.append(time.perf_counter() - started)
            if outcome:
                errors[outcome] = errors.get(outcome, 0) + 1
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def start_server(run: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "fmnist", "-q", "serve", str(run), "--host", HOST,
                                "--port", str(port), "--max-batch", str(max_batch)])
    base = f"http://{HOST}:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base}/v1/health").status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.5)
    process.kill()
    sys.exit("the server did not start")


def measure(run: Path, kind: str, requests: int, concurrency: int, max_batch: int, warmup: int) -> dict:
    process, base = start_server(run, max_batch)
    try:
        bodies = payloads(kind, 200, base)
        asyncio.run(fire(base, bodies, warmup, concurrency))
        health_before = httpx.get(f"{base}/v1/health").json()
        memory_before, server_cpu, client_cpu = rss_mib(process.pid), cpu_seconds(process.pid), time.process_time()
        started = time.perf_counter()
        latencies, errors = asyncio.run(fire(base, bodies, requests, concurrency))
        seconds = time.perf_counter() - started
        server_cpu, client_cpu = cpu_seconds(process.pid) - server_cpu, time.process_time() - client_cpu
        memory_after = rss_mib(process.pid)
        health_after = httpx.get(f"{base}/v1/health").json()
    finally:
        process.terminate()
        process.wait(timeout=60)
    passes = health_after["forward_passes"] - health_before["forward_passes"]
    inputs = health_after["inputs"] - health_before["inputs"]
    ms = np.array(latencies) * 1000
    return {
        "payload": kind, "requests": requests, "concurrency": concurrency, "max_batch": max_batch,
        "warmup_requests": warmup, "seconds": round(seconds, 3),
        "requests_per_s": round(requests / seconds, 1),
        "latency_ms": {q: round(float(np.percentile(ms, p)), 2) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}
        | {"max": round(float(ms.max()), 2)},
        "errors": sum(errors.values()), "errors_by_kind": errors,
        "server_rss_mib": {"before": round(memory_before, 1), "after": round(memory_after, 1),
                           "growth": round(memory_after - memory_before, 1)},
        "mean_inputs_per_forward_pass": round(inputs / max(passes, 1), 2),
        "cpu_seconds": {"server": round(server_cpu, 1), "load_generator": round(client_cpu, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run directory made by 'fmnist train'")
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement (default 5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--warmup", type=int, default=300, help="requests sent before measuring (default 300)")
    parser.add_argument("--payload", choices=("png", "json"), default="png", help="what each request carries")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[MAX_BATCH, 1],
                        help="server settings to compare; 1 is no batching (default: 64 1)")
    parser.add_argument("--output", type=Path, default=Path("loadtest.json"), help="where to write the results")
    args = parser.parse_args()
    if not 0 < args.requests <= 100_000 or not 0 < args.concurrency <= 256:
        sys.exit("keep it bounded: 1-100000 requests at concurrency 1-256")
    results = [measure(args.run, args.payload, args.requests, args.concurrency, m, args.warmup) for m in args.max_batch]
    report = {"machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
              "run": str(args.run), "results": results}
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        print(f"max batch {r['max_batch']:>3}: {r['requests_per_s']} req/s, p50 {r['latency_ms']['p50']} ms, "
              f"p99 {r['latency_ms']['p99']} ms, errors {r['errors']}, RSS {r['server_rss_mib']['before']} -> "
              f"{r['server_rss_mib']['after']} MiB, {r['mean_inputs_per_forward_pass']} inputs per pass, "
              f"CPU s server {r['cpu_seconds']['server']} / load generator {r['cpu_seconds']['load_generator']}")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
