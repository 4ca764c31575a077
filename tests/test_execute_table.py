"""The table format: files that pandas reads, exact round trips, the lookups, the atomic write,
protocol matching, and damaged or foreign files refused with their name."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from diffnas.errors import UserError
from diffnas.execute.table import (
    COLUMNS,
    REFERENCE,
    Table,
    protocol_key,
    read_rows,
    resolve_table,
    table_files,
    write_rows,
)
from tiny_tables import FOUR_STUDY, SETTINGS, four_archs, make_table

# arch index a, seed k: reference scores 3.0 - a + 0.1 k (the last architecture is best)
REFERENCE_SCORE = {(a, k): 3.0 - a + 0.1 * k for a in range(4) for k in (0, 1)}


def score(a: int, setting: str, seed: int) -> float | None:
    if setting == REFERENCE:
        return REFERENCE_SCORE[a, seed]
    if setting == "s2-loss" and a == 1 and seed == 1:
        return None  # diverged
    return 1.0 / 3 + a + 7 * seed  # floats that only round-trip exactly as repr


@pytest.fixture
def table(tmp_path) -> Table:
    return make_table(tmp_path / "four-digits", score)


def test_pandas_reads_one_row_per_arch_setting_seed(table: Table) -> None:
    csv_path, json_path = table_files(table.stem)
    frame = pd.read_csv(csv_path)
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 4 * len(SETTINGS) * 2
    assert not frame.duplicated(["arch_id", "setting", "seed"]).any()
    assert set(frame["arch_id"]) == set(four_archs())
    # the mean reference per architecture, computed by pandas, is the table's
    means = frame[frame.setting == REFERENCE].groupby("arch_id")["score"].mean()
    assert means.to_dict() == pytest.approx(table.mean_scores())
    meta = json.loads(json_path.read_text())
    assert meta["format"] == 1 and meta["seeds"] == [0, 1]
    assert set(meta["archs"]) == set(frame["arch_id"])


def test_rows_round_trip_exactly(table: Table) -> None:
    again = read_rows(table.stem)
    assert again == table.rows
    arch_id = list(four_archs())[2]
    assert table.row(arch_id, "s4-loss", 1).score == 1.0 / 3 + 2 + 7  # bit for bit
    diverged = table.row(list(four_archs())[1], "s2-loss", 1)
    assert diverged.status == "diverged" and diverged.score is None


def test_lookups_mean_optimum_rank(table: Table) -> None:
    archs = list(four_archs())  # in the order make_table gave them their scores
    assert sorted(table.archs()) == sorted(archs)
    expected = {archs[a]: (REFERENCE_SCORE[a, 0] + REFERENCE_SCORE[a, 1]) / 2 for a in range(4)}
    assert table.mean_scores() == pytest.approx(expected)
    assert table.optimum() == (archs[3], pytest.approx(0.05))
    assert [table.rank(a) for a in archs] == [4, 3, 2, 1]
    assert len(table.rows_for(archs[0], "s2-loss")) == 2
    # a diverged row has no score: the mean of that setting uses the seeds that finished
    assert table.values("s2-loss")[archs[1]] == {0: pytest.approx(1.0 / 3 + 1)}
    assert table.arch(archs[0]) in table and "0" * 12 not in table


def test_write_is_atomic_a_failed_write_leaves_the_old_table(table: Table, monkeypatch) -> None:
    before = table_files(table.stem)[0].read_bytes()

    def killed(*_):
        raise KeyboardInterrupt  # the moment between writing the new file and renaming it

    monkeypatch.setattr("diffnas.execute.table.os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_rows(table.stem, table.rows[:3])
    assert table_files(table.stem)[0].read_bytes() == before


def test_protocol_matching_ignores_speed_and_logging_fields(table: Table) -> None:
    setting = table.setting("s4-rfid-n8-s2")
    recipe = setting.recipe.model_copy(
        update={"bf16_cpu": not setting.recipe.bf16_cpu, "log_every": 7}
    )
    assert table.setting_for(recipe, setting.score).name == "s4-rfid-n8-s2"
    other_n = setting.score.model_copy(update={"num_samples": 9})
    assert table.setting_for(recipe, other_n) is None
    longer = setting.recipe.model_copy(update={"steps": 5})
    assert table.setting_for(longer, setting.score) is None
    # the loss samples nothing: its N and S do not matter
    loss = table.setting("s4-loss")
    assert (
        protocol_key(loss.recipe, loss.score.model_copy(update={"num_samples": 77})) == loss.key()
    )
    assert FOUR_STUDY.seed_list() == [0, 1]


def test_missing_damaged_and_foreign_tables_are_refused(tmp_path, table: Table) -> None:
    with pytest.raises(UserError, match="neither a bundled table"):
        resolve_table(tmp_path / "nothing")
    csv_path, json_path = table_files(table.stem)
    assert resolve_table(csv_path) == table.stem  # NAME.csv, NAME.json or NAME
    csv_path.write_text(csv_path.read_text().replace(",complete,", ",complete,x", 1))
    with pytest.raises(UserError, match="damaged row"):
        Table.load(table.stem)
    csv_path.write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="lacks the columns"):
        Table.load(table.stem)
    json_path.write_text(json.dumps({"format": 99}))
    with pytest.raises(UserError, match="format 99"):
        Table.load(table.stem)
