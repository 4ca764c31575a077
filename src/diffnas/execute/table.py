"""The table format: every architecture of a small space evaluated under several protocols.

A table is two files side by side, written by `diffnas tabulate` (and `diffnas proxy-check`):

- `NAME.csv`: one row per architecture x setting x seed (`COLUMNS`), readable with the csv
  module or `pandas.read_csv`. A *setting* is one protocol of ranking an architecture: a
  training run (recipe, steps, batch) and one score of its checkpoint (metric, extractor, N,
  sampler, S), or the training loss; the *reference* setting is the long run the others are
  judged against. `device_seconds` is what evaluating by that setting alone costs: the
  training plus that score's own sampling and scoring.
- `NAME.json`: `TableMeta`: format version, the space, the data and its fingerprint, each
  setting's protocol (the spec it was run with, the recipe as resolved, the score's recorded
  protocol with the extractor's weights hash), the seeds, package versions, the command, and
  each `arch_id` (`ArchConfig.arch_hash()`) with its architecture and cost.

It lives low in the layering (execute) so that the table executor, the experiments, status
and report can all read it. Rows are written by an atomic rewrite of the CSV (a temporary
file, fsynced, then renamed), so a kill -9 at any moment leaves either the old or the new
table, never half a row.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffnas.data.datasets import DataSpec
from diffnas.errors import UserError, pydantic_message
from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.runs import read_file, temp_beside, write_json
from diffnas.space.arch import ArchConfig
from diffnas.space.search_space import SearchSpace
from diffnas.train.diffusion import Objective
from diffnas.train.recipe import TrainRecipe

TABLE_FORMAT = 1
BUNDLED_DIR = Path(__file__).parent / "tables"  # tables shipped with the package, by name
REFERENCE = "reference"  # the reference setting's name

COLUMNS = (
    "arch_id", "setting", "seed", "status", "score", "score_label", "final_loss",
    "device_seconds", "train_device_seconds", "wall_seconds", "device", "macs", "params",
    "weights_sha256", "error",
)  # fmt: skip

# Recipe fields that change how fast a run goes or what it logs, not what it learns to the
# precision a ranking needs; a search on another machine (bf16 or not, CUDA or CPU) still
# looks its protocol up in a table built elsewhere.
DEVICE_FIELDS = (
    "bf16", "bf16_cpu", "channels_last", "compile", "fused_adamw", "tensorboard",
    "log_every", "checkpoint_every",
)  # fmt: skip


class TableSetting(BaseModel):
    """One protocol of the table: a training run and one score of its checkpoint."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the CSV's `setting` value, e.g. s100-rfid-n250-s20")
    role: Literal["proxy", "reference"]
    label: str = Field(description="in words, e.g. '100 steps, RFID[classifier] N=250 S=20'")
    spec: EvalSpec = Field(description="recipe preset and overrides, and the score, as run")
    recipe: TrainRecipe = Field(description="the recipe as resolved on the machine that ran it")
    protocol: dict[str, Any] | None = Field(
        None,
        description="the score's recorded protocol (extractor weights hash, reference set, N, "
        "sampler); filled from the first finished row",
    )

    @property
    def score(self) -> ScoreSpec:
        return self.spec.score

    @property
    def steps(self) -> int:
        return self.recipe.steps

    @property
    def batch_size(self) -> int:
        return self.recipe.batch_size

    def key(self) -> dict[str, Any]:
        """What decides this setting's scores (`protocol_key`)."""
        return protocol_key(self.recipe, self.score)


def protocol_key(recipe: TrainRecipe, score: ScoreSpec) -> dict[str, Any]:
    """The parts of a protocol that decide its scores: the recipe without `DEVICE_FIELDS`, and
    the score (only its metric for the training loss, which samples nothing)."""
    trained = {k: v for k, v in recipe.model_dump(mode="json").items() if k not in DEVICE_FIELDS}
    if score.metric == "loss":
        return {"recipe": trained, "score": {"metric": "loss"}}
    fields = ("metric", "extractor", "num_samples", "sampler", "steps", "batch_size")
    return {"recipe": trained, "score": score.model_dump(include=set(fields))}


class TableArch(BaseModel):
    """One architecture of the table with its cost (one forward pass of one image)."""

    model_config = ConfigDict(extra="forbid")

    arch: ArchConfig
    macs: int
    params: int


class TableMeta(BaseModel):
    """`NAME.json`: everything a reader needs to know what the rows of `NAME.csv` measured."""

    model_config = ConfigDict(extra="forbid")

    format: int = Field(TABLE_FORMAT, description="table format version")
    name: str = Field(description="the table's name (its files are NAME.csv and NAME.json)")
    space: SearchSpace = Field(description="the space whose architectures were evaluated")
    objective: Objective
    data: DataSpec = Field(description="the training (and reference) images")
    data_fingerprint: str = Field(description="hash of the images, labels and data options")
    settings: list[TableSetting] = Field(description="every protocol; the reference among them")
    seeds: list[int] = Field(description="training and sampling seeds, each evaluated")
    reference_seeds: list[int] | None = Field(
        None, description="the reference's seeds when they differ from `seeds` (None: the same)"
    )
    archs: dict[str, TableArch] = Field(description="arch_id -> architecture and cost")
    versions: dict[str, str] = Field(default_factory=dict, description="diffnas, torch, ...")
    command: str = Field("", description="the command that built it")
    notes: dict[str, Any] = Field(default_factory=dict, description="build times and the like")

    def setting(self, name: str) -> TableSetting:
        for setting in self.settings:
            if setting.name == name:
                return setting
        raise KeyError(name)

    @property
    def reference(self) -> TableSetting:
        return self.setting(REFERENCE)

    def seeds_of(self, setting: str) -> list[int]:
        """The seeds `setting` is evaluated with: the reference may have more than the proxies
        (a firmer mean reference and ceiling, at the reference's cost only)."""
        if setting == REFERENCE and self.reference_seeds is not None:
            return list(self.reference_seeds)
        return list(self.seeds)


@dataclass(frozen=True)
class TableRow:
    """One evaluation: an architecture under one setting with one seed."""

    arch_id: str
    setting: str
    seed: int
    status: str  # complete | diverged | oom | failed
    score: float | None  # lower is better; None unless complete
    score_label: str
    final_loss: float | None
    device_seconds: float  # the training and this setting's own sampling and scoring
    train_device_seconds: float
    wall_seconds: float
    device: str
    macs: int
    params: int
    weights_sha256: str = ""  # the feature extractor's weights (empty for the loss)
    error: str = ""

    def csv_values(self) -> list[str]:
        return [_cell(v) for v in asdict(self).values()]

    @classmethod
    def from_csv(cls, record: dict[str, str]) -> TableRow:
        def number(name: str) -> float | None:
            return float(record[name]) if record.get(name) not in (None, "") else None

        return cls(
            arch_id=record["arch_id"], setting=record["setting"], seed=int(record["seed"]),
            status=record["status"], score=number("score"), score_label=record["score_label"],
            final_loss=number("final_loss"), device_seconds=number("device_seconds") or 0.0,
            train_device_seconds=number("train_device_seconds") or 0.0,
            wall_seconds=number("wall_seconds") or 0.0, device=record["device"],
            macs=int(record["macs"]), params=int(record["params"]),
            weights_sha256=record.get("weights_sha256") or "", error=record.get("error") or "",
        )  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


# ----- files -----


def table_files(stem: str | Path) -> tuple[Path, Path]:
    """(NAME.csv, NAME.json) of the table at `stem` (a path with or without either suffix)."""
    stem = Path(stem)
    if stem.suffix in (".csv", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".json")


def bundled_tables() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.json"))


def resolve_table(source: str | Path) -> Path:
    """A bundled table's name (`micro-digits`) or the path of a table's files -> its stem."""
    text = str(source)
    if text in bundled_tables():
        return BUNDLED_DIR / text
    csv_path, json_path = table_files(text)
    if json_path.is_file() and csv_path.is_file():
        return csv_path.with_suffix("")
    bundled = ", ".join(bundled_tables()) or "none yet"
    raise UserError(
        f"table {text!r} is neither a bundled table ({bundled}) nor the files of one "
        f"(NAME.csv and NAME.json, as `diffnas tabulate` writes them).",
        field="table",
    )


def write_meta(stem: str | Path, meta: TableMeta) -> None:
    write_json(table_files(stem)[1], meta.model_dump(mode="json"))


def read_meta(stem: str | Path) -> TableMeta:
    path = table_files(stem)[1]
    raw = read_file(
        path, dict[str, Any], "table metadata", fix="rebuild it with `diffnas tabulate`"
    )
    if isinstance(raw, dict) and raw.get("format") != TABLE_FORMAT:
        raise UserError(
            f"table {str(path)!r} has format {raw.get('format')!r}; this diffnas reads format "
            f"{TABLE_FORMAT}: rebuild it with `diffnas tabulate`.",
            field="table",
        )
    try:
        return TableMeta.model_validate(raw)
    except ValidationError as err:
        raise UserError(
            pydantic_message(err, f"table metadata {str(path)!r}"), field="table"
        ) from None


def read_rows(stem: str | Path) -> list[TableRow]:
    path = table_files(stem)[0]
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise UserError(
                f"table {str(path)!r} lacks the columns {sorted(missing)}; is it a diffnas table?",
                field="table",
            )
        try:
            return [TableRow.from_csv(record) for record in reader]
        except (KeyError, ValueError) as err:
            raise UserError(
                f"table {str(path)!r} has a damaged row ({type(err).__name__}: {err}); "
                "restore the file or rebuild it with `diffnas tabulate --resume`.",
                field="table",
            ) from None


def write_rows(stem: str | Path, rows: Sequence[TableRow]) -> None:
    """Write every row: to a temporary file, fsynced, then renamed over the table, so a kill
    at any moment leaves the old table or the new one."""
    path = table_files(stem)[0]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(row.csv_values() for row in rows)
    tmp = temp_beside(path)
    with open(tmp, "w", newline="") as f:
        f.write(text.getvalue())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----- reading -----


class Table:
    """A table in memory: its metadata, its rows, and the lookups the experiments need."""

    def __init__(self, meta: TableMeta, rows: Iterable[TableRow], stem: Path | None = None) -> None:
        self.meta = meta
        self.rows = list(rows)
        self.stem = stem
        self._by_key = {(r.arch_id, r.setting, r.seed): r for r in self.rows}

    @classmethod
    def load(cls, source: str | Path) -> Table:
        """A bundled table by name or a table's files by path (`resolve_table`)."""
        stem = resolve_table(source)
        return cls(read_meta(stem), read_rows(stem), stem)

    @property
    def name(self) -> str:
        return self.meta.name

    # --- what it holds ---
    def archs(self) -> list[str]:
        """Every arch_id, sorted (NAME.json keeps them sorted by id)."""
        return list(self.meta.archs)

    def arch(self, arch_id: str) -> ArchConfig:
        return self.meta.archs[arch_id].arch

    def __contains__(self, arch: ArchConfig | str) -> bool:
        arch_id = arch if isinstance(arch, str) else arch.arch_hash()
        return arch_id in self.meta.archs

    def settings(self, role: str | None = None) -> list[TableSetting]:
        return [s for s in self.meta.settings if role is None or s.role == role]

    def setting(self, name: str) -> TableSetting:
        return self.meta.setting(name)

    @property
    def seeds(self) -> list[int]:
        """The proxy settings' seeds (`seeds_of` gives each setting's own)."""
        return list(self.meta.seeds)

    def seeds_of(self, setting: str) -> list[int]:
        return self.meta.seeds_of(setting)

    def row(self, arch_id: str, setting: str, seed: int) -> TableRow | None:
        return self._by_key.get((arch_id, setting, seed))

    def rows_for(self, arch_id: str, setting: str) -> list[TableRow]:
        """The rows of one architecture under one setting, one per recorded seed."""
        found = (self.row(arch_id, setting, seed) for seed in self.seeds_of(setting))
        return [r for r in found if r is not None]

    def values(self, setting: str) -> dict[str, dict[int, float]]:
        """arch_id -> {seed: score} of the finished evaluations under `setting`."""
        out: dict[str, dict[int, float]] = {}
        for r in self.rows:
            if r.setting == setting and r.status == "complete" and _finite(r.score):
                out.setdefault(r.arch_id, {})[r.seed] = r.score  # type: ignore[assignment]
        return out

    def mean_scores(self, setting: str = REFERENCE) -> dict[str, float]:
        """arch_id -> the mean score over the seeds that finished (lower is better)."""
        return {a: sum(v.values()) / len(v) for a, v in self.values(setting).items()}

    def optimum(self) -> tuple[str, float]:
        """The best architecture by mean reference score, and that score."""
        means = self.mean_scores()
        if not means:
            raise UserError(f"table {self.name!r} has no finished reference row", field="table")
        best = min(means, key=lambda a: (means[a], a))
        return best, means[best]

    def rank(self, arch_id: str) -> int | None:
        """1 for the best by mean reference score; ties share the better rank; None if unscored."""
        means = self.mean_scores()
        if arch_id not in means:
            return None
        return 1 + sum(value < means[arch_id] for value in means.values())

    # --- matching a protocol ---
    def setting_for(self, recipe: TrainRecipe, score: ScoreSpec) -> TableSetting | None:
        """The setting that ran exactly this protocol (`protocol_key`), if any."""
        wanted = protocol_key(recipe, score)
        return next((s for s in self.meta.settings if s.key() == wanted), None)

    def describe_settings(self) -> str:
        """The settings in words, for a refusal that lists what the table has."""
        return "; ".join(f"{s.name} ({s.label}, batch {s.batch_size})" for s in self.settings())


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
