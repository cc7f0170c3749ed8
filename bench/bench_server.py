"""Start the real gateway (``python -m gateway serve``) in a subprocess, with a requester key."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def start_server(env: dict[str, str], timeout_s: float = 900) -> Iterator[tuple[str, str]]:
    """Yield (base URL, requester key) once ``/readyz`` says ready (models warmed up)."""
    port = free_port()
    env = {**env, "GATEWAY_PORT": str(port)}
    created = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--tenant", "bench",
         "--role", "requester"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    key = created.stdout.strip().splitlines()[-1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"the gateway exited: {server.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not become ready")
            time.sleep(0.5)
        yield base, key
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
