"""The lexers and the checker without a database: what each server would read, and what is sent."""
from __future__ import annotations

import time

import pytest

from backend.console.checker import check_statement
from backend.console.lexers import Settings, lex
from backend.errors import ApiError


def kinds(query: str, dialect: str, settings: Settings | None = None) -> list[tuple[str, str]]:
    return [(token.kind, token.value) for token in lex(query, dialect, settings)]


def refused(query: str, dialect: str, settings: Settings | None = None) -> str:
    with pytest.raises(ApiError) as caught:
        check_statement(query, dialect, settings)
    assert caught.value.code == "query_rejected"
    return caught.value.error


@pytest.mark.parametrize("query, value", [
    ('U&"\\0070g_advisory_lock"', "pg_advisory_lock"),
    ("U&\"!0070g_!+000061dvisory_lock\" UESCAPE '!'", "pg_advisory_lock"),
    ('U&"\\D83D\\DE00"', "\U0001F600"),
    ('"PG_Advisory_Lock"', "PG_Advisory_Lock"),
    ("PG_ADVISORY_LOCK", "pg_advisory_lock"),
    ('"' + "a" * 70 + '"', "a" * 63),  # names are cut to NAMEDATALEN - 1 bytes, as the server does
])
def test_postgresql_names_are_decoded(query, value):
    assert lex(query, "postgresql")[0].value == value


def test_postgresql_comments_and_literals():
    assert kinds("1 --x\r, 2", "postgresql") == [("number", "1"), ("punct", ","), ("number", "2")]
    assert kinds("1 /* a /* b */ c */ 2", "postgresql") == [("number", "1"), ("number", "2")]
    assert [t.kind for t in lex("'a'\n-- c\r 'b' x", "postgresql")] == ["string", "word"]
    assert [t.kind for t in lex("'a' /* c */\n'b'", "postgresql")] == ["string", "string"]
    assert [t.kind for t in lex("E'\\'' x", "postgresql")] == ["string", "word"]
    assert [t.kind for t in lex("'\\' x", "postgresql")] == ["string", "word"]
    assert [t.kind for t in lex("'\\' x'", "postgresql", Settings(standard_conforming_strings=False))] == ["string"]
    assert [t.kind for t in lex("$a$ $b$ $a$ $$x$$ y$$", "postgresql")] == ["string", "string", "word"]
    assert [t.kind for t in lex("a::int, :p, x:=1", "postgresql")] == [
        "word", "op", "word", "punct", "param", "punct", "word", "op", "number"]


def test_mysql_comments_follow_the_server():
    assert kinds("1 --1", "mariadb") == [("number", "1"), ("op", "-"), ("op", "-"), ("number", "1")]
    assert kinds("1 --\x01 x", "mariadb") == [("number", "1")]
    assert kinds("1 -- x\r, 2", "mariadb") == [("number", "1")]
    assert kinds("1 # x\r, 2\n, 3", "mariadb") == [("number", "1"), ("punct", ","), ("number", "3")]
    assert kinds("1 /* a /* b */ , 2", "mariadb") == [("number", "1"), ("punct", ","), ("number", "2")]
    assert [t.kind for t in lex("'a\\'b' x", "mariadb")] == ["string", "word"]
    assert [t.kind for t in lex("'a\\' x", "mariadb", Settings(backslash_escapes=False))] == ["string", "word"]
    assert [t.kind for t in lex('"a" x', "mariadb")] == ["string", "word"]
    assert [t.kind for t in lex('"a" x', "mariadb", Settings(ansi_quotes=True))] == ["ident", "word"]


def test_sqlite_reads_like_sqlite():
    assert kinds("1 -- x\r, 2", "sqlite") == [("number", "1")]
    assert [t.kind for t in lex("[a b] \"c\" `d`", "sqlite")] == ["ident", "ident", "ident"]


@pytest.mark.parametrize("query, dialect, read", [
    ("1 --", "mariadb", [("number", "1")]),
    ("1 --\x7f, 2", "mariadb", [("number", "1")]),
    ("1 --\v, 2", "mariadb", [("number", "1")]),
    ("1 #", "mariadb", [("number", "1")]),
    ("1\v2", "mariadb", [("number", "1"), ("number", "2")]),
    ("1\v2", "sqlite", [("number", "1"), ("other", "\v"), ("number", "2")]),
    ("1\v2", "postgresql", [("number", "1"), ("other", "\v"), ("number", "2")]),
    ("1 --", "postgresql", [("number", "1")]),
    ("1 --x", "sqlite", [("number", "1")]),
    ("1 --\r\n2", "sqlite", [("number", "1"), ("number", "2")]),
    ("1 # x", "sqlite", [("number", "1"), ("other", "#"), ("word", "x")]),
    ("1 # x", "postgresql", [("number", "1"), ("op", "#"), ("word", "x")]),
    ("1 /*/ 2 */ 3", "sqlite", [("number", "1"), ("number", "3")]),
    ("1 /*/ 2 */ 3", "mariadb", [("number", "1"), ("number", "3")]),
    ("1 /* /*/ */ 2 */ 3", "postgresql", [("number", "1"), ("number", "3")]),
    ("1 /* a */", "postgresql", [("number", "1")]),
])
def test_gaps_between_tokens_are_the_server_s(query, dialect, read):
    """Whitespace and comments at their edges: the end of the text, \\v, control characters, /*/."""
    assert kinds(query, dialect) == read


def test_spacing_is_kept_across_whitespace_and_comments_only():
    spaced = {dialect: [t.spaced for t in lex("a(b) /**/c\n(d", dialect)]
              for dialect in ("postgresql", "mariadb", "sqlite")}
    assert set(map(tuple, spaced.values())) == {(False, False, False, False, True, True, False)}


@pytest.mark.parametrize("query, dialect", [
    ("SELECT 1 /* never closed", "postgresql"),
    ("SELECT 'never closed", "postgresql"),
    ("SELECT $q$ never closed", "postgresql"),
    ("SELECT U&'\\zzzz'", "postgresql"),
    ("SELECT U&'!0041' UESCAPE '+'", "postgresql"),
    ("SELECT \"\"", "postgresql"),
    ("SELECT 1 /*!50000 , 2 */", "mariadb"),
    ("SELECT 1 /*M!100000 , 2 */", "mariadb"),
    ("SELECT 1 /*m!100000 , 2 */", "mariadb"),
    ("SELECT 1 /*!", "mariadb"),
    ("SELECT 1 -- x\n/* never closed", "sqlite"),
    ("SELECT 1 /* /* */", "postgresql"),
    ("SELECT 1 /* never closed", "mariadb"),
    ("SELECT 1 /* never closed", "sqlite"),
    ("SELECT ?", "sqlite"),
    ("SELECT 1 \\N", "mariadb"),
])
def test_what_cannot_be_read_safely_is_refused(query, dialect):
    refused(query, dialect)


@pytest.mark.parametrize("query, dialect, sent", [
    ("SELECT 1 -- :p\n + :q", "postgresql", "SELECT 1 + %(q)s"),
    ("SELECT /* c */ count(*) FROM t WHERE a = :a", "mariadb", "SELECT count(*) FROM t WHERE a = %(a)s"),
    ("SELECT '100%' || :a", "postgresql", "SELECT '100%%' || %(a)s"),
    ("SELECT -:a", "mariadb", "SELECT - %(a)s"),
    ("SELECT U&'!0041' UESCAPE '!' AS x", "postgresql", "SELECT 'A' AS x"),
    ("SELECT 'a'\n-- c\n'b'", "postgresql", "SELECT 'a'\n'b'"),
])
def test_the_statement_sent_is_rebuilt_from_the_tokens(query, dialect, sent):
    assert check_statement(query, dialect, paramstyle="pyformat").statement == sent


def test_markers_in_quotes_and_comments_are_text():
    checked = check_statement("SELECT ':a', \":b\", :c /* :d */ -- :e", "postgresql")
    assert checked.params == ("c",)
    assert check_statement("SELECT ':a' AS x, :c", "sqlite").statement == "SELECT ':a' AS x, :c"


@pytest.mark.parametrize("query", [
    "SELECT pg_catalog.pg_advisory_xact_lock(1)",
    "SELECT \"pg_catalog\".\"pg_try_advisory_lock\"(1)",
    "SELECT schema_to_xml('public', true, false, '')",
    "SELECT database_to_xmlschema(true, false, '')",
    "SELECT dblink_exec('x', 'y')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lowrite(0, 'x')",
    "SELECT pg_read_binary_file('x')",
    "SELECT txid_current_if_assigned()",
    "SELECT pg_current_xact_id()",
    "SELECT nextval('s')",
])
def test_side_effect_functions_by_any_name(query):
    assert "side effects" in refused(query, "postgresql")


def test_plain_reads_pass():
    for query in ["SELECT 1;", "WITH a AS (SELECT 1) SELECT * FROM a", "TABLE users", "SHOW server_version",
                  "EXPLAIN SELECT 1", "VALUES (1)", "SELECT a FROM t FETCH FIRST 1 ROWS ONLY"]:
        check_statement(query, "postgresql")
    for query in ["SHOW TABLES", "DESCRIBE users", "SELECT replace('a', 'a', 'b')", "SELECT count(*) FROM t"]:
        check_statement(query, "mariadb")


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb", "sqlite"])
def test_reading_is_linear_whatever_the_text(dialect):
    """10,000 characters built to make a backtracking pattern explode are read in well under a second each."""
    bodies = ["'a'\n" + " " * 9990 + "x", "'a' " + "-" * 9990, "'a'\n" + "-- c\n" * 1990 + "x",
              "'" + "''" * 4995, "E'" + "\\'" * 4995, "\"" + "\"\"" * 4995, "/*" * 4995, "$a$" + "$" * 9990,
              "U&'" + "\\0041" * 1995 + "'", "-" * 9990 + "\n1", "1" + "e" * 9990]
    for body in bodies:
        started = time.perf_counter()
        try:
            check_statement("SELECT " + body, dialect)
        except ApiError:
            pass
        assert time.perf_counter() - started < 0.5, body[:20]
