"""One rule for "a dependency is unavailable": an outage to wait out, never a crash to count.

A database that is restarting, unreachable or full of connections fails every actor that needs
it at once; counted as crashes, those failures exceed the restart window in milliseconds and take
the whole daemon down although nothing is broken. The supervisor and the actors ask
`dependency_unavailable(error)` and wait (with backoff) instead. Anything else — a bad query, a
missing table, a bug — is still a crash.
"""

from __future__ import annotations

import asyncpg

from blitzclawd.runtime.actor import AskTimeout

# Connection-class failures of PostgreSQL: the server is going away, not there yet, or full.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed, the server restarts
    asyncpg.TooManyConnectionsError,  # 53300
    # asyncpg's protocol found a pooled connection in a half-finished state: what reusing a
    # connection the server dropped mid-answer looks like (never raised for a bad query).
    asyncpg.InternalClientError,
    ConnectionError,  # refused, reset, aborted, broken pipe
)

# OSErrors that say nothing about a dependency being reachable.
_NOT_NETWORK: tuple[type[BaseException], ...] = (
    AskTimeout,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ProcessLookupError,
    ChildProcessError,
    BlockingIOError,
    InterruptedError,
)


class DependencyUnavailable(Exception):
    """Raised (with the original as its cause) where a wait is wanted instead of a crash."""


def dependency_unavailable(error: BaseException | None) -> bool:
    """True if `error` (or what it was explicitly raised from) means a dependency is down.

    Follows `raise ... from` links (a singleton's LockLost wraps the refused connection), never
    the implicit context: a bug made while handling an outage is still a bug.
    """
    seen = 0
    while error is not None and seen < 10:  # bounded: a cause chain is short
        if isinstance(error, (DependencyUnavailable, *_UNAVAILABLE)):
            return True
        if isinstance(error, asyncpg.InterfaceError) and "closed" in str(error):
            return True  # "connection is closed": a pooled connection the server dropped
        # Network errors, unreachable hosts, connect timeouts (asyncpg raises a bare OSError
        # when every address of a host refused); not files, processes, or our own ask timeouts.
        if isinstance(error, OSError) and not isinstance(error, _NOT_NETWORK):
            return True
        error = error.__cause__
        seen += 1
    return False
