"""Text normalisation shared by the index and the query: accent-insensitive, case-folded,
punctuation-free tokens ("Hôpital St-Jean" -> ["hopital", "st", "jean"])."""

from __future__ import annotations

import re
import unicodedata

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NON_ALNUM.sub(" ", stripped.replace("'", "").replace("\u2019", "")).strip()


def tokens(text: str) -> list[str]:
    return normalize(text).split()


def search_text(*, name: str, aliases: list[str], city: str, state: str) -> str:
    """The stored `DirectoryEntry.search_text` (for the admin's search and SQL prefilters)."""
    return normalize(" ".join([name, *aliases, city, state]))[:1000]


def zip5(postal_code: str) -> str:
    digits = "".join(c for c in postal_code if c.isdigit())
    return digits[:5] if len(digits) >= 5 else ""
