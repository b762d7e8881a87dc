"""Sentry ``exception.values`` from the text OpenTelemetry records for an exception.

``span.record_exception(exc)`` keeps only text: ``exception.type`` (``module.QualName``, no module for
builtins), ``exception.message`` (``str(exc)``) and ``exception.stacktrace`` (``traceback.format_exception``,
chained causes and exception groups included). :func:`parse_exception` turns that text back into what
sentry-sdk would have sent for the live exception, as far as text allows. The text may be truncated at any
character (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``) or not come from Python at all, so nothing here raises and
all work is bounded. Reading source files for context lines, through ``read_lines``, is the only I/O.
"""

from __future__ import annotations

import functools
import linecache
import os
import re
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

from otel_bridge._convert.in_app import in_app_rule

__all__ = ["MAX_EXCEPTIONS", "MAX_FRAMES", "ReadLines", "parse_exception", "read_source_lines"]

MAX_FRAMES = 250
"""Frames kept per exception, the newest ones, as Sentry keeps them."""
MAX_EXCEPTIONS = 10
"""Exceptions kept per event: the raised one and its nearest causes (or, for a group, the first in order)."""
CONTEXT_LINES = 5

ReadLines = Callable[[str], Optional[list[str]]]

_MAX_TEXT = 2_000_000
_MAX_FRAME_LINE = 5_000
_MAX_LINE = 1_024
_MAX_VALUE = 8_192
_MAX_GROUP_DEPTH = 12
_MAX_TYPE_PARTS = 64
_FALLBACK_TYPE = "Error"

_CAUSE = "The above exception was the direct cause of the following exception:"
_CONTEXT = "During handling of the above exception, another exception occurred:"
_LINKS = {_CAUSE: "__cause__", _CONTEXT: "__context__"}
_HEADERS = frozenset(
    ("Traceback (most recent call last):", "Exception Group Traceback (most recent call last):")
)
_FRAME = re.compile(r'  File "(.*)", line (\d+|None), in (.*)')
_SYNTAX_ERROR_AT = re.compile(r'  File "(.*)", line (\d+)')
_REPEAT = re.compile(r"  \[Previous line repeated (\d+) more times?\]")
_EXCEPTION_LINE = re.compile(r"((?:(?!\d)\w|<)[\w.<>]*)(?::(?: (.*))?)?")
_GROUP_COUNT = re.compile(r"(.*) \(\d+ sub-exceptions?\)")
_DOTTED = re.compile(r"[\w<>]+(?:\.[\w<>]+)+")
_GROUP_TITLE = re.compile(r"( *)(?:\+-|  )\+-+ (?:\d+|\.\.\.) -+")
_GROUP_CLOSE = re.compile(r" *\+-+")
_GROUP_CONTENT = re.compile(r"( *)[|+](?: (.*))?")
_FROZEN = re.compile(r"<frozen ([\w.]+)>")
_SOURCE_SUFFIXES = (".py", ".pyw")
_MODULE_SUFFIXES = (".py", ".pyw", ".pyc")


@functools.lru_cache(maxsize=512)
def read_source_lines(path: str) -> Optional[list[str]]:
    """The lines of the Python source file at absolute ``path`` (with line ends), through ``linecache``."""
    if not os.path.isabs(path) or not path.endswith(_SOURCE_SUFFIXES):
        return None
    try:
        lines = linecache.getlines(path)
    except Exception:
        return None
    return lines or None


class _RawFrame(NamedTuple):
    path: str
    lineno: Optional[int]
    function: str
    printed: Optional[str]


@dataclass
class _Section:
    """One exception's part of the text: its frames and, unless the text was cut first, its last line."""

    frames: Sequence[_RawFrame] = ()
    type: Optional[str] = None
    value: Optional[str] = None
    link: Optional[str] = None
    subs: list[list[_Section]] = field(default_factory=list)
    group: bool = False

    @property
    def complete(self) -> bool:
        return self.type is not None


@dataclass
class _Subs:
    chains: list[list[_Section]]


_Item = Union[str, _Subs]


@dataclass
class _Node:
    type: str
    module: Optional[str]
    value: str
    frames: Sequence[_RawFrame]
    cause: Optional[_Node] = None
    cause_source: Optional[str] = None
    subs: list[_Node] = field(default_factory=list)
    group: bool = False


def parse_exception(
    type_name: Optional[str],
    message: Optional[str],
    stacktrace: Optional[str],
    *,
    read_lines: Optional[ReadLines] = read_source_lines,
    in_app_include: Sequence[str] = (),
    in_app_exclude: Sequence[str] = (),
    project_root: Optional[str] = None,
    search_paths: Optional[Sequence[str]] = None,
    source_context: bool = True,
) -> list[dict[str, Any]]:
    """Sentry ``exception.values`` for an OTel ``exception`` span event; never raises, never empty.

    Order is Sentry's: the innermost cause first, the raised exception last; frames oldest call first, at
    most :data:`MAX_FRAMES` (the newest) per exception and :data:`MAX_EXCEPTIONS` exceptions. The raised
    exception's ``type``/``module``/``value`` come from ``type_name``/``message`` (the text is the fallback,
    and supplies ``__notes__``); chained ones from their traceback section. An exception group is laid out
    as sentry-sdk does, with ``mechanism`` ids tying members to their group. Text that is not a Python
    traceback gives one frameless entry.

    ``read_lines(path)`` gives a source file's lines for context (``None`` picks :func:`read_source_lines`);
    with ``source_context`` false (sentry-sdk's ``include_source_context=False``) frames have no lines at all.
    Frame ``module`` and the relative ``filename`` come from the ``search_paths`` entry (``sys.path`` by
    default) a file lies under. ``in_app``: the rule of :mod:`otel_bridge._convert.in_app`, the same as for
    frames of exceptions sent live.
    """
    try:
        return _parse(
            _text(type_name),
            _text(message),
            _text(stacktrace),
            _Frames(
                read_lines or read_source_lines,
                in_app_include,
                in_app_exclude,
                project_root,
                search_paths,
                source_context,
            ),
        )
    except Exception:
        return [{"type": _text(type_name) or _FALLBACK_TYPE, "value": _text(message) or ""}]


def _text(value: object) -> Optional[str]:
    return value if isinstance(value, str) else None


def _parse(
    type_name: Optional[str], message: Optional[str], text: Optional[str], frames: _Frames
) -> list[Any]:
    chain = _parse_text(text or "")
    root = _root(chain, type_name or None, message, _python_like(chain, text or ""))
    entries: list[dict[str, Any]] = []
    if root.subs:
        _emit_group(root, frames, entries, exception_id=0, parent_id=0, source=None)
    else:
        node: Optional[_Node] = root
        while node is not None and len(entries) < MAX_EXCEPTIONS:
            entries.append(frames.entry(node))
            node = node.cause
    entries.reverse()
    return entries


def _python_like(chain: list[_Section], text: str) -> bool:
    if any(section.frames or section.link or section.subs for section in chain):
        return True
    return any(header in text for header in _HEADERS)


def _root(
    chain: list[_Section], type_name: Optional[str], message: Optional[str], python_like: bool
) -> _Node:
    """The raised exception, linked to its causes: the text's last section, unless the text was cut before
    the raised exception's own section began (the last section then names another type)."""
    nodes = _link(chain) if python_like else []
    last = nodes[-1] if nodes else None
    printed = chain[-1].type if nodes else None
    if type_name is not None:
        module, name = _split_type(type_name)
        if last is not None and printed is not None and not _same_type(printed, type_name):
            return _Node(name, module, message or "", (), cause=last)
    elif last is not None and printed is not None:
        module, name = last.module, last.type
    else:
        module, name = None, _FALLBACK_TYPE
    if last is None:
        return _Node(name, module, message or "", ())
    value = _group_message(message or "") if last.group else message or ""
    if printed is not None:
        full = chain[-1].value or ""
        # the printed value adds __notes__ to str(exc), as sentry-sdk's value does
        if message is None or (full.startswith(message + "\n") and len(full) <= _MAX_VALUE):
            value = last.value
    last.type, last.module, last.value = name, module, value
    return last


def _group_message(value: str) -> str:
    """An exception group's ``message`` attribute, which sentry-sdk sends instead of its ``str()``."""
    first, newline, rest = value.partition("\n")
    match = _GROUP_COUNT.fullmatch(first)
    return match.group(1) + newline + rest if match is not None and match.group(1) else value


def _same_type(printed: str, type_name: str) -> bool:
    # traceback leaves out "__main__.", OTel keeps it
    return printed == type_name or "__main__." + printed == type_name


def _link(chain: list[_Section]) -> list[_Node]:
    """Nodes for a chain's sections, each pointing at the one before it; incomplete ones only at the end."""
    nodes: list[_Node] = []
    for index, section in enumerate(chain):
        if not section.complete and index != len(chain) - 1:
            nodes.clear()
            continue
        module, name = _split_type(section.type) if section.type else (None, _FALLBACK_TYPE)
        node = _Node(name, module, _clip(section.value or "", _MAX_VALUE), section.frames)
        node.subs = [sub for sub in (_sub_root(chain) for chain in section.subs) if sub is not None]
        node.group = section.group or bool(node.subs)
        if node.group:
            node.value = _group_message(node.value)
        if nodes and section.link is not None:
            node.cause, node.cause_source = nodes[-1], section.link
        nodes.append(node)
    return nodes


def _sub_root(chain: list[_Section]) -> Optional[_Node]:
    nodes = _link(chain)
    if not nodes or not chain[-1].complete:
        return None
    return nodes[-1]


def _emit_group(
    node: _Node,
    frames: _Frames,
    entries: list[dict[str, Any]],
    *,
    exception_id: int,
    parent_id: int,
    source: Optional[str],
) -> int:
    """sentry-sdk's ``exceptions_from_error`` walk: the node, its cause, its members; ids in that order."""
    if len(entries) >= MAX_EXCEPTIONS:
        return exception_id
    entry = frames.entry(node)
    mechanism: dict[str, Any] = {"type": "generic", "exception_id": exception_id}
    if source is not None:
        mechanism["source"] = source
    if exception_id != 0:
        mechanism["type"] = "chained"
        mechanism["parent_id"] = parent_id
    if node.group:
        mechanism["is_exception_group"] = True
    entry["mechanism"] = mechanism
    entries.append(entry)
    own_id = exception_id
    exception_id += 1
    if node.cause is not None:
        # sentry-sdk gives causes parent_id 0, not their effect's id
        exception_id = _emit_group(
            node.cause, frames, entries, exception_id=exception_id, parent_id=0, source=node.cause_source
        )
    for index, sub in enumerate(node.subs):
        exception_id = _emit_group(
            sub, frames, entries, exception_id=exception_id, parent_id=own_id, source=f"exceptions[{index}]"
        )
    return exception_id


def _split_type(name: str) -> tuple[Optional[str], str]:
    """``(module, qualified name)`` of a printed type: the longest imported module prefix, else the part
    before ``X.<locals>``, else everything before the last dot."""
    if not _DOTTED.fullmatch(name):
        return None, name
    parts = name.split(".")
    module: Optional[str] = None
    if len(parts) <= _MAX_TYPE_PARTS:
        for cut in range(len(parts) - 1, 0, -1):
            candidate = ".".join(parts[:cut])
            if candidate in sys.modules:
                module, parts = candidate, parts[cut:]
                break
    if module is None:
        locals_at = next((index for index in range(2, len(parts)) if parts[index] == "<locals>"), None)
        cut = len(parts) - 1 if locals_at is None else locals_at - 1
        module, parts = ".".join(parts[:cut]), parts[cut:]
    if module in ("builtins", "__builtins__"):
        module = None
    return module, ".".join(parts)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the text -------------------------------------------------------------------------------------------


def _parse_text(text: str) -> list[_Section]:
    if len(text) > _MAX_TEXT:
        text = text[-_MAX_TEXT:].partition("\n")[2]
    lines = text.replace("\r\n", "\n").split("\n")
    # format_exception ends every line with "\n": a last line without one was cut
    lines.pop()
    chain: list[_Section] = []
    for link, part in _split_chain(lines):
        if _is_group(part):
            sections = _parse_chain(_group_items(part))
            if sections and sections[0].link is None:
                sections[0].link = link
            chain.extend(sections)
        else:
            section = _parse_section(part)
            section.link = link
            chain.append(section)
    return chain


def _split_chain(items: Sequence[_Item]) -> list[tuple[Optional[str], list[_Item]]]:
    """Items between the "direct cause" / "during handling" lines, with the line that precedes each; the
    blank lines format_exception puts around those lines are dropped."""
    parts: list[tuple[Optional[str], list[_Item]]] = []
    link: Optional[str] = None
    current: list[_Item] = []
    for item in items:
        if isinstance(item, str) and item in _LINKS:
            if current and current[-1] == "":
                current.pop()
            parts.append((link, current))
            link, current = _LINKS[item], []
        elif item != "" or current:
            current.append(item)
    parts.append((link, current))
    return [(link, part) for link, part in parts if part]


def _parse_chain(items: Sequence[_Item]) -> list[_Section]:
    sections = []
    for link, part in _split_chain(items):
        section = _parse_section(part)
        section.link = link
        sections.append(section)
    return sections


def _parse_section(items: Sequence[_Item]) -> _Section:
    frames: deque[_RawFrame] = deque(maxlen=MAX_FRAMES)
    exception_lines: Optional[list[str]] = None
    subs: list[list[_Section]] = []
    group = False
    syntax_error_at = ""
    expect_source = False
    for item in items:
        if isinstance(item, _Subs):
            subs.extend(item.chains)
            expect_source = False
            continue
        line = item
        if exception_lines is not None:
            exception_lines.append(line)
            continue
        if line.startswith('  File "') and len(line) <= _MAX_FRAME_LINE:
            match = _FRAME.fullmatch(line)
            if match is not None:
                number = match.group(2)
                lineno = int(number) if number.isdigit() and len(number) <= 9 else None
                frames.append(_RawFrame(match.group(1), lineno, match.group(3), None))
                expect_source = True
                continue
            match = _SYNTAX_ERROR_AT.fullmatch(line)
            if match is not None:
                # SyntaxError's str() names the file (base name) and line its own text only hints at
                syntax_error_at = f" ({match.group(1).rpartition('/')[2]}, line {match.group(2)})"
        if line in _HEADERS:
            group = group or line.startswith("Exception Group")
            expect_source = False
            continue
        if expect_source and line.startswith("    ") and not _is_carets(line):
            frames[-1] = frames[-1]._replace(printed=line.strip())
            expect_source = False
            continue
        expect_source = False
        if line.startswith("  [Previous line repeated "):
            match = _REPEAT.fullmatch(line)
            if match is not None and frames and len(match.group(1)) <= 9:
                frames.extend([frames[-1]] * min(int(match.group(1)), MAX_FRAMES))
            continue
        if line and not line[0].isspace() and _EXCEPTION_LINE.fullmatch(line):
            exception_lines = [line]
    section = _Section(frames=frames, subs=subs, group=group)
    if exception_lines is not None:
        match = _EXCEPTION_LINE.fullmatch(exception_lines[0])
        if match is not None:
            message = match.group(2) or ""
            if message and syntax_error_at:
                message += syntax_error_at
            section.type = match.group(1)
            section.value = "\n".join([message, *exception_lines[1:]])
    return section


def _is_carets(line: str) -> bool:
    return not line.strip(" \t^~") and ("^" in line or "~" in line)


def _is_group(part: Sequence[_Item]) -> bool:
    first = part[0] if part else None
    return isinstance(first, str) and (first.startswith(("  + ", "  |")))


class _Token(NamedTuple):
    kind: str
    depth: int
    text: str


def _group_items(lines: Sequence[_Item]) -> list[_Item]:
    """The ``|``-margined lines of a top-level exception group, margins removed, members nested as
    :class:`_Subs` after the group's own lines."""
    tokens: list[_Token] = []
    for line in lines:
        if not isinstance(line, str):
            continue
        title = _GROUP_TITLE.fullmatch(line)
        if title is not None:
            tokens.append(_Token("title", len(title.group(1)) // 2, ""))
            continue
        if _GROUP_CLOSE.fullmatch(line):
            continue
        content = _GROUP_CONTENT.fullmatch(line)
        if content is not None and len(content.group(1)) % 2 == 0 and content.group(1):
            tokens.append(_Token("content", len(content.group(1)) // 2, content.group(2) or ""))
    tokens = [token for token in tokens if token.depth <= _MAX_GROUP_DEPTH]
    items: list[_Item] = []
    position = 0
    while position < len(tokens):
        block, position = _group_block(tokens, position, 1)
        items.extend(block)
        if position < len(tokens) and tokens[position].depth < 1:
            position += 1
    return items


def _group_block(tokens: Sequence[_Token], position: int, depth: int) -> tuple[list[_Item], int]:
    items: list[_Item] = []
    while position < len(tokens):
        token = tokens[position]
        if token.depth > depth or (token.depth == depth and token.kind == "content"):
            if token.depth == depth:
                items.append(token.text)
            position += 1
        elif token.depth == depth:
            chains: list[list[_Section]] = []
            while position < len(tokens) and tokens[position] == token:
                member, position = _group_block(tokens, position + 1, depth + 1)
                chains.append(_parse_chain(member))
            items.append(_Subs(chains))
        else:
            break
    return items, position


# --- frames ---------------------------------------------------------------------------------------------


class _Frames:
    """Sentry frames and entries, with what one call of :func:`parse_exception` needs cached."""

    def __init__(
        self,
        read_lines: ReadLines,
        in_app_include: Sequence[str],
        in_app_exclude: Sequence[str],
        project_root: Optional[str],
        search_paths: Optional[Sequence[str]],
        source_context: bool = True,
    ) -> None:
        self._read_lines = read_lines
        self._source_context = source_context
        self._in_app = in_app_rule(tuple(in_app_include), tuple(in_app_exclude), project_root)
        self._search = sorted(
            {
                _directory(path)
                for path in (sys.path if search_paths is None else search_paths)
                if path and isinstance(path, str)
            },
            key=len,
            reverse=True,
        )
        self._modules: dict[str, tuple[Optional[str], str]] = {}
        main = _main_file()
        if main is not None:
            self._modules[main] = ("__main__", os.path.basename(main))
        self._sources: dict[str, Optional[list[str]]] = {}

    def entry(self, node: _Node) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": node.type or _FALLBACK_TYPE}
        if node.module:
            entry["module"] = node.module
        entry["value"] = node.value
        frames = [frame for frame in map(self._frame, node.frames) if frame is not None]
        if frames:
            entry["stacktrace"] = {"frames": frames}
        return entry

    def _frame(self, raw: _RawFrame) -> Optional[dict[str, Any]]:
        path = os.path.normpath(raw.path) if os.path.isabs(raw.path) else raw.path
        module, filename = self._module(path)
        if module is not None and module.startswith("sentry_sdk."):
            return None
        frame: dict[str, Any] = {}
        if path:
            frame["filename"] = filename
            frame["abs_path"] = path
        frame["function"] = raw.function or "<unknown>"
        if module is not None:
            frame["module"] = module
        if raw.lineno is not None:
            frame["lineno"] = raw.lineno
            if self._source_context:
                frame.update(self._context(path, raw.lineno, raw.printed))
        elif raw.printed and self._source_context:
            frame["context_line"] = _clip(raw.printed, _MAX_LINE)
        frame["in_app"] = bool(self._in_app(module, path))
        return frame

    def _module(self, path: str) -> tuple[Optional[str], str]:
        known = self._modules.get(path)
        if known is None:
            known = self._modules[path] = _module_for(path, self._search)
        return known

    def _context(self, path: str, lineno: int, printed: Optional[str]) -> dict[str, Any]:
        lines = self._source(path) if path else None
        if lines and 0 < lineno <= len(lines):
            try:
                line = lines[lineno - 1].strip("\r\n")
                if printed is None or line.strip() == printed:
                    index = lineno - 1
                    return {
                        "pre_context": [
                            _clip(pre.strip("\r\n"), _MAX_LINE)
                            for pre in lines[max(0, index - CONTEXT_LINES) : index]
                        ],
                        "context_line": _clip(line, _MAX_LINE),
                        "post_context": [
                            _clip(post.strip("\r\n"), _MAX_LINE)
                            for post in lines[index + 1 : index + 1 + CONTEXT_LINES]
                        ],
                    }
            except Exception:
                pass
        # the file is gone or no longer the one that ran: the traceback's copy of the line is all there is
        return {"context_line": _clip(printed, _MAX_LINE)} if printed else {}

    def _source(self, path: str) -> Optional[list[str]]:
        if path not in self._sources:
            try:
                lines = self._read_lines(path)
            except Exception:
                lines = None
            valid = isinstance(lines, list) and all(isinstance(line, str) for line in lines)
            self._sources[path] = lines if valid else None
        return self._sources[path]


def _main_file() -> Optional[str]:
    """The script run as ``__main__``, whose frames sentry-sdk puts in module ``__main__``."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if isinstance(path, str) and os.path.isabs(path):
        return os.path.normpath(path)
    return None


def _directory(path: str) -> str:
    path = os.path.normpath(path) if os.path.isabs(path) else path
    return path.rstrip(os.sep) + os.sep


def _module_for(path: str, search: Sequence[str]) -> tuple[Optional[str], str]:
    """``(module, filename)`` for a source path under the most specific search path entry, else
    ``(None, path)``; ``filename`` as sentry-sdk's ``filename_for_module`` makes it."""
    frozen = _FROZEN.fullmatch(path)
    if frozen is not None:
        return frozen.group(1), path
    if not path.endswith(_MODULE_SUFFIXES):
        return None, path
    for directory in search:
        if not path.startswith(directory) or not os.path.isabs(directory):
            continue
        relative = path[len(directory) :]
        parts = os.path.splitext(relative)[0].split(os.sep)
        if parts[-1] == "__init__":
            parts.pop()
        if parts and all(part.isidentifier() for part in parts):
            module = ".".join(parts)
            return module, relative if "." in module else os.path.basename(path)
    return None, path
