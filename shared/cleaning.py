"""Cleaning and validation of complaint texts: vectorized for datasets, with offsets for one text.

Ingest, distillation and serving all clean with these rules, so the model sees the same kind of
text in training and in production.

Rules, in order: nulls become ""; HTML tags are stripped (<br>, </p> and </div> become a newline)
and entities unescaped; Unicode NFKC; control characters (but \\n and \\t) and zero-width
characters are removed; Cyrillic look-alikes of Latin letters are repaired inside words that hold
an ASCII letter; line breaks become \\n, blanks one space, spaces around newlines go, 3+ newlines
become 2, and both ends are trimmed. Cleaning is idempotent: rows whose cleaning reveals new markup
("&amp;lt;b&amp;gt;", "＜br＞") are cleaned again until none is left, so escaped tags are removed.

Every rule runs as a pyarrow.compute kernel over whole arrays, on slices processed by a thread
pool. The few rules RE2 cannot express (numeric entities, homoglyph repair) run in Python, but only
on the rows a vectorized mask selects. Most rows are plain Chinese text whose only change is NFKC
folding full-width punctuation, which is done on the UTF-8 bytes with numpy; rows holding
anything else NFKC changes take arrow's NFKC, and only "special" rows (markup, controls, unusual
whitespace, Cyrillic, or characters whose NFKC form holds these) go through every rule.
"""

from __future__ import annotations

import html
import itertools
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.settings import get_settings

__all__ = [
    "CleanedText",
    "RejectReason",
    "clean_text",
    "clean_texts",
    "clean_with_offsets",
    "reject_reasons",
]

StringArray = pa.Array | pa.ChunkedArray
T = TypeVar("T")
R = TypeVar("R")


class RejectReason(StrEnum):
    """Why a row is left out of the clean dataset."""

    EMPTY = "empty"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    NOT_TEXT = "not_text"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near_duplicate"


# Rows per task: small enough that every temporary stays in cache-sized pieces.
CHUNK_ROWS = 16_384
# Re-cleaning passes allowed for rows whose cleaning produced new markup (e.g. "&amp;lt;").
_MAX_PASSES = 64

_NEWLINE_TAG = r"(?i)<(?:br|/p|/div)(?:\s[^>]*)?/?>"
_ANY_TAG = r"<[a-zA-Z/!][^>]*>"
# Named entities decoded without Python, most frequent first.
_COMMON_ENTITIES = {
    "&nbsp;": " ",
    "&lt;": "<",
    "&gt;": ">",
    "&quot;": '"',
    "&apos;": "'",
    "&amp;": "&",
}
# Rarer named entities, decoded in Python like html.unescape does, with the numeric ones.
_OTHER_ENTITY_NAMES = [
    "AMP",
    "LT",
    "GT",
    "QUOT",
    "ldquo",
    "rdquo",
    "lsquo",
    "rsquo",
    "laquo",
    "raquo",
    "hellip",
    "mdash",
    "ndash",
    "middot",
    "bull",
    "yen",
    "times",
    "divide",
    "deg",
    "plusmn",
    "copy",
    "reg",
    "trade",
    "emsp",
    "ensp",
    "thinsp",
    "shy",
    "zwj",
    "zwnj",
    "cent",
    "pound",
    "euro",
    "sect",
    "para",
]
_OTHER_ENTITY = r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|(?:" + "|".join(_OTHER_ENTITY_NAMES) + "));"
_ENTITY = (
    r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|(?:"
    + "|".join(_OTHER_ENTITY_NAMES + [entity[1:-1] for entity in _COMMON_ENTITIES])
    + "));"
)
_MARKUP = _ANY_TAG + "|" + _ENTITY
_OTHER_ENTITY_RE = re.compile(_OTHER_ENTITY)

# C0 controls but \t \n \r, DEL, C1 controls and zero-width characters.
_REMOVABLE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\x{200b}-\x{200f}\x{2060}\x{feff}]"

_CYRILLIC = "АВСЕНКМОРТХаеорсхуіјѕ"
_LATIN = "ABCEHKMOPTXaeopcxyijs"
_WORD_CLASS = "A-Za-z0-9@._+\\-" + _CYRILLIC
_HOMOGLYPH = f"[A-Za-z][{_WORD_CLASS}]*[{_CYRILLIC}]|[{_CYRILLIC}][{_WORD_CLASS}]*[A-Za-z]"
_WORD_RE = re.compile(f"[{_WORD_CLASS}]+")
_ASCII_LETTER_RE = re.compile("[A-Za-z]")
_HOMOGLYPH_TABLE = str.maketrans(_CYRILLIC, _LATIN)

# Characters the whitespace rule acts on, other than a single ASCII space.
_WHITESPACE = r"[\t\n\r\p{Zs}\x{2028}\x{2029}]"
_LINE_BREAK = r"\r\n?|[\x{2028}\x{2029}]"
_NON_LETTER = r"[^\p{L}]"
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _threads() -> int:
    """Worker threads: TIQU_INGEST_THREADS, else the usable CPUs up to 8."""
    configured = get_settings().ingest_threads
    return configured or max(1, min(8, len(os.sched_getaffinity(0))))


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """Map over items on a thread pool (see `_threads`): arrow and numpy kernels release the GIL."""
    workers = min(_threads(), len(items))
    if workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def as_text_chunks(texts: StringArray) -> pa.ChunkedArray:
    """A chunked string/large_string array; a null-typed array becomes all-null strings."""
    chunked = texts if isinstance(texts, pa.ChunkedArray) else pa.chunked_array([texts])
    if pa.types.is_null(chunked.type):
        return chunked.cast(pa.string())
    if pa.types.is_dictionary(chunked.type) and _is_text_type(chunked.type.value_type):
        return chunked.cast(chunked.type.value_type)
    if not _is_text_type(chunked.type):
        raise TypeError(f"expected a string or large_string array, got {chunked.type}")
    return chunked


def _is_text_type(dtype: pa.DataType) -> bool:
    """Whether arrays of this type hold UTF-8 text the kernels here accept."""
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def split_rows(chunked: pa.ChunkedArray, rows: int) -> list[pa.Array]:
    """Slices of at most `rows` rows, in order, never spanning two chunks."""
    return [c.slice(i, rows) for c in chunked.chunks for i in range(0, len(c), rows)]


def concat_texts(pieces: list[pa.Array], dtype: pa.DataType) -> pa.Array:
    """One array from the pieces, widened to large_string where 32-bit offsets would overflow."""
    if not pieces:
        return pa.array([], type=dtype)
    if pa.types.is_string(dtype) and sum(p.nbytes for p in pieces) >= 2**31 - 1:
        dtype = pa.large_string()
        pieces = [p.cast(dtype) for p in pieces]
    return pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)


def text_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets from 0 (int64) and the rows' UTF-8 bytes followed by 8 zero bytes."""
    if len(arr) == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(8, dtype=np.uint8)
    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    raw = np.frombuffer(arr.buffers()[1], dtype=offset_type)
    offsets = raw[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)
    data = np.zeros(int(offsets[-1] - offsets[0]) + 8, dtype=np.uint8)
    if len(data) > 8:
        data[:-8] = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], data


def _mask(arr: pa.Array, pattern: str) -> np.ndarray:
    """Boolean numpy mask of the rows (no nulls) matching an RE2 pattern."""
    return pc.match_substring_regex(arr, pattern).to_numpy(zero_copy_only=False)


def _merge(mask: np.ndarray, rest: pa.Array, chosen: pa.Array) -> pa.Array:
    """Interleave `chosen` (rows where mask) and `rest` (other rows) back into row order."""
    order = np.empty(len(mask), dtype=np.int64)
    order[~mask] = np.arange(len(rest))
    order[mask] = len(rest) + np.arange(len(chosen))
    return pa.concat_arrays([rest, chosen]).take(pa.array(order))


def _apply_where(arr: pa.Array, pattern: str, fn: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """Apply an array function only to the rows matching a regex."""
    return _split_apply(arr, _mask(arr, pattern), fn, lambda rest: rest)


def _python_rows(fn: Callable[[str], str]) -> Callable[[pa.Array], pa.Array]:
    """Lift a per-text function to an array function (for small row subsets only)."""

    def apply(arr: pa.Array) -> pa.Array:
        return pa.array([fn(text) for text in arr.to_pylist()], type=arr.type)

    return apply


@cache
def _patterns() -> tuple[str, str]:
    """RE2 patterns of (special rows, rows that need more than the fast path).

    Special rows need more than NFKC and a trim. The fast path folds full-width ASCII forms and
    trims; rows left on it hold no character that NFKC changes otherwise or could compose. Both
    are derived from arrow's own NFKC tables, so no rule can change a fast-path row's output.
    """
    special = "[<&" + _REMOVABLE[1:-1] + _WHITESPACE[1:-1] + _CYRILLIC + "]"
    points = np.r_[np.arange(0, 0xD800), np.arange(0xE000, 0x110000)].astype(np.uint32)
    chars = _code_points_array(points)
    normalized = pc.utf8_normalize(chars, "NFKC")
    changed = pc.not_equal(chars, normalized)
    flagged = pc.or_(
        pc.match_substring_regex(chars, special),
        pc.and_(changed, pc.match_substring_regex(normalized, special)),
    )
    flagged = pc.and_(flagged, pc.not_equal(chars, " ")).to_numpy(zero_copy_only=False)
    full_width = (points >= 0xFF01) & (points <= 0xFF5E)
    # Marks and Hangul medial/final jamo may compose with, or reorder around, their neighbours.
    composing = pc.match_substring_regex(chars, r"[\p{M}\x{1161}-\x{1175}\x{11a8}-\x{11c2}]")
    slow = (changed.to_numpy(zero_copy_only=False) & ~full_width) | flagged
    slow |= composing.to_numpy(zero_copy_only=False)
    special_class = "[" + _ranges_class(points[flagged]) + "]|  "
    return special_class, "[" + _ranges_class(points[slow]) + "]|  "


def _code_points_array(points: np.ndarray) -> pa.Array:
    """One single-character string per code point, built from buffers."""
    data = points.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")
    widths = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int32)
    return pa.StringArray.from_buffers(len(points), pa.py_buffer(offsets), pa.py_buffer(data))


def _ranges_class(points: np.ndarray) -> str:
    """RE2 character-class body for sorted code points, as ranges."""
    breaks = np.flatnonzero(np.diff(points.astype(np.int64)) != 1)
    starts = np.r_[points[:1], points[breaks + 1]]
    ends = np.r_[points[breaks], points[-1:]]
    return "".join(
        f"\\x{{{s:x}}}" if s == e else f"\\x{{{s:x}}}-\\x{{{e:x}}}"
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
    )


def _decode_entities(arr: pa.Array) -> pa.Array:
    arr = _apply_where(arr, _OTHER_ENTITY, _python_rows(_unescape_other))
    # `&amp;` last, so that one pass decodes one level of "&amp;lt;", like html.unescape; the
    # markup check in `_clean_special` decodes the next.
    for entity, text in _COMMON_ENTITIES.items():
        arr = pc.replace_substring(arr, entity, text)
    return arr


def _unescape_other(text: str) -> str:
    """Decode numeric and rarer named entities exactly as html.unescape does."""
    return _OTHER_ENTITY_RE.sub(lambda m: html.unescape(m.group()), text)


def _repair_word(match: re.Match[str]) -> str:
    """Latin look-alikes for the Cyrillic letters of a word that has an ASCII letter."""
    word = match.group()
    return word.translate(_HOMOGLYPH_TABLE) if _ASCII_LETTER_RE.search(word) else word


def _repair_homoglyphs(arr: pa.Array) -> pa.Array:
    """Repair homoglyphs row by row (only rows the RE2 mask selected get here)."""
    # Latin letters may now precede combining marks that NFKC composes with them.
    repaired = _python_rows(lambda text: _WORD_RE.sub(_repair_word, text))(arr)
    return pc.utf8_normalize(repaired, "NFKC")


def _normalize_whitespace(arr: pa.Array) -> pa.Array:
    """Line breaks to \\n, blanks to one space, none around newlines, at most one empty line."""
    # Again: decoded entities ("&#13;") may have brought new ones.
    arr = pc.replace_substring_regex(arr, _LINE_BREAK, "\n")
    arr = pc.replace_substring_regex(arr, r"[\t\p{Zs}]+", " ")
    arr = pc.replace_substring_regex(arr, r" ?\n ?", "\n")
    return pc.replace_substring_regex(arr, r"\n{3,}", "\n\n")


def _clean_special(arr: pa.Array, passes: int = 1) -> pa.Array:
    """All rules, on rows that may need more than NFKC and a trim."""
    # Line breaks first: a bare "\r" before "</div>" must not pair with the tag's newline into
    # one "\r\n"; "\n</div>" gives two newlines, and so must "\r</div>".
    arr = pc.replace_substring_regex(arr, _LINE_BREAK, "\n")
    arr = pc.replace_substring_regex(arr, _NEWLINE_TAG, "\n")
    arr = pc.replace_substring_regex(arr, _ANY_TAG, "")
    arr = _decode_entities(arr)
    # Controls go before NFKC, not after: removing one between a base letter and a combining mark
    # after NFKC would leave a text that a second cleaning changes. NFKC never creates them.
    arr = pc.replace_substring_regex(arr, _REMOVABLE, "")
    arr = pc.utf8_normalize(arr, "NFKC")
    arr = _apply_where(arr, _HOMOGLYPH, _repair_homoglyphs)
    arr = pc.utf8_trim_whitespace(_normalize_whitespace(arr))
    if passes < _MAX_PASSES:
        # Decoding, NFKC or joining can create markup ("&amp;lt;", "＜br＞", "<\u200bb>"); clean
        # those rows again so that cleaning is idempotent.
        arr = _apply_where(arr, _MARKUP, lambda again: _clean_special(again, passes + 1))
    return arr


def _fold_full_width(arr: pa.Array) -> pa.Array:
    """Map U+FF01..U+FF5E to U+0021..U+007E (their NFKC forms) on the UTF-8 bytes directly."""
    offsets, data = text_buffers(arr)
    data = data[:-8]
    lead = np.flatnonzero(data == 0xEF)
    lead = lead[lead + 2 < len(data)]
    second = data[lead + 1]
    third = data[lead + 2]
    hit = ((second == 0xBC) & (third >= 0x81)) | ((second == 0xBD) & (third <= 0x9E))
    if not hit.any():
        return arr
    lead = lead[hit]
    code = ((second[hit].astype(np.int32) & 0x3F) << 6) | (third[hit] & 0x3F)
    folded = data.copy()
    folded[lead] = (code - 0xEE0).astype(np.uint8)
    keep = np.ones(len(data), dtype=bool)
    keep[lead + 1] = False
    keep[lead + 2] = False
    # Each folded character is 2 bytes shorter.
    offsets = offsets - 2 * np.searchsorted(lead, offsets)
    offset_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    return pa.Array.from_buffers(
        arr.type,
        len(arr),
        [None, pa.py_buffer(offsets.astype(offset_type)), pa.py_buffer(folded[keep])],
    )


def _clean_common(arr: pa.Array) -> pa.Array:
    """Rows without special characters: NFKC and a trim are all the rules do to them."""
    return pc.utf8_trim_whitespace(pc.utf8_normalize(arr, "NFKC"))


def _clean_slow(arr: pa.Array) -> pa.Array:
    """Rows that need NFKC: the full rules only where special characters are present."""
    special, _ = _patterns()
    return _split_apply(arr, _mask(arr, special), _clean_special, _clean_common)


def _split_apply(
    arr: pa.Array,
    mask: np.ndarray,
    chosen: Callable[[pa.Array], pa.Array],
    other: Callable[[pa.Array], pa.Array],
) -> pa.Array:
    """`chosen` on the rows where mask, `other` on the rest, back in row order."""
    if mask.all():
        return chosen(arr)
    if not mask.any():
        return other(arr)
    rest = other(arr.filter(pa.array(~mask)))
    return _merge(mask, rest, chosen(arr.filter(pa.array(mask))))


def _clean_piece(arr: pa.Array) -> pa.Array:
    """Clean one slice: the fast path for most rows, the full rules for the rest."""
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    _, slow = _patterns()
    return _split_apply(
        arr,
        _mask(arr, slow),
        _clean_slow,
        lambda fast: pc.utf8_trim_whitespace(_fold_full_width(fast)),
    )


def clean_texts(texts: StringArray) -> pa.Array:
    """Clean every text (see the module rules); nulls become "". Keeps string/large_string."""
    chunked = as_text_chunks(texts)
    _patterns()  # build the tables once, before the threads want them
    pieces = parallel_map(_clean_piece, split_rows(chunked, CHUNK_ROWS))
    return concat_texts(pieces, chunked.type)


def clean_text(text: str) -> str:
    """Clean one text with the same rules as `clean_texts`; lone surrogates become U+FFFD."""
    try:
        arr = pa.array([text], type=pa.string())
    except UnicodeEncodeError:
        arr = pa.array([_SURROGATE_RE.sub("\ufffd", text)], type=pa.string())
    return str(clean_texts(arr)[0].as_py())


def _sure_letters(arr: pa.Array) -> np.ndarray:
    """Per row (no nulls), a lower bound of its letters, from the UTF-8 bytes.

    Counts ASCII letters and the ideographs U+5000..U+8FFF (lead bytes 0xE5..0xE8), all of
    them \\p{L}: most Chinese or English rows clear the ratio on this bound alone.
    """
    offsets, data = text_buffers(arr)
    data = data[:-8]
    sure = (data - np.uint8(0xE5)) < 4
    sure |= ((data | np.uint8(0x20)) - np.uint8(ord("a"))) < 26
    return np.diff(np.searchsorted(np.flatnonzero(sure), offsets))


def reject_reasons(
    cleaned: StringArray, *, min_chars: int, max_chars: int, min_text_ratio: float
) -> pa.Array:
    """Per row: null if valid, else the first failing RejectReason value.

    Checked in order: empty, too_short (< min_chars characters), too_long (> max_chars),
    not_text (letters and CJK ideographs, RE2 \\p{L}, make up less than min_text_ratio).
    """
    if min_chars < 0 or max_chars < min_chars:
        raise ValueError(f"need 0 <= min_chars <= max_chars, got {min_chars}, {max_chars}")
    if not 0.0 <= min_text_ratio <= 1.0:
        raise ValueError(f"min_text_ratio must be within [0, 1], got {min_text_ratio}")
    chunked = as_text_chunks(cleaned)

    def codes(arr: pa.Array) -> np.ndarray:
        arr = pc.fill_null(arr, "") if arr.null_count else arr
        length = pc.utf8_length(arr).to_numpy().astype(np.int64)
        letters = _sure_letters(arr)
        # Count letters exactly only where the cheap lower bound cannot settle the ratio.
        unsure = (length >= max(min_chars, 1)) & (length <= max_chars)
        unsure &= letters < min_text_ratio * length
        if unsure.any():
            subset = arr.filter(pa.array(unsure))
            non_letters = pc.count_substring_regex(subset, _NON_LETTER).to_numpy()
            letters[unsure] = length[unsure] - non_letters
        # Codes index the reasons below; -1 marks a valid row.
        return np.select(
            [
                length == 0,
                length < min_chars,
                length > max_chars,
                letters < min_text_ratio * length,
            ],
            [0, 1, 2, 3],
            default=-1,
        ).astype(np.int8)

    parts = parallel_map(codes, split_rows(chunked, CHUNK_ROWS))
    code = np.concatenate(parts) if parts else np.empty(0, dtype=np.int8)
    names = pa.array(
        [RejectReason.EMPTY, RejectReason.TOO_SHORT, RejectReason.TOO_LONG, RejectReason.NOT_TEXT],
        type=pa.string(),
    )
    return names.take(pa.array(code, mask=code < 0))


# -- one text, with offsets -----------------------------------------------------------------------
# The gateway cleans a complaint exactly as ingest did before the model sees it, and maps every
# answer back to character offsets into the text the client sent. The same rules as above, written
# with Python's `re` (RE2 syntax differs), applied to a text that carries, for each character, the
# span of the original it came from. `tests/shared/test_cleaning.py` checks that both give the same
# text on every noise kind of the sample generator.

# Unicode's space separators (category Zs), RE2's \p{Zs}.
_PY_ZS = " \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_PY_LINE_BREAK = re.compile("\r\n?|[\u2028\u2029]")
_PY_NEWLINE_TAG = re.compile(r"<(?:br|/p|/div)(?:[\t\n\f\r ][^>]*)?/?>", re.IGNORECASE)
_PY_ANY_TAG = re.compile(_ANY_TAG)
_PY_REMOVABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2060\ufeff]")
_PY_HOMOGLYPH = re.compile(_HOMOGLYPH)
_PY_BLANKS = re.compile(f"[\t{_PY_ZS}]+")
_PY_NEWLINE_SPACE = re.compile(" ?\n ?")
_PY_EMPTY_LINES = re.compile("\n{3,}")
_PY_MARKUP = re.compile(_MARKUP)
_PY_COMMON_ENTITIES = [(re.compile(re.escape(e)), t) for e, t in _COMMON_ENTITIES.items()]
# Hangul vowel and final jamo compose with the character before them although NFKC calls them
# starters; they never start a segment.
_JAMO_TAIL = re.compile("[\u1160-\u11ff]")


@dataclass(frozen=True)
class CleanedText:
    """A cleaned text and, per character, the span of the original text it comes from."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """The original span that the cleaned characters [start, end) come from."""
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"[{start}, {end}) is not a span of a {len(self.text)}-character text")
        return self.starts[start], self.ends[end - 1]


def _arrow_nfkc(texts: list[str]) -> list[str]:
    """NFKC by arrow's tables, as the vectorized cleaning does (Python's may be older)."""
    return pc.utf8_normalize(pa.array(texts, type=pa.string()), "NFKC").to_pylist()


@dataclass(frozen=True)
class _Traced:
    text: str
    starts: list[int]
    ends: list[int]

    @classmethod
    def of(cls, text: str) -> _Traced:
        return cls(text, list(range(len(text))), list(range(1, len(text) + 1)))

    def sub(self, pattern: re.Pattern[str], repl: str | Callable[[re.Match[str]], str]) -> _Traced:
        """`pattern.sub`, where replacement characters come from the whole match's span, or
        each from its own character when the replacement maps the match one to one."""
        parts: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        position = 0
        for match in pattern.finditer(self.text):
            a, b = match.span()
            parts.append(self.text[position:a])
            starts += self.starts[position:a]
            ends += self.ends[position:a]
            new = repl(match) if callable(repl) else repl
            if new and len(new) == b - a:
                starts += self.starts[a:b]
                ends += self.ends[a:b]
            elif new:
                first = self.starts[a] if a < len(self.text) else self.ends[-1]
                last = self.ends[b - 1] if b > a else first
                starts += [first] * len(new)
                ends += [last] * len(new)
            parts.append(new)
            position = b
        if position == 0 and not parts:
            return self
        parts.append(self.text[position:])
        starts += self.starts[position:]
        ends += self.ends[position:]
        return _Traced("".join(parts), starts, ends)

    def nfkc(self) -> _Traced:
        """NFKC segment by segment (a starter and the marks after it), so that a character
        NFKC leaves alone keeps its own span; one segment for all if that is not the same."""
        whole = _arrow_nfkc([self.text])[0]
        if whole == self.text:
            return self
        bounds = [
            i
            for i, ch in enumerate(self.text)
            if i == 0 or (not unicodedata.combining(ch) and not _JAMO_TAIL.match(ch))
        ] + [len(self.text)]
        segments = list(itertools.pairwise(bounds))
        pieces = _arrow_nfkc([self.text[a:b] for a, b in segments])
        if "".join(pieces) != whole:
            segments, pieces = [(0, len(self.text))], [whole]
        starts: list[int] = []
        ends: list[int] = []
        for (a, b), piece in zip(segments, pieces, strict=True):
            if len(piece) == b - a == 1:
                starts.append(self.starts[a])
                ends.append(self.ends[a])
            else:
                starts += [self.starts[a]] * len(piece)
                ends += [self.ends[b - 1]] * len(piece)
        return _Traced(whole, starts, ends)

    def strip(self) -> _Traced:
        stripped = self.text.strip()
        if stripped == self.text:
            return self
        a = len(self.text) - len(self.text.lstrip())
        b = a + len(stripped)
        return _Traced(stripped, self.starts[a:b], self.ends[a:b])


def _clean_traced(traced: _Traced) -> _Traced:
    """The rules of `_clean_special`, in its order, on one traced text."""
    for _ in range(_MAX_PASSES):
        traced = traced.sub(_PY_LINE_BREAK, "\n")
        traced = traced.sub(_PY_NEWLINE_TAG, "\n")
        traced = traced.sub(_PY_ANY_TAG, "")
        traced = traced.sub(_OTHER_ENTITY_RE, lambda m: html.unescape(m.group()))
        for entity, text in _PY_COMMON_ENTITIES:
            traced = traced.sub(entity, text)
        traced = traced.sub(_PY_REMOVABLE, "").nfkc()
        if _PY_HOMOGLYPH.search(traced.text):
            traced = traced.sub(_WORD_RE, _repair_word).nfkc()
        traced = traced.sub(_PY_LINE_BREAK, "\n")
        traced = traced.sub(_PY_BLANKS, " ")
        traced = traced.sub(_PY_NEWLINE_SPACE, "\n")
        traced = traced.sub(_PY_EMPTY_LINES, "\n\n").strip()
        if not _PY_MARKUP.search(traced.text):
            break
    return traced


def clean_with_offsets(text: str) -> CleanedText:
    """Clean one text as `clean_texts` does, keeping where each character came from.

    Offsets index `text` as given (lone surrogates, which the cleaning turns into U+FFFD, keep
    their places).
    """
    traced = _clean_traced(_Traced.of(_SURROGATE_RE.sub("\ufffd", text)))
    return CleanedText(traced.text, tuple(traced.starts), tuple(traced.ends))
