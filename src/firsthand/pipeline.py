"""The main job: collect -> branch -> build -> train IL, IWM and SR -> evaluate -> report.

Presets are plain Python objects (`firsthand.settings`); every stage writes its own directory under the run
directory (`layout.RunLayout` names them all), so an interrupted run picks up where it stopped and a
finished stage is never redone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from firsthand.artifacts import (
    MANIFEST,
    check_output_dir,
    claimed,
    config_differences,
    load_records,
    write_json_atomic,
)
from firsthand.contract import METHODS, RATIONALES, InvalidInputError
from firsthand.inference.agents import Agent
from firsthand.jobs import Job, default_workers, run_jobs
from firsthand.layout import Label, RunLayout
from firsthand.models import starting_model
from firsthand.progress import Progress, no_progress
from firsthand.prompts import PromptConfig
from firsthand.registry import opened
from firsthand.report_html import write_html
from firsthand.settings import ENV_SETTINGS, PRESETS, Preset, eval_settings, get_preset
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.build import AllDropped, BuildConfig, WriterConfig, build
from firsthand.stages.collect import collect
from firsthand.stages.evaluate import evaluate, make_agent
from firsthand.stages.report import arms_markdown, write_report
from firsthand.stages.rl import rl
from firsthand.stages.train import AUXILIARY, TrainConfig, needed_data, planned_stages, train

__all__ = ["ENV_SETTINGS", "PRESETS", "Preset", "eval_settings", "get_preset", "run"]  # settings: `firsthand.settings`

log = logging.getLogger(__name__)


def _writer(preset: Preset, method: str) -> WriterConfig:
    """The writer of `method`'s data: STaR's is the policy model, SR's the run's reflector ("policy": the model)."""
    chosen = preset.model if method == "star" or preset.writer.reflector == "policy" else preset.writer.reflector
    return replace(preset.writer, reflector=chosen)


def collect_experts(preset: Preset, out: Path, progress: Progress = no_progress) -> int:
    """The expert trajectories of `preset` collected into `out` (a run's or a sweep's); returns how many."""
    with progress("collect", preset.train_episodes) as advance:
        return collect(preset.env, "train", preset.train_episodes, out, workers=preset.workers, on_progress=advance)[
            "count"
        ]


ADDED_LATER = ("with_rl", "rl", "rl_algos", "arms")
"""Settings of work added to a finished run without redoing it: RL (each RL stage checks its own settings)
and further demonstration arms (each its own run folder)."""


def _without_additions(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in ADDED_LATER}


def run(preset: Preset, out: Path, progress: Progress = no_progress, *, branches: Path | None = None) -> dict[str, Any]:
    """Run every stage of `preset` into `out`; return the results (also written to results.json).

    `branches`: a finished branch directory to build the training data from, instead of collecting and
    branching into `out` (the points of a sweep share one collection; see `firsthand.sweep`)."""
    out = Path(out)
    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with claimed(out):  # a second launch on the same folder is refused, not run twice
        return _arms(preset, out, _run(preset, out, progress, branches), progress)


def _run(preset: Preset, out: Path, progress: Progress, branches: Path | None) -> dict[str, Any]:
    """`run` inside its claim on `out`."""
    layout = RunLayout(out)
    preset_path = out / "preset.json"
    resolved = json.loads(json.dumps(asdict(preset)))
    saved = json.loads(preset_path.read_text()) if preset_path.exists() else None
    differences = config_differences(_without_additions(saved), _without_additions(resolved)) if saved else []
    if differences:
        changed = "; ".join(f"{key}: {a!r} there, {b!r} now" for key, a, b in differences[:5])
        raise InvalidInputError(
            f"{str(out)!r} holds a run with other settings ({changed}); resume it with the same preset and "
            f"options, or choose another --out"
        )
    write_json_atomic(preset_path, resolved)

    if branches is None:
        collected = collect_experts(preset, layout.experts, progress)  # fewer when the split is smaller
        with progress("branch", collected) as advance:
            branching = BranchConfig(k=preset.k)
            branch(layout.experts, layout.branches, branching, workers=preset.workers, on_progress=advance)
        branches = layout.branches
    data = {}
    not_trained: dict[str, str] = {}
    kinds = [*METHODS, *(["star"] if "star" in preset.methods else [])]
    with progress("build", len(kinds)) as advance:
        for method in kinds:
            cfg = BuildConfig(
                prompt=preset.prompt, sr_alternatives=preset.sr_alternatives, writer=_writer(preset, method)
            )
            try:
                build(method, branches, layout.data(method), cfg, progress=progress)
                data[method] = layout.data(method)
            except AllDropped as error:  # a weak writer: the other methods still run, the report says why
                log.warning("%s", error)
                not_trained.update({m: str(error) for m in preset.methods if method in needed_data(m)})
            advance(1)
    preset = replace(preset, methods=tuple(m for m in preset.methods if m not in not_trained))

    bases = {}
    for seed in preset.seeds:
        tiny = replace(preset.tiny, seed=seed, walk_tasks=preset.train_episodes)
        folder = layout.tiny(seed)
        bases[seed] = starting_model(preset.model, data.values(), folder, tiny=tiny, env=preset.env, progress=progress)
    workers = preset.jobs or default_workers()
    validators = _validators(preset, out, progress) if "auto" in preset.budgets else {}
    chars = _mean_chars(data)

    def jobs_of(planned: list[Training]) -> list[Job]:
        return [
            Job(
                train,
                (t.method, data, bases[t.seed], layout.train(t.label, t.seed), t.config),
                {"validator": validators.get(_thinks(t.method))} if t.config.validate_every else {},
                # a finished training counts for nothing: the bar shows the work still to do
                total=0 if (layout.train(t.label, t.seed) / MANIFEST).exists() else t.steps,
                cost=sum(steps * chars[kind] for kind, steps in t.stages),  # characters to process: ~ time
            )
            for t in planned
        ]

    # IL first: under auto its validated best step is the budget every other method's rule starts from
    first = _il_trainings(preset, data)
    first_manifests = run_jobs(jobs_of(first), f"train {len(first)} IL models", workers=workers, progress=progress)
    il_steps = {t.seed: _best_step(m) for t, m in zip(first, first_manifests, strict=True)} if validators else {}
    rest = _other_trainings(preset, data, il_steps)
    rest_manifests = run_jobs(jobs_of(rest), f"train {len(rest)} models", workers=workers, progress=progress)
    rest, rest_manifests, weights = _chosen_weights(rest, rest_manifests)
    runs = first + rest
    manifests = first_manifests + rest_manifests

    rows = []
    for evaluation in preset.evaluations:
        evals = []
        for seed in preset.seeds:
            if preset.model != "tiny":  # a pretrained instruct model: the zero-shot prompt baseline
                args = (preset, out, Label("prompt"), seed, bases[seed])
                evals.append(Job(_evaluate, args, {"evaluation": evaluation}, cost=preset.max_new_tokens))
            for t, manifest in zip(runs, manifests, strict=True):
                if t.seed == seed:
                    model = layout.train(t.label, seed) / manifest["model"]
                    compute = {**_compute(manifest), **({"aux_weight": t.config.aux_weight} if t.shown else {})}
                    args = (preset, out, t.reported, seed, model, compute)
                    evals.append(Job(_evaluate, args, {"evaluation": evaluation}, cost=_new_tokens(preset, t.label)))
            evals.append(Job(_evaluate, (preset, out, Label("random"), seed, None), {"evaluation": evaluation}))
        for job in evals:
            job.total = _episodes_to_evaluate(preset, out, job.args[2], job.args[3], evaluation)
        done = run_jobs(evals, f"evaluate {len(evals)} agents ({evaluation})", workers=workers, progress=progress)
        rows += [row for job_rows in done for row in job_rows]
    if preset.with_rl:
        rows += _after_rl(preset, out, runs, manifests, workers, progress)
    results = write_report(
        out, preset, rows, not_trained=not_trained, compute_of=_compute_of(runs), aux_weights=weights
    )
    write_html(out)
    return results


def _arms(preset: Preset, out: Path, results: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The low-data arms after the run itself: the same run on the first n demonstrations, each in its own
    folder; their pooled results join results.json and their tables results.md."""
    for n in preset.arms:
        arm = replace(preset, train_episodes=n, arms=())
        results.setdefault("arms", {})[str(n)] = run(arm, RunLayout(out).arm(n), progress)["results"]
        write_json_atomic(out / "results.json", results)
    if preset.arms:
        with (out / "results.md").open("a", encoding="utf-8") as f:
            f.write(arms_markdown(out, preset.arms))
    return results


@dataclass(frozen=True)
class Training:
    """One training of a run: its label (method and budget rule; IL of N steps), seed, method, settings
    (measured on validation when `config.validate_every`) and planned stages. `label` names its folder;
    `shown`, when set, the label it is reported under (the chosen point of a lambda grid)."""

    label: Label
    seed: int
    method: str
    config: TrainConfig
    stages: list[tuple[str, int]]
    shown: Label | None = None

    @property
    def steps(self) -> int:
        return sum(steps for _, steps in self.stages)

    @property
    def reported(self) -> Label:
        return self.shown or self.label


def _il_trainings(preset: Preset, data: dict[str, Path]) -> list[Training]:
    """IL of every seed: under auto, up to `max_epochs` with validation and early stopping."""
    runs = []
    for seed in preset.seeds:
        if "il" not in preset.methods and "auto" not in preset.budgets:
            continue
        auto = "auto" in preset.budgets
        cfg = replace(preset.train, seed=seed, budget="paper")
        if auto:
            cfg = replace(cfg, epochs=preset.max_epochs, validate_every=preset.validate_every, patience=preset.patience)
        runs.append(Training(Label("il"), seed, "il", cfg, planned_stages("il", data, cfg)))
    return runs


def _other_trainings(preset: Preset, data: dict[str, Path], il_steps: dict[int, int]) -> list[Training]:
    """Every other method under every rule, from IL's validated budget of its seed (`il_steps`, under auto),
    each measured on validation and reported at its best checkpoint; then IL of the same steps as each."""
    runs = []
    for seed in preset.seeds:
        seed_runs = []
        for method in preset.methods:
            if method == "il":
                continue
            for rule in preset.budgets[:1] if method in AUXILIARY else preset.budgets:  # IL's steps under any rule
                validated = seed in il_steps and rule != "paper"
                cfg = replace(
                    preset.train,
                    seed=seed,
                    budget=rule,
                    il_steps=il_steps[seed] if validated else None,
                    validate_every=preset.validate_every if validated else 0,
                )
                stages = planned_stages(method, data, cfg)
                label = Label.of(method, rule)
                grid = preset.aux_weights if method in AUXILIARY and validated and len(preset.aux_weights) > 1 else ()
                if method in AUXILIARY and len(preset.aux_weights) == 1:  # one lambda: no choice to make
                    cfg = replace(cfg, aux_weight=preset.aux_weights[0])
                for weight in grid:  # one model per lambda; validation keeps one (`_chosen_weights`)
                    weighted = replace(cfg, aux_weight=weight)
                    point = replace(label, weight=weight)
                    seed_runs.append(Training(point, seed, method, weighted, stages, shown=label))
                if not grid:
                    seed_runs.append(Training(label, seed, method, cfg, stages))
        if preset.compute_control:  # IL for exactly as many steps as each method (one run per step count)
            for steps in sorted({t.steps for t in seed_runs}):
                cfg = replace(preset.train, seed=seed, budget="paper", steps=steps)
                control = Label("il", steps=steps)
                seed_runs.append(Training(control, seed, "il", cfg, planned_stages("il", data, cfg)))
        runs += seed_runs
    return runs


def _chosen_weights(
    runs: list[Training], manifests: list[dict[str, Any]]
) -> tuple[list[Training], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The trainings with each lambda grid (the trainings with a `shown` label) reduced to the point its
    validation scored best (ties: the smaller lambda); and, per label and seed, the choice with every point's
    best validation score (`results.json` "aux_weights")."""
    kept: list[tuple[Training, dict[str, Any]]] = []
    grids: dict[tuple[str, int], list[tuple[float, float, Training, dict[str, Any]]]] = {}
    for t, manifest in zip(runs, manifests, strict=True):
        if t.shown:  # a point of a grid
            grids.setdefault((t.shown, t.seed), []).append(
                (_best_selection(manifest), t.config.aux_weight, t, manifest)
            )
        else:
            kept.append((t, manifest))
    choices: dict[str, dict[str, Any]] = {}
    for (label, seed), points in grids.items():
        _, weight, t, manifest = max(points, key=lambda p: (p[0], -p[1]))
        kept.append((t, manifest))
        choices.setdefault(str(label), {})[str(seed)] = {
            "chosen": weight,
            "validation": {f"{p[1]:g}": p[0] for p in sorted(points, key=lambda p: p[1])},
        }
    return [t for t, _ in kept], [m for _, m in kept], choices


def _best_selection(manifest: dict[str, Any]) -> float:
    """The best validation score of a training's last stage (what its checkpoint was chosen by)."""
    history = manifest["stages"][-1].get("validation", [])
    return max((h["selection"] for h in history), default=float("-inf"))


def _compute_of(runs: list[Training]) -> dict[str, dict[str, str]]:
    """Each early-experience label's compute control in each seed: the IL run of its step count there (under
    auto the seeds' budgets, and so their step counts, differ)."""
    controls = {(t.seed, t.steps) for t in runs if t.label.is_control}
    out: dict[str, dict[str, str]] = {}
    for t in runs:
        if t.label.method != "il" and (t.seed, t.steps) in controls:
            out.setdefault(str(t.reported), {})[str(t.seed)] = str(Label("il", steps=t.steps))
    return out


def _best_step(manifest: dict[str, Any]) -> int:
    """The optimizer step IL's validation chose (its budget), or its whole training without validation."""
    stage = manifest["stages"][-1]
    return int(stage.get("best_step", manifest["count"]))


def _validators(preset: Preset, out: Path, progress: Progress) -> dict[bool, Any]:
    """The validation of the run's trainings, for models that act (False) and that think first (True): the
    `validation_tasks` training tasks after the demonstrations', their expert trajectories collected into
    out/validation."""
    folder = RunLayout(out).validation
    with progress("collect validation", preset.validation_tasks) as advance:
        collect(
            preset.env,
            "train",
            preset.validation_tasks,
            folder,
            skip=preset.train_episodes,
            workers=preset.workers,
            on_progress=advance,
        )
    return {
        thinks: validator_from_experts(
            folder,
            preset.prompt,
            max_new_tokens=preset.sr_max_new_tokens if thinks else preset.max_new_tokens,
            max_steps=preset.max_steps,
            batch_size=preset.eval_batch_size,
            thinks=thinks,
            select_by=preset.select_by,
        )
        for thinks in (False, True)
    }


def validator_from_experts(
    folder: Path,
    prompt: PromptConfig,
    *,
    max_new_tokens: int,
    max_steps: int | None = None,
    batch_size: int = 50,
    thinks: bool = False,
    select_by: str = "success",
) -> Any:
    """The `validation.Validator` of a collect directory of validation tasks' expert trajectories, rendering
    its states with `prompt` (the training data's)."""
    from firsthand.artifacts import load_trajectories, read_manifest
    from firsthand.stages.build import BuildConfig, il_records
    from firsthand.validation import validator

    trajectories = load_trajectories(folder)
    return validator(
        read_manifest(folder, "collect")["config"]["env"],
        il_records(trajectories, BuildConfig(prompt=prompt)),
        [t.task for t in trajectories],
        prompt,
        max_steps=max_steps,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        thinks=thinks,
        select_by=select_by,
    )


def _thinks(method: str) -> bool:
    return any(k in method.split("+") for k in RATIONALES)


def _after_rl(
    preset: Preset,
    out: Path,
    runs: list[Training],
    manifests: list[dict[str, Any]],
    workers: int,
    progress: Progress,
) -> list[dict[str, Any]]:
    """RL from every trained model with one budget per algorithm (not IL's compute controls), then the greedy
    evaluation of each result; its rows are labelled `{label}@{algo}`."""
    jobs, started = [], []
    for t, manifest in zip(runs, manifests, strict=True):
        label, seed = t.label, t.seed
        if label.is_control:
            continue
        model = RunLayout(out).train(label, seed) / manifest["model"]
        for algo in preset.rl_algos:
            folder = RunLayout(out).rl(label, seed, algo)
            config = replace(
                preset.rl, algo=algo, seed=seed, max_steps=preset.max_steps, max_new_tokens=_new_tokens(preset, label)
            )
            jobs.append(
                Job(
                    rl,
                    (model, preset.env, folder, config),
                    {"prompt": preset.prompt},
                    total=0 if (folder / MANIFEST).exists() else config.iterations,
                    cost=_new_tokens(preset, label),
                )
            )
            started.append((replace(t.reported, algo=algo), seed, folder, _compute(manifest)))
    rl_manifests = run_jobs(jobs, f"rl {len(jobs)} models", workers=workers, progress=progress)
    evals = []
    for (label, seed, folder, trained), manifest in zip(started, rl_manifests, strict=True):
        args = (preset, out, label, seed, folder / manifest["model"], {**trained, "rl_iterations": manifest["count"]})
        total = _episodes_to_evaluate(preset, out, label, seed)
        evals.append(Job(_evaluate, args, total=total, cost=_new_tokens(preset, label)))
    rows = run_jobs(evals, f"evaluate {len(evals)} agents after RL", workers=workers, progress=progress)
    return [row for job_rows in rows for row in job_rows]


def _episodes_to_evaluate(preset: Preset, out: Path, label: Label, seed: int, evaluation: str = "greedy") -> int:
    """Episodes a model's evaluation has still to play (evaluations on disk are read, not redone)."""
    todo = [s for s in preset.splits if not RunLayout(out).eval_file(label, seed, s, evaluation).exists()]
    return sum(_split_episodes(preset.env, s, preset.eval_episodes) for s in todo)


@cache
def _split_episodes(env: str, split: str, episodes: int) -> int:
    """How many of `episodes` a split holds (tau-retail's id_test has 18 tasks)."""
    with opened(env, split) as instance:  # adapters start their processes lazily: listing tasks costs nothing
        return len(instance.tasks(episodes))


def _mean_chars(data: dict[str, Path]) -> dict[str, float]:
    """Mean characters per record of each kind of training data a stage can use (the jobs' cost estimate)."""
    mean = {}
    for kind, directory in data.items():
        records = load_records(directory)
        mean[kind] = sum(len(r["prompt"]) + len(r["completion"]) for r in records) / max(1, len(records))
    return {
        "expert": mean["il"],
        "iwm": mean["iwm"],
        **{f"{k}+expert": (mean[k] + mean["il"]) / 2 for k in RATIONALES if k in mean},
        **{f"expert+{m}": mean["il"] + mean["iwm"] for m in AUXILIARY},  # both kinds in every batch
    }


def _new_tokens(preset: Preset, label: Label | str) -> int:
    """The generation budget per step: SR's models may write a thought before their action."""
    thinks = (label if isinstance(label, Label) else Label.parse(label)).thinks
    return preset.sr_max_new_tokens if thinks else preset.max_new_tokens


def _compute(manifest: dict[str, Any]) -> dict[str, int]:
    """What a train stage spent: optimizer steps and tokens processed."""
    stages = manifest["stages"]
    checkpoint = sum(s["steps"] for s in stages[:-1]) + stages[-1].get("best_step", stages[-1]["steps"])
    return {
        "train_steps": manifest["count"],
        "train_tokens": sum(s.get("tokens", 0) for s in stages),
        "checkpoint_step": checkpoint,  # the step of the model evaluated (validation's choice, or the last)
    }


def _evaluate(
    preset: Preset,
    out: Path,
    label: Label,
    seed: int,
    model: Path | None,
    compute: dict[str, int] | None = None,
    *,
    evaluation: str = "greedy",
    progress: Progress = no_progress,
) -> list[dict[str, Any]]:
    """Evaluate one model on every split of `preset` the `evaluation` way (`EVALUATIONS`); evaluations already
    on disk are read, not redone."""
    rows = []
    agent: Agent | None = None  # loaded once, for the first split that needs it
    for split in preset.splits:
        path = RunLayout(out).eval_file(label, seed, split, evaluation)
        if path.exists():
            rows.append(json.loads(path.read_text())["summary"])
            continue
        if agent is None:
            agent = make_agent(
                model,
                name=str(label),
                max_new_tokens=_new_tokens(preset, label),
                seed=seed,
                backend=preset.writer.backend,
                decision="score" if evaluation == "score" else "generate",
                temperature=preset.sample_temperature if evaluation == "sample" else 0.0,
            )
        summary = evaluate(
            agent,
            preset.env,
            split,
            preset.eval_episodes,
            path,
            prompt=preset.prompt,
            max_steps=preset.max_steps,
            batch_size=preset.eval_batch_size,
            labels={"method": str(label), "seed": seed, "evaluation": evaluation, **(compute or {})},
            description=f"eval {label} seed {seed} {split}",
            progress=progress,
        )
        rows.append(summary)
    return rows
