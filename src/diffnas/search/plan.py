"""What a search will do and roughly what it costs, checked and estimated before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffnas.data.datasets import check_data_fits, load_images
from diffnas.errors import UserError
from diffnas.evaluate.score import check_scoring
from diffnas.execute.executors import check_executor
from diffnas.execute.table_executor import check_search, is_table, load_executor_table
from diffnas.model.cost import measure_cost, sampling_flops, training_flops
from diffnas.propose.llm import parse_spec
from diffnas.propose.llm.factory import check_structured
from diffnas.propose.registry import LLM_PROPOSERS, PROPOSERS, resolve_llm_mode
from diffnas.propose.screen import LLM_SCREENERS
from diffnas.runs import OPTIONS_FILE, load_options, read_json
from diffnas.search.config import SearchConfig
from diffnas.search.halving import rung_steps
from diffnas.search.warm_start import check_sources
from diffnas.space.references import get_reference
from diffnas.space.search_space import load_space
from diffnas.train.device import check_device
from diffnas.train.recipe import TrainRecipe


def uses_llm_screener(config: SearchConfig) -> bool:
    return config.screen is not None and config.screener in LLM_SCREENERS


def stored_llm_mode(llm_mode: str, llm: str, replay: Path | None) -> str:
    """The LLM mode to store in options.json: resolved, so --resume asks in the same mode; under
    --replay, `auto` means the mode of the recorded run, so the requests match its record."""
    if llm_mode == "auto" and replay is not None:
        try:
            recorded = read_json(replay / OPTIONS_FILE)
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict):  # a run from before llm_mode existed asked in full
            return resolve_llm_mode(
                str(recorded.get("llm_mode", "full")), str(recorded.get("llm", llm))
            )
    return resolve_llm_mode(llm_mode, llm)


def resumed_config(run_dir: Path) -> SearchConfig:
    """The options a search resumes with: its options.json. One written before `llm_mode`
    existed resumes in `full`, the only mode there was, not today's default."""
    config = load_options(run_dir, SearchConfig, kind="search")
    if "llm_mode" not in read_json(run_dir / OPTIONS_FILE):
        config = config.model_copy(update={"llm_mode": "full"})
    return config


@dataclass(frozen=True)
class PlanStage:
    """One line of the plan: a stage, how often it runs, what one run does, its compute."""

    stage: str
    count: str
    per_candidate: str
    pflops: float | None


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

    def validate(self) -> None:
        """Every option checked before anything runs, each error naming its option."""
        cfg = self.config
        if cfg.proposer not in PROPOSERS:
            raise UserError(
                f"--proposer {cfg.proposer!r} is unknown; allowed: {', '.join(PROPOSERS)}.",
                field="proposer",
            )
        if cfg.screen is not None and cfg.screen <= cfg.per_round:
            raise UserError(
                f"--screen {cfg.screen} must be more than --per-round {cfg.per_round}: each "
                "request obtains M candidates for its K slots and trains the top K",
                field="screen",
            )
        if (cfg.proposer in LLM_PROPOSERS or uses_llm_screener(cfg)) and not cfg.replay:
            provider, _ = parse_spec(cfg.llm)
            check_structured(provider, cfg.structured)
        for spec in (cfg.proxy, cfg.final):
            check_device(spec.device)
            spec.train_recipe(self.space.objective)  # raises UserError for bad overrides
        proxy_steps = cfg.proxy.train_recipe(self.space.objective).steps
        rungs = rung_steps(proxy_steps, cfg.halving_rungs, cfg.halving_eta)  # each rung >= 1 step
        check_executor(cfg.executor, cfg.storage)
        if is_table(cfg.executor):  # every evaluation must be one the table recorded
            check_search(
                load_executor_table(cfg.executor), space=self.space, data=cfg.data_spec(),
                proxy=cfg.proxy, rung_steps=rungs, final=cfg.final, promote=cfg.promote,
            )  # fmt: skip
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
            check_scoring(images, spec.score.extractor, spec.score.inception_weights)
        check_sources(cfg, self.space, cfg.data_spec())  # --warm-start: same space, same score

    def stages(self) -> list[PlanStage]:
        """The plan's stages with their compute, at the cost of the space's reference (or of
        its MACs bound when it has none)."""
        cfg, space = self.config, self.space
        self.validate()
        ref = get_reference(space.reference) if space.reference else None
        forward = measure_cost(ref).flops if ref else 2 * int(space.budget.max_gmacs * 1e9)
        proxy = cfg.proxy.train_recipe(space.objective)
        final = cfg.final.train_recipe(space.objective)
        n_candidates = cfg.rounds * cfg.per_round
        proxy_score, final_score = cfg.proxy.score, cfg.final.score
        sampled = 0 if proxy_score.metric == "loss" else proxy_score.num_samples
        proxy_flops = evaluation_flops(forward, proxy, sampled, proxy_score.steps)
        final_flops = evaluation_flops(forward, final, final_score.num_samples, final_score.steps)
        asked = f"{cfg.proposer} via {cfg.llm}"
        if cfg.screen is not None:  # M obtained, the top K by the screener trained
            asked += f"; {cfg.screen} obtained per round, the top {cfg.per_round} by {cfg.screener}"
        return [
            PlanStage("LLM rounds", f"{cfg.rounds} x {cfg.per_round}", asked, None),
            PlanStage(
                "proxy train + score", f"<= {n_candidates}",
                f"{proxy.steps} steps x {proxy.batch_size}; {cfg.proxy.score.label}"
                + (f" N={proxy_score.num_samples} S={proxy_score.steps}" if sampled else "")
                + self._halving_text(proxy.steps),
                n_candidates * proxy_flops / 1e15,
            ),
            PlanStage(
                "final train + FID", str(cfg.promote),
                f"{final.steps} steps x {final.batch_size}; FID N={cfg.final.score.num_samples} S={cfg.final.score.steps}",
                cfg.promote * final_flops / 1e15,
            ),
        ]  # fmt: skip

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
