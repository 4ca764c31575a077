"""Round files: one `RoundEntry` shape, and files written by earlier versions still load."""

from __future__ import annotations

import json

from diffnas.gate.entry import RoundEntry, RoundFile
from diffnas.space.references import get_reference

ARCH = get_reference("tiny-digits")

# A round file as the loop wrote it before RoundEntry (and before origins were recorded).
OLD_ROUND_FILE = {
    "round": 0,
    "proposer": "random",
    "entries": [
        {"slot": 0, "proposer": "random", "rationale": "draw", "raw": {"base_channels": 8},
         "arch": ARCH.model_dump(), "reason": None, "gmacs": 0.01234, "params_m": 0.5,
         "meta": {"draws": 1}},
        {"slot": 1, "proposer": "random", "rationale": "", "raw": "not json at all",
         "arch": None, "reason": "the answer did not parse", "gmacs": None, "params_m": None,
         "meta": {}},
    ],
}  # fmt: skip


def test_an_old_round_file_loads_and_writes_back_with_the_same_keys() -> None:
    loaded = RoundFile.model_validate(json.loads(json.dumps(OLD_ROUND_FILE)))
    accepted, rejected = loaded.entries
    assert accepted.arch == ARCH and accepted.accepted and accepted.origin is None
    assert not rejected.accepted and rejected.raw == "not json at all"
    written = json.loads(json.dumps(loaded.model_dump(mode="json")))
    for old, new in zip(OLD_ROUND_FILE["entries"], written["entries"], strict=True):
        assert set(new) == set(old) | {"origin", "screen"}  # the keys added since: None
        assert {k: new[k] for k in old} == old


def test_a_raw_answer_that_is_not_json_is_stored_as_its_repr() -> None:
    entry = RoundEntry(slot=0, proposer="p", raw=ValueError("x"))
    assert entry.raw == "ValueError('x')"
    assert json.dumps(entry.model_dump(mode="json"))  # the round file can be written


def test_trial_attrs_carry_the_entry_and_its_round() -> None:
    entry = RoundEntry(slot=2, proposer="llm", origin="llm", rationale="r" * 600,
                       raw={"a": 1}, arch=ARCH, gmacs=0.5, params_m=1.0)  # fmt: skip
    attrs = entry.trial_attrs(3, "RFID[classifier]")
    assert attrs["round"] == 3 and attrs["slot"] == 2 and attrs["origin"] == "llm"
    assert len(attrs["rationale"]) == 500 and attrs["raw"] == '{"a": 1}'
    assert attrs["arch_hash"] == ARCH.arch_hash() and attrs["score_name"] == "RFID[classifier]"


def test_a_screened_entry_keeps_its_verdict_in_the_round_file_and_the_trial() -> None:
    from diffnas.gate.entry import ScreenMark

    mark = ScreenMark(screener="gp", predicted=41.5, rank=3, selected=False, note="GP 41.5")
    entry = RoundEntry(slot=1, proposer="random", arch=ARCH, screen=mark)
    assert entry.accepted and entry.screened_out
    assert not RoundEntry(slot=1, proposer="random", arch=ARCH).screened_out
    assert not RoundEntry(slot=1, proposer="r", reason="over budget", screen=mark).screened_out
    loaded = RoundFile.model_validate(
        json.loads(json.dumps(RoundFile(round=0, proposer="random", entries=[entry]).model_dump()))
    )
    assert loaded.entries[0].screen == mark
    assert entry.trial_attrs(0, "RFID")["screen"] == mark.model_dump()
