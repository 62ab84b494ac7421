"""One owner per node: the lock file `data_dir/nodes/<node_id>.lock`.

Two mechanisms, because each covers the other's blind spot:

- an OS lock (`fcntl.flock`) on the open file, held for the process's life and released by the kernel when the
  process dies, whatever kills it. On one host it is exact. Across hosts it depends on the shared filesystem
  (Linux NFS maps it to a server-side POSIX lock; a mount with `nolock` or `local_lock=all` keeps it host-local).
- a record in the file: the owner's node id, pid, host, a random token and a heartbeat timestamp rewritten every
  `heartbeat_seconds`. A process on another host cannot see our pid, so it judges by the heartbeat: a record
  younger than `stale_after` seconds belongs to a live owner, even when the OS lock is not shared between hosts.

Taking a lock (`NodeLock.acquire`): the OS lock first (refused while the owner lives on this host or wherever the
filesystem shares locks), then the record: a fresh heartbeat from another host means a live owner there; a record
from this host whose process is gone, a stale heartbeat, or a record marked released is taken over. A survivor
recovering a dead node's spools takes that node's lock the same way, so the restarted node and two survivors
never work on the same spools at once (the spools are also claimed one by one with an atomic rename: see
`ExportStore.recover_spools`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from melvin_trio.errors import MelvinError

RECORD_BYTES: Final = 512  # one pwrite of a fixed size: a reader never sees a record cut short by a shorter one
ROLE_SERVE: Final = "serve"
ROLE_RECOVERY: Final = "recovery"
ROLE_RELEASED: Final = "released"


class NodeLockError(MelvinError, RuntimeError):
    """The node's lock cannot be taken or was lost; the message says whose it is."""


class NodeLockHeld(NodeLockError):
    def __init__(self, path: Path, data_dir: Path, owner: LockRecord | None) -> None:
        self.owner = owner
        who = f"pid {owner.pid} on host {owner.host}" if owner else "another process"
        what = "recovering its spools" if owner and owner.role == ROLE_RECOVERY else "serving"
        super().__init__(
            f"data_dir {data_dir} is in use by {who} ({what} as node {path.stem!r}, lock {path}); "
            "stop it first, or give this server another data_dir or node_id"
        )


@dataclass(frozen=True)
class LockRecord:
    node_id: str
    pid: int
    host: str
    token: str
    role: str
    started: float
    heartbeat: float

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, heartbeat {self.age():.0f} s ago"


def this_host() -> str:
    return socket.gethostname()


def read_record(path: Path) -> LockRecord | None:
    """The record in a lock file, or None if there is none or it cannot be read as one."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return _parse(text)


def _parse(text: str) -> LockRecord | None:
    try:
        data = json.loads(text.strip() or "null")
        return LockRecord(
            node_id=str(data["node_id"]),
            pid=int(data["pid"]),
            host=str(data["host"]),
            token=str(data["token"]),
            role=str(data["role"]),
            started=float(data["started"]),
            heartbeat=float(data["heartbeat"]),
        )
    except (ValueError, TypeError, KeyError):
        return None


class NodeLock:
    """The lock of one node id in `data_dir/nodes/`. Not thread-safe; one instance per holder."""

    def __init__(self, data_dir: Path, node_id: str, *, stale_after: float, role: str = ROLE_SERVE) -> None:
        self.data_dir = data_dir
        self.node_id = node_id
        self.path = data_dir / "nodes" / f"{node_id}.lock"
        self.stale_after = stale_after
        self.role = role
        self._fd: int | None = None
        self._record: LockRecord | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> LockRecord | None:
        """Take the lock, or raise NodeLockHeld (touching nothing) while its owner lives. Returns the record of a
        previous owner that did not release it (a crash: the caller logs the take-over), else None. Raises
        OSError if data_dir is not writable."""
        if self._fd is not None:
            raise NodeLockError(f"{self.path}: already held by this process")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                    raise
                raise NodeLockHeld(self.path, self.data_dir, _parse(_read_fd(fd))) from None
            previous = _parse(_read_fd(fd))
            # The OS lock is ours, so no process on this host holds it. An owner on another host is judged by its
            # heartbeat (the OS lock may not reach across hosts).
            if (
                previous is not None
                and previous.role != ROLE_RELEASED
                and previous.host != this_host()
                and previous.age() < self.stale_after
            ):
                raise NodeLockHeld(self.path, self.data_dir, previous)
            now = time.time()
            self._record = LockRecord(
                node_id=self.node_id,
                pid=os.getpid(),
                host=this_host(),
                token=secrets.token_hex(8),
                role=self.role,
                started=now,
                heartbeat=now,
            )
            _write_fd(fd, self._record)
        except BaseException:
            os.close(fd)  # closing drops the OS lock too
            raise
        self._fd = fd
        return previous if previous is not None and previous.role != ROLE_RELEASED else None

    def heartbeat(self) -> None:
        """Rewrite the record with the current time. Raises NodeLockError if another process has taken the lock
        over (this node's heartbeat was stale: a hung filesystem, a paused machine), OSError if the write fails."""
        if self._fd is None or self._record is None:
            raise NodeLockError(f"{self.path}: not held")
        current = _parse(_read_fd(self._fd))
        if current is not None and current.token != self._record.token:
            raise NodeLockError(f"{self.path}: taken over by {current.describe()} (role {current.role})")
        self._record = LockRecord(**{**asdict(self._record), "heartbeat": time.time()})
        _write_fd(self._fd, self._record)

    def release(self) -> None:
        """Mark the record released and drop the OS lock (idempotent). The file stays: deleting it would let a
        process that opened it before the delete lock a file nobody else sees."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._record is not None:
                current = _parse(_read_fd(fd))
                if current is None or current.token == self._record.token:
                    _write_fd(
                        fd, LockRecord(**{**asdict(self._record), "role": ROLE_RELEASED, "heartbeat": time.time()})
                    )
        finally:
            os.close(fd)


def other_node_ids(data_dir: Path, node_id: str) -> list[str]:
    """The node ids that have a lock file in data_dir, except `node_id`."""
    nodes = data_dir / "nodes"
    with contextlib.suppress(FileNotFoundError):
        return sorted(p.stem for p in nodes.glob("*.lock") if p.stem != node_id)
    return []


def _read_fd(fd: int) -> str:
    return os.pread(fd, RECORD_BYTES * 2, 0).decode("utf-8", errors="replace")


def _write_fd(fd: int, record: LockRecord) -> None:
    data = json.dumps(asdict(record)).encode("utf-8")
    os.pwrite(fd, data.ljust(RECORD_BYTES - 1) + b"\n", 0)
    os.fsync(fd)  # other hosts read the heartbeat through the shared filesystem
