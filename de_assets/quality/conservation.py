"""Conservation: every record that enters a step is accounted for on the way out."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Conservation:
    """Record counts of one step: ``rows_in == rows_out + dropped + quarantined`` must hold.

    ``dropped`` is the total of ``dropped_by`` (duplicates, superseded versions, deletes, ...), so
    every drop has a named cause.
    """

    rows_in: int
    rows_out: int
    quarantined: int
    dropped_by: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by.values())

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.dropped + self.quarantined

    @property
    def unaccounted(self) -> int:
        return self.rows_in - (self.rows_out + self.dropped + self.quarantined)

    def __add__(self, other: Conservation) -> Conservation:
        causes = {**self.dropped_by}
        for cause, count in other.dropped_by.items():
            causes[cause] = causes.get(cause, 0) + count
        return Conservation(
            self.rows_in + other.rows_in,
            self.rows_out + other.rows_out,
            self.quarantined + other.quarantined,
            causes,
        )

    def as_metadata(self) -> dict[str, int]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_dropped": self.dropped,
            "rows_quarantined": self.quarantined,
            **{f"dropped_{cause}": count for cause, count in sorted(self.dropped_by.items())},
        }
