"""A real PostgreSQL server for the store's tests: ``initdb`` + ``pg_ctl start`` in a private folder.

Debian's ``postgresql`` package (``tests/setup_system.sh`` installs it) gives the programs;
the server runs as the ``postgres`` user (it refuses to run as root) on a free port with its
unix socket in the same private folder, trust authentication, and is stopped at the end of the
session. Tests skip with the reason when there is no PostgreSQL or no psycopg.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from typing import Iterator

import pytest


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user(user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--"] if user else []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[dict[str, str]]:
    """A running server: ``{"host": socket dir, "port": ..., "user": ..., "url": URL of database 'edgeq'}``."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'edgeq[postgres]')")
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (run: bash tests/setup_system.sh)")
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        user = "postgres"
    root = tempfile.mkdtemp(prefix="edgeq-pg-")
    if user:
        info = pwd.getpwnam(user)
        os.chown(root, info.pw_uid, info.pw_gid)
    data = os.path.join(root, "data")
    port = _free_port()
    db_user = user or pwd.getpwuid(os.geteuid()).pw_name
    init = subprocess.run([*_as_user(user), initdb, "-D", data, "-A", "trust", "-U", db_user, "--no-sync"],
                          capture_output=True, text=True, timeout=120)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {root} -c listen_addresses='' -c fsync=off -c max_connections=50"
    start = subprocess.run([*_as_user(user), pg_ctl, "-D", data, "-o", opts, "-l", os.path.join(root, "log"),
                            "-w", "-t", "60", "start"], capture_output=True, text=True, timeout=90)
    if start.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {start.stderr.strip()[-300:]}")
    try:
        import psycopg

        with psycopg.connect(f"postgresql://{db_user}@/postgres?host={root}&port={port}", autocommit=True) as conn:
            conn.execute("CREATE DATABASE edgeq")
        yield {"host": root, "port": str(port), "user": db_user,
               "url": f"postgresql://{db_user}@/edgeq?host={root}&port={port}"}
    finally:
        subprocess.run([*_as_user(user), pg_ctl, "-D", data, "-m", "fast", "-w", "stop"], capture_output=True,
                       timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def new_database(server: dict[str, str], name: str) -> str:
    """A fresh empty database on the server; its URL."""
    import psycopg

    base = f"postgresql://{server['user']}@/postgres?host={server['host']}&port={server['port']}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://{server['user']}@/{name}?host={server['host']}&port={server['port']}"
