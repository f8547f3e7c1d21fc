"""A throwaway PostgreSQL cluster for the tests: initdb in a temp folder, started on a free port on
127.0.0.1 with trust auth, stopped and removed afterwards. As root, the server runs as the
`postgres` user (Debian's package makes it) or `nobody`: PostgreSQL refuses to run as root.
`scripts/install` installs the server from the Debian packages; without it the tests that need
it fail, saying so (they never skip)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True) or [shutil.which(name) or ""]
    if not found[0]:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: run scripts/install (Debian package postgresql)")
    return found[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def cluster() -> Iterator[str]:
    """Yields a SQLAlchemy URL (postgresql+psycopg://) to a fresh, empty cluster."""
    folder = Path(tempfile.mkdtemp(prefix="healthsync-pg-"))
    data, port = folder / "data", _free_port()
    user: dict[str, int] = {}
    if os.geteuid() == 0:
        account = next((pwd.getpwnam(n) for n in ("postgres", "nobody") if _exists(n)), None)
        if account is None:
            raise RuntimeError("running as root and there is no postgres or nobody user to run PostgreSQL as")
        os.chown(folder, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid}
    run = lambda *args: subprocess.run(args, check=True, capture_output=True, text=True, cwd=folder, **user)  # noqa: E731
    try:
        run(_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(_binary("pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"), "-o",
            f"-p {port} -h 127.0.0.1 -k {folder} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            "start")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr or exc.stdout}") from None
    finally:
        subprocess.run([_binary("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       cwd=folder, **user)
        shutil.rmtree(folder, ignore_errors=True)


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
