"""One rendering path for every result record (tea-tasting's ``DictsReprMixin`` idea).

A record defines ``to_dicts()`` (one dict per row, every column of ``columns()``),
``columns()`` and ``_display()`` (header and formatted cells); :class:`Rendered` derives
``to_frame``, ``to_dict`` (JSON), ``to_markdown``, ``summary``, ``_repr_html_`` and
``__repr__`` from them, so no record carries its own copy of that code.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Tiny(Rendered):
...     rows: tuple
...     def columns(self):
...         return ("name", "value")
...     def to_dicts(self):
...         return [dict(r) for r in self.rows]
...     def _display(self):
...         return ["name", "value"], [[r["name"], f"{r['value']:.2f}"] for r in self.rows]
>>> print(Tiny(({"name": "a", "value": 1.0},)).to_markdown())
| name | value |
|---|---|
| a | 1.00 |
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

__all__ = ["Rendered", "plain"]


def plain(value):
    """A JSON-ready Python scalar (NaN and infinities become None)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class Rendered:
    """Mixin: frame, JSON, markdown, text and HTML from ``to_dicts`` and ``_display``."""

    #: lines printed under the text table (warnings, estimand notes); override as a property
    def _footer(self) -> list[str]:
        return []

    def _meta(self) -> dict:
        """Record-level fields of the JSON form besides ``columns`` and ``rows``."""
        return {}

    def to_frame(self) -> pd.DataFrame:
        """One row per entry of :meth:`to_dicts`."""
        return pd.DataFrame(self.to_dicts(), columns=list(self.columns()))

    def to_dict(self) -> dict:
        """JSON-ready form (the form the agent tools return)."""
        out = self._meta()
        out["columns"] = list(self.columns())
        out[self._rows_key] = [{k: plain(v) for k, v in row.items()} for row in self.to_dicts()]
        return out

    _rows_key = "rows"

    def to_markdown(self) -> str:
        header, body = self._display()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        return "\n".join(lines + [f"\n{line}" for line in self._footer()])

    def summary(self) -> str:
        """A readable fixed-width table (text columns left, numbers right)."""
        header, body = self._display()
        widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(header)]
        n_text = getattr(self, "_text_columns", 4)
        fmt = "  ".join(f"{{:<{w}}}" if i < n_text else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*header), "  ".join("-" * w for w in widths)]
        lines += [fmt.format(*row) for row in body]
        return "\n".join(lines + self._footer())

    def _repr_html_(self) -> str:
        header, body = self._display()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
        foot = "".join(f"<p>{html.escape(line)}</p>" for line in self._footer())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{foot}"

    def __repr__(self) -> str:
        return self.summary()


class JointRecords(Rendered):
    """Mixin of a record of estimates with their joint covariance: ``records`` (dicts with
    an ``estimate``) and ``cov``; standard errors are the root of its diagonal."""

    @property
    def estimate(self) -> np.ndarray:
        return np.array([r["estimate"] for r in self.records])

    @property
    def std_error(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.cov), 0.0, None))

    def __len__(self) -> int:
        return len(self.records)
