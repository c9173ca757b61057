"""Job states and the transitions allowed between them (the single source of truth for both)."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    STOPPING = "stopping"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"

    def is_terminal(self) -> bool:
        """Finished: no process runs for it. Only an explicit resume moves a resumable one on."""
        return self in FINISHED

    def is_active(self) -> bool:
        return self in (JobStatus.RUNNING, JobStatus.STOPPING)


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.INTERRUPTED})
RESUMABLE = frozenset({JobStatus.FAILED, JobStatus.STOPPED, JobStatus.INTERRUPTED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.STOPPED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset({JobStatus.STOPPING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED,
                                  JobStatus.INTERRUPTED}),
    JobStatus.STOPPING: frozenset({JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED,
                                   JobStatus.INTERRUPTED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),  # resume
    JobStatus.STOPPED: frozenset({JobStatus.QUEUED}),  # resume
    JobStatus.INTERRUPTED: frozenset({JobStatus.QUEUED}),  # resume
}


class ErrorKind(str, Enum):
    """Why a job failed, in one word (the error text says the rest)."""

    CONFIG = "config"
    DATASET = "dataset"
    MODEL = "model"
    OUT_OF_MEMORY = "out_of_memory"
    DISK_FULL = "disk_full"
    KILLED = "killed"
    LAUNCH = "launch"
    RUNTIME = "runtime"
    LOST = "lost"


def can_transition(src: JobStatus, dst: JobStatus) -> bool:
    return dst in TRANSITIONS[src]


class InvalidTransition(Exception):
    def __init__(self, job_id: str, src: JobStatus | str, dst: JobStatus | str, why: str = ""):
        self.job_id, self.src, self.dst = job_id, str(getattr(src, "value", src)), str(getattr(dst, "value", dst))
        super().__init__(why or f"job {job_id} is {self.src}: it cannot become {self.dst}")


class JobNotFound(KeyError):
    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(job_id)

    def __str__(self) -> str:
        return f"job {self.job_id!r} not found"
