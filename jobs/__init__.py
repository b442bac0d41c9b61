"""Workload logic, one module per kind. Pure: no database, broker or engine imports."""

from jobs.batch import (
    BATCH_KIND,
    SUPPORTED_URLS,
    BatchRequest,
    BatchSummary,
    LineError,
    OutputLine,
    ParsedBatch,
    error_line,
    parse_batch,
    run_batch,
)
from jobs.engine import Choice, Engine, FakeEngine, GenerationRequest, GenerationResult, SamplingSpec
from jobs.errors import BatchFileError, EngineError, InvalidInputError, JobError

__all__ = [
    "BATCH_KIND",
    "SUPPORTED_URLS",
    "BatchFileError",
    "BatchRequest",
    "BatchSummary",
    "Choice",
    "Engine",
    "EngineError",
    "FakeEngine",
    "GenerationRequest",
    "GenerationResult",
    "InvalidInputError",
    "JobError",
    "LineError",
    "OutputLine",
    "ParsedBatch",
    "SamplingSpec",
    "error_line",
    "parse_batch",
    "run_batch",
]
