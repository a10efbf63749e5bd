"""A small HTTP/1.1 client on raw asyncio streams, for the load generator.

httpx costs several times more CPU per request than this, and on a 2-core machine the load
generator shares the CPU with the servers it measures: the lighter it is, the less it skews
the numbers. Keep-alive connections, Content-Length or chunked bodies; nothing else.

    pool = Pool("127.0.0.1", 3000)
    status, headers, body = await pool.request("POST", "/slack/events", body, {"Content-Type": "..."})
"""

from __future__ import annotations

import asyncio
import time

#: uvicorn closes a keep-alive connection idle for 5 s; never reuse one idle nearly that long.
MAX_IDLE = 4.0


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = time.monotonic()

    async def request(self, head: bytes, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        self.writer.write(head + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: list[tuple[str, str]] = []
        length, chunked, close = None, False, False
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers.append((name, value))
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.lower() == "close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            data = b"".join(parts)
        elif length is not None:
            data = await self.reader.readexactly(length) if length else b""
        else:
            data = await self.reader.read()
            close = True
        if close:
            self.close()
        self.closed = close
        return status, headers, data

    closed = False

    def close(self) -> None:
        self.closed = True
        self.writer.close()


class Pool:
    """Keep-alive connections to one host; a request takes an idle one or opens a new one."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[Connection] = []
        self.opened = 0

    async def _connect(self) -> Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        self.opened += 1
        return Connection(reader, writer)

    def head(self, method: str, path: str, headers: dict[str, str], body_len: int) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {body_len}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _take(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if time.monotonic() - conn.used < MAX_IDLE:
                return conn
            conn.close()  # the server may have closed it already
        return await self._connect()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        head: bytes | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if head is None:
            head = self.head(method, path, headers or {}, len(body))
        conn = await self._take()
        try:
            result = await asyncio.wait_for(conn.request(head, body), self.timeout)
        except BaseException:
            conn.close()
            raise
        if not conn.closed:
            conn.used = time.monotonic()
            self._idle.append(conn)
        return result

    async def warm(self, n: int) -> None:
        """Open ``n`` connections up front, so connection setup is not in the measurement."""
        conns = await asyncio.gather(*(self._connect() for _ in range(max(0, n - len(self._idle)))))
        self._idle.extend(conns)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def cookies(headers: list[tuple[str, str]]) -> dict[str, str]:
    """``Set-Cookie`` name=value pairs of a response (attributes dropped)."""
    found = {}
    for name, value in headers:
        if name == "set-cookie":
            pair = value.split(";", 1)[0]
            key, _, val = pair.partition("=")
            found[key.strip()] = val.strip().strip('"')
    return found
