"""Who may import whom (issue 12): the rules a reviewer would otherwise check by hand.

- views never import actors (they address them through blitzclawd.registry), nor one another;
- an actor never imports another actor (what two share lives outside actors/);
- nothing in proxy/ imports from http/ (the proxy's wire shapes are its own);
- money moves only through blitzclawd.ledger, called from the billing actor (and what runs
  inside it: webhook effects, recovery);
- no SQL in http/ (views and the auth middleware call named queries in blitzclawd.queries, or a
  service in blitzclawd.services for a change that spans a transaction) nor in actors/ (they
  call named queries, by domain: queries/, fleet/pool.py, notify/queue.py, proxy/), and no
  statement is put together from pieces at run time (an f-string only ever adds a constant
  column list).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "blitzclawd"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`, `from x import y` as x.y too."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.lineno, node.module))
            out.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return out


def offenders(folder: str, forbidden: tuple[str, ...], allow_self: bool = False) -> list[str]:
    found = []
    for path in sorted((PACKAGE / folder).glob("*.py")):
        own = f"blitzclawd.{folder.replace('/', '.')}.{path.stem}"
        for line, module in imports(path):
            if allow_self and (module == own or module.startswith(own + ".")):
                continue
            if module.startswith(forbidden):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return found


def test_views_import_no_actor_and_no_other_view() -> None:
    assert not offenders("http/views", ("blitzclawd.actors", "blitzclawd.http.views"))


def test_no_actor_imports_another() -> None:
    found = []
    for path in sorted((PACKAGE / "actors").glob("*.py")):
        for line, module in imports(path):
            if module.startswith("blitzclawd.actors.") and module.split(".")[2] != path.stem:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not found


def test_the_proxy_package_does_not_import_http() -> None:
    assert not offenders("proxy", ("blitzclawd.http",))


def test_the_ledger_is_imported_only_by_its_writer_and_recovery() -> None:
    # billing is money's one writer; payments/apply.py and proxy/recovery.py run only inside it
    # (checked below); testing/seed.py puts test money in through the same function.
    allowed = {"actors/billing.py", "payments/apply.py", "proxy/recovery.py", "testing/seed.py"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for line, module in imports(path):
            if module == "blitzclawd.ledger" or module.startswith("blitzclawd.ledger."):
                if rel not in allowed and rel != "ledger.py":
                    found.append(f"{rel}:{line}")
    assert not found


def test_what_moves_money_runs_only_in_billing() -> None:
    runners = ("blitzclawd.payments.apply.apply_creem_event", "blitzclawd.proxy.recovery.recover_")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for line, module in imports(path):
            if module.startswith(runners) and rel != "actors/billing.py":
                found.append(f"{rel}:{line} imports {module}")
    assert not found


def test_no_module_but_the_ledger_changes_a_balance() -> None:
    # The SQL functions that move money, and the tables they keep, by name: only ledger.py
    # calls or writes them (the migrations define them).
    money = re.compile(
        r"\b(settle_usage|adjust_balance)\s*\(|INSERT\s+INTO\s+ledger_entries"
        r"|UPDATE\s+balances\s+SET\s+[^;]*\bbalance_micros\s*=",
        re.I,
    )
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if money.search(node.value) and rel != "ledger.py":
                    found.append(f"{rel}:{node.lineno}")
    assert not found
    assert money.search("UPDATE balances SET reserved_micros = 0, balance_micros = 1")


SQL = re.compile(
    r"^\s*(SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM|WITH)\b|\bFROM\s+\w+\s+WHERE\b", re.I
)
DATABASE_CALLS = {
    "fetch",
    "fetchrow",
    "fetchval",
    "execute",
    "executemany",
    "transaction",
    "acquire",
}


def sql_in(path: Path) -> list[str]:
    """Statements (string constants that read as SQL) and database calls in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SQL.search(node.value)
        ):
            found.append(f"{path.name}:{node.lineno} SQL {node.value.strip()[:40]!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in DATABASE_CALLS
        ):
            found.append(f"{path.name}:{node.lineno} calls .{node.func.attr}()")
    return found


def test_no_sql_in_http() -> None:
    found = [hit for path in sorted((PACKAGE / "http").rglob("*.py")) for hit in sql_in(path)]
    assert not found


def test_the_dashboard_reads_through_queries_and_changes_through_the_api() -> None:
    """Pages have no SQL, address no actor and import no API view: what they show comes from the
    named queries, what they change goes through the JSON API from the page."""
    found = [hit for path in sorted((PACKAGE / "web").rglob("*.py")) for hit in sql_in(path)]
    assert not found
    assert not offenders(
        "web", ("blitzclawd.actors", "blitzclawd.http.views", "blitzclawd.services")
    )


def test_no_sql_in_actors() -> None:
    # Actors compose named queries (they may hold the transaction that makes several one).
    found = [
        hit
        for path in sorted((PACKAGE / "actors").glob("*.py"))
        for hit in sql_in(path)
        if not hit.endswith((".transaction()", ".acquire()"))
    ]
    assert not found


def test_the_sql_check_sees_sql() -> None:
    sample = PACKAGE.parent / "tests" / "test_layering_sample.tmp"
    sample.write_text('async def f(pool):\n    await pool.fetch("SELECT 1 FROM users")\n')
    try:
        assert len(sql_in(sample)) == 2
    finally:
        sample.unlink()


def test_no_update_statement_is_assembled_from_pieces() -> None:
    # `configure` once built its SET clause from a list of strings: an f-string or a join
    # inside a statement may only add constant column lists (FIELDS, KEY_FIELDS).
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                names = {
                    ast.unparse(v.value) for v in node.values if isinstance(v, ast.FormattedValue)
                }
                if SQL.search(text) and not names <= {"FIELDS", "KEY_FIELDS"}:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {sorted(names)}")
    assert not found
