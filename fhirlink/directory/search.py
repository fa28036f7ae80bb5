"""Directory search: ranked, typo-tolerant, accent-insensitive; the same code on PostgreSQL and
SQLite.

Each process keeps a token index of what patients may find (active, not held back directory
entries, plus hand-registered health systems), rebuilt when the directory changes (checked at most
every `FHIRLINK_DIRECTORY_INDEX_CHECK_SECONDS`, in one query). A query's tokens match the index's
vocabulary exactly, as prefixes (a patient still typing) and fuzzily (rapidfuzz's normalised
Indel ratio, for typos); each entry scores the best match of every query token, weighted by
field (name and aliases over city over state). Entries matching every token rank first; among
equal matches, those a patient can connect here (a hand registration, or an entry whose source a
platform app covers) come before those they cannot, then the nearest to `near`.

Measured (`manage.py directory_benchmark`): see README "Find your hospital". pg_trgm was the
alternative; it needs an extension and a second code path for SQLite, and the index answers in a
few milliseconds on both.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from rapidfuzz import fuzz, process

from fhirlink.directory.text import tokens, zip5
from fhirlink.models import DirectoryEntry, EntryStatus, HealthSystem, PlatformApp

NAME_WEIGHT = 1.0
CITY_WEIGHT = 0.9
STATE_WEIGHT = 0.6
PREFIX_QUALITY = 0.9
FUZZY_QUALITY = 0.8
FUZZY_CUTOFF = 80.0
FUZZY_MIN_LENGTH = 4
FUZZY_LIMIT = 40
PREFIX_LIMIT = 400
MAX_QUERY_TOKENS = 8


@dataclass(frozen=True, slots=True)
class Item:
    """One findable health system. `key` is the id a client posts to start a connection."""

    key: str
    kind: str  # "entry" or "registered"
    pk: str
    sort_name: str
    sort_place: str
    state: str
    zip5: str
    source: str = ""  # an entry's directory source; "" for a hand registration


@dataclass
class DirectoryIndex:
    version: tuple[Any, ...]
    checked_at: float = 0.0
    sources: frozenset[str] = frozenset()  # directory sources a platform app covers
    items: list[Item] = field(default_factory=list)
    vocab: list[str] = field(default_factory=list)
    postings: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _version() -> tuple[Any, ...]:
    """What the index depends on, in one round trip: the directory's and the registry's last
    change, the enabled registrations (an .update(enabled=...) bumps no updated_at) and the
    platform apps (they decide which sources are connectable)."""
    quote = connection.ops.quote_name
    entries = quote(DirectoryEntry._meta.db_table)
    systems = quote(HealthSystem._meta.db_table)
    apps = quote(PlatformApp._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT (SELECT MAX(updated_at) FROM {entries}),"  # noqa: S608 (names, no input)
            f" (SELECT MAX(updated_at) FROM {systems}),"
            f" (SELECT COUNT(*) FROM {systems} WHERE enabled = %s),"
            f" (SELECT MAX(updated_at) FROM {apps}),"
            f" (SELECT COUNT(*) FROM {apps} WHERE enabled = %s)",
            [True, True],
        )
        row = cursor.fetchone()
    return tuple(row) if row else ()


def _build(version: tuple[Any, ...]) -> DirectoryIndex:
    index = DirectoryIndex(version=version)
    postings: dict[str, dict[int, float]] = defaultdict(dict)

    def add(item: Item, weighted: list[tuple[str, float]]) -> None:
        position = len(index.items)
        index.items.append(item)
        for text, weight in weighted:
            for token in tokens(text):
                if postings[token].get(position, 0.0) < weight:
                    postings[token][position] = weight

    rows = (
        DirectoryEntry.objects.filter(status=EntryStatus.ACTIVE, held_back=False)
        .values_list(
            "pk", "health_system_id", "name", "aliases", "city", "state", "postal_code", "source"
        )
        .order_by()
        .iterator(chunk_size=5000)
    )
    for pk, hs_id, name, aliases, city, state, postal_code, source in rows:
        item = Item(
            key=str(hs_id or pk),
            kind="entry",
            pk=str(pk),
            sort_name=" ".join(tokens(name)),
            sort_place=" ".join(tokens(f"{city or ''} {state or ''}")),
            state=(state or "").upper(),
            zip5=zip5(postal_code or ""),
            source=source,
        )
        weighted = [(name, NAME_WEIGHT), *((a, NAME_WEIGHT) for a in aliases or [])]
        add(item, [*weighted, (city or "", CITY_WEIGHT), (state or "", STATE_WEIGHT)])
    registered = (
        HealthSystem.objects.filter(enabled=True, directory_entry__isnull=True)
        .values_list("pk", "name")
        .order_by()
    )
    for pk, name in registered:
        add(
            Item(str(pk), "registered", str(pk), " ".join(tokens(name)), "", "", ""),
            [(name, NAME_WEIGHT)],
        )
    index.sources = frozenset(
        PlatformApp.objects.filter(enabled=True).values_list("source", flat=True)
    )
    index.postings = {token: list(hits.items()) for token, hits in postings.items()}
    index.vocab = sorted(index.postings)
    return index


_lock = threading.Lock()
_current: DirectoryIndex | None = None


def directory_index() -> DirectoryIndex:
    """This process's index; at most every `FHIRLINK_DIRECTORY_INDEX_CHECK_SECONDS` it checks
    whether the directory changed (one query), and rebuilds if so."""
    global _current
    index = _current
    now = time.monotonic()
    every = float(getattr(settings, "FHIRLINK_DIRECTORY_INDEX_CHECK_SECONDS", 2.0))
    if index is not None and now - index.checked_at < every:
        return index
    version = _version()
    if index is not None and index.version == version:
        index.checked_at = now
        return index
    with _lock:
        if _current is None or _current.version != version:
            _current = _build(version)
        _current.checked_at = now
        return _current


def directory_index_reset() -> None:
    global _current
    with _lock:
        _current = None


def _token_matches(index: DirectoryIndex, token: str) -> dict[str, float]:
    """Vocabulary tokens matching one query token, with a match quality in (0, 1]."""
    found: dict[str, float] = {}
    if token in index.postings:
        found[token] = 1.0
    if len(token) >= 2:
        start = bisect.bisect_left(index.vocab, token)
        for candidate in index.vocab[start : start + PREFIX_LIMIT]:
            if not candidate.startswith(token):
                break
            found.setdefault(candidate, PREFIX_QUALITY)
    if len(token) >= FUZZY_MIN_LENGTH:
        for candidate, score, _ in process.extract(
            token,
            index.vocab,
            scorer=fuzz.ratio,
            score_cutoff=FUZZY_CUTOFF,
            limit=FUZZY_LIMIT,
        ):
            quality = FUZZY_QUALITY * score / 100.0
            if found.get(candidate, 0.0) < quality:
                found[candidate] = quality
    return found


def _zip_distance(a: str, b: str) -> int:
    """A coarse proximity without a geocoder: same ZIP, then ZIP3 (sectional centre) distance."""
    if not a or not b:
        return 10_000
    if a == b:
        return 0
    return 1 + abs(int(a[:3]) - int(b[:3]))


def directory_search(
    *, text: str = "", state: str = "", near: str = "", limit: int | None = None
) -> list[Item]:
    """The ranked matches (all of them, or the first `limit`)."""
    index = directory_index()
    state = state.upper()
    near5 = zip5(near)
    query = list(dict.fromkeys(tokens(text)))[:MAX_QUERY_TOKENS]

    def allowed(position: int) -> bool:
        return not state or index.items[position].state == state

    def elsewhere(position: int) -> bool:
        """True when the patient cannot connect this one here (no app covers its source)."""
        item = index.items[position]
        return item.kind == "entry" and item.source not in index.sources

    if not query:
        positions = [p for p in range(len(index.items)) if allowed(p)]
        positions.sort(
            key=lambda p: (
                elsewhere(p),
                _zip_distance(index.items[p].zip5, near5) if near5 else 0,
                index.items[p].sort_name,
                index.items[p].sort_place,
                index.items[p].key,
            )
        )
        return [index.items[p] for p in positions[:limit]]

    matched: dict[int, int] = defaultdict(int)
    scores: dict[int, float] = defaultdict(float)
    for token in query:
        best: dict[int, float] = {}
        for candidate, quality in _token_matches(index, token).items():
            for position, weight in index.postings[candidate]:
                value = quality * weight
                if best.get(position, 0.0) < value:
                    best[position] = value
        for position, value in best.items():
            matched[position] += 1
            scores[position] += value

    needed = len(query) if len(query) < 3 else len(query) - 1
    positions = [p for p, count in matched.items() if count >= needed and allowed(p)]

    def rank(position: int) -> tuple[Any, ...]:
        item = index.items[position]
        return (
            -matched[position],
            -round(scores[position], 6),
            elsewhere(position),
            _zip_distance(item.zip5, near5) if near5 else 0,
            item.sort_name,
            item.sort_place,
            item.key,
        )

    positions.sort(key=rank)
    return [index.items[p] for p in positions[:limit]]
