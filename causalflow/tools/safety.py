"""What a tool call may touch: files under the roots, inputs within limits, errors as values.

Three pieces, each small:

* :class:`ToolError`: the one error of the tool layer. It becomes the structured record
  ``{"error": {"type", "message", "argument", "allowed", "hint"}}`` that an LLM can act on
  (what was wrong, what is allowed), never a traceback.
* :class:`Limits`: sizes a call may not exceed (rows and columns of a table, file bytes,
  handles kept, the JSON size of a call's arguments, one string's length).
* :class:`Roots`: path resolution. A path is read only when it resolves, symbolic links
  followed, inside one of the data roots (or the output root), and written only inside the
  output root. A ``..`` component is refused outright, and a link that leads outside the
  roots is refused after resolution. Writes are atomic: a temp file in the same folder,
  then ``os.replace`` (:func:`causalflow.oci.artifacts.atomic_write`).

Examples
--------
>>> import pathlib, tempfile
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "a.csv").write_text("x\\n1\\n")
>>> roots = Roots([root], root / "out")
>>> roots.read_path("a.csv", "source").name
'a.csv'
>>> roots.read_path("../etc/passwd", "source")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
causalflow.tools.safety.ToolError: source: '..' is not allowed in a path ('../etc/passwd'); give a path inside ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

__all__ = ["ERROR_TYPES", "Limits", "Roots", "ToolError", "check_argument_size"]

#: the ``type`` of a structured error
ERROR_TYPES = (
    "unknown_tool",        # no tool of that name (allowed: the tool names)
    "invalid_arguments",   # the arguments do not match the tool's schema (wrong type, unknown key)
    "too_large",           # a size limit was exceeded (allowed: the limit)
    "unknown_handle",      # no object under that handle (allowed: the live handles)
    "wrong_handle",        # a handle of another kind (an experiment where a model is needed)
    "unknown_column",      # a column that is not in the table (allowed: the columns)
    "invalid_value",       # a value that is not allowed (allowed: the values that are)
    "invalid_expression",  # a condition_on / population / formula that does not parse
    "invalid_design",      # the grammar refused the input (a causalflow ValidationError)
    "path_not_allowed",    # a path outside the roots, with '..', or a link that escapes
    "file_not_found",      # no such file under the roots (allowed: some files that exist)
    "unsupported_file",    # not CSV / parquet
    "not_available",       # a feature that is not installed or not built yet
    "internal_error",      # a bug: the message names the exception, the server keeps serving
)


class ToolError(Exception):
    """A tool call that cannot be served, as a value an LLM can act on.

    Parameters
    ----------
    type : one of :data:`ERROR_TYPES`
    message : what was wrong, in a sentence that names the argument
    argument : the argument at fault (dotted for nested ones), if any
    allowed : what would have been accepted (columns, handles, values, a limit), if known
    hint : what to do next, if there is a natural next step

    Examples
    --------
    >>> ToolError("unknown_column", "y: no column 'sale'", argument="y", allowed=["sales"]).to_dict()
    {'error': {'type': 'unknown_column', 'message': "y: no column 'sale'", 'argument': 'y', 'allowed': ['sales']}}
    """

    def __init__(self, type: str, message: str, *, argument: str | None = None,
                 allowed: list | None = None, hint: str | None = None):
        if type not in ERROR_TYPES:
            raise ValueError(f"ToolError type {type!r} is not one of {ERROR_TYPES}")
        super().__init__(message)
        self.type, self.message, self.argument, self.allowed, self.hint = type, message, argument, allowed, hint

    def to_dict(self) -> dict:
        error = {"type": self.type, "message": self.message}
        if self.argument is not None:
            error["argument"] = self.argument
        if self.allowed is not None:
            error["allowed"] = list(self.allowed)
        if self.hint is not None:
            error["hint"] = self.hint
        return {"error": error}


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes a tool call may not exceed.

    Attributes
    ----------
    max_rows, max_columns : a table read from a file or registered
    max_file_bytes : a data file's size on disk
    max_handles : objects kept in a session's handle store (the least recently used go first)
    max_argument_bytes : the JSON of one call's arguments
    max_string_chars : any one string among the arguments (names, expressions, paths have
        tighter bounds in the schemas)
    max_tables_cached : tables read from files kept in memory between calls
    """

    max_rows: int = 20_000_000
    max_columns: int = 2_000
    max_file_bytes: int = 4 * 1024 ** 3
    max_handles: int = 64
    max_argument_bytes: int = 1_000_000
    max_string_chars: int = 20_000
    max_tables_cached: int = 4

    def __post_init__(self):
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name}: must be a positive integer, got {value!r}")


def check_argument_size(arguments, limits: Limits) -> None:
    """Refuse a call whose arguments are too large before any parsing or work.

    Walks the JSON value once, counting characters, and stops as soon as a string is over
    ``max_string_chars`` or the total is over ``max_argument_bytes`` (so a 10 MB string is
    refused without being copied).

    >>> check_argument_size({"y": "x" * 30_000}, Limits())
    Traceback (most recent call last):
    ...
    causalflow.tools.safety.ToolError: y: a string of 30,000 characters; at most 20,000 are accepted
    """
    budget = limits.max_argument_bytes
    stack = [("", arguments, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > 32:
            raise ToolError("too_large", f"{path or 'arguments'}: nested more than 32 levels deep",
                            argument=path or None, allowed=[32])
        if isinstance(value, str):
            if len(value) > limits.max_string_chars:
                raise ToolError("too_large", f"{path or 'arguments'}: a string of {len(value):,} characters; "
                                f"at most {limits.max_string_chars:,} are accepted",
                                argument=path or None, allowed=[limits.max_string_chars])
            budget -= len(value) + 2
        elif isinstance(value, dict):
            budget -= 2
            for key, item in value.items():
                budget -= len(str(key)) + 4
                stack.append((f"{path}.{key}" if path else str(key), item, depth + 1))
        elif isinstance(value, (list, tuple)):
            budget -= 2
            for i, item in enumerate(value):
                stack.append((f"{path}[{i}]", item, depth + 1))
        else:
            budget -= 8
        if budget < 0:
            raise ToolError("too_large", f"arguments: more than {limits.max_argument_bytes:,} bytes of JSON",
                            allowed=[limits.max_argument_bytes])


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


class Roots:
    """The data roots (read) and the output root (write) of a session, and path checks.

    Parameters
    ----------
    data : folders whose files may be read (each must exist)
    out : the folder under which files may be written (created when needed); it may be read
        too (a tool reads back a run it wrote)
    """

    #: data files a tool reads
    DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")

    def __init__(self, data: Sequence[str | os.PathLike], out: str | os.PathLike):
        if isinstance(data, (str, os.PathLike)):
            data = [data]
        if not data:
            raise ValueError("Roots: give at least one data root")
        resolved = []
        for folder in data:
            path = Path(folder).expanduser().resolve()
            if not path.is_dir():
                raise ValueError(f"Roots: data root {str(folder)!r} is not an existing folder")
            resolved.append(path)
        self.data = tuple(dict.fromkeys(resolved))
        self.out = Path(out).expanduser().resolve()

    def __repr__(self) -> str:
        return f"Roots(data={[str(p) for p in self.data]}, out={str(self.out)!r})"

    # -- checks -------------------------------------------------------------------------
    @staticmethod
    def _text(path, argument: str) -> PurePath:
        if not isinstance(path, str) or not path.strip():
            raise ToolError("invalid_arguments", f"{argument}: expected a non-empty path (text), got {path!r}",
                            argument=argument)
        if "\x00" in path or len(path) > 1024:
            raise ToolError("path_not_allowed", f"{argument}: not a usable path (a NUL byte, or longer than "
                            "1,024 characters)", argument=argument)
        pure = PurePath(path)
        if ".." in pure.parts:
            raise ToolError("path_not_allowed", f"{argument}: '..' is not allowed in a path ({path!r}); give a "
                            "path inside the data roots", argument=argument)
        return pure

    def _candidates(self, pure: PurePath, roots: Sequence[Path]) -> list[Path]:
        if pure.is_absolute():
            return [Path(pure)]
        return [root / pure for root in roots]

    def read_path(self, path: str, argument: str) -> Path:
        """The resolved file ``path`` names under a data root (or the output root).

        Relative paths are tried against each data root in order, then the output root.
        Raises ``path_not_allowed`` when it resolves outside them (an absolute path elsewhere,
        or a symbolic link that escapes), ``file_not_found`` otherwise.
        """
        pure = self._text(path, argument)
        roots = (*self.data, self.out)
        escaped = False
        for candidate in self._candidates(pure, roots):
            resolved = candidate.resolve()
            if not any(_inside(resolved, root) for root in roots):
                escaped = escaped or candidate.exists() or candidate.is_symlink() or pure.is_absolute()
                continue
            if resolved.exists():
                return resolved
        if escaped:
            raise ToolError("path_not_allowed", f"{argument}: {path!r} resolves outside the allowed roots "
                            "(an absolute path elsewhere, or a symbolic link that leads out)", argument=argument,
                            allowed=[str(r) for r in self.data])
        raise ToolError("file_not_found", f"{argument}: no file {path!r} under the data roots", argument=argument,
                        allowed=self.list_files(limit=30), hint="call list_sources to see the data files")

    def read_folder(self, path: str, argument: str) -> Path:
        """Like :meth:`read_path`, for a folder."""
        resolved = self.read_path(path, argument)
        if not resolved.is_dir():
            raise ToolError("file_not_found", f"{argument}: {path!r} is not a folder", argument=argument)
        return resolved

    def write_path(self, path: str, argument: str, suffixes: Sequence[str] | None = None) -> Path:
        """The resolved target of a write under the output root (its folder is created).

        A relative path is taken relative to the output root; an absolute one must lie in
        it. A link (of the file or of a folder on the way) that leads out is refused.
        """
        pure = self._text(path, argument)
        if suffixes is not None and pure.suffix.lower() not in suffixes:
            raise ToolError("invalid_value", f"{argument}: {path!r} must end with one of {list(suffixes)}",
                            argument=argument, allowed=list(suffixes))
        target = (Path(pure) if pure.is_absolute() else self.out / pure)
        if not _inside(target.resolve(), self.out) or target.resolve() == self.out:
            raise ToolError("path_not_allowed", f"{argument}: {path!r} is outside the output root; give a path "
                            "relative to it", argument=argument, allowed=[str(self.out)])
        self.out.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        resolved = target.parent.resolve() / target.name
        # checked again now that the folders exist: a link created meanwhile must not lead out
        if not _inside(resolved.resolve(), self.out):
            raise ToolError("path_not_allowed", f"{argument}: {path!r} leads outside the output root",
                            argument=argument, allowed=[str(self.out)])
        return resolved

    def write_folder(self, path: str, argument: str) -> Path:
        """A folder under the output root for a tool to write into (created)."""
        pure = self._text(path, argument)
        target = Path(pure) if pure.is_absolute() else self.out / pure
        if not _inside(target.resolve(), self.out) or target.resolve() == self.out:
            raise ToolError("path_not_allowed", f"{argument}: {path!r} is outside the output root; give a folder "
                            "relative to it", argument=argument, allowed=[str(self.out)])
        target.mkdir(parents=True, exist_ok=True)
        resolved = target.resolve()
        if not _inside(resolved, self.out):
            raise ToolError("path_not_allowed", f"{argument}: {path!r} leads outside the output root",
                            argument=argument, allowed=[str(self.out)])
        return resolved

    def write(self, path: str, payload: bytes | str, argument: str = "path",
              suffixes: Sequence[str] | None = None) -> Path:
        """Write ``payload`` atomically to ``path`` under the output root; returns the file."""
        from ..oci.artifacts import atomic_write  # the package's one atomic writer

        return atomic_write(self.write_path(path, argument, suffixes), payload)

    # -- display ------------------------------------------------------------------------
    def display(self, path: Path) -> str:
        """``path`` relative to the root that holds it (what a tool shows and accepts back)."""
        for root in (*self.data, self.out):
            if _inside(path, root):
                return path.relative_to(root).as_posix()
        return path.name

    def list_files(self, limit: int = 200, max_depth: int = 4, max_folders: int = 2000) -> list[str]:
        """Data files under the data roots, relative to their root, breadth first (at most
        ``max_folders`` folders are read, links to folders are not followed)."""
        out: list[str] = []
        folders = 0
        for root in self.data:
            queue = [(root, 0)]
            while queue and len(out) < limit and folders < max_folders:
                folder, depth = queue.pop(0)
                folders += 1
                try:
                    entries = sorted(os.scandir(folder), key=lambda e: e.name)
                except OSError:
                    continue
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    path = Path(entry.path)
                    if entry.is_dir(follow_symlinks=False) and depth < max_depth:
                        queue.append((path, depth + 1))
                    elif path.suffix.lower() in self.DATA_SUFFIXES and _inside(path.resolve(), root):
                        out.append(path.relative_to(root).as_posix())
                        if len(out) >= limit:
                            break
        return out


def dumps(value) -> str:
    """Strict JSON text (no NaN) of a tool's result."""
    return json.dumps(value, allow_nan=False, ensure_ascii=False)
