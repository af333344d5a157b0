"""A minimal PostgreSQL wire-protocol client for tests that need a session in a
state no driver leaves it in on demand: stopped between a statement's Execute and its
Sync, as a process frozen in the middle of a pipelined ``executemany`` leaves it.

Trust authentication only (the throwaway test cluster's); anything else raises
:class:`NeedsPassword` so a test can skip with that reason.
"""

from __future__ import annotations

import socket
import struct

from sqlalchemy.engine import make_url


class NeedsPassword(Exception):
    pass


class WireError(Exception):
    pass


def _msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _cstr(value: str) -> bytes:
    return value.encode() + b"\0"


class RawSession:
    def __init__(self, url: str, application_name: str, **settings: str) -> None:
        u = make_url(url)
        self.sock = socket.create_connection((u.host or "127.0.0.1", u.port or 5432), timeout=5)
        params = {
            "user": u.username or "postgres",
            "database": u.database or "postgres",
            "application_name": application_name,
            **settings,
        }
        body = (
            struct.pack("!I", 196608)
            + b"".join(_cstr(k) + _cstr(v) for k, v in params.items())
            + b"\0"
        )
        self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
        kinds = self._read_until(b"Z", auth_ok=True)
        self.pid = self._pid
        assert kinds

    _pid = 0

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            out += chunk
        return out

    def _read_until(self, want: bytes, *, auth_ok: bool = False) -> list[bytes]:
        kinds = []
        while True:
            head = self._read(5)
            kind, length = head[:1], struct.unpack("!I", head[1:])[0]
            body = self._read(length - 4)
            kinds.append(kind)
            if kind == b"R" and auth_ok and struct.unpack("!I", body[:4])[0] != 0:
                raise NeedsPassword("the server asks for a password")
            if kind == b"K":
                self._pid = struct.unpack("!I", body[:4])[0]
            if kind == b"E":
                raise WireError(body.decode(errors="replace"))
            if kind == want:
                return kinds

    def query(self, sql: str) -> None:
        """A simple-protocol query, to its ReadyForQuery."""
        self.sock.sendall(_msg(b"Q", _cstr(sql)))
        self._read_until(b"Z")

    def execute_without_sync(self, sql: str) -> None:
        """Parse, Bind, Execute and Flush, then stop: the statement runs and its locks
        are held, and the backend waits for the next message, active, not idle."""
        self.sock.sendall(
            _msg(b"P", _cstr("") + _cstr(sql) + struct.pack("!H", 0))
            + _msg(b"B", _cstr("") + _cstr("") + struct.pack("!HHH", 0, 0, 0))
            + _msg(b"E", _cstr("") + struct.pack("!I", 0))
            + _msg(b"H", b"")
        )
        self._read_until(b"C")

    def closed_by_server(self) -> bool:
        """Whether the server has closed this connection (after a termination it sends
        an error, then closes)."""
        self.sock.settimeout(5)
        try:
            while True:
                chunk = self.sock.recv(4096)
                if not chunk:
                    return True
        except (ConnectionError, TimeoutError):
            return False

    def close(self) -> None:
        self.sock.close()
