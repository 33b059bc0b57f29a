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

from . import HIGH, LexError, Settings, Token, colon

SPACE = " \t\n\v\f\r"
WORD = re.compile(rf"[0-9A-Za-z_${HIGH}]+")
CONTROL = {chr(code) for code in range(32)} | {"\x7f"}


def _body(quote: str, backslash: bool) -> re.Pattern[str]:
    q = re.escape(quote)
    if backslash:
        return re.compile(rf"(?:[^{q}\\]|{q}{q}|\\.)*+{q}", re.DOTALL)
    return re.compile(rf"(?:[^{q}]|{q}{q})*+{q}")


def _skip_space(query: str, pos: int) -> int:
    n = len(query)
    while pos < n:
        char = query[pos]
        if char in SPACE:
            pos += 1
        elif char == "#" or (query.startswith("--", pos) and (pos + 2 == n or query[pos + 2] in SPACE or query[pos + 2] in CONTROL)):
            end = query.find("\n", pos)
            pos = n if end < 0 else end + 1
        elif query.startswith("/*", pos):
            if query.startswith(("/*!", "/*M!", "/*m!"), pos):
                raise LexError("executable comments (/*! */, /*M! */) are not allowed")
            end = query.find("*/", pos + 2)
            if end < 0:
                raise LexError("unterminated /* comment")
            pos = end + 2
        else:
            break
    return pos


def lex(query: str, settings: Settings) -> list[Token]:
    tokens: list[Token] = []
    pos, spaced, n = 0, False, len(query)
    strings = {"'": _body("'", settings.backslash_escapes)}
    if not settings.ansi_quotes:
        strings['"'] = _body('"', settings.backslash_escapes)
    names = {"`": _body("`", False)}
    if settings.ansi_quotes:
        names['"'] = _body('"', False)

    def add(kind: str, text: str, value: str, end: int) -> None:
        nonlocal pos, spaced
        tokens.append(Token(kind, text, value, spaced))
        pos, spaced = end, False

    while pos < n:
        skipped = _skip_space(query, pos)
        if skipped != pos:
            pos, spaced = skipped, True
            continue
        char, two = query[pos], query[pos : pos + 2].lower()
        if two in ("x'", "b'"):
            end = query.find("'", pos + 2)
            if end < 0:
                raise LexError("unterminated quoted string")
            add("string", query[pos : end + 1], query[pos : end + 1], end + 1)
        elif two == "n'" or char in strings:
            start = pos + 1 if char in strings else pos + 2
            quote = query[start - 1]
            match = strings[quote].match(query, start)
            if match is None:
                raise LexError("unterminated quoted string")
            add("string", query[pos : match.end()], query[pos : match.end()], match.end())
        elif char in names:
            match = names[char].match(query, pos + 1)
            if match is None:
                raise LexError("unterminated quoted identifier")
            value = match.group()[:-1].replace(char * 2, char)
            add("ident", query[pos : match.end()], value, match.end())
        elif (word := WORD.match(query, pos)) is not None:
            kind = "number" if word.group().isdigit() else "word"
            add(kind, word.group(), word.group().lower(), word.end())
        elif char == ":":
            colon(query, pos, add, (":=",))
        elif char in "=<>!~^&|+-*/%@":
            add("op", char, char, pos + 1)
        elif char in ",()[];.":
            add("punct", char, char, pos + 1)
        else:
            add("other", char, char, pos + 1)
    return tokens
