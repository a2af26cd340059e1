"""A real uvicorn server in a child process, and a client firing concurrent requests at it.

Used by the FastAPI tests and by ``benchmarks/test_web.py``. The child process is killed when the block
ends, which also closes every connection it held (a naive app leaves sessions open in its threads).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import ponykit

APPS = Path(__file__).with_name("web_apps.py")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(kind: str, url: str, connections: int = 8, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``web_apps.make_app(kind, url, connections)`` with uvicorn; yield its base URL."""
    port = free_port()
    env = dict(os.environ)
    src = str(Path(ponykit.__file__).resolve().parents[1])  # the ponykit under test (a worktree's src)
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, str(APPS), kind, url, str(port), str(connections)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"the {kind} app exited with {proc.returncode}:\n{output}")
            try:
                if httpx.get(base + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} app did not answer within {timeout} s")
            time.sleep(0.1)
        yield base
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


@dataclass
class Burst:
    """The answers of one burst of concurrent requests, and how long the burst took."""

    statuses: list[int]
    bodies: list[Any]
    seconds: float


def fire(base: str, method: str, paths: list[str], timeout: float = 60.0) -> Burst:
    """Send every request of ``paths`` at once (one connection each) and wait for all answers."""

    async def run() -> Burst:
        limits = httpx.Limits(max_connections=len(paths) + 1, max_keepalive_connections=len(paths) + 1)
        async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as client:
            await client.get("/health")  # warm up the server's first request path

            async def one(path: str) -> httpx.Response | httpx.HTTPError:
                try:
                    return await client.request(method, path)
                except httpx.HTTPError as exc:  # the server dropped the connection: an answer too
                    return exc

            started = time.perf_counter()
            answers = await asyncio.gather(*(one(p) for p in paths))
            seconds = time.perf_counter() - started
        bodies: list[Any] = []
        statuses: list[int] = []
        for answer in answers:
            if isinstance(answer, httpx.HTTPError):
                statuses.append(-1)
                bodies.append(f"{type(answer).__name__}: {answer}")
                continue
            statuses.append(answer.status_code)
            try:
                bodies.append(answer.json())
            except ValueError:
                bodies.append(answer.text)
        return Burst(statuses, bodies, seconds)

    return asyncio.run(run())
