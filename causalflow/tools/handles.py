"""The bounded handle store: fitted objects live here, and tools refer to them by name.

A handle is ``<kind>_<n>`` (``"exp_1"``, ``"model_3"``): the kind says what it holds, the
number counts up per kind and is never reused within a session, so an old handle never
silently names a newer object. The store keeps at most ``limit`` objects; when full, the
least recently used one goes, and a later use of its handle says that it was evicted
(not merely unknown) so that the caller knows to re-create it.

Examples
--------
>>> store = HandleStore(limit=2)
>>> store.put("exp", "a", "first"), store.put("exp", "b", "second")
('exp_1', 'exp_2')
>>> store.put("model", "c", "third")       # exp_1 is the least recently used: evicted
'model_1'
>>> store.get("exp_1", ("exp",))
Traceback (most recent call last):
...
causalflow.tools.safety.ToolError: exp_1 was evicted: the store keeps the 2 most recently used objects; create it again
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

from .safety import ToolError

__all__ = ["HANDLE_PATTERN", "KINDS", "HandleStore"]

#: the kinds of object a handle names, and what each is
KINDS = {
    "table": "an in-memory table registered from Python",
    "exp": "an experiment (ExperimentData)",
    "model": "a fitted model (LinearModelResults)",
    "bmodel": "a fitted Bayesian model (BayesianLinearRegressionResults)",
    "effects": "an effects record (Effects)",
    "posterior": "posterior effects of a Bayesian model (PosteriorEffects)",
    "relative": "relative effects (RelativeEffects)",
    "ranking": "a ranking of the arms (Ranking)",
    "mediation": "the path effects of a mediation (Mediation)",
    "monitor": "a monitored experiment (Monitoring)",
    "many": "an effects table of many experiments (analyze_many)",
    "oci": "a run of the OCI loop (OCIRun)",
}

HANDLE_PATTERN = r"^[a-z]+_[0-9]+$"
_HANDLE = re.compile(HANDLE_PATTERN)


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: str
    value: object
    summary: str


class HandleStore:
    """Objects by handle, at most ``limit`` of them (least recently used evicted first).

    Thread-safe: every method holds the store's lock.
    """

    def __init__(self, limit: int = 64):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"HandleStore.limit: must be a positive integer, got {limit!r}")
        self.limit = limit
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._counters: dict[str, int] = {}
        self._evicted: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, kind: str, value, summary: str = "") -> str:
        """Store ``value`` under a new handle of ``kind`` and return the handle."""
        if kind not in KINDS:
            raise ValueError(f"HandleStore.put: unknown kind {kind!r}")
        with self._lock:
            n = self._counters.get(kind, 0) + 1
            self._counters[kind] = n
            handle = f"{kind}_{n}"
            self._items[handle] = _Entry(kind, value, summary)
            while len(self._items) > self.limit:
                old, _ = self._items.popitem(last=False)
                self._evicted[old] = None
                if len(self._evicted) > 4 * self.limit:
                    self._evicted.popitem(last=False)
            return handle

    def get(self, handle, kinds: tuple, argument: str | None = None):
        """The object under ``handle``, which must be of one of ``kinds``."""
        where = f"{argument}: " if argument else ""
        if not isinstance(handle, str) or not _HANDLE.match(handle):
            raise ToolError("invalid_arguments", f"{where}{handle!r} is not a handle (handles look like "
                            f"{kinds[0]}_1)", argument=argument, allowed=self.handles(kinds))
        with self._lock:
            entry = self._items.get(handle)
            if entry is None:
                if handle in self._evicted:
                    raise ToolError("unknown_handle", f"{where}{handle} was evicted: the store keeps the "
                                    f"{self.limit} most recently used objects; create it again",
                                    argument=argument, allowed=self._live(kinds))
                raise ToolError("unknown_handle", f"{where}no object under handle {handle!r}",
                                argument=argument, allowed=self._live(kinds),
                                hint="call list_handles to see what exists")
            if entry.kind not in kinds:
                raise ToolError("wrong_handle", f"{where}{handle} is {KINDS[entry.kind]}; this argument needs "
                                + " or ".join(KINDS[k] for k in kinds), argument=argument,
                                allowed=self._live(kinds))
            self._items.move_to_end(handle)
            return entry.value

    def _live(self, kinds: tuple) -> list[str]:
        return [h for h, e in self._items.items() if e.kind in kinds]

    def handles(self, kinds: tuple | None = None) -> list[str]:
        """Live handles (of ``kinds`` when given), oldest use first."""
        with self._lock:
            return [h for h, e in self._items.items() if kinds is None or e.kind in kinds]

    def describe(self) -> list[dict]:
        """One ``{"handle", "kind", "summary"}`` per live object, oldest use first."""
        with self._lock:
            return [{"handle": h, "kind": e.kind, "summary": e.summary} for h, e in self._items.items()]

    def drop(self, handle: str) -> bool:
        """Forget ``handle``; True if it was there."""
        with self._lock:
            return self._items.pop(handle, None) is not None
