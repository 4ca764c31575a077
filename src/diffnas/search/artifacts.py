"""Sample grids in optuna-dashboard: each trial's `samples.png` as an Optuna artifact.

    pip install -e '.[dashboard]'
    optuna-dashboard sqlite:///RUN_DIR/study.db --artifact-dir RUN_DIR/artifacts

Optuna accepts artifacts only on a trial that is still running, so the search attaches a
candidate's grid just before it tells the trial's score (`attach_sample_grid`). The files go
to a `FileSystemArtifactStore` in the run folder, so the folder stays self-contained.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

from diffnas.layout import ARTIFACT_DIR, SAMPLES_FILE, STUDY_FILE


def artifact_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / ARTIFACT_DIR


def dashboard_command(run_dir: str | Path, storage: str | None = None) -> str:
    """The command that opens a search in optuna-dashboard with its sample grids."""
    url = storage or f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"
    return f"optuna-dashboard {url} --artifact-dir {artifact_dir(run_dir).resolve()}"


def attach_file(trial: optuna.Trial, path: Path, run_dir: str | Path) -> str | None:
    """Upload `path` as an artifact of the running `trial`; its id, or None when a file of that
    name is already attached (a resumed trial that got this far before a kill)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if any(meta.filename == path.name for meta in get_all_artifact_meta(trial)):
            return None
        store_dir = artifact_dir(run_dir)
        store_dir.mkdir(exist_ok=True)
        return upload_artifact(
            artifact_store=FileSystemArtifactStore(str(store_dir)),
            file_path=str(path),
            study_or_trial=trial,
        )


def attach_sample_grid(trial: optuna.Trial, eval_dir: Path, run_dir: str | Path) -> str | None:
    """Attach the grid of samples of an evaluation (`eval_dir/samples.png`) to its trial, if
    the evaluation made one (a diverged or failed one did not)."""
    grid = Path(eval_dir) / SAMPLES_FILE
    return attach_file(trial, grid, run_dir) if grid.is_file() else None
