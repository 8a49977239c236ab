"""Shared by the Python client scripts: runs one operation and prints one line saying how it ended.

Each line is `op<TAB>outcome<TAB>detail` where outcome is
  pass      the operation completed (detail: a short summary of what it saw),
  refused   the database refused it with an ErrorResponse (detail: SQLSTATE and message),
  broken    anything else: a client-side exception that is not a database error.
The Rust test (tests/tests/e2e/compat.rs) compares these lines with what each user may do.
"""

import sys
import traceback


def sqlstate_of(exc):
    """The SQLSTATE of a database error, digging through driver and ORM wrappers."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if state:
            return state
        diag = getattr(exc, "diag", None)
        if diag is not None and getattr(diag, "sqlstate", None):
            return diag.sqlstate
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return None


def one_line(text):
    return " ".join(str(text).split())[:300]


def run(op, fn, db_errors=()):
    """Runs fn(); prints its outcome. db_errors: exception classes that are database errors."""
    try:
        detail = fn()
    except Exception as exc:
        return report_error(op, exc, db_errors)
    return report_pass(op, detail)


async def run_async(op, fn, db_errors=()):
    """Awaits fn(); prints its outcome as `run` does."""
    try:
        detail = await fn()
    except Exception as exc:
        return report_error(op, exc, db_errors)
    return report_pass(op, detail)


def report_error(op, exc, db_errors):
    """Prints `refused` for a database error, `broken` for anything else (a crash of the client:
    what this suite must never see). Returns False."""
    if isinstance(exc, db_errors):
        print(f"{op}\trefused\t{sqlstate_of(exc)} {one_line(exc)}", flush=True)
    else:
        print(f"{op}\tbroken\t{type(exc).__name__}: {one_line(exc)}", flush=True)
        traceback.print_exc(file=sys.stderr)
    return False


def report_pass(op, detail):
    print(f"{op}\tpass\t{one_line(detail if detail is not None else '')}", flush=True)
    return True
