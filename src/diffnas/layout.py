"""The names of the files and folders in run folders, in one module that imports nothing.

The code that writes a file and the code that reads it back (the report, exports, `--resume`)
both take its name from here, so a reader needs none of the writer's modules (the report of
a search does not pull in its executors or LLM backends for a file name).
"""

from __future__ import annotations

from pathlib import Path

# a search's run folder
STUDY_FILE = "study.db"  # the default storage: SQLite in the run folder
TRIALS_DIR = "trials"  # trials/NNNNN: a trial's proxy evaluation
FINAL_DIR = "final"  # final/NNNNN: a promoted trial's final training
ROUNDS_DIR = "rounds"  # rounds/round-RRR.json: each round's proposals and verdicts
ROUND_FILE = "round-{:03d}.json"  # in rounds/: request r's file, ROUND_FILE.format(r)
ROUND_FILES = "round-*.json"  # every round file in rounds/ (a glob)
EVENTS_FILE = "events.jsonl"  # the search's events: start, proposed, round_failed, end, ...
ENV_FILE = "env.json"  # versions, device and seed of each start or resume
LOCK_FILE = ".lock"  # held by the search that runs in the folder
ARTIFACT_DIR = "artifacts"  # the sample grids attached to the study (optuna-dashboard)
SUMMARY_FILE = "summary.json"  # written when a search ends; proxy-check's summary too
SUMMARY_MD = "summary.md"  # proxy-check's table of every setting, beside its summary.json

# an evaluation's folder (a trial's, a table run's; execute/job_folder.py reads and writes it)
JOB_FILE = "job.json"  # the evaluation's EvalJob: its inputs, what a worker process reads
RESULT_FILE = "result.json"  # the evaluation's EvalResult
SAMPLES_FILE = "samples.png"  # its grid of samples

# outside any run folder: what this user's runs share
LATENCY_CACHE = Path.home() / ".cache" / "diffnas" / "latency"  # `diffnas cost --latency`


def trial_dir(run_dir: Path, number: int, stage: str = "proxy") -> Path:
    """Where a trial's evaluation lives: trials/NNNNN (proxy) or final/NNNNN (promoted)."""
    return Path(run_dir) / (TRIALS_DIR if stage == "proxy" else FINAL_DIR) / f"{number:05d}"
