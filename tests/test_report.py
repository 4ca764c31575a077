"""Reports, the status table, diffusers export and dashboard artifacts of a small finished search.

One session fixture runs two tiny searches (a scripted LLM through a loopback server, and the
random baseline) on a 200-image digits subset with 8 training steps per candidate, so the
whole file costs about the price of six short evaluations.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file

from diffnas import progress
from diffnas.cli.main import run
from diffnas.errors import UserError
from diffnas.execute.job import EvalSpec, ScoreSpec
from diffnas.execute.table import REFERENCE
from diffnas.experiments.proxy_summary import summarise, write_summary
from diffnas.markup import plot_text
from diffnas.report import plots
from diffnas.report.export import export_trial
from diffnas.report.page import write_report
from diffnas.report.source import load_search
from diffnas.report.terminal import print_status
from diffnas.search import study as study_mod
from diffnas.search.artifacts import ARTIFACT_DIR, dashboard_command
from diffnas.search.config import SearchConfig
from diffnas.search.loop import SearchRun
from diffnas.space.references import get_reference
from diffnas.space.search_space import load_space
from diffnas.train.trainer import load_checkpoint
from doubles import OpenAILoopback
from tiny_tables import make_table

SPACE = load_space("tiny")
REF = SPACE.proposal_of(get_reference("tiny-digits"))
SMALL = {**REF, "base_channels": 16}
SMALL2 = {**REF, "base_channels": 16, "num_res_blocks": 2}
SMALL3 = {**REF, "base_channels": 24, "head_channels": 16, "attention_resolutions": []}
OVER = {**REF, "base_channels": 48, "channel_mult": [1, 2, 3], "num_res_blocks": 2, "head_channels": 16}  # fmt: skip
HOSTILE = "<script>alert('x')</script> wider at [/red] 8x8 </td></table>"
TINY_EVAL = EvalSpec(
    recipe="proxy",
    recipe_overrides={"steps": 8, "batch_size": 8, "log_every": 4, "checkpoint_every": 4},
    score=ScoreSpec(num_samples=16, steps=2, batch_size=16),
    device="cpu",
)


def answer(*candidates: tuple[dict, str]) -> str:
    return json.dumps({"candidates": [{"rationale": r, "arch": a} for a, r in candidates]})


def config(**overrides) -> SearchConfig:
    base = dict(
        space="tiny", data="digits", data_subset=200, rounds=2, per_round=2, max_repairs=0,
        promote=2, proxy=TINY_EVAL,
        final=TINY_EVAL.model_copy(update={"score": ScoreSpec(metric="fid", num_samples=16, steps=2)}),
        llm_timeout_s=5.0, llm_attempts=1, llm_backoff_s=0.0,
    )  # fmt: skip
    return SearchConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def searches(tmp_path_factory) -> tuple[Path, Path]:
    """An LLM search (3 trained, 1 rejected over budget, 2 promoted) and a random one."""
    root = tmp_path_factory.mktemp("runs")
    llm_run, random_run = root / "00000-search-tiny-diffnas", root / "00001-search-tiny-random"
    with OpenAILoopback() as server:
        server.push_text(answer((SMALL, HOSTILE), (OVER, "much wider")))
        server.push_text(answer((SMALL2, "deeper"), (SMALL3, "no attention, wider")))
        SearchRun(config(llm="openai:gpt-4o-mini", base_url=server.base_url), llm_run).run()
    SearchRun(config(proposer="random", rounds=1, promote=0), random_run).run()
    return llm_run, random_run


@pytest.fixture(scope="session")
def report(searches, tmp_path_factory):
    return write_report(searches, tmp_path_factory.mktemp("report"))


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()  # decodes every pixel: a truncated file fails here
    return image


# ----- the report -----
def test_report_holds_every_trial_of_every_run(searches, report) -> None:
    html = report.html.read_text()
    markdown = report.markdown.read_text()
    for run_dir in searches:
        record = load_search(run_dir)
        section = html.split(f'<h2 id="{run_dir.name}">')[1].split("<h2")[0]
        md_section = markdown.split(f"## {run_dir.name}")[1].split("\n## ")[0]
        rows = re.findall(r'<tr class="(\w+) (\w+)"><td class="num">(\d+)</td>', section)
        assert [int(n) for _, _, n in rows] == [t.number for t in record.trials]
        assert [s for _, s, _ in rows] == [t.status for t in record.trials]
        for t in record.trials:
            assert re.search(rf"^\| {t.number} \| {t.round + 1} \|", md_section, re.M)
    llm = load_search(searches[0])
    assert [t.status for t in llm.trials].count("rejected") == 1
    assert report.trials == len(llm.trials) + len(load_search(searches[1]).trials) == 6
    # proxy and final scores with their protocol labels, the reason, device-seconds
    assert "RFID[classifier]" in html and "FID[classifier]" in html
    assert "over the 0.08 GMACs bound" in html
    assert html.count('id="00000-search-tiny-diffnas-trial-') == 3  # a card per trained one


def test_every_plot_is_a_png_and_every_image_a_data_uri_that_decodes(report) -> None:
    names = sorted(p.name for p in report.plots)
    assert names == [
        "best-so-far.png", "proxy-vs-final.png", "score-vs-macs.png",
        "winner-samples-0.png", "winner-samples-1.png",
    ]  # fmt: skip
    for path in report.plots:
        if not path.name.startswith("winner-samples"):  # the grids are as small as the images
            assert png(path.read_bytes()).size[0] > 300
    parser = Images()
    parser.feed(report.html.read_text())
    # 2 answers' grids + 3 plots + 3 + 2 proxy sample grids + the 2 promoted ones' final grids
    assert len(parser.sources) == 12
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        png(base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True))
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", report.markdown.read_text()):
        assert (report.markdown.parent / link).is_file(), link


def test_llm_text_is_shown_escaped_never_as_markup(report) -> None:
    html = report.html.read_text()
    assert "<script>" not in html and "alert(" in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    markdown = report.markdown.read_text()
    assert "<script>" not in markdown
    assert r"wider at \[/red\] 8x8" in markdown  # a literal bracket, not a link's


def test_the_answer_comes_first_with_the_winner_its_final_score_and_compute(
    searches, report
) -> None:
    html, markdown = report.html.read_text(), report.markdown.read_text()
    llm = load_search(searches[0])
    promoted = [t for t in llm.trials if t.final is not None]
    assert len(promoted) == 2
    winner = min(promoted, key=lambda t: t.final.value)  # the lower final FID wins
    answers = html.split('<section class="answer">')[1:]
    assert len(answers) == 2 and html.index("<section") < html.index("<h2>Plots</h2>")
    first = answers[0].split("</section>")[0]
    assert f"Trial {winner.number} won" in first and f"{winner.final.value:.4g}" in first
    hours = llm.summary["compute"]["cpu_hours"]  # the search's own accounting
    assert f"total compute: {hours:.4g} CPU-hours" in first
    assert "Best so far" in answers[1]  # the random search promoted none
    assert markdown.index("## Answer: ") < markdown.index("![Proxy score against compute]")
    # the grid beside the answer is the winner's after its final training, byte for byte
    final_grid = searches[0] / "final" / f"{winner.number:05d}" / "samples.png"
    grid = report.markdown.parent / "plots" / "winner-samples-0.png"
    assert grid.read_bytes() == final_grid.read_bytes()
    assert "(plots/winner-samples-0.png)" in markdown
    encoded = base64.b64encode(final_grid.read_bytes()).decode()
    assert first.count(encoded) == 1


def test_no_proxy_against_final_plot_from_one_point(searches) -> None:
    record = load_search(searches[0])
    assert plots.proxy_vs_final([record]) is not None  # two promoted candidates
    promoted = [t for t in record.trials if t.final is not None]
    promoted[0].final = None
    assert plots.proxy_vs_final([record]) is None


def test_user_text_is_literal_in_plots_markdown_and_the_terminal(searches, tmp_path) -> None:
    """A run folder named like mathtext, a proxy study's labels in `$`, Markdown syntax: the
    report is written (matplotlib once raised inside savefig) and shows them as typed."""
    import shutil

    name = "$x^$ [red] *b* `c` $\\frac$"
    copy = tmp_path / name
    shutil.copytree(searches[1], copy)
    pairs = {"proxy_label": "$RFID^$", "reference_label": "FID [/bold]",
             "pairs": [{"proxy": 1, "reference": 2, "label": "$a_$"},
                       {"proxy": 2, "reference": 1, "label": "b$"}]}  # fmt: skip
    (tmp_path / "pairs.json").write_text(json.dumps(pairs))
    files = write_report([copy, searches[0]], tmp_path / "out", tmp_path / "pairs.json")
    for path in files.plots:
        png(path.read_bytes())
    markdown = files.markdown.read_text()
    assert r"\$x^\$ \[red\] \*b\* \`c\`" in markdown
    assert plot_text("$x^$") == r"\$x^\$"  # matplotlib's literal dollar
    console = Console(width=200, record=True, force_terminal=False)
    print_status(copy, console)  # the title names the folder: text, not markup
    assert name in console.export_text()


def test_ledger_counts_calls_tokens_cost_and_latency(searches, report) -> None:
    llm = load_search(searches[0])
    calls = [
        json.loads(line) for line in (searches[0] / "llm/calls.jsonl").read_text().splitlines()
    ]
    assert llm.ledger is not None and llm.ledger.num_calls == len(calls) == 2
    tokens = sum(c["response"]["prompt_tokens"] for c in calls)
    assert llm.ledger.prompt_tokens == tokens > 0
    assert f"{tokens:,}" in report.html.read_text()
    assert "latency" in report.html.read_text()
    assert load_search(searches[1]).ledger is None  # the random baseline asked no LLM


def test_report_page_renders_in_headless_chromium_without_errors(report, tmp_path) -> None:
    from chromium import chromium_path, render

    if chromium_path() is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is missing on CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium; CI installs it)")
    page = render(report.html.resolve().as_uri(), width=1200, height=2000)
    assert page.errors == []
    assert page.images == 12 and page.broken_images == []
    assert page.title.startswith("diffnas report")
    shot = png(page.screenshot)
    assert shot.size == (1200, 2000)
    # not a blank page: the plots put many colours on screen
    assert len(shot.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


# ----- the plots' arithmetic -----
def test_pareto_front_keeps_points_no_other_beats_on_cost_and_score() -> None:
    points = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.5, 3.0)]
    # (3, 4) is beaten by (2, 3); (2.5, 3) ties (2, 3) on score at a higher cost
    assert plots.pareto_front(points) == [(1.0, 5.0), (2.0, 3.0), (4.0, 1.0)]


def test_kendall_tau_of_the_proxy_check_plot() -> None:
    # 3 pairs, one of them discordant: tau = (concordant - discordant) / 3 = (2 - 1) / 3
    pairs = [(1.0, 1.0, "a"), (2.0, 3.0, "b"), (3.0, 2.0, "c")]
    agreement = plots.rank_agreement(pairs, "proxy", "reference", "study")
    assert agreement.tau == pytest.approx(1 / 3)
    png(agreement.png)
    assert plots.rank_agreement(pairs[:1], "x", "y", "t").tau is None


def test_report_with_a_proxy_check_study(searches, tmp_path) -> None:
    """`--proxy-check` reads the folder proxy-check writes (its summary, written by the
    study's own code from a hand-made table): the setting with the best tau, means over seeds."""
    # reference ranks the archs 0 < 1 < 2 < 3; the 4-step RFID swaps the last two (tau of the
    # means = (5 - 1) / 6), every other proxy setting ranks them backwards (tau -1)
    chosen = {"s4-rfid-n8-s2": [1.0, 2.0, 4.0, 3.0]}

    def score(a: int, setting: str, seed: int) -> float:
        if setting == REFERENCE:
            return a + 0.2 * seed  # means a + 0.1
        return chosen.get(setting, [4.0, 3.0, 2.0, 1.0])[a] + 0.5 * seed

    check = tmp_path / "00000-proxy-check-four"
    check.mkdir()
    write_summary(check, summarise(make_table(check / "table", score), resamples=100))
    files = write_report(searches[:1], tmp_path / "out", proxy_check=check)
    assert "proxy-check.png" in [p.name for p in files.plots]
    html = files.html.read_text()
    assert "Kendall&#x27;s τ = 0.67 over 4 architectures" in html
    assert (
        "Shown: the proxy setting 4 steps, RFID[classifier] N=8 S=2 (the study&#x27;s best" in html
    )
    # the summary file itself works too; a folder without one is refused by name
    files = write_report(searches[:1], tmp_path / "out1", proxy_check=check / "summary.json")
    assert "Kendall&#x27;s τ = 0.67 over 4" in files.html.read_text()
    with pytest.raises(UserError, match="holds no summary.json"):
        write_report(searches[:1], tmp_path / "out2", proxy_check=tmp_path / "out")
    (tmp_path / "bad.json").write_text('[{"proxy": 1}]')
    with pytest.raises(UserError, match="'reference'"):
        write_report(searches[:1], tmp_path / "out3", proxy_check=tmp_path / "bad.json")
    (check / "summary.json").write_text('{"settings": [], "reference_label": "FID"}')
    with pytest.raises(UserError, match="proxy-check summary .* settings=.*--resume"):
        write_report(searches[:1], tmp_path / "out4", proxy_check=check)


def test_origin_of_a_proposal_is_shown_with_its_proposer(searches) -> None:
    record = load_search(searches[0])
    assert all(t.origin == "llm" and t.by == "diffnas/llm" for t in record.trials)  # recorded
    record.trials[0].origin = None  # a search from before origins were recorded
    assert record.trials[0].by == "diffnas"


# ----- the status table -----
def test_status_table_fits_80_columns_one_line_per_trial(searches) -> None:
    for run_dir in searches:
        console = Console(width=80, record=True, force_terminal=False)
        print_status(run_dir, console)
        lines = console.export_text().splitlines()
        assert max(len(line) for line in lines) <= 80
        record = load_search(run_dir)
        rows = [line for line in lines if re.match(r"^ +\d+ +\d+ ", line)]
        assert len(rows) == len(record.trials)  # no row wrapped onto a second line
        for t, line in zip(record.trials, rows):
            assert line.split()[:2] == [str(t.number), str(t.round + 1)]
            assert t.status in line.split()[2:4]  # after the origin column when one is shown
    rejected = [line for line in lines_of(searches[0]) if " rejected " in line]
    assert rejected and rejected[0].rstrip().endswith("…")  # the reason cut, not wrapped


def lines_of(run_dir: Path) -> list[str]:
    console = Console(width=80, record=True, force_terminal=False)
    print_status(run_dir, console)
    return console.export_text().splitlines()


# ----- the export -----
def test_exported_trial_loads_in_diffusers_and_makes_images(searches, tmp_path) -> None:
    from diffusers import DDPMPipeline

    run_dir = searches[0]
    record = load_search(run_dir)
    best = record.summary["best_trial"]
    done = export_trial(run_dir, best, tmp_path / "pipe")
    assert done.stage == "final"  # promoted: the final training's weights
    for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "arch.json", "recipe.json", "scores.json"):  # fmt: skip
        assert (tmp_path / "pipe" / name).is_file(), name
    # the weights are the EMA weights of the checkpoint, bit for bit
    ema = load_checkpoint(run_dir / "final" / f"{best:05d}" / "train" / "ema.pt")["ema_model"]
    saved = load_file(tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors")
    assert saved.keys() == ema.keys()
    assert all(torch.equal(saved[k], ema[k]) for k in ema)

    pipe = DDPMPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)
    # DDPM's schedule (Ho et al.): beta linear from 1e-4 to 0.02 over T = 1000 steps
    assert pipe.scheduler.config.variance_type == "fixed_large"
    np.testing.assert_allclose(
        pipe.scheduler.betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-5
    )
    out = pipe(batch_size=2, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert [(im.size, im.mode) for im in out.images] == [((16, 16), "L")] * 2
    arrays = pipe(batch_size=2, num_inference_steps=4, output_type="np").images
    assert arrays.shape == (2, 16, 16, 1) and np.isfinite(arrays).all()
    scores = json.loads((tmp_path / "pipe" / "scores.json").read_text())
    assert scores["trial"] == best and set(scores["results"]) == {"proxy", "final"}
    assert scores["results"]["proxy"]["scores"]["rfid"]["label"] == "RFID[classifier]"


def test_ddim_pipeline_samples_as_diffnas_scored_with_the_flag_its_readme_names(
    searches, tmp_path
) -> None:
    """The export's README says DDIMPipeline needs use_clipped_model_output=True to sample as
    diffnas's DDIM (IDDPM's ddim_sample) does: with it the images are ours, without it not."""
    from diffusers import DDIMPipeline

    from diffnas.train.checkpoint import load_trained
    from diffnas.train.sampling import sample_images

    run_dir = searches[0]
    best = load_search(run_dir).summary["best_trial"]
    export_trial(run_dir, best, tmp_path / "pipe")
    assert "use_clipped_model_output=True" in (tmp_path / "pipe" / "README.md").read_text()
    trained = load_trained(run_dir / "final" / f"{best:05d}" / "train" / "ema.pt")
    ours = sample_images(trained.model, trained.diffusion, 4, steps=5, seed=3, batch_size=4)
    pipe = DDIMPipeline.from_pretrained(tmp_path / "pipe")
    pipe.set_progress_bar_config(disable=True)

    def theirs(clipped: bool) -> np.ndarray:
        out = pipe(
            batch_size=4, num_inference_steps=5, eta=0.0, output_type="np",
            generator=torch.Generator().manual_seed(3), use_clipped_model_output=clipped,
        ).images  # fmt: skip
        return (out * 255).round().astype(np.uint8)  # diffusers' own PIL conversion

    expected = ours.permute(0, 2, 3, 1).numpy()
    assert np.abs(theirs(True).astype(int) - expected).max() <= 1
    assert np.abs(theirs(False).astype(int) - expected).max() > 1


def test_export_of_proxy_weights_and_refusals(searches, tmp_path) -> None:
    run_dir = searches[0]
    record = load_search(run_dir)
    done = export_trial(run_dir, record.summary["best_trial"], tmp_path / "proxy", stage="proxy")
    assert done.checkpoint.parent.parent.parent.name == "trials"
    rejected = next(t.number for t in record.trials if t.status == "rejected")
    with pytest.raises(UserError, match="no proxy training weights"):
        export_trial(run_dir, rejected, tmp_path / "rejected")
    with pytest.raises(UserError, match="no such trial"):
        export_trial(run_dir, 99, tmp_path / "missing")
    with pytest.raises(UserError, match="not an empty folder"):
        export_trial(run_dir, done.trial, tmp_path / "proxy")
    assert not (tmp_path / "rejected").exists() and not (tmp_path / "missing").exists()


# ----- the dashboard -----
def test_each_trained_trial_has_its_sample_grid_as_an_optuna_artifact(searches) -> None:
    run_dir = searches[0]
    study = study_mod.open_study(run_dir)
    store = optuna.artifacts.FileSystemArtifactStore(str(run_dir / ARTIFACT_DIR))
    for trial in study.get_trials():
        metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        if trial.user_attrs["status"] != "complete":
            assert metas == []
            continue
        assert [m.filename for m in metas] == ["samples.png"]
        with store.open_reader(metas[0].artifact_id) as f:
            stored = f.read()
        assert stored == (run_dir / "trials" / f"{trial.number:05d}" / "samples.png").read_bytes()
    assert f"--artifact-dir {(run_dir / ARTIFACT_DIR).resolve()}" in dashboard_command(run_dir)


def test_every_searched_field_is_a_parameter_of_every_trial(searches) -> None:
    """optuna-dashboard lists a trial's params and plots the fields every finished trial
    shares with equal distributions (Optuna's intersection search space): all ten."""
    from optuna.search_space import intersection_search_space

    from diffnas.space.search_space import SEARCHED_FIELDS

    for run_dir in searches:
        study = study_mod.open_study(run_dir)
        trials = study.get_trials(deepcopy=False)
        trained = [t for t in trials if t.user_attrs.get("status") != "rejected"]
        assert trained
        for t in trained:
            assert set(t.params) == set(SEARCHED_FIELDS), (t.number, sorted(t.params))
        assert set(intersection_search_space(trained)) == set(SEARCHED_FIELDS)


# ----- the command line -----
def test_report_and_export_commands(searches, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        ["diffnas", "--quiet", "report", *map(str, searches), "--out", str(tmp_path / "r")],
    )
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 0
    out = capsys.readouterr()
    assert "report of 6 trials" in out.out and out.err == ""
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "report.md").is_file()
    monkeypatch.setattr(
        sys,
        "argv",
        ["diffnas", "export", str(searches[0]), "--trial", "1", "--out", str(tmp_path / "e")],
    )
    with pytest.raises(SystemExit) as exit_:
        run()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: --trial 1: no proxy training weights")


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_silences_the_progress_of_a_command(
    searches, tmp_path, monkeypatch, capsys, quiet
) -> None:
    monkeypatch.setattr(progress, "_forced", progress._forced)  # --quiet is undone afterwards
    ckpt = searches[0] / "trials" / "00000" / "train" / "ema.pt"
    args = [
        "sample",
        str(ckpt),
        "-n",
        "2",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--runs",
        str(tmp_path),
    ]
    monkeypatch.setattr(sys, "argv", ["diffnas", *(["--quiet"] if quiet else []), *args])
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 0
    err = capsys.readouterr().err  # stderr is not a terminal here: plain lines, or none
    assert (err == "") if quiet else err.startswith("sampling 2 images: 2/2 (done in ")
