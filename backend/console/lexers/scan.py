"""The reading loop every dialect shares; each lexer supplies only its server's rules.

The three servers differ in what they skip between tokens (which whitespace,
which comments, whether ``/* */`` nests) and in what a token is, but not in how
a statement is walked: skip a gap, note that one was skipped, read a token. A
single walk keeps the ``spaced`` flag and the refusal of unterminated text the
same for every dialect, so a fix to one cannot miss another.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import LexError, Token


def quoted_body(quote: str, backslash: bool = False) -> re.Pattern[str]:
    """A quoted body up to its closing quote: a doubled quote is one quote, ``\\x`` one character if ``backslash``.

    Possessive (``*+``): the servers never backtrack, and neither may we (ReDoS).
    """
    q = re.escape(quote)
    if backslash:
        return re.compile(rf"(?:[^{q}\\]|{q}{q}|\\.)*+{q}", re.DOTALL)
    return re.compile(rf"(?:[^{q}]|{q}{q})*+{q}")


def flat_comment(query: str, pos: int) -> int:
    """End of the ``/* */`` comment at ``pos`` where comments do not nest (MySQL, SQLite)."""
    end = query.find("*/", pos + 2)
    if end < 0:
        raise LexError("unterminated /* comment")
    return end + 2


@dataclass(frozen=True)
class Gaps:
    """What a server skips between tokens: these whitespace characters and comments."""

    space: str
    line_comment: re.Pattern[str]  # matches a whole line comment, or nothing
    block_comment: Callable[[str, int], int]  # end of the /* comment at pos; refuses what it must

    def skip(self, query: str, pos: int) -> int:
        """The position of the next token (or the end) from ``pos``."""
        while pos < len(query):
            if query[pos] in self.space:
                pos += 1
            elif (line := self.line_comment.match(query, pos)) is not None:
                pos = line.end()
            elif query.startswith("/*", pos):
                pos = self.block_comment(query, pos)
            else:
                break
        return pos


class Scan:
    """A statement being read: its tokens so far, where reading stands, and whether a gap came before."""

    def __init__(self, query: str, gaps: Gaps) -> None:
        self.query, self.gaps = query, gaps
        self.pos, self.spaced = 0, False
        self.tokens: list[Token] = []

    def starts(self) -> Iterator[int]:
        """Each token's start, gaps skipped; the reader must ``add`` a token (or raise) before the next."""
        while self.pos < len(self.query):
            skipped = self.gaps.skip(self.query, self.pos)
            if skipped != self.pos:
                self.pos, self.spaced = skipped, True
                continue
            yield self.pos

    def add(self, kind: str, text: str, value: str, end: int) -> None:
        """Record a token and go on reading at ``end``."""
        self.tokens.append(Token(kind, text, value, self.spaced))
        self.pos, self.spaced = end, False

    def one_character(self, pos: int, operators: str, punctuation: str) -> None:
        """The character at ``pos`` as an operator, punctuation, or ``other`` (which the checker refuses)."""
        char = self.query[pos]
        kind = "op" if char in operators else "punct" if char in punctuation else "other"
        self.add(kind, char, char, pos + 1)

    def closing(self, body: re.Pattern[str], start: int, what: str) -> re.Match[str]:
        """The quoted body from ``start`` through its closing quote; text left open is refused."""
        match = body.match(self.query, start)
        if match is None:
            raise LexError(f"unterminated {what}")
        return match


def unquote(match: re.Match[str], quote: str) -> str:
    """A quoted name's value: its body without the closing quote, doubled quotes made single."""
    return match.group()[:-1].replace(quote * 2, quote)


PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")


def colon(scan: Scan, pos: int, operators: tuple[str, ...]) -> None:
    """``:name`` is a parameter marker; ``::`` and ``:=`` are operators where the dialect has them."""
    for operator in operators:
        if scan.query.startswith(operator, pos):
            scan.add("op", operator, operator, pos + len(operator))
            return
    marker = PARAM.match(scan.query, pos)
    if marker is not None:
        scan.add("param", marker.group(), marker.group(1), marker.end())
    else:
        scan.add("punct", ":", ":", pos + 1)
