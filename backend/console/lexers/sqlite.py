"""SQLite's lexer (src/tokenize.c), as far as the check needs it.

``--`` comments end at ``\\n``; ``/* */`` comments do not nest (an unterminated
one is refused here, though SQLite would run to the end); strings are ``'...'``
with ``''``; names are ``"..."``, ``[...]`` or backquoted; ``\\v`` is not
whitespace. Parameters other than ``:name`` (``?``, ``@x``, ``$x``) are refused.
"""
from __future__ import annotations

import re

from . import HIGH, Settings, Token
from .scan import Gaps, Scan, colon, flat_comment, quoted_body, unquote

GAPS = Gaps(" \t\n\f\r", re.compile(r"--[^\n]*+\n?"), flat_comment)
WORD = re.compile(rf"[A-Za-z_{HIGH}][A-Za-z0-9_${HIGH}]*")
NUMBER = re.compile(r"0[xX][0-9A-Fa-f]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
STRING = quoted_body("'")
QUOTED = {'"': quoted_body('"'), "`": quoted_body("`"), "[": re.compile(r"[^\]]*\]")}


def lex(query: str, settings: Settings) -> list[Token]:
    scan = Scan(query, GAPS)
    for pos in scan.starts():
        char = query[pos]
        if char == "'" or query[pos : pos + 2].lower() == "x'":
            match = scan.closing(STRING, pos + 1 if char == "'" else pos + 2, "quoted string")
            scan.add("string", query[pos : match.end()], query[pos : match.end()], match.end())
        elif char in QUOTED:
            match = scan.closing(QUOTED[char], pos + 1, "quoted identifier")
            value = match.group()[:-1] if char == "[" else unquote(match, char)
            scan.add("ident", query[pos : match.end()], value, match.end())
        elif (word := WORD.match(query, pos)) is not None:
            scan.add("word", word.group(), word.group().lower(), word.end())
        elif (number := NUMBER.match(query, pos)) is not None:
            scan.add("number", number.group(), number.group(), number.end())
        elif char == ":":
            colon(scan, pos, ())
        else:
            scan.one_character(pos, "=<>!~&|+-*/%", ",();.")
    return scan.tokens
