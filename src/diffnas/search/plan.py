"""What a search will do and roughly what it costs, checked and estimated before anything runs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from diffnas import storage
from diffnas.data.datasets import ImageData, check_data_fits, data_shape, load_images
from diffnas.errors import UserError
from diffnas.evaluate.score import check_scoring
from diffnas.execute.factory import check_executor
from diffnas.execute.job import EvalSpec
from diffnas.execute.table_executor import check_search, is_table, load_executor_table
from diffnas.model.cost import (
    Cost,
    measure_cost,
    sampling_flops,
    training_bytes,
    training_flops,
)
from diffnas.propose.llm import parse_spec
from diffnas.propose.llm.factory import check_backend, check_base_url
from diffnas.propose.prompt import PromptTemplates
from diffnas.propose.registry import LLM_PROPOSERS, PROPOSERS, resolve_llm_mode
from diffnas.propose.screen import LLM_SCREENERS
from diffnas.runs import OPTIONS_FILE, load_options
from diffnas.search.config import SearchConfig
from diffnas.search.halving import rung_steps
from diffnas.search.warm_start import check_sources
from diffnas.space.references import get_reference
from diffnas.space.search_space import load_space
from diffnas.train.device import available_memory, check_device, resolve_device
from diffnas.train.diffusion import DiffusionConfig
from diffnas.train.recipe import TrainRecipe
from diffnas.train.sampling import make_scheduler

#: What a search can rank candidates by: cheap scores after a short run. `fid` is the final
#: score of the promoted candidates (--fid-samples, --fid-steps), not a proxy.
PROXY_METRICS = ("rfid", "kid", "loss")
GiB = 2**30


def uses_llm_screener(config: SearchConfig) -> bool:
    return config.screen is not None and config.screener in LLM_SCREENERS


def stored_llm_mode(llm_mode: str, llm: str, replay: Path | None) -> str:
    """The LLM mode to store in options.json: resolved, so --resume asks in the same mode; under
    --replay, `auto` means the mode of the recorded run, so the requests match its record."""
    if llm_mode == "auto" and replay is not None and (replay / OPTIONS_FILE).is_file():
        recorded = load_options(replay, SearchConfig, kind="search", option="--replay")
        # a run from before llm_mode existed asked in full
        mode = recorded.llm_mode if "llm_mode" in recorded.model_fields_set else "full"
        return resolve_llm_mode(mode, recorded.llm)
    return resolve_llm_mode(llm_mode, llm)


def resumed_config(run_dir: Path) -> SearchConfig:
    """The options a search resumes with: its options.json. One written before `llm_mode`
    existed resumes in `full`, the only mode there was, not today's default."""
    config = load_options(run_dir, SearchConfig, kind="search")
    if "llm_mode" not in config.model_fields_set:
        config = config.model_copy(update={"llm_mode": "full"})
    return config


@dataclass(frozen=True)
class PlanStage:
    """One line of the plan: a stage, how often it runs, what one run does, its compute and
    its estimated peak memory (bytes; None where nothing is held)."""

    stage: str
    count: str
    per_candidate: str
    pflops: float | None
    memory: int | None = None


def evaluation_flops(
    forward_flops: int, recipe: TrainRecipe, images: int, sampler_steps: int | None
) -> int:
    """Training one candidate with `recipe`, then sampling the images its score compares."""
    return training_flops(forward_flops, recipe.steps, recipe.batch_size) + sampling_flops(
        forward_flops, images, sampler_steps or 1000
    )


class SearchPlan:
    """What a search will do and roughly what it costs, before anything runs."""

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.space = load_space(config.space)
        self._reference_cost: Cost | None = None

    def validate(self, *, dry_run: bool = False) -> ImageData:
        """Every option checked before anything runs, each error naming its option; the cheap
        checks first, the data (read whole) last. Returns the images the search trains on.

        `dry_run`: the FID Inception weights are looked for but not downloaded."""
        cfg = self.config
        if cfg.proposer not in PROPOSERS:
            raise UserError(
                f"--proposer {cfg.proposer!r} is unknown; allowed: {', '.join(PROPOSERS)}.",
                field="proposer",
            )
        if cfg.proxy.score.metric not in PROXY_METRICS:
            raise UserError(
                f"--metric {cfg.proxy.score.metric!r} is not a proxy metric: a search ranks "
                f"candidates by {', '.join(PROXY_METRICS)} (rfid is FID at reduced N and S); "
                "the full FID is the final score of the promoted candidates "
                "(--promote, --fid-samples, --fid-steps)",
                field="metric",
            )
        if cfg.proposer in LLM_PROPOSERS:
            PromptTemplates(cfg.prompt_dir).check()
        if cfg.screen is not None and cfg.screen <= cfg.per_round:
            raise UserError(
                f"--screen {cfg.screen} must be more than --per-round {cfg.per_round}: each "
                "request obtains M candidates for its K slots and trains the top K",
                field="screen",
            )
        if (cfg.proposer in LLM_PROPOSERS or uses_llm_screener(cfg)) and not cfg.replay:
            check_backend(
                cfg.llm,
                base_url=cfg.base_url,
                api_key_env=cfg.api_key_env,
                structured=cfg.structured,
            )
            check_base_url(parse_spec(cfg.llm)[0], cfg.base_url)
        for spec in (cfg.proxy, cfg.final):
            check_device(spec.device)
            self.recipe(spec)  # raises UserError for bad overrides
        if cfg.measures_latency and cfg.latency.device != "auto":
            try:
                check_device(cfg.latency.device)
            except UserError as err:
                raise UserError(
                    f"--latency-{str(err).removeprefix('--')}", field="latency"
                ) from None
        proxy_steps = self.recipe(cfg.proxy).steps
        rungs = rung_steps(proxy_steps, cfg.halving_rungs, cfg.halving_eta)  # each rung >= 1 step
        check_executor(cfg.executor, cfg.storage, cfg.ray_address)
        if cfg.storage is not None:  # its syntax, driver, folder or server, named now
            storage.check_reachable(storage.resolve_url(cfg.storage))
        if is_table(cfg.executor):  # every evaluation must be one the table recorded
            check_search(
                load_executor_table(cfg.executor), space=self.space, data=cfg.data_spec(),
                proxy=cfg.proxy, rung_steps=rungs, final=cfg.final, promote=cfg.promote,
            )  # fmt: skip
        self._check_space()
        self._check_sampler_steps()
        self._check_data_size()
        # The images are read now, so an unreadable file or a size the space cannot take is
        # refused before a run folder exists rather than by the first candidate's training.
        images = load_images(cfg.data_spec())
        check_data_fits(
            images,
            (self.space.in_channels, self.space.image_size),
            f"space {self.space.name!r}",
            f"use a --space made for this data (or --data-image-size {self.space.image_size})",
        )
        for spec in (cfg.proxy, cfg.final):
            check_scoring(
                images,
                spec.score.extractor,
                spec.score.inception_weights,
                allow_download=not dry_run,
            )
        check_sources(cfg, self.space, cfg.data_spec())  # --warm-start: same space, same score
        self._check_memory()
        return images

    def recipe(self, spec: EvalSpec) -> TrainRecipe:
        """`spec`'s recipe resolved as the search's evaluations resolve it (its objective, data
        and device), so what the plan checks and prints is what will run."""
        return spec.train_recipe(self.space.objective, self.config.data_spec().kind)

    def notes(self) -> list[str]:
        """What `resolve_recipe` adapted in the proxy and final recipes (a warm-up shortened,
        the EMA warmed up for a short final run) or warns about, once each."""
        cfg, kind = self.config, self.config.data_spec().kind
        notes: list[str] = []
        for stage, spec in (("proxy", cfg.proxy), ("final", cfg.final)):
            if stage == "final" and cfg.promote == 0:
                continue
            for note in spec.resolve(self.space.objective, kind)[1]:
                if note.startswith("warning: "):
                    text = f"warning: {stage} recipe: {note.removeprefix('warning: ')}"
                else:
                    text = f"note: {stage} recipe: {note}"
                if not any(note in seen for seen in notes):
                    notes.append(text)
        return notes

    def _check_space(self) -> None:
        """The space's reference exists and its choices make at least one valid architecture."""
        space = self.space
        if space.reference is not None:
            try:
                get_reference(space.reference)
            except UserError as err:
                raise UserError(
                    f"space {space.name!r} ({self.config.space}): reference: {err}",
                    field="space",
                ) from None
        space.sample(random.Random(0), max_tries=2_000)  # a UserError when none validates

    def _check_sampler_steps(self) -> None:
        """--score-steps and --fid-steps fit the diffusion's T (DDIM takes every T/S-th step)."""
        diffusion = DiffusionConfig.resolve(self.space.objective, self.space.learn_sigma)
        for option, spec in self._stages_run(("--score-steps", "--fid-steps")):
            if spec.score.metric == "loss":
                continue  # nothing is sampled
            try:
                make_scheduler(diffusion, spec.score.sampler, spec.score.steps)
            except UserError as err:
                raise UserError(f"{option} {spec.score.steps}: {err}", field="steps") from None

    def _check_data_size(self) -> None:
        """The data's size fits the space, and the images fit in memory, known from their
        headers before a pixel is read."""
        cfg, space = self.config, self.space
        if cfg.data_image_size is not None and cfg.data_image_size != space.image_size:
            raise UserError(
                f"--data-image-size {cfg.data_image_size} resizes the images to "
                f"{cfg.data_image_size}x{cfg.data_image_size} but space {space.name!r} trains on "
                f"{space.image_size}x{space.image_size} images; give --data-image-size "
                f"{space.image_size} (or a --space made for that size)",
                field="data_image_size",
            )
        shape = data_shape(cfg.data_spec())
        if shape is not None:
            self._refuse_over_memory(
                shape.load_bytes(),
                f"--data {cfg.data}: {shape.count:,} images of {shape.channels}x{shape.size}x"
                f"{shape.size}",
                torch.device("cpu"),
            )

    def reference_cost(self) -> Cost | None:
        """The cost of the space's reference architecture (None without one)."""
        if self._reference_cost is None and self.space.reference:
            self._reference_cost = measure_cost(get_reference(self.space.reference))
        return self._reference_cost

    def training_memory(self, spec: EvalSpec) -> int | None:
        """Estimated peak memory of training the reference with `spec`'s recipe."""
        cost = self.reference_cost()
        if cost is None:
            return None
        return training_bytes(cost, self.recipe(spec).batch_size)

    def _check_memory(self) -> None:
        """Training the reference at the proxy and final batch sizes fits the device."""
        for option, spec in self._stages_run(("--proxy-batch-size", "--final-batch-size")):
            needed = self.training_memory(spec)
            if needed is None:
                continue
            batch = self.recipe(spec).batch_size
            device = resolve_device(spec.device)
            self._refuse_over_memory(
                needed,
                f"{option} {batch}: training the space's reference {self.space.reference} "
                f"({self.reference_cost().params_m:.1f} M parameters) at {batch} images per step",  # type: ignore[union-attr]
                device,
            )

    def _stages_run(self, options: tuple[str, str]) -> list[tuple[str, EvalSpec]]:
        """(option, spec) of the proxy evaluation and, when any candidate is promoted, the final."""
        stages = [(options[0], self.config.proxy)]
        return stages + ([(options[1], self.config.final)] if self.config.promote else [])

    @staticmethod
    def _refuse_over_memory(needed: int, what: str, device: torch.device) -> None:
        available, where = available_memory(device)
        if available is not None and needed > available:
            raise UserError(
                f"{what} needs about {needed / GiB:.1f} GiB, more than {where} "
                f"({available / GiB:.1f} GiB); give a smaller size or count",
                field="memory",
            )

    def stages(self) -> list[PlanStage]:
        """The plan's stages with their compute, at the cost of the space's reference (or of
        its MACs bound when it has none)."""
        cfg, space = self.config, self.space
        images = self.validate(dry_run=True)
        ref = self.reference_cost()
        forward = ref.flops if ref else 2 * int(space.budget.max_gmacs * 1e9)
        proxy = self.recipe(cfg.proxy)
        final = self.recipe(cfg.final)
        n_candidates = cfg.rounds * cfg.per_round
        proxy_score, final_score = cfg.proxy.score, cfg.final.score
        sampled = 0 if proxy_score.metric == "loss" else proxy_score.num_samples
        proxy_flops = evaluation_flops(forward, proxy, sampled, proxy_score.steps)
        final_flops = evaluation_flops(forward, final, final_score.num_samples, final_score.steps)
        data_bytes = images.x.numel() * images.x.element_size()
        asked = f"{cfg.proposer} via {cfg.llm}"
        if cfg.screen is not None:  # M obtained, the top K by the screener trained
            asked += f"; {cfg.screen} obtained per round, the top {cfg.per_round} by {cfg.screener}"
        return [
            PlanStage("LLM rounds", f"{cfg.rounds} x {cfg.per_round}", asked, None),
            PlanStage("data", f"{len(images):,} images", f"{images.name}, {images.channels}x{images.image_size}x{images.image_size}", None, data_bytes),
            PlanStage(
                "proxy train + score", f"<= {n_candidates}",
                f"{proxy.steps} steps x {proxy.batch_size}; {cfg.proxy.score.label}"
                + (f" N={proxy_score.num_samples} S={proxy_score.steps}" if sampled else "")
                + self._halving_text(proxy.steps)
                + self._table_text(),
                n_candidates * proxy_flops / 1e15,
                self.training_memory(cfg.proxy),
            ),
            *self._latency_stage(n_candidates),
            PlanStage(
                "final train + FID", str(cfg.promote),
                f"{final.steps} steps x {final.batch_size}; FID N={cfg.final.score.num_samples} S={cfg.final.score.steps}"
                + self._table_text(),
                cfg.promote * final_flops / 1e15,
                self.training_memory(cfg.final),
            ),
        ]  # fmt: skip

    def _table_text(self) -> str:
        if not is_table(self.config.executor):
            return ""
        return f"; looked up in {self.config.executor} (no training: the compute is the table's)"

    def _latency_stage(self, n_candidates: int) -> list[PlanStage]:
        """The gate's latency measurement, when the search measures it (cached per architecture)."""
        cfg = self.config
        if not cfg.measures_latency:
            return []
        lat = cfg.latency
        bound = f"; bound {cfg.latency_budget_ms:g} ms" if cfg.latency_budget_ms else ""
        objective = "; an objective" if cfg.cost_objective == "latency" else ""
        what = (
            f"{lat.warmup} + {lat.runs} passes at batch {lat.batch} on {lat.device}, dtype "
            f"{lat.dtype}{bound}{objective}"
        )
        return [PlanStage("latency at the gate", f"<= {n_candidates} (cached)", what, None)]

    def _halving_text(self, proxy_steps: int) -> str:
        cfg = self.config
        if cfg.halving_rungs == 1:
            return ""
        rungs = rung_steps(proxy_steps, cfg.halving_rungs, cfg.halving_eta)
        # the compute column stays the bound: how many go on is only known as scores come in
        return (
            f"; successive halving: scored at {', '.join(map(str, rungs))} steps, "
            f"about 1 in {cfg.halving_eta} goes on (compute: at most)"
        )
