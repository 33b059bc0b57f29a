"""PostgreSQL's lexer (src/backend/parser/scan.l and parser.c), as far as the check needs it.

``--`` comments end at ``\n`` or ``\r``; ``/* */`` comments nest; strings are
standard (backslash escapes only when standard_conforming_strings is off), E''
(backslash escapes), B''/X'' (bits), U&'' and U&"" (Unicode escapes with an
optional UESCAPE clause, decoded here and sent in plain form), and dollar
quotes; a literal followed by whitespace holding a newline and another quote
continues. Names are lower-cased (ASCII only) and truncated to 63 bytes.
"""
from __future__ import annotations

import re

from . import HIGH, NAMEDATALEN, LexError, Settings, Token
from .scan import Gaps, Scan, colon, quoted_body, unquote


def _pg_name(value: str) -> str:
    """PostgreSQL truncates names to NAMEDATALEN - 1 bytes."""
    raw = value.encode()
    if len(raw) < NAMEDATALEN:
        return value
    return raw[: NAMEDATALEN - 1].decode(errors="ignore")


PG_IDENT = re.compile(rf"[A-Za-z_{HIGH}][A-Za-z_0-9${HIGH}]*")
PG_DOLLAR = re.compile(rf"\$([A-Za-z_{HIGH}][A-Za-z_0-9{HIGH}]*)?\$")
PG_NUMBER = re.compile(r"\d+(?=\.\.)|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
PG_OPERATOR = re.compile(r"[~!@#^&|`?+\-*/%<>=]+")
# After a closing quote: whitespace holding a newline, then a quote, continues the literal.
# Possessive (*+): flex takes the longest match and never backtracks, and neither may we (ReDoS).
PG_CONTINUE = re.compile(r"(?:[ \t\f]|--[^\n\r]*+)*+[\n\r](?:[ \t\n\r\f]|--[^\n\r]*+[\n\r])*+'")
PG_BODY = {"standard": quoted_body("'"), "escape": quoted_body("'", backslash=True), "bits": re.compile(r"[^']*+'")}
PG_NAME = quoted_body('"')


def _pg_string(scan: Scan, pos: int, mode: str) -> tuple[int, list[str]]:
    """Read a literal's body from ``pos`` (after its opening quote), continuations included."""
    query, parts = scan.query, []
    while True:
        match = scan.closing(PG_BODY[mode], pos, "quoted string")
        parts.append(query[pos : match.end()])
        pos = match.end()
        follow = PG_CONTINUE.match(query, pos)
        if follow is None:
            return pos, parts
        pos = follow.end()


def _pg_comment(query: str, pos: int) -> int:
    """End of a nested /* */ comment starting at ``pos``."""
    depth, pos = 0, pos
    while pos < len(query):
        if query.startswith("/*", pos):
            depth, pos = depth + 1, pos + 2
        elif query.startswith("*/", pos):
            depth, pos = depth - 1, pos + 2
            if depth == 0:
                return pos
        else:
            pos += 1
    raise LexError("unterminated /* comment")


# scan.l {space} (\v is not whitespace in PostgreSQL 15); -- comments end at \n or \r.
PG_GAPS = Gaps(" \t\n\r\f", re.compile(r"--[^\n\r]*+"), _pg_comment)


def _unicode_unescape(body: str, escape: str) -> str:
    """Decode the escapes of a U&'...' or U&"..." body, as PostgreSQL does."""
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char != escape:
            out.append(char)
            i += 1
            continue
        if body[i + 1 : i + 2] == escape:
            out.append(escape)
            i += 2
            continue
        match = re.compile(r"([0-9A-Fa-f]{4})|\+([0-9A-Fa-f]{6})").match(body, i + 1)
        if match is None:
            raise LexError("invalid Unicode escape")
        code = int(match.group(1) or match.group(2), 16)
        i = match.end()
        if 0xD800 <= code <= 0xDBFF:  # a surrogate pair is two escapes
            low = re.compile(re.escape(escape) + r"([0-9A-Fa-f]{4})").match(body, i)
            if low is None or not 0xDC00 <= int(low.group(1), 16) <= 0xDFFF:
                raise LexError("invalid Unicode surrogate pair")
            code = 0x10000 + ((code - 0xD800) << 10) + (int(low.group(1), 16) - 0xDC00)
            i = low.end()
        if code == 0 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            raise LexError("invalid Unicode escape value")
        out.append(chr(code))
    return "".join(out)


def _pg_uescape(query: str, pos: int) -> tuple[str, int]:
    """The escape character of a U& literal: a following UESCAPE 'c' clause, or backslash."""
    after = PG_GAPS.skip(query, pos)
    word = PG_IDENT.match(query, after)
    if word is None or word.group().lower() != "uescape":
        return "\\", pos
    start = PG_GAPS.skip(query, word.end())
    match = re.compile(r"'([^']|'')'").match(query, start)
    if match is None:
        raise LexError("UESCAPE must be followed by a one-character quoted string")
    escape = "'" if match.group(1) == "''" else match.group(1)
    if escape in "0123456789abcdefABCDEF+'\"" or escape in PG_GAPS.space:
        raise LexError("invalid Unicode escape character")
    return escape, match.end()


def _pg_quote_literal(value: str, settings: Settings) -> str:
    if "\\" in value and not settings.standard_conforming_strings:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def _unicode_escaped(scan: Scan, pos: int, settings: Settings) -> None:
    """Read a U&'...' string or U&"..." name at ``pos``; it is sent decoded, in plain form."""
    query, quote = scan.query, scan.query[pos + 2]
    if quote == "'":
        if not settings.standard_conforming_strings:
            raise LexError("U& strings need standard_conforming_strings")
        end, parts = _pg_string(scan, pos + 3, "standard")
        body = "".join(part[:-1].replace("''", "'") for part in parts)
    else:
        close = scan.closing(PG_NAME, pos + 3, "quoted identifier")
        end, body = close.end(), unquote(close, '"')
    escape, end = _pg_uescape(query, end)
    value = _unicode_unescape(body, escape)
    scan.spaced = True  # sent in plain form: keep it apart from its neighbours
    if quote == "'":
        scan.add("string", _pg_quote_literal(value, settings), value, end)
    else:
        if not value:
            raise LexError("zero-length delimited identifier")
        scan.add("ident", '"' + value.replace('"', '""') + '"', _pg_name(value), end)
    scan.spaced = True


def lex(query: str, settings: Settings) -> list[Token]:
    scan = Scan(query, PG_GAPS)
    for pos in scan.starts():
        char, two = query[pos], query[pos : pos + 2].lower()
        if two in ("e'", "b'", "x'", "n'") or char == "'":
            prefix = 2 if char != "'" else 1
            mode = {"e'": "escape", "b'": "bits", "x'": "bits"}.get(two, "standard")
            if mode == "standard" and not settings.standard_conforming_strings:
                mode = "escape"
            end, parts = _pg_string(scan, pos + prefix, mode)
            text = query[pos : pos + prefix] + "\n'".join(parts)
            scan.add("string", text, text, end)
        elif two == "u&" and query[pos + 2 : pos + 3] in ("'", '"'):
            _unicode_escaped(scan, pos, settings)
        elif char == '"':
            close = scan.closing(PG_NAME, pos + 1, "quoted identifier")
            value = unquote(close, '"')
            if not value:
                raise LexError("zero-length delimited identifier")
            scan.add("ident", query[pos : close.end()], _pg_name(value), close.end())
        elif char == "$":
            dollar = PG_DOLLAR.match(query, pos)
            if dollar is None:
                raise LexError("positional parameters ($1) are not supported: use :name")
            close = query.find(dollar.group(), dollar.end())
            if close < 0:
                raise LexError("unterminated dollar-quoted string")
            end = close + len(dollar.group())
            scan.add("string", query[pos:end], query[pos:end], end)
        elif (ident := PG_IDENT.match(query, pos)) is not None:
            word = ident.group()
            scan.add("word", word, _pg_name(re.sub(r"[A-Z]+", lambda m: m.group().lower(), word)), ident.end())
        elif (number := PG_NUMBER.match(query, pos)) is not None and number.group() != ".":
            scan.add("number", number.group(), number.group(), number.end())
        elif char == ":":
            colon(scan, pos, ("::", ":="))
        elif (operator := PG_OPERATOR.match(query, pos)) is not None:
            text = operator.group()
            cuts = [i for i in (text.find("--", 1), text.find("/*", 1)) if i > 0]
            text = text[: min(cuts)] if cuts else text
            scan.add("op", text, text, pos + len(text))
        elif char in ",()[];.":
            text = ".." if query.startswith("..", pos) else char
            scan.add("punct", text, text, pos + len(text))
        else:
            scan.add("other", char, char, pos + 1)
    return scan.tokens
