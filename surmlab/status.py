"""``RunStatus``: where a run, an app job or a study cell stands, said once for the whole lab.

A trainer writes ``running`` into a run's summary, then one outcome (``completed``, ``stopped``,
``failed``). The rest are read off the files rather than written by a trainer: a study cell not yet
started is ``pending``; an app job is ``queued``, then ``starting`` until its run folder exists, and
``cancelled`` if removed before it trained; a run still marked ``running`` whose trainer is gone is
``interrupted`` (``--resume`` continues it). The values are the strings the files hold, so a member
compares equal to its string and is written to JSON as that string.
"""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    PENDING = "pending"
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def finished(self) -> bool:
        """An outcome was recorded: nothing will change this run or job any more."""
        return self in FINISHED

    @property
    def active(self) -> bool:
        """A process is working on it."""
        return self in ACTIVE

    @property
    def resumable(self) -> bool:
        """``--resume`` can continue it from its last checkpoint."""
        return self in RESUMABLE

    @property
    def has_result(self) -> bool:
        """Its weights and evaluations are a result to plot and compare (a stopped run's are partial)."""
        return self in (RunStatus.COMPLETED, RunStatus.STOPPED)


# What a trainer may write into summary.json.
RECORDED = frozenset({RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.STOPPED, RunStatus.FAILED})
FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.STOPPED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE = frozenset({RunStatus.STARTING, RunStatus.RUNNING})
RESUMABLE = frozenset({RunStatus.STOPPED, RunStatus.INTERRUPTED})
