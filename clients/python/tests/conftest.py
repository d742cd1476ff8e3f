"""Fixtures: the real `taskwire` binary on port 0, REST helpers, and a TCP proxy
that can cut sockets or swallow the server's frames."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ADMIN = "tw_python_client_admin_token"
WAIT = 10.0  # seconds one await may take before a test fails
REPO = Path(__file__).resolve().parents[3]


def binary() -> str:
    """TASKWIRE_BIN (set by the Rust test that runs these), else the debug build."""
    path = os.environ.get("TASKWIRE_BIN") or str(REPO / "target" / "debug" / "taskwire")
    if not os.path.exists(path):
        pytest.fail(f"no taskwire binary at {path}: run `cargo build` or set TASKWIRE_BIN")
    return path


class Server:
    """A `taskwire serve` child process on a database file."""

    def __init__(self, db: Path, extra: list[str]) -> None:
        self.db, self.extra = db, extra
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log: list[str] = []

    def start(self, port: int = 0) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("TASKWIRE_BIND", "DATABASE_URL")}
        env.update(TASKWIRE_ADMIN_TOKEN=ADMIN, RUST_LOG="info")
        self.proc = subprocess.Popen(
            [binary(), "serve", "--bind", f"127.0.0.1:{port}", "--db", str(self.db), *self.extra],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        found = threading.Event()

        def read(stream: Any) -> None:
            with stream:  # until the process exits
                for line in stream:
                    self.log.append(line.rstrip())
                    if "listening on http://" in line and not found.is_set():
                        addr = line.split("listening on http://")[1].split()[0]
                        self.port = int(addr.rsplit(":", 1)[1])
                        found.set()

        threading.Thread(target=read, args=(self.proc.stderr,), daemon=True).start()
        if not found.wait(WAIT):
            self.kill()
            raise RuntimeError("the server did not log its address:\n" + "\n".join(self.log))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM: the server drains, closes every socket with 1001 and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(WAIT)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)

    def restart(self) -> None:
        """Stops and starts again on the same port and database."""
        self.stop()
        self.start(self.port)

    def rest(self, method: str, path: str, body: Any = None, token: str = ADMIN) -> Any:
        """A REST request; returns the decoded body (None for 204), raises
        urllib.error.HTTPError on a refusal."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=WAIT) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def make_agent(self, name: str) -> tuple[int, str, int]:
        """An agent and its token: (agent id, token secret, token id)."""
        agent = self.rest("POST", "/api/agents", {"name": name})
        tokens = self.rest("GET", "/api/tokens")["items"]
        token_id = next(t["id"] for t in tokens if t["agent_id"] == agent["id"] and t["revoked_at"] is None)
        return agent["id"], agent["token"], token_id

    def make_token(self, role: str, name: str) -> str:
        return self.rest("POST", "/api/tokens", {"role": role, "name": name})["token"]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def make(*extra: str, db: str = "taskwire.db") -> Server:
        server = Server(tmp_path / db, list(extra))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def server(server_factory: Any) -> Server:
    return server_factory()


class Proxy:
    """Forwards TCP to the server. `cut()` drops every connection without a close
    frame; while `hold` is set, the server's bytes are swallowed."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.hold = False
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_server: bool) -> None:
            try:
                while chunk := await src.read(65536):
                    if from_server and self.hold:
                        continue
                    dst.write(chunk)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))

    def cut(self) -> None:
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def proxy_factory() -> AsyncIterator[Any]:
    proxies: list[Proxy] = []

    async def make(port: int) -> Proxy:
        proxy = Proxy(port)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.close()


class Collector:
    """Callbacks for `subscribe` that record what they get; `wait_for` awaits a
    condition on the record instead of sleeping."""

    def __init__(self) -> None:
        self.snapshots: list[Any] = []
        self.events: list[Any] = []
        self._changed = asyncio.Condition()

    async def on_snapshot(self, snapshot: Any) -> None:
        async with self._changed:
            self.snapshots.append(snapshot)
            self._changed.notify_all()

    async def on_event(self, event: Any) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    @property
    def seqs(self) -> list[int]:
        return [e.seq for e in self.events if e.seq is not None]

    async def wait_for(self, predicate: Any, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)
