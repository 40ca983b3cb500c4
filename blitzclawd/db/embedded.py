"""A private PostgreSQL cluster owned by this process.

Used when no database URL is configured, and by the test session. Layout of ``base_dir``:
``data/`` (PGDATA), ``password`` (0600), ``log`` (server log), ``lock`` (flock held while a
process owns the cluster). The postmaster is our own child, not daemonised by pg_ctl, and gets
PR_SET_PDEATHSIG=SIGINT (fast shutdown) so the cluster never outlives the daemon. That signal
fires when the *thread* that forked exits: call start() from the thread that lives as long as
the daemon (the event loop's). Process handling is plain ``subprocess`` with waits in a worker
thread, so one instance may be started on one event loop and stopped on another.

Why one module: the lifecycle of one private cluster (initdb, start, restart, stop, the lock):
each step depends on the others' files and process handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

SUPERUSER = "blitzclawd"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
INITDB_TIMEOUT = 120.0
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
_PORT_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1
_DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class EmbeddedPostgresError(RuntimeError):
    """The embedded cluster could not be created or started; the message says what to do."""


@dataclass(frozen=True, slots=True)
class _Account:
    """Who runs initdb/postgres: ``None`` uid means "as ourselves" (we are not root)."""

    name: str
    uid: int | None = None
    gid: int | None = None


class EmbeddedPostgres:
    def __init__(
        self, base_dir: Path, *, run_as: str | None = None, database: str = "blitzclawd"
    ) -> None:
        if not _DB_NAME.fullmatch(database):
            raise ValueError(f"invalid database name {database!r}")
        self.base_dir = Path(base_dir).absolute()
        self.data_dir = self.base_dir / "data"
        self.password_file = self.base_dir / "password"
        self.log_file = self.base_dir / "log"
        self._run_as = run_as
        self._database = database
        self.lock_file = self.base_dir / "lock"
        self._proc: subprocess.Popen[bytes] | None = None
        self._dsn: str | None = None
        self._port: int | None = None  # kept across a restart: the DSN in use must stay valid
        self._lock_fd: int | None = None

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not running; call start() first")
        return self._dsn

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> str:
        """Create the cluster on first use, start it and return the DSN (idempotent)."""
        if self._proc is not None and self._proc.poll() is None and self._dsn is not None:
            return self._dsn
        bindir = find_bindir()
        account = _resolve_account(self._run_as)
        self._prepare_base_dir(account)
        self._lock_state_dir()
        try:
            password = self._password(account)
            if not (self.data_dir / "PG_VERSION").exists():
                await self._initdb(bindir, account)
            self._check_data_dir(account)
            await self._wait_for_leftover_postmaster()
            self._rotate_log()
            port = await self._launch(bindir, account, password)
        except BaseException:
            self._unlock_state_dir()
            raise
        self._port = port
        self._dsn = _make_dsn(password, port, self._database)
        return self._dsn

    def died(self) -> bool:
        """True if the postmaster was started and is not running now (it died, or a restart
        failed); reaps it."""
        proc = self._proc
        return self._port is not None and (proc is None or proc.poll() is not None)

    async def restart(self) -> str:
        """Start the postmaster again after it died, on the same port, so every DSN handed out
        stays valid; its crash recovery (WAL replay) runs before this returns. Raises
        EmbeddedPostgresError if it cannot (try again later: the dead server's backends may still
        hold its shared memory, or someone took the port)."""
        if self._port is None:
            raise EmbeddedPostgresError("embedded PostgreSQL was never started; call start()")
        if self._proc is not None and self._proc.poll() is None:
            return self.dsn
        bindir = find_bindir()
        account = _resolve_account(self._run_as)
        password = self._password(account)
        await self._wait_for_leftover_postmaster()
        self._rotate_log()
        await self._launch(bindir, account, password, port=self._port)
        self._dsn = _make_dsn(password, self._port, self._database)
        return self._dsn

    async def stop(self) -> None:
        """Fast shutdown (SIGINT); SIGKILL the postmaster and its children after a timeout."""
        await self._stop_postmaster()
        self._unlock_state_dir()

    async def _stop_postmaster(self) -> None:
        proc, self._proc, self._dsn = self._proc, None, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                children = _child_pids(proc.pid)
                for pid in (proc.pid, *children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, STOP_TIMEOUT)  # reaps it

    # -- start-up steps ---------------------------------------------------------------------

    def _prepare_base_dir(self, account: _Account) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)  # holds the password
        if account.uid is not None:
            _check_traversable(self.base_dir.resolve(), account)
            os.chown(self.base_dir, account.uid, account.gid or -1)

    def _password(self, account: _Account) -> str:
        if self.password_file.exists():
            password = self.password_file.read_text().strip()
            if password:
                return password
        if (self.data_dir / "PG_VERSION").exists():
            raise EmbeddedPostgresError(
                f"{self.password_file} is missing but the cluster in {self.data_dir} exists; "
                "restore the password file or remove the state directory to start afresh"
            )
        password = secrets.token_urlsafe(32)
        scratch = self.password_file.with_suffix(".new")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            if account.uid is not None:  # initdb reads it as that account
                os.fchown(f.fileno(), account.uid, account.gid or -1)
            f.write(password + "\n")
        scratch.replace(self.password_file)
        return password

    async def _initdb(self, bindir: Path, account: _Account) -> None:
        # initdb into a scratch dir and rename: an interrupted initdb never looks like a cluster.
        scratch = self.base_dir / "data.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        argv = [
            str(bindir / "initdb"),
            "-D", str(scratch),
            "-U", SUPERUSER,
            "--auth=scram-sha-256",  # not trust: other local users must not get in
            f"--pwfile={self.password_file}",
            "-E", "UTF8",
            "--locale=C",
        ]  # fmt: skip
        offset = _size(self.log_file)
        proc = self._spawn(argv, account)
        try:
            code = await asyncio.to_thread(proc.wait, INITDB_TIMEOUT)
        except BaseException:
            proc.kill()
            raise
        if code != 0:
            raise EmbeddedPostgresError(
                f"initdb failed (exit {code}) for {scratch}:\n{_tail(self.log_file, offset)}"
            )
        scratch.rename(self.data_dir)

    def _check_data_dir(self, account: _Account) -> None:
        owner = self.data_dir.stat().st_uid
        expected = os.geteuid() if account.uid is None else account.uid
        if owner != expected:
            raise EmbeddedPostgresError(
                f"{self.data_dir} is owned by uid {owner} but PostgreSQL would run as "
                f"{account.name!r} (uid {expected}); pass run_as=<owner> or chown -R the "
                "state directory"
            )

    def _lock_state_dir(self) -> None:
        # Held while we own the cluster; the kernel drops it when we die, however we die.
        if self._lock_fd is not None:
            return
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EmbeddedPostgresError(
                f"another blitzclawd daemon is using {self.base_dir}; stop it, or give this one "
                "a different state directory or a database URL"
            ) from None
        self._lock_fd = fd

    def _unlock_state_dir(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    async def _wait_for_leftover_postmaster(self) -> None:
        """A postmaster on our data dir, although we hold the lock, is our dead predecessor's:
        PR_SET_PDEATHSIG told it to shut down. Give it the time a fast shutdown takes."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return  # a stale file from a killed postmaster is fine: postgres ignores it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT
        while _is_postmaster_of(pid, self.data_dir):
            if loop.time() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL (pid {pid}) still runs on {self.data_dir} although no "
                    "blitzclawd daemon owns it; stop that process"
                )
            await asyncio.sleep(0.05)

    def _rotate_log(self) -> None:
        if _size(self.log_file) > _LOG_ROTATE_BYTES:
            self.log_file.replace(self.log_file.with_suffix(".1"))

    async def _launch(
        self, bindir: Path, account: _Account, password: str, *, port: int | None = None
    ) -> int:
        """Start the postmaster on `port` (else a free one), wait until it serves; the port."""
        for _ in range(_PORT_ATTEMPTS):
            chosen = port or _free_port()
            log_offset = _size(self.log_file)
            self._proc = self._spawn_postmaster(bindir, account, chosen)
            try:
                await self._wait_ready_and_create_db(password, chosen, log_offset)
                return chosen
            except _PortTaken:
                await self._stop_postmaster()
                if port is not None:
                    raise EmbeddedPostgresError(f"port {port} on 127.0.0.1 is taken") from None
            except BaseException:
                # Includes cancellation: never leave a half-started postmaster behind.
                await asyncio.shield(self._stop_postmaster())
                raise
        raise EmbeddedPostgresError(f"no free port on 127.0.0.1 after {_PORT_ATTEMPTS} tries")

    def _spawn_postmaster(
        self, bindir: Path, account: _Account, port: int
    ) -> subprocess.Popen[bytes]:
        argv = [
            str(bindir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "unix_socket_directories=",  # TCP + password only; no socket files to leak
            "-c", "fsync=on",
            "-c", "logging_collector=off",
        ]  # fmt: skip
        return self._spawn(argv, account)

    def _spawn(self, argv: list[str], account: _Account) -> subprocess.Popen[bytes]:
        parent = os.getpid()

        def preexec() -> None:
            # Runs in the child after the uid switch (which clears PDEATHSIG), right before exec.
            if _libc is not None:
                _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
            if os.getppid() != parent:  # we died between fork and prctl
                os._exit(1)

        identity: dict[str, object] = {}
        if account.uid is not None:
            identity = {"user": account.uid, "group": account.gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        with open(self.log_file, "ab") as log:
            if account.uid is not None:
                os.fchown(log.fileno(), account.uid, account.gid or -1)
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                env=env,
                # Own session: a Ctrl-C on the daemon's terminal must not reach PostgreSQL
                # before the daemon has drained; the daemon stops it last, via stop().
                start_new_session=True,
                preexec_fn=preexec,
                **identity,  # type: ignore[arg-type]
            )

    async def _wait_ready_and_create_db(self, password: str, port: int, log_offset: int) -> None:
        assert self._proc is not None
        admin_dsn = _make_dsn(password, port, "postgres")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = _tail(self.log_file, log_offset)
                if "could not bind" in tail or "Address already in use" in tail:
                    raise _PortTaken
                raise EmbeddedPostgresError(f"postgres exited with {code} during start:\n{tail}")
            try:
                conn = await asyncpg.connect(admin_dsn, timeout=2)
                break
            except (OSError, asyncpg.CannotConnectNowError):  # OSError covers TimeoutError
                if loop.time() > deadline:
                    raise EmbeddedPostgresError(
                        f"postgres did not accept connections within {READY_TIMEOUT:.0f} s:\n"
                        f"{_tail(self.log_file, log_offset)}"
                    ) from None
                await asyncio.sleep(0.05)
            except asyncpg.InvalidPasswordError:
                raise EmbeddedPostgresError(
                    f"{self.password_file} does not match the cluster in {self.data_dir}"
                ) from None
        try:
            exists = await conn.fetchval(
                "SELECT true FROM pg_database WHERE datname = $1", self._database
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self._database}"')
        finally:
            await conn.close()


class _PortTaken(Exception):
    """Someone grabbed the port between probing and postgres binding it."""


def _load_libc() -> ctypes.CDLL | None:
    # Loaded in the parent: dlopen in a forked child of a threaded process is not safe.
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True)


_libc = _load_libc()


def find_bindir() -> Path:
    """Directory holding initdb + postgres: PATH, then Debian layout, then the pgserver wheel."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: _version_key(p.parent.name), reverse=True)
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")  # POSTGRES_BIN_PATH
    for bindir in candidates:
        if all(os.access(bindir / exe, os.X_OK) for exe in ("initdb", "postgres")):
            return bindir
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries (initdb, postgres) found on PATH, in "
        "/usr/lib/postgresql/*/bin or in the pgserver package; install PostgreSQL "
        "(e.g. apt-get install postgresql) or `pip install blitzclawd[pgserver]`, "
        "or configure a database URL"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def _resolve_account(run_as: str | None) -> _Account:
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        if run_as is not None and run_as != me:
            raise EmbeddedPostgresError(f"run_as={run_as!r} needs root; we run as {me!r}")
        return _Account(me)
    names = [run_as] if run_as is not None else ["postgres", "nobody"]
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise EmbeddedPostgresError("PostgreSQL refuses to run as root; pick another run_as")
        return _Account(name, entry.pw_uid, entry.pw_gid)
    raise EmbeddedPostgresError(
        f"running as root but no user {' or '.join(map(repr, names))} exists to run PostgreSQL; "
        "create one (useradd --system postgres) or set run_as"
    )


def _check_traversable(path: Path, account: _Account) -> None:
    """The unprivileged account must be able to reach ``path`` (it has no supplementary groups)."""
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid == account.uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == account.gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise EmbeddedPostgresError(
                f"PostgreSQL runs as {account.name!r}, which cannot traverse {parent} "
                f"(mode {stat.filemode(st.st_mode)}); put the state directory elsewhere, "
                f"`chmod o+x {parent}`, or configure a database URL"
            )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_dsn(password: str, port: int, database: str) -> str:
    return f"postgresql://{SUPERUSER}:{quote(password, safe='')}@127.0.0.1:{port}/{database}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _tail(path: Path, offset: int, limit: int = 4000) -> str:
    """What the server logged since ``offset`` (the current run), at most ``limit`` chars."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return text[-limit:].strip() or "(log is empty)"


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    argv = _proc_cmdline(pid)
    return bool(argv) and "postgres" in Path(argv[0]).name and str(data_dir) in argv


def _child_pids(pid: int) -> list[int]:
    children = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat_file.parent.name))
    return children
