"""SQLite's lexer (src/tokenize.c), as far as the check needs it.

``--`` comments end at ``\\n``; ``/* */`` comments do not nest (an unterminated
one is refused here, though SQLite would run to the end); strings are ``'...'``
with ``''``; names are ``"..."``, ``[...]`` or backquoted; ``\\v`` is not
whitespace. Parameters other than ``:name`` (``?``, ``@x``, ``$x``) are refused.
"""
from __future__ import annotations

import re

from . import HIGH, LexError, Settings, Token, colon

SPACE = " \t\n\f\r"
WORD = re.compile(rf"[A-Za-z_{HIGH}][A-Za-z0-9_${HIGH}]*")
NUMBER = re.compile(r"0[xX][0-9A-Fa-f]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
QUOTED = {
    '"': re.compile(r'(?:[^"]|"")*+"'),
    "`": re.compile(r"(?:[^`]|``)*+`"),
    "[": re.compile(r"[^\]]*\]"),
}


def _skip_space(query: str, pos: int) -> int:
    n = len(query)
    while pos < n:
        if query[pos] in SPACE:
            pos += 1
        elif query.startswith("--", pos):
            end = query.find("\n", pos)
            pos = n if end < 0 else end + 1
        elif query.startswith("/*", pos):
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

    def add(kind: str, text: str, value: str, end: int) -> None:
        nonlocal pos, spaced
        tokens.append(Token(kind, text, value, spaced))
        pos, spaced = end, False

    while pos < n:
        skipped = _skip_space(query, pos)
        if skipped != pos:
            pos, spaced = skipped, True
            continue
        char = query[pos]
        if char == "'" or query[pos : pos + 2].lower() == "x'":
            start = pos + 1 if char == "'" else pos + 2
            match = re.compile(r"(?:[^']|'')*+'").match(query, start)
            if match is None:
                raise LexError("unterminated quoted string")
            add("string", query[pos : match.end()], query[pos : match.end()], match.end())
        elif char in QUOTED:
            match = QUOTED[char].match(query, pos + 1)
            if match is None:
                raise LexError("unterminated quoted identifier")
            body = match.group()[:-1]
            value = body if char == "[" else body.replace(char * 2, char)
            add("ident", query[pos : match.end()], value, match.end())
        elif (word := WORD.match(query, pos)) is not None:
            add("word", word.group(), word.group().lower(), word.end())
        elif (number := NUMBER.match(query, pos)) is not None:
            add("number", number.group(), number.group(), number.end())
        elif char == ":":
            colon(query, pos, add, ())
        elif char in "=<>!~&|+-*/%":
            add("op", char, char, pos + 1)
        elif char in ",();.":
            add("punct", char, char, pos + 1)
        else:
            add("other", char, char, pos + 1)
    return tokens
