"""The result of grading one submission, as the tables, CSVs and report show it."""

from __future__ import annotations

from dataclasses import dataclass, field

from autograder.isolation import inert

#: statuses of a submission
GRADED = "graded"  # autograded (notes may say what went wrong in some cells)
MISSING = "missing"  # no notebook
MISNAMED = "misnamed"  # a notebook under another name
UNREADABLE = "unreadable"  # not a valid notebook
FAILED = "failed"  # nbgrader could not grade it (the reason is in the notes)


@dataclass
class Result:
    student: str
    assignment: str
    status: str
    scores: dict[str, float | None] = field(default_factory=dict)  # test -> points (None: manual)
    max_scores: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    manual: list[str] = field(default_factory=list)  # answers graded by hand (not in the totals)

    def __post_init__(self):
        # notes quote the student's error messages: their control characters are shown, not obeyed
        self.notes = [inert.text(note) for note in self.notes]

    @property
    def auto_score(self) -> float | None:
        """The points of the autograded tests."""
        if self.status != GRADED:
            return None
        return sum(v for k, v in self.scores.items() if k not in self.manual and v is not None)

    @property
    def auto_max(self) -> float | None:
        if self.status != GRADED:
            return None
        return sum(m for k, m in self.max_scores.items() if k not in self.manual)

    @property
    def hand_score(self) -> float | None:
        """The points of the answers graded by hand so far."""
        if self.status != GRADED:
            return None
        return sum(v for k, v in self.scores.items() if k in self.manual and v is not None)

    @property
    def to_grade(self) -> list[str]:
        """The cells that wait for a grade by hand (formgrader)."""
        return [k for k, v in self.scores.items() if v is None]

    @property
    def total(self) -> float | None:
        """Every point given so far: autograded, and graded by hand."""
        if self.status != GRADED:
            return None
        return sum(v for v in self.scores.values() if v is not None)

    @property
    def total_max(self) -> float | None:
        return None if self.status != GRADED else sum(self.max_scores.values())
