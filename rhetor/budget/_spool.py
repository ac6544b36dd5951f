"""
Charges kept from the ledger during an outage, on local disk too, so that a process killed meanwhile loses none.

While the database is out of reach the BudgetKeeper keeps the charges it
cannot write (:mod:`rhetor.budget._unrecorded`) and answers their settles:
the replies go out. So that those replies' charges survive the process
(``kill -9``, a crash) as well as the outage, each kept charge is also
appended to ``<spool dir>/<owner>.jsonl`` and synced to disk before its
settle is answered. The file is emptied once every kept charge is written.

The runtime holds an advisory lock (``flock``) on its own file while it
lives. A runtime that starts takes over the files of owners that hold no
lock (their process is gone): it copies their charges into its own file,
removes theirs, and writes them to the ledger like its own kept charges (the
ledger records a charge id once, so a charge that did reach the ledger is
not billed twice). Only processes on one machine, sharing one data
directory, see each other's files.

Error handling: a spool that cannot be written (a read-only or full disk)
is logged; the charges stay kept in memory, as they were before this file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import attrs

from rhetor._errors import RhetorError
from rhetor.budget._interfaces import LedgerEntry

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["ChargeSpool"]

log = logging.getLogger("rhetor.budget")


@attrs.define(eq=False)
class ChargeSpool:
    """
    The kept charges of one owner, appended and synced to ``directory/<owner>.jsonl``.

    Synchronous (every call waits on the disk): the keeper calls it in a worker thread.
    """

    directory: Path
    owner: str
    # Invariant: open (and flock'ed) from the first append until close().
    _fd: int | None = attrs.field(init=False, default=None)
    _dirty: bool = attrs.field(init=False, default=False)

    @property
    def path(self) -> Path:
        return self.directory / f"{self.owner}.jsonl"

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fd = fd
        return self._fd

    def append(self, entries: list[LedgerEntry]) -> None:
        """
        Add ``entries`` to the file and sync it to disk.

        Error handling: ``OSError`` when the disk refuses (the caller logs it).
        """
        if not entries:
            return
        fd = self._open()
        data = "".join(json.dumps(attrs.asdict(e)) + "\n" for e in entries).encode()
        os.write(fd, data)
        os.fsync(fd)
        self._dirty = True

    def clear(self) -> None:
        """Every kept charge is in the ledger: empty the file."""
        if self._fd is not None and self._dirty:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._dirty = False

    def adopt(self) -> list[LedgerEntry]:
        """
        Take over the files of owners whose process is gone; answers their charges.

        Their charges are appended to this owner's file (synced) before their
        files are removed, so a crash between the two leaves them twice on
        disk at worst, never nowhere. A file another live process holds is
        left alone; a line that cannot be read is logged and skipped.
        """
        if not self.directory.is_dir():
            return []
        adopted: list[LedgerEntry] = []
        for path in sorted(self.directory.glob("*.jsonl")):
            if path == self.path:
                continue
            with contextlib.ExitStack() as stack:
                try:
                    fd = os.open(path, os.O_RDWR)
                except FileNotFoundError:
                    continue  # another process adopted it first
                stack.callback(os.close, fd)
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # its owner lives
                entries = _read(path)
                self.append(entries)
                path.unlink(missing_ok=True)
                adopted += entries
        return adopted

    def close(self) -> None:
        """Release the file: removed if empty, kept (for the next start to adopt) if not."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.fstat(fd).st_size == 0:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _read(path: Path) -> list[LedgerEntry]:
    entries = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            fields: dict[str, Any] = json.loads(line)
            entries.append(LedgerEntry(**fields))
        except (ValueError, TypeError, RhetorError) as exc:
            log.error("skipping line %d of kept charges %s: %s", number, path, exc)
    return entries
