"""The statement check: one read statement, no side effects, rebuilt from the tokens it checked.

The lexers read the text exactly as the server will; the check then refuses
several statements, anything but a read, words that only occur in statements
that write or lock, and calls of functions that act on the session or the
server, or that run SQL given as a string (the name compared after unquoting
and decoding, whatever schema qualifies it). What the service sends is the
statement rebuilt from those same tokens, with comments dropped and parameter
markers in the driver's own style, so nothing the check did not see can reach
the server.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ApiError
from .lexers import LexError, Settings, Token, lex

DEFAULT_QUERY = "SELECT 1"
DEFAULT_MAX_ROWS = 100
MAX_ROWS_CAP = 1000
MAX_QUERY_LENGTH = 10_000

READ_STATEMENTS = {
    "postgresql": {"select", "with", "values", "table", "show", "explain"},
    "mysql": {"select", "with", "values", "table", "show", "explain", "describe", "desc"},
    "sqlite": {"select", "with", "values", "explain"},
}
# Words that only appear in statements that write, lock, or change the session.
WRITE_WORDS = {
    "insert", "update", "delete", "merge", "upsert", "drop", "create", "alter", "truncate",
    "rename", "grant", "revoke", "copy", "call", "do", "execute", "prepare", "deallocate", "lock",
    "unlock", "vacuum", "reindex", "cluster", "refresh", "set", "reset", "load", "handler", "into",
    "attach", "detach", "pragma", "import", "notify", "listen", "unlisten", "begin", "commit",
    "rollback", "savepoint", "release", "analyze", "analyse", "optimize", "repair", "flush", "kill",
    "shutdown", "install", "uninstall", "security", "discard", "checkpoint", "share", "procedure",
    "outfile", "dumpfile",
}
# Functions that act on the session, the server or its files, or run SQL given as a string.
SIDE_EFFECT_FUNCTIONS = re.compile(
    r"pg_(?:try_)?advisory_\w+|pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile\w*"
    r"|pg_log_backend_memory_contexts|pg_switch_(?:wal|xlog)|pg_promote|pg_create_\w+|pg_drop_\w+"
    r"|pg_replication_\w+|pg_logical_\w+|pg_copy_\w+|pg_read_\w*file\w*|pg_stat_file|pg_ls_\w+|pg_file_\w+"
    r"|pg_stat_reset\w*|pg_stat_statements_reset|pg_(?:start|stop)_backup|pg_backup_\w+|pg_(?:wal|xlog)_replay_\w+"
    r"|pg_import_system_collations|pg_export_snapshot|pg_notify|pg_background_\w+|pg_prewarm|pg_truncate_\w+"
    r"|set_config|dblink\w*|lo_\w+|loread|lowrite|nextval|setval|txid_current\w*|pg_current_xact_id\w*"
    r"|ts_stat|ts_rewrite|query_to_\w+|cursor_to_\w+|\w+_to_xml\w*|binary_upgrade_\w+"
    r"|get_lock|release_lock|release_all_locks|is_free_lock|is_used_lock|benchmark|load_file|last_insert_id"
    r"|(?:master|source)_pos_wait|master_gtid_wait|wait_for_executed_gtid_set|wait_until_sql_thread_after_gtids"
    r"|lastval|sys_exec|sys_eval|load_extension|readfile|writefile|edit|fts3_tokenizer"
)


@dataclass(frozen=True)
class Checked:
    statement: str  # what the driver is given: rebuilt from the checked tokens
    first: str  # the statement's first keyword, lower case
    params: tuple[str, ...]  # parameter names in order of first use


def reject(reason: str) -> ApiError:
    return ApiError(400, "query_rejected", reason, "Query refused")


def family(dialect: str) -> str:
    return "mysql" if dialect in ("mysql", "mariadb") else dialect


def check_statement(
    query: str, dialect: str, settings: Settings | None = None, paramstyle: str = "named"
) -> Checked:
    """Refuse what is not one read-only statement; return it rebuilt for the driver."""
    if "\x00" in query or not _encodable(query):
        raise reject("The query holds a NUL character or text that is not valid Unicode")
    try:
        tokens = lex(query, dialect, settings)
    except LexError as error:
        raise reject(f"Cannot read the query safely: {error}") from None
    while tokens and tokens[-1].kind == "punct" and tokens[-1].value == ";":
        tokens.pop()
    if not tokens:
        raise reject("The query is empty")
    if any(token.kind == "punct" and token.value == ";" for token in tokens):
        raise reject("Only one statement is allowed")
    strange = next((token for token in tokens if token.kind == "other"), None)
    if strange is not None:
        raise reject(f"Unexpected character {strange.text!r} outside quotes")
    first = tokens[0]
    if first.kind != "word" or first.value not in READ_STATEMENTS[family(dialect)]:
        raise reject("Only read statements (SELECT, WITH, VALUES, SHOW, EXPLAIN) are allowed")
    for index, token in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        _check_token(token, following, dialect)
    params = tuple(dict.fromkeys(token.value for token in tokens if token.kind == "param"))
    return Checked(rebuild(tokens, paramstyle), first.value, params)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, which JSON can carry
        return False
    return True


def _check_token(token: Token, following: Token | None, dialect: str) -> None:
    if token.kind in ("word", "ident"):
        name = token.value.lower()
        if name in WRITE_WORDS:
            raise reject(f"{name.upper()} is not allowed: the console is read-only")
        called = following is not None and following.kind == "punct" and following.value == "("
        if called and SIDE_EFFECT_FUNCTIONS.fullmatch(name):
            raise reject(f"{name}() has side effects and is not allowed")
        if family(dialect) == "mysql" and name == "next" and following is not None and following.value == "value":
            raise reject("NEXT VALUE FOR changes a sequence and is not allowed")
    elif token.kind == "op" and token.value == ":=" and family(dialect) == "mysql":
        raise reject(":= assigns a session variable and is not allowed")


def rebuild(tokens: list[Token], paramstyle: str) -> str:
    """The statement from its tokens: comments dropped, markers in the driver's style.

    Tokens that touched keep touching (MySQL reads ``count (`` differently from
    ``count(``); anything that separated two tokens becomes one space.
    Parameter markers always get spaces around them, so a bound value can never
    join a neighbour (``-`` and ``-1`` would make a comment).
    """
    pyformat = paramstyle == "pyformat"
    out: list[str] = []
    after_marker = False
    for token in tokens:
        marker = token.kind == "param"
        if marker:
            text = f"%({token.value})s" if pyformat else f":{token.value}"
        else:
            text = token.text.replace("%", "%%") if pyformat else token.text
        if out and (token.spaced or marker or after_marker):
            out.append(" ")
        out.append(text)
        after_marker = marker
    return "".join(out)
