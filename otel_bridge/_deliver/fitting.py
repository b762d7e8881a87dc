"""Making a serialized event fit Sentry's item size limit before it is queued.

Relay refuses an ``event`` or ``transaction`` item larger than its ``max_event_size`` (1 MiB) and the whole
error or transaction is lost. :func:`fit_event` takes an event as sentry-sdk's serializer returns it (plain
JSON data, maybe with a top-level ``_meta``) and, only when its JSON is over the byte budget, trims it in
this order, stopping as soon as it fits:

1. the longest strings (exception values, messages, span data, request data, breadcrumb messages, frame
   variables...) are cut to a common length, never below :data:`MIN_CUT_LENGTH` characters; each cut
   string ends in ``...`` and gets Relay's own annotation at its path under ``_meta``,
   ``{"": {"rem": [["!limit", "s", kept, kept + 3]], "len": original_length}}`` (lengths in characters);
2. spans, from the end of ``spans`` (the transaction's own trace context stays); ``_meta.spans[""].len``
   keeps the original count, as sentry-sdk notes spans its span recorder dropped;
3. breadcrumbs, oldest first; ``_meta.breadcrumbs[""].len`` keeps the original count;
4. frame local variables, outermost frames first (the frame that raised keeps its own longest); a removed
   ``vars`` becomes ``null`` noted ``{"": {"rem": [["!limit", "x"]]}}``;
5. as a last resort whatever is still largest: strings are cut further (down to
   :data:`LAST_RESORT_CUT_LENGTH`) and containers lose entries (lists of frames, exceptions and breadcrumbs
   their oldest, anything else its last), noting the original length; what identifies the event (ids,
   timestamps, type, transaction name, trace context ids, exception types, values and mechanisms, where
   frames are) is never removed.

Sizes are measured with the encoding sentry-sdk writes envelope items with (``sentry_sdk.utils.json_dumps``:
compact separators, ASCII escapes). An event that already fits costs one encoding and comes back as the
same object. Pure: no I/O, no globals changed, and the input is never modified (a trimmed event is a new
one sharing only strings and scalars with it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union, cast

__all__ = [
    "DEFAULT_MAX_BYTES",
    "LAST_RESORT_CUT_LENGTH",
    "MAX_ITEM_BYTES",
    "MIN_CUT_LENGTH",
    "FitResult",
    "encoded_size",
    "fit_event",
]

MAX_ITEM_BYTES = 1024 * 1024
"""Relay's ``max_event_size``: the largest ``event`` or ``transaction`` item it accepts."""
DEFAULT_MAX_BYTES = 1_000_000
"""The default budget: :data:`MAX_ITEM_BYTES` less 48 KiB, room for the item and envelope headers and for
what sentry-sdk's client may add after fitting."""
MIN_CUT_LENGTH = 1024
"""Step 1 never cuts a string below this many characters (sentry-sdk's old ``max_value_length``)."""
LAST_RESORT_CUT_LENGTH = 64
"""Step 5 never cuts a string below this many characters."""

Segment = Union[str, int]
Path = Tuple[Segment, ...]
Container = Union[Dict[str, Any], List[Any]]

# sentry_sdk.utils.json_dumps's encoder, without its check for cycles (serialized events have none; a cycle
# still fails, with RecursionError): the one encoding of an event that fits is most of what fitting costs.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), check_circular=False)
_encode_str = json.encoder.encode_basestring_ascii
_ELLIPSIS = "..."
_LIMIT = "!limit"
_MAX_STRING_ROUNDS = 4
_MAX_LAST_RESORT_ROUNDS = 200
# Bytes of a note {"": {"len": N}} at a path, and of a string cut's note, before the path itself.
_LEN_NOTE_BYTES = 24
_CUT_NOTE_BYTES = 64
# Last resort: what stays. Paths are patterns, "*" standing for any list index.
_KEEP: Dict[Tuple[str, ...], frozenset[str]] = {
    (): frozenset(
        {
            "event_id",
            "type",
            "timestamp",
            "start_timestamp",
            "platform",
            "level",
            "transaction",
            "contexts",
            "exception",
            "message",
            "logentry",
            "sdk",
        }
    ),
    ("contexts",): frozenset({"trace"}),
    ("contexts", "trace"): frozenset({"trace_id", "span_id", "parent_span_id", "op", "status"}),
    ("exception",): frozenset({"values"}),
    ("exception", "values", "*"): frozenset({"type", "value", "module", "mechanism", "stacktrace"}),
    ("exception", "values", "*", "stacktrace"): frozenset({"frames"}),
    ("exception", "values", "*", "stacktrace", "frames", "*"): frozenset(
        {"function", "module", "filename", "abs_path", "lineno", "in_app"}
    ),
    ("exception", "values", "*", "mechanism"): frozenset({"type", "handled"}),
    ("logentry",): frozenset({"message", "formatted"}),
    ("sdk",): frozenset({"name", "version"}),
}
# Lists whose oldest entries (at the front) go first.
_OLDEST_FIRST = frozenset({("exception", "values"), ("threads", "values"), ("breadcrumbs", "values")})


def encoded_size(value: Any) -> int:
    """``len(sentry_sdk.utils.json_dumps(value))``: the output is ASCII, so characters are bytes."""
    return len(_ENCODER.encode(value))


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_event` returned and what it took away."""

    event: Dict[str, Any]
    """The event that fits; the input itself when it already did."""
    size: int
    """Bytes of ``event`` as sentry-sdk encodes it."""
    original_size: int
    max_bytes: int
    strings_cut: int = 0
    spans_dropped: int = 0
    breadcrumbs_dropped: int = 0
    frames_without_vars: int = 0
    entries_removed: int = 0
    """Entries the last resort removed from other containers."""

    @property
    def fits(self) -> bool:
        return self.size <= self.max_bytes

    @property
    def trimmed(self) -> bool:
        """Whether ``event`` is a trimmed copy rather than the input itself."""
        return self.original_size > self.max_bytes


def fit_event(event: Dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES) -> FitResult:
    """``event`` trimmed to at most ``max_bytes`` of JSON, as described in the module's documentation.

    ``FitResult.fits`` is false only when even what identifies the event is larger than ``max_bytes``.
    Raises ``TypeError``, ``ValueError`` or ``RecursionError`` (a cycle) where sentry-sdk could not encode
    ``event`` either.
    """
    size = encoded_size(event)
    if size <= max_bytes:
        return FitResult(event, size, size, max_bytes)
    fitting = _Fitting(_copy_containers(event), max_bytes, size)
    for step in (
        fitting.cut_strings,
        fitting.drop_spans,
        fitting.drop_breadcrumbs,
        fitting.strip_vars,
        fitting.last_resort,
    ):
        if fitting.size <= max_bytes:
            break
        step()
    return FitResult(
        event=fitting.event,
        size=fitting.size,
        original_size=size,
        max_bytes=max_bytes,
        strings_cut=len(fitting.cut_paths),
        spans_dropped=fitting.spans_dropped,
        breadcrumbs_dropped=fitting.breadcrumbs_dropped,
        frames_without_vars=fitting.frames_without_vars,
        entries_removed=fitting.entries_removed,
    )


def _copy_containers(event: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of every dict and list (tuples become lists, as in JSON); strings and scalars are shared."""
    root: Dict[str, Any] = {}
    stack: List[Tuple[Any, Any]] = [(event, root)]
    while stack:
        source, target = stack.pop()
        pairs = source.items() if isinstance(source, dict) else enumerate(source)
        for key, value in pairs:
            if isinstance(value, dict):
                copied: Any = {}
                stack.append((value, copied))
            elif isinstance(value, (list, tuple)):
                copied = []
                stack.append((value, copied))
            else:
                copied = value
            if isinstance(target, dict):
                target[key] = copied
            else:
                target.append(copied)
    return root


def _entries(node: Container) -> Iterator[Tuple[Segment, Any]]:
    return iter(node.items()) if isinstance(node, dict) else enumerate(node)


def _scalar_size(value: Any) -> int:
    if isinstance(value, str):
        return len(_encode_str(value))
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    return encoded_size(value)


def _pattern(path: Path) -> Tuple[str, ...]:
    return tuple("*" if isinstance(segment, int) else segment for segment in path)


def _cut(text: str, length: int) -> Tuple[str, int]:
    """``text`` cut to ``length`` characters ending in ``...``, never between the halves of a surrogate
    pair; and how many of its characters were kept."""
    kept = max(length - len(_ELLIPSIS), 0)
    if kept and "\ud800" <= text[kept - 1] <= "\udbff":
        kept -= 1
    return text[:kept] + _ELLIPSIS, kept


def _put(node: Container, key: Segment, value: Any) -> None:
    if isinstance(node, dict):
        node[cast(str, key)] = value
    else:
        node[cast(int, key)] = value


def _note_bytes(path: Path) -> int:
    """An upper bound on what the keys of ``path`` add to ``_meta``."""
    return sum(len(str(segment)) + 6 for segment in path)


@dataclass(frozen=True)
class _StringPlan:
    node: Container
    key: Segment
    path: Path
    text: str
    encoded: int
    per_char: float
    note: int

    @classmethod
    def of(cls, node: Container, key: Segment, path: Path, text: str) -> _StringPlan:
        encoded = len(_encode_str(text))
        per_char = (encoded - 2) / len(text)
        return cls(node, key, path, text, encoded, per_char, _CUT_NOTE_BYTES + _note_bytes(path))

    def saving(self, length: int) -> float:
        """Bytes saved, net of its ``_meta`` note, by cutting the string to ``length`` characters."""
        if len(self.text) <= length:
            return 0.0
        saved = self.encoded - (self.per_char * (length - len(_ELLIPSIS)) + len(_ELLIPSIS) + 2) - self.note
        return saved if saved > 0 else 0.0


def _common_length(plans: List[_StringPlan], floor: int, excess: int) -> int:
    """The largest length >= ``floor`` that strings can be cut to saving ``excess`` bytes; else ``floor``."""

    def total(length: int) -> float:
        return sum(plan.saving(length) for plan in plans)

    if not plans or total(floor) < excess:
        return floor
    low, high = floor, max(len(plan.text) for plan in plans)
    while low < high:  # savings only grow as the length shrinks
        middle = (low + high + 1) // 2
        if total(middle) >= excess:
            low = middle
        else:
            high = middle - 1
    return low


class _Fitting:
    """One event being trimmed in place (it is already a private copy)."""

    def __init__(self, event: Dict[str, Any], max_bytes: int, size: int) -> None:
        self.event = event
        self.max_bytes = max_bytes
        self.size = size
        self.cut_paths: set[Path] = set()
        self.spans_dropped = 0
        self.breadcrumbs_dropped = 0
        self.frames_without_vars = 0
        self.entries_removed = 0

    @property
    def excess(self) -> int:
        return self.size - self.max_bytes

    def measure(self) -> None:
        self.size = encoded_size(self.event)

    # --- _meta ------------------------------------------------------------------------------------

    def meta_at(self, path: Path, create: bool = True) -> Optional[Dict[str, Any]]:
        """The ``_meta`` node mirroring ``path`` (made when ``create``); None if ``_meta`` is malformed or
        ``path`` has an empty key, which ``_meta`` cannot tell from the node's own note."""
        if "" in path:
            return None
        node = self.event.get("_meta")
        if not isinstance(node, dict):
            if node is not None or not create:
                return None
            node = self.event["_meta"] = {}
        for segment in path:
            child = node.get(str(segment))
            if not isinstance(child, dict):
                if not create:
                    return None
                child = node[str(segment)] = {}
            node = child
        return node

    def note_length(self, path: Path, length: int) -> None:
        """Note on ``path`` that it held ``length`` entries, unless an earlier note says more."""
        node = self.meta_at(path)
        if node is None:
            return
        note = node.get("")
        if not isinstance(note, dict):
            note = node[""] = {}
        previous = note.get("len")
        if not (isinstance(previous, int) and previous >= length):
            note["len"] = length

    def forget_entries(self, path: Path, removed: range, shift: int = 0) -> None:
        """Drop the notes on removed entries of the list or dict at ``path``; renumber a list's others."""
        node = self.meta_at(path, create=False)
        if not node:
            return
        kept: Dict[str, Any] = {}
        for key, value in node.items():
            index = int(key) if isinstance(key, str) and key.isdigit() else None
            if index is not None and index in removed:
                continue
            kept[key if index is None else str(index - shift)] = value
        node.clear()
        node.update(kept)

    def delete_entries(self, entries: List[Any], path: Path, count: int, from_front: bool) -> None:
        """``count`` entries off the front or the end of the list at ``path``, with their notes."""
        if from_front:
            del entries[:count]
            self.forget_entries(path, range(count), shift=count)
        else:
            del entries[len(entries) - count :]
            self.forget_entries(path, range(len(entries), len(entries) + count))

    def forget_keys(self, path: Path, keys: List[str]) -> None:
        node = self.meta_at(path, create=False)
        if node:
            for key in keys:
                node.pop(key, None)

    # --- 1. strings ---------------------------------------------------------------------------------

    def long_strings(self, longer_than: int) -> List[Tuple[Container, Segment, Path, str]]:
        found: List[Tuple[Container, Segment, Path, str]] = []
        stack: List[Tuple[Container, Path]] = [(self.event, ())]
        while stack:
            node, path = stack.pop()
            for key, value in _entries(node):
                if isinstance(value, str):
                    if len(value) > longer_than:
                        found.append((node, key, (*path, key), value))
                elif isinstance(value, (dict, list)) and not (node is self.event and key == "_meta"):
                    stack.append((value, (*path, key)))
        return found

    def cut_strings(self, floor: int = MIN_CUT_LENGTH, rounds: int = _MAX_STRING_ROUNDS) -> None:
        """Cut every string longer than the largest common length (>= ``floor``) that makes the event fit,
        or to ``floor`` if none does. Lengths are planned from estimates and checked by measuring."""
        for _ in range(rounds):
            if self.excess <= 0:
                return
            plans = [
                _StringPlan.of(node, key, path, text) for node, key, path, text in self.long_strings(floor)
            ]
            length = _common_length(plans, floor, self.excess)
            cut_any = False
            for plan in plans:
                if plan.saving(length) > 0:
                    shorter, kept = _cut(plan.text, length)
                    _put(plan.node, plan.key, shorter)
                    self.note_cut(plan.path, kept, len(plan.text))
                    cut_any = True
            if not cut_any:
                return
            self.measure()

    def note_cut(self, path: Path, kept: int, length: int) -> None:
        self.cut_paths.add(path)
        node = self.meta_at(path)
        if node is None:
            return
        previous = node.get("")
        note = dict(previous) if isinstance(previous, dict) else {}
        earlier = note.get("len")  # a cut before ours saw the whole string
        note["rem"] = [[_LIMIT, "s", kept, kept + len(_ELLIPSIS)]]
        note["len"] = earlier if isinstance(earlier, int) and earlier > length else length
        node.clear()  # nothing below a string
        node[""] = note

    # --- 2. spans -----------------------------------------------------------------------------------

    def drop_spans(self) -> None:
        spans = self.event.get("spans")
        if isinstance(spans, list) and spans:
            self.spans_dropped += self.drop_entries(spans, ("spans",), from_front=False, note_at=("spans",))

    # --- 3. breadcrumbs -----------------------------------------------------------------------------

    def drop_breadcrumbs(self) -> None:
        crumbs = self.event.get("breadcrumbs")
        path: Path = ("breadcrumbs",)
        if isinstance(crumbs, dict):
            crumbs, path = crumbs.get("values"), ("breadcrumbs", "values")
        if isinstance(crumbs, list) and crumbs:
            self.breadcrumbs_dropped += self.drop_entries(
                crumbs, path, from_front=True, note_at=("breadcrumbs",)
            )

    def drop_entries(self, entries: List[Any], path: Path, from_front: bool, note_at: Path) -> int:
        """Remove entries of the list at ``path`` (oldest or last first) until the event fits or none are
        left; note the original count on ``note_at``. Returns how many went."""
        original = len(entries)
        meta = self.meta_at(path, create=False) or {}
        while entries and self.excess > 0:
            need = self.excess + _LEN_NOTE_BYTES + _note_bytes(note_at)
            order = range(len(entries)) if from_front else range(len(entries) - 1, -1, -1)
            count, freed = 0, 0
            for index in order:
                if freed >= need:
                    break
                note = meta.get(str(index))
                freed += encoded_size(entries[index]) + 1
                if note is not None:
                    freed += encoded_size(note) + len(str(index)) + 4
                count += 1
            self.delete_entries(entries, path, count, from_front)
            self.note_length(note_at, original)
            self.measure()
        return original - len(entries)

    # --- 4. frame variables -------------------------------------------------------------------------

    def frame_lists(self) -> Iterator[Tuple[List[Any], Path]]:
        for section in ("exception", "threads"):
            container = self.event.get(section)
            values: Any = container
            path: Path = (section,)
            if isinstance(container, dict):
                values, path = container.get("values"), (section, "values")
            if not isinstance(values, list):
                continue
            for index, value in enumerate(values):
                stacktrace = value.get("stacktrace") if isinstance(value, dict) else None
                frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
                if isinstance(frames, list):
                    yield frames, (*path, index, "stacktrace", "frames")
        stacktrace = self.event.get("stacktrace")
        frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
        if isinstance(frames, list):
            yield frames, ("stacktrace", "frames")

    def strip_vars(self) -> None:
        candidates = []
        for order, (frames, path) in enumerate(self.frame_lists()):
            for index, frame in enumerate(frames):
                if isinstance(frame, dict) and frame.get("vars") is not None:
                    frame_path = (*path, index)
                    note = _CUT_NOTE_BYTES + _note_bytes(frame_path)
                    saved = encoded_size(frame["vars"]) - 4 - note
                    if saved > 0:
                        # outermost first: the distance from the innermost frame, then the oldest exception
                        candidates.append((-(len(frames) - 1 - index), order, saved, frame, frame_path))
        candidates.sort(key=lambda candidate: candidate[:2])
        freed = 0
        for _, _, saved, frame, frame_path in candidates:
            if freed >= self.excess:
                break
            frame["vars"] = None
            node = self.meta_at((*frame_path, "vars"))
            if node is not None:
                node.clear()
                node[""] = {"rem": [[_LIMIT, "x"]]}
            self.frames_without_vars += 1
            freed += saved
        if freed:
            self.measure()

    # --- 5. last resort -----------------------------------------------------------------------------

    def last_resort(self) -> None:
        self.cut_strings(LAST_RESORT_CUT_LENGTH, rounds=1)
        for _ in range(_MAX_LAST_RESORT_ROUNDS):
            if self.excess <= 0 or not self.shrink_largest():
                return
            self.measure()

    def sizes(self) -> Dict[int, int]:
        """Encoded size of every container of the event (``_meta`` aside), by ``id``."""
        sizes: Dict[int, int] = {}
        stack: List[Tuple[Container, bool]] = [(self.event, False)]
        while stack:
            node, children_done = stack.pop()
            if not children_done:
                stack.append((node, True))
                for key, value in _entries(node):
                    if isinstance(value, (dict, list)) and not (node is self.event and key == "_meta"):
                        stack.append((value, False))
                continue
            total = 2 + max(len(node) - 1, 0)
            for key, value in _entries(node):
                if node is self.event and key == "_meta":
                    continue
                if isinstance(key, str):
                    total += len(_encode_str(key)) + 1
                total += sizes[id(value)] if isinstance(value, (dict, list)) else _scalar_size(value)
            sizes[id(node)] = total
        return sizes

    def shrink_largest(self) -> bool:
        """Shrink one part of the event; False if nothing more can go.

        From the root down through each largest child, the deepest part big enough to cover the excess on
        its own is tried first, then the smaller parts below it, then the larger ones above it."""
        sizes = self.sizes()

        def size(value: Any) -> int:
            return sizes[id(value)] if isinstance(value, (dict, list)) else _scalar_size(value)

        chain: List[Tuple[Optional[Container], Segment, Any, Path]] = [(None, "", self.event, ())]
        covering = 0
        while isinstance(chain[-1][2], (dict, list)):
            _, _, node, path = chain[-1]
            children = [(k, v) for k, v in _entries(node) if not (node is self.event and k == "_meta")]
            if not children:
                break
            key, child = max(children, key=lambda pair: size(pair[1]))
            chain.append((node, key, child, (*path, key)))
            if size(child) >= self.excess:
                covering = len(chain) - 1
        for parent, key, node, path in chain[covering:] + chain[:covering][::-1]:
            if isinstance(node, str):
                if self.shorten(parent, key, node, path):
                    return True
            elif isinstance(node, (dict, list)) and self.remove_entries(node, path, size):
                return True
        return False

    def shorten(self, parent: Optional[Container], key: Segment, text: str, path: Path) -> bool:
        """Cut ``text`` by what covers the excess, at most by half and not below the last resort's length."""
        if parent is None or len(text) <= LAST_RESORT_CUT_LENGTH:
            return False
        per_char = max((len(_encode_str(text)) - 2) / len(text), 1.0)
        needed = int((self.excess + _CUT_NOTE_BYTES) / per_char) + 1
        length = max(LAST_RESORT_CUT_LENGTH, len(text) - needed, len(text) - len(text) // 2)
        if length >= len(text):
            return False
        shorter, kept = _cut(text, length)
        _put(parent, key, shorter)
        self.note_cut(path, kept, len(text))
        return True

    def remove_entries(self, node: Container, path: Path, size: Callable[[Any], int]) -> bool:
        """Remove up to half of ``node``'s removable entries, enough to cover the excess if they can."""
        pattern = _pattern(path)
        need = self.excess + _LEN_NOTE_BYTES + _note_bytes(path)
        original = len(node)
        if isinstance(node, dict):
            keep = _KEEP.get(pattern, frozenset())
            removable = [k for k in reversed(node) if k not in keep and not (not path and k == "_meta")]
            limit = max(len(removable) // 2, 1)
            gone: List[str] = []
            freed = 0
            for key in removable[:limit]:
                if freed >= need:
                    break
                freed += size(node[key]) + len(_encode_str(key)) + 2
                gone.append(key)
            if not gone:
                return False
            for key in gone:
                del node[key]
            self.forget_keys(path, gone)
            count = len(gone)
        else:
            oldest_first = pattern in _OLDEST_FIRST or pattern[-1:] == ("frames",)
            limit = len(node) // 2  # a list keeps at least one entry
            order = range(limit) if oldest_first else range(len(node) - 1, len(node) - 1 - limit, -1)
            count, freed = 0, 0
            for index in order:
                if freed >= need:
                    break
                freed += size(node[index]) + 1
                count += 1
            if not count:
                return False
            self.delete_entries(node, path, count, oldest_first)
        if path:
            self.note_length(path, original)
        self.entries_removed += count
        return True
