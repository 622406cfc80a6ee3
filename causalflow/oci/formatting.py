"""Numbers as a reader writes them, for the OCI reports, reasons and CLI tables.

Whole numbers get thousands separators ("removed 15,634 units"), large values are
rounded to the unit with separators ("1,794"), ordinary values keep four significant
digits ("0.1234", "12.35"), and only very small magnitudes fall back to scientific
notation ("3.2e-07"), where it is the readable form.
"""

from __future__ import annotations

import math

__all__ = ["fmt_number"]


def fmt_number(value, digits: int = 4, missing: str = "-") -> str:
    """A number as text for a report.

    Rules: None / NaN / inf -> ``missing``; an int (or bool-free integer-valued float of
    magnitude >= 1,000) -> thousands separators; magnitude >= 1,000 -> rounded to the unit with
    separators; 1e-4 <= magnitude < 1,000 -> ``digits`` significant digits, never in
    scientific notation; smaller non-zero magnitudes -> scientific notation with ``digits - 1``
    decimals at most, trailing zeros dropped. Anything that is not a number is ``str``-ed.

    Examples
    --------
    >>> fmt_number(15634), fmt_number(15634.0), fmt_number(1794.3412), fmt_number(-2503.6)
    ('15,634', '15,634', '1,794', '-2,504')
    >>> fmt_number(0.123456), fmt_number(12.3456), fmt_number(2.0), fmt_number(0.0)
    ('0.1235', '12.35', '2', '0')
    >>> fmt_number(3.2e-07), fmt_number(None), fmt_number(float("nan")), fmt_number("ATT")
    ('3.2e-07', '-', '-', 'ATT')
    """
    if value is None:
        return missing
    if isinstance(value, bool):
        return str(value)
    try:
        import numpy as np

        if isinstance(value, np.generic):
            value = value.item()
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return missing
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude == 0 or magnitude >= 1e-4:
        text = f"{value:.{digits}g}"
        if "e" in text:  # .g chose an exponent (values near 1e3 or 1e-4): write it out
            decimals = max(digits - 1 - int(math.floor(math.log10(magnitude))), 0)
            text = f"{value:.{decimals}f}".rstrip("0").rstrip(".")
        return text
    return _scientific(value, digits)


def _scientific(value: float, digits: int) -> str:
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    sign = exponent[0]
    return f"{mantissa}e{sign}{exponent[1:].zfill(2)}"
