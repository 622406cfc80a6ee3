"""Effects: the record of one ``infer_effect`` call and what derives from it.

:mod:`~causalflow.effects.record` holds :class:`Effects`; relative lifts
(:mod:`~causalflow.effects.relative`), multiple-testing adjustment
(:mod:`~causalflow.effects.adjust`) and projections (:mod:`~causalflow.effects.project`)
are functions of its arrays that return new records.
"""

from .record import COLUMNS, Effects

__all__ = ["COLUMNS", "Effects"]
