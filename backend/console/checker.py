"""The statement check of the query console: lexing, one read statement, no side effects."""
from __future__ import annotations

import re

from ..errors import ApiError

DEFAULT_QUERY = "SELECT 1"
DEFAULT_MAX_ROWS = 100
MAX_ROWS_CAP = 1000
MAX_QUERY_LENGTH = 10_000

READ_STATEMENTS = {"select", "with", "values", "table", "show", "explain", "describe", "desc"}
# Words that only appear in statements that write, lock, or change the session.
WRITE_WORDS = {
    "insert", "update", "delete", "merge", "upsert", "replace", "drop", "create", "alter", "truncate",
    "rename", "grant", "revoke", "copy", "call", "do", "execute", "prepare", "deallocate", "lock",
    "unlock", "vacuum", "reindex", "cluster", "refresh", "set", "reset", "load", "handler", "into",
    "attach", "detach", "pragma", "comment", "import", "notify", "listen", "begin", "commit",
    "rollback", "savepoint", "release", "analyze", "analyse", "optimize", "repair", "flush", "kill",
    "shutdown", "install", "uninstall", "security", "discard", "checkpoint",
}
SIDE_EFFECT_FUNCTIONS = re.compile(
    r"^(pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile|pg_advisory\w*"
    r"|pg_try_advisory\w*|set_config|dblink\w*|lo_\w+|pg_notify|pg_stat_reset\w*|pg_switch_wal"
    r"|pg_promote|pg_create_\w+|pg_drop_\w+|pg_replication_\w+|pg_logical_\w+|pg_read_\w*file"
    r"|pg_ls_\w+|pg_file_\w+|query_to_\w+|cursor_to_\w+|nextval|setval|txid_current|pg_current_xact_id"
    r"|get_lock|release_lock|release_all_locks|is_used_lock|benchmark|load_file|sys_exec|sys_eval"
    r"|load_extension|readfile|writefile|edit|fts3_tokenizer)$",
    re.IGNORECASE,
)


def _tokenizer(dialect: str) -> re.Pattern[str]:
    """A tokenizer that reads quotes and comments the way ``dialect`` does."""
    mysql = dialect in ("mysql", "mariadb")
    postgresql = dialect == "postgresql"
    comment = r"--[^\n]*|/\*.*?\*/" + (r"|\#[^\n]*" if mysql else "")
    if mysql:  # backslash escapes in every string, double quotes are strings too
        string = r"[BbXxNn]?'(?:[^'\\]|''|\\.)*'|\"(?:[^\"\\]|\"\"|\\.)*\""
    elif postgresql:  # backslash escapes only in E'...'
        string = r"[Ee]'(?:[^'\\]|''|\\.)*'|[BbXxNnUu]?&?'(?:[^']|'')*'"
    else:
        string = r"[BbXx]?'(?:[^']|'')*'"
    dollar = r"(?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)?\$)|" if postgresql else ""
    identifier = r"`(?:[^`]|``)*`" if mysql else r'"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]'
    return re.compile(
        rf"""
        (?P<executable>/\*[!M+])
      | (?P<comment>{comment})
      | {dollar}(?P<string>{string})
      | (?P<identifier>{identifier})
      | (?P<word>[A-Za-z_][\w$]*)
      | (?P<semicolon>;)
      | (?P<paren>\()
      | (?P<space>\s+)
      | (?P<other>.)
        """,
        re.VERBOSE | re.DOTALL,
    )


TOKENIZERS = {name: _tokenizer(name) for name in ("postgresql", "mysql", "mariadb", "sqlite")}


def reject(reason: str) -> ApiError:
    return ApiError(400, "query_rejected", reason, "Query refused")


def check_statement(query: str, dialect: str) -> str:
    """Refuse what is not one read-only statement; returns its first keyword."""
    tokens = [
        (match.lastgroup, match.group())
        for match in TOKENIZERS[dialect].finditer(query)
        if match.lastgroup not in ("comment", "space")
    ]
    if any(kind == "executable" for kind, _ in tokens):
        raise reject("Executable comments are not allowed")
    others = "".join(value for kind, value in tokens if kind == "other")
    if any(mark in others for mark in ("'", '"', "`", "/*", "$$")):
        raise reject("Unterminated quote or comment")
    while tokens and tokens[-1][0] == "semicolon":
        tokens.pop()
    if not tokens:
        raise reject("The query is empty")
    if any(kind == "semicolon" for kind, _ in tokens):
        raise reject("Only one statement is allowed")
    first = tokens[0][1].lower()
    if tokens[0][0] != "word" or first not in READ_STATEMENTS:
        raise reject("Only read statements (SELECT, WITH, VALUES, SHOW, EXPLAIN) are allowed")
    for index, (kind, value) in enumerate(tokens):
        if kind not in ("word", "identifier"):
            continue
        word = value.strip('"`[]').lower()
        if word in WRITE_WORDS:
            raise reject(f"{word.upper()} is not allowed: the console is read-only")
        followed_by_paren = index + 1 < len(tokens) and tokens[index + 1][0] == "paren"
        if followed_by_paren and SIDE_EFFECT_FUNCTIONS.match(word):
            raise reject(f"{word}() has side effects and is not allowed")
    return first


