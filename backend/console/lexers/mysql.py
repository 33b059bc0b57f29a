"""The MySQL and MariaDB lexer (sql/sql_lex.cc), as far as the check needs it.

``#`` comments and ``--`` comments end at ``\\n`` only, and ``--`` starts a
comment only when whitespace, a control character or the end follows (so
``1 --1`` is ``1 - -1``); ``/* */`` comments do not nest, and executable
comments (``/*!``, ``/*M!``) are refused, since the server runs their content.
Strings take backslash escapes unless sql_mode has NO_BACKSLASH_ESCAPES, and
``"..."`` is a string unless sql_mode has ANSI_QUOTES. Unquoted names may start
with a digit and hold ``$`` and any non-ASCII character.
"""
from __future__ import annotations

import re

from . import HIGH, LexError, Settings, Token
from .scan import Gaps, Scan, colon, flat_comment, quoted_body, unquote

WORD = re.compile(rf"[0-9A-Za-z_${HIGH}]+")
BITS = re.compile(r"[^']*+'")  # x'..' and b'..': no escapes


def _comment(query: str, pos: int) -> int:
    """A plain ``/* */`` comment; ``/*!`` and ``/*M!`` are refused, as the server runs what they hold."""
    if query.startswith(("/*!", "/*M!", "/*m!"), pos):
        raise LexError("executable comments (/*! */, /*M! */) are not allowed")
    return flat_comment(query, pos)


# ``--`` must be followed by whitespace, a control character (DEL included) or the end.
GAPS = Gaps(" \t\n\v\f\r", re.compile(r"(?:#|--(?=[\x00-\x20\x7f]|\Z))[^\n]*+\n?"), _comment)


def lex(query: str, settings: Settings) -> list[Token]:
    scan = Scan(query, GAPS)
    strings = {"'": quoted_body("'", settings.backslash_escapes)}
    if not settings.ansi_quotes:
        strings['"'] = quoted_body('"', settings.backslash_escapes)
    names = {"`": quoted_body("`")}
    if settings.ansi_quotes:
        names['"'] = quoted_body('"')

    for pos in scan.starts():
        char, two = query[pos], query[pos : pos + 2].lower()
        if two in ("x'", "b'"):
            match = scan.closing(BITS, pos + 2, "quoted string")
            scan.add("string", query[pos : match.end()], query[pos : match.end()], match.end())
        elif two == "n'" or char in strings:
            start = pos + 1 if char in strings else pos + 2
            match = scan.closing(strings[query[start - 1]], start, "quoted string")
            scan.add("string", query[pos : match.end()], query[pos : match.end()], match.end())
        elif char in names:
            match = scan.closing(names[char], pos + 1, "quoted identifier")
            scan.add("ident", query[pos : match.end()], unquote(match, char), match.end())
        elif (word := WORD.match(query, pos)) is not None:
            kind = "number" if word.group().isdigit() else "word"
            scan.add(kind, word.group(), word.group().lower(), word.end())
        elif char == ":":
            colon(scan, pos, (":=",))
        else:
            scan.one_character(pos, "=<>!~^&|+-*/%@", ",()[];.")
    return scan.tokens
