"""Lexers that read a statement exactly as each server's own lexer does.

A security check is only as good as its reading of the text: a comment that
ends earlier for the server than for the checker hides a statement from it. So
each dialect gets the rules of its server (PostgreSQL ``scan.l``, MySQL and
MariaDB ``sql_lex.cc``, SQLite ``tokenize.c``), including the session settings
that change them (``standard_conforming_strings``; ``sql_mode`` ANSI_QUOTES and
NO_BACKSLASH_ESCAPES). Anything these rules do not cover is an ``other`` token,
which the checker refuses: unknown text fails closed.

Whitespace and comments are not tokens; ``Token.spaced`` records that
something separated a token from the previous one, so the statement can be
rebuilt from the tokens with comments dropped and adjacency kept (MySQL reads
``count (*)`` differently from ``count(*)``).

Each dialect module holds only its server's rules; ``scan.py`` holds the walk
they share (skip a gap, read a token), so the three cannot drift apart in it.
"""
from __future__ import annotations

from dataclasses import dataclass

# Identifiers may hold any non-ASCII character (PostgreSQL: bytes 0x80-0xff of UTF-8).
HIGH = "\u0080-\U0010ffff"
NAMEDATALEN = 64


class LexError(ValueError):
    """The text cannot be read safely (unterminated quote, refused comment...)."""


@dataclass(frozen=True)
class Token:
    kind: str  # word, ident (quoted name), string, number, param, op, punct, other
    text: str  # the text to send to the server
    value: str  # word: lower-cased name; ident: decoded name; param: its name
    spaced: bool  # whitespace or a comment came before it


@dataclass(frozen=True)
class Settings:
    """Session settings that change how the server reads text."""

    standard_conforming_strings: bool = True  # PostgreSQL
    backslash_escapes: bool = True  # MySQL: not NO_BACKSLASH_ESCAPES
    ansi_quotes: bool = False  # MySQL: "..." is a name, not a string


def lex(query: str, dialect: str, settings: Settings | None = None) -> list[Token]:
    """The tokens of ``query`` as the ``dialect`` server reads them, whitespace and comments left out."""
    from . import mysql, postgresql, sqlite

    settings = settings or Settings()
    if dialect == "postgresql":
        return postgresql.lex(query, settings)
    if dialect in ("mysql", "mariadb"):
        return mysql.lex(query, settings)
    return sqlite.lex(query, settings)
