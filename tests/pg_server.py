"""
A PostgreSQL server for the tests, and a database of their own on it.

:func:`admin_url` finds the server: ``RHETOR_TEST_DATABASE_URL`` when set,
else PostgreSQL at 127.0.0.1:5432 as ``postgres`` (trust auth, as on the
development machines and in CI). :class:`Throwaway` starts a cluster of its
own from the PostgreSQL binaries when no server answers (``initdb`` refuses
root, so as root it runs as the ``postgres`` user). :func:`create_database`
and :func:`drop_database` make and remove one uniquely named database per
test run.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import attrs
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

__all__ = [
    "DEFAULT_ADMIN_URL",
    "Throwaway",
    "admin_url",
    "create_database",
    "drop_database",
    "reachable",
]

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """The server the tests use: ``RHETOR_TEST_DATABASE_URL``, else the default."""
    return os.environ.get("RHETOR_TEST_DATABASE_URL") or DEFAULT_ADMIN_URL


def reachable(url: str) -> str | None:
    """None if ``url`` accepts a connection within 3 s, else why not (one line)."""
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def create_database(admin: str) -> str:
    """Create a database named for this run; answers its URL."""
    name = f"rhetor_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, connect_timeout=5, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_dbname(admin, name)


def _with_dbname(url: str, name: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = name
    user = params.pop("user", "")
    password = params.pop("password", "")
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    auth = f"{user}{':' + str(password) if password else ''}@" if user else ""
    dbname = params.pop("dbname")
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"postgresql://{auth}{host}:{port}/{dbname}" + (f"?{query}" if query else "")


def drop_database(admin: str, url: str) -> None:
    """Drop the database of ``url``, closing any connection still open to it."""
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin, connect_timeout=5, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@attrs.define
class Throwaway:
    """A PostgreSQL cluster in a temporary directory, for a machine without a server."""

    bin_dir: Path
    root: Path = attrs.field(init=False)
    port: int = attrs.field(init=False, factory=_free_port)

    @classmethod
    def find(cls) -> Throwaway | None:
        """One from the newest installed PostgreSQL binaries, or None if there are none."""
        # On PATH first, so that the newest packaged version (last) wins.
        found = [p for p in [shutil.which("initdb")] if p]
        found += sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        return cls(Path(found[-1]).parent) if found else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> str:
        """initdb and start on a free port (trust auth, loopback only); answers the admin URL."""
        self.root = Path(tempfile.mkdtemp(prefix="rhetor-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.resume()
        return self.url

    def halt(self) -> None:
        """Stop the server at once, as a crash would (``-m immediate``); its files stay."""
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")

    def resume(self) -> None:
        """Start the server (again) on the same port and files, and wait until it answers."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.root / "data"),
            "-l",
            str(self.root / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        """Stop the cluster and remove its files."""
        try:
            self.halt()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
