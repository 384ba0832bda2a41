"""The stage record of an explore run (``state.json``), written atomically after every stage.

A step goes through :data:`STAGES` in order; the record holds the step being worked on, the
last stage it finished, the labels spent (oracle calls, failed ones included), the model the
next stage starts from and every failed label. A rerun reads it and starts at the stage after
the one recorded, so no finished stage is repeated and no label is requested twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from stablemd.core.files import read_json_record, write_json

#: The stages of one step, in order ("start": the run's set-up, step 0).
STAGES = ("pool", "selected", "labelled", "appended", "retrained", "uncertainty")
FORMAT = "stablemd-explore-state/1"


@dataclass
class ExploreRecord:
    """``step`` (0: set-up), the last finished ``stage`` of it, ``labels_used`` (oracle calls
    so far), ``model`` (the current model with its uncertainty, relative to the run directory;
    empty for the run's ``--model``), ``failures`` (step, request id, error of each failed
    label) and ``finished`` once the budget is spent."""

    step: int = 0
    stage: str = "start"
    labels_used: int = 0
    model: str = ""
    failures: list[dict] = field(default_factory=list)
    finished: bool = False

    def next_stage(self) -> tuple[int, str]:
        """The (step, stage) to do next."""
        if self.stage in ("start", STAGES[-1]):
            return self.step + 1, STAGES[0]
        return self.step, STAGES[STAGES.index(self.stage) + 1]

    def save(self, path: Path) -> None:
        write_json({"format": FORMAT, **asdict(self)}, path)

    @classmethod
    def load(cls, path: Path) -> ExploreRecord | None:
        if not path.is_file():
            return None
        values = read_json_record(path, "explore state", keys=("format", "step", "stage"))
        values.pop("format")
        return cls(**values)
