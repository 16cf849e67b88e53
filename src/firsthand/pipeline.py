"""The main job: collect -> branch -> build -> train IL, IWM and SR -> evaluate -> report.

Presets are plain Python objects; every stage writes its own directory under the run directory,
so an interrupted run picks up where it stopped and a finished stage is never redone.

    runs/quickstart/
      experts/  branches/  data/{il,iwm,sr}/  models/tiny-seed0/
      train/{il,iwm,sr}-seed0/  eval/{method}-seed0-{split}.json
      rl/{method}-seed0-{algo}/  eval/{method}@{algo}-seed0-{split}.json   (with --with-rl)
      results.json  results.md  results.png  report.html  preset.json
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from firsthand.artifacts import MANIFEST, check_output_dir, claimed, load_records, write_json_atomic
from firsthand.contract import METHODS, RATIONALES, InvalidInputError, UnknownNameError
from firsthand.inference import Agent
from firsthand.jobs import Job, default_workers, run_jobs
from firsthand.models import TinyConfig, check_model_name, starting_model
from firsthand.policy_gradient import ALGORITHMS
from firsthand.progress import Progress, no_progress
from firsthand.prompts import PromptConfig
from firsthand.registry import opened, parse_name
from firsthand.report_html import write_html
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.build import AllDropped, BuildConfig, WriterConfig, build
from firsthand.stages.collect import collect
from firsthand.stages.evaluate import ACTION_TOKENS, THOUGHT_TOKENS, evaluate, make_agent
from firsthand.stages.report import EVALUATIONS, eval_folder, write_report
from firsthand.stages.rl import RLConfig, rl
from firsthand.stages.train import AUXILIARY, TRAIN_METHODS, TrainConfig, needed_data, planned_stages, train
from firsthand.stats import BUDGET_RULES

log = logging.getLogger(__name__)


RL_SETTINGS = RLConfig(iterations=8, learning_rate=1e-4, temperature=0.5)
"""`run --with-rl`'s budget for the tiny model: 8 iterations of 16 tasks x 8 rollouts. Temperature 0.5 and
learning rate 1e-4 were chosen on IL alone (docs/rl.md: at 1.0 the tiny model's samples are mostly noise)."""


@dataclass
class Preset:
    """Everything a run needs; `firsthand run --preset NAME` picks one of PRESETS."""

    name: str
    env: str = "household"
    model: str = "tiny"
    train_episodes: int = 400
    """Expert trajectories collected on the train split (the paper's low-data regime: ALFWorld has ~3,500)."""
    k: int = 8
    """Alternatives per expert state (IWM uses all; SR contrasts `sr_alternatives` of them)."""
    sr_alternatives: int = 2
    eval_episodes: int = 50
    """Episodes per split and seed."""
    splits: tuple[str, ...] = ("id_test", "ood_test")
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = ("il", "iwm", "sr")
    """Training methods (see `stages.train.TRAIN_METHODS`: il, iwm, sr, iwm+sr, star)."""
    writer: WriterConfig = field(default_factory=WriterConfig)
    """Who writes SR's reflections (`reflector`: template, policy = `model`, another model or a served one)
    and STaR's rationales (always `model`: STaR keeps what the policy itself got right)."""
    budgets: tuple[str, ...] = ("auto",)
    """Budget rules the methods are trained under (`stats.plan_steps`): auto (IL trains until its validation
    stops improving; its best step is the budget the paper's rule gives every method, each reported at the
    checkpoint its own validation picks), paper (from IL's fixed epochs), matched (every method IL's steps,
    from the validated budget when auto is among the rules). IL is trained once."""
    compute_control: bool = False
    """Also train IL for exactly as many optimizer steps as each other method ("IL, same steps"), so that
    more steps and early experience can be told apart (one IL run per distinct step count)."""
    validation_tasks: int = 20
    """Validation episodes (training tasks after the demonstrations' ones), played at each validation."""
    validate_every: int = 200
    """Steps between two validations of a training (rule auto)."""
    patience: int = 4
    """IL's budget search stops after this many validations without a better one."""
    max_epochs: float = 40.0
    """The longest IL's budget search may train, in epochs over the expert data."""
    evaluations: tuple[str, ...] = ("greedy", "score")
    """How each model is evaluated: greedy (free generation, parsed), score (the likeliest valid action:
    decisions apart from spelling; only where the environment lists valid actions), sample (generation at
    `sample_temperature`, the paper's evaluation). Each has its tables."""
    sample_temperature: float = 0.4
    aux_weights: tuple[float, ...] = (0.01, 0.05, 0.2, 1.0)
    """The grid of iwm-aux's and actobs's weight lambda: under rule auto each seed trains one model per value
    and keeps the one its validation scores best (the same rule for every seed; the choice is reported). One
    value, or no validation: `train.aux_weight` alone."""
    max_steps: int | None = None
    """Step limit of evaluation episodes (None: the adapter's `default_max_steps`)."""
    eval_batch_size: int = 50
    max_new_tokens: int = ACTION_TOKENS
    """Generation budget per step for IL/IWM; SR gets `sr_max_new_tokens` for its thought."""
    sr_max_new_tokens: int = THOUGHT_TOKENS
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig(history=2, show_valid_actions=False))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, batch_size=4, learning_rate=1e-3))
    """Small batches: at the same tokens, more steps of batch 4 beat fewer of batch 16 (docs/calibration.md)."""
    tiny: TinyConfig = field(default_factory=TinyConfig)
    """Shape and walk pretraining of the `tiny` model (used when model == "tiny")."""
    workers: int = 1
    """Worker processes for collection and branching."""
    with_rl: bool = False
    """RL after supervised training (`firsthand run --with-rl`): every trained model continues with the one RL
    budget `rl`, once per algorithm of `rl_algos`, and is evaluated again."""
    rl: RLConfig = field(default_factory=lambda: RL_SETTINGS)
    rl_algos: tuple[str, ...] = ("grpo",)
    jobs: int | None = None
    """Trainings and evaluations run side by side in this many processes, each with cores / jobs threads
    (None: `jobs.default_workers()`, 1 on a GPU). Results do not depend on the order; the thread count
    changes float rounding, so runs with other values differ in the last digits."""


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        train_episodes=12,
        k=2,
        sr_alternatives=1,
        eval_episodes=4,
        max_steps=4,
        train=TrainConfig(epochs=1, batch_size=8, max_length=768),
        sr_max_new_tokens=64,
        rl=RLConfig(iterations=1, tasks_per_iteration=2, group_size=2, learning_rate=1e-4, temperature=0.5),
        validation_tasks=3,
        validate_every=4,
        patience=1,
        max_epochs=3,
    ),
    # The fair comparison at the size `make run` fits in 15 minutes on the 2-core machine: IL trained until its
    # validation stops improving, every method from that budget at its own best checkpoint, two seeds, both
    # decision modes. 40 demonstrations (the low-data arm, where the paper's gains are largest), batches of 8
    # at 2e-3 so IL converges in fewer steps (the same settings for every method; docs/calibration.md).
    "quickstart": Preset(
        name="quickstart",
        seeds=(0, 1),
        train_episodes=40,
        tiny=TinyConfig(layers=2),
        train=TrainConfig(epochs=6, batch_size=8, learning_rate=2e-3),
        validate_every=100,
        patience=4,
        validation_tasks=40,  # at IL's low success here 20 episodes make the choice of step mostly noise
    ),
    # The fair comparison (docs/results.md): IL, IWM, SR and IWM+SR under auto with matched beside it, each
    # method at its own validated checkpoint, IL of the same steps for every method, 5 seeds, 300 episodes
    # per split, both decision modes; resumable, to be run in parts.
    "standard": Preset(
        name="standard",
        train_episodes=150,
        tiny=TinyConfig(layers=2),
        seeds=(0, 1, 2, 3, 4),
        eval_episodes=300,
        methods=("il", "iwm", "sr", "iwm+sr"),
        budgets=("auto", "matched"),
        compute_control=True,
        validation_tasks=50,
    ),
}


PRETRAINED_TRAIN = TrainConfig(epochs=2, batch_size=8, learning_rate=2e-4, lora=True)
"""How `run` trains a pretrained model (any --model but tiny) unless told otherwise: LoRA at 2e-4 for the paper's
2 epochs. The presets' settings are the tiny model's (learning rate 1e-3 from scratch), which would wreck a
pretrained model's weights."""

ENV_SETTINGS: dict[str, dict[str, Any]] = {
    # The quickstart's calibration (docs/calibration.md): 300 demonstrations x 6 epochs is the most IL
    # training that keeps `make run` within 15 minutes here.
    "household": dict(
        train_episodes=300,
        train=TrainConfig(epochs=6, batch_size=4, learning_rate=1e-3),
        # Every past action in the prompt: IL's success unchanged, its `go to` loops gone (docs/history.md).
        prompt=PromptConfig(history=2, show_valid_actions=False, past_actions=True),
    ),
    # Open action space; calls with arguments are long, and the current request and the function
    # signatures are only in earlier observations, so prompts keep more history.
    "bfcl": dict(
        max_new_tokens=96,
        prompt=PromptConfig(history=4, show_valid_actions=False, max_observation_chars=600),
    ),
    # Short valid-action lists (5-40); one 126 MB JVM per instance.
    "textworld-express": dict(eval_batch_size=32),
    "tau-retail": {},
    "textworld-cooking": {},
    # Long observations: fewer environments stepped together (prompts of ~1,000 tokens).
    "scienceworld": dict(eval_batch_size=25),
}
"""Per-environment changes to the presets' generic defaults (generation budgets, prompt shape, how many
environment instances evaluation keeps alive). Step limits are the adapters' own `default_max_steps`, so the
Python API, `eval` and `run` play the same episodes."""


def get_preset(name: str, **overrides: Any) -> Preset:
    if name not in PRESETS:
        raise UnknownNameError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in ("train_episodes", "eval_episodes", "jobs", "validation_tasks", "validate_every", "patience"):
        if key in overrides and overrides[key] < 1:
            raise InvalidInputError(f"{key} must be at least 1, got {overrides[key]!r}")
    _check_names(overrides)
    if "k" in overrides:  # checked here, before collection runs, by branching's own rule
        BranchConfig(k=overrides["k"]).validate()
    if "rl_iterations" in overrides:  # applied to the preset's own RL settings
        overrides["rl"] = replace(PRESETS[name].rl, iterations=overrides.pop("rl_iterations"))
        overrides["rl"].validate()
    if "splits" in overrides:
        overrides["splits"] = tuple(overrides["splits"])
        if not overrides["splits"] or "train" in overrides["splits"]:
            raise InvalidInputError(f"splits are the test splits to evaluate on, got {list(overrides['splits'])!r}")
    if "seeds" in overrides:
        overrides["seeds"] = tuple(overrides["seeds"])
        if not overrides["seeds"] or len(set(overrides["seeds"])) != len(overrides["seeds"]):
            raise InvalidInputError(f"seeds must be distinct and at least one, got {list(overrides['seeds'])!r}")
    preset = _with_model_settings(PRESETS[name], overrides)
    for split in ("train", *preset.splits):  # a bad name, argument or split is refused before any warning or work
        with opened(preset.env, split):
            pass
    check_model_name(preset.model)
    if preset.writer.reflector not in ("template", "policy") and preset.writer.base_url is None:
        check_model_name(preset.writer.reflector)  # a served model's name is the server's to check
    env = parse_name(preset.env)[0]  # the adapter's settings hold whatever arguments its name carries
    if env not in ENV_SETTINGS:
        log.warning(
            "environment %r has no settings in firsthand.pipeline.ENV_SETTINGS: the generic ones apply (step limit: "
            "the adapter's default_max_steps; prompt: the last 2 steps); choose others with run's options",
            preset.env,
        )
    # An environment's settings replace generic defaults only: a preset's own choice (smoke's 4-step
    # episodes) and explicit overrides stand.
    generic = Preset(name=preset.name)
    settings = {
        k: v
        for k, v in ENV_SETTINGS.get(env, {}).items()
        if k not in overrides and getattr(preset, k) == getattr(generic, k)
    }
    return replace(preset, **settings)


def _check_names(overrides: dict[str, Any]) -> None:
    """The overrides that list names (methods, budget rules, evaluations, RL algorithms), as tuples of known
    ones; an unknown name is refused, listing the valid ones."""
    for key, valid, what in (
        ("methods", TRAIN_METHODS, "methods"),
        ("budgets", BUDGET_RULES, "budgets"),
        ("evaluations", EVALUATIONS, "evaluations"),
        ("rl_algos", ALGORITHMS, "RL algorithms"),
    ):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
            unknown = [v for v in overrides[key] if v not in valid]
            if unknown or not overrides[key]:
                raise UnknownNameError(f"unknown {what} {unknown!r}; valid {what}: {', '.join(valid)}")


def _with_model_settings(preset: Preset, overrides: dict[str, Any]) -> Preset:
    """`preset` with `overrides`: the writer's options go into its writer settings, a pretrained model trains
    with `PRETRAINED_TRAIN` unless told otherwise, and writers no model of the run can be are refused."""
    writing = {k: overrides.pop(k) for k in ("reflector", "backend", "base_url") if k in overrides}
    if writing:
        overrides["writer"] = replace(overrides.get("writer", preset.writer), **writing)
    preset = replace(preset, **overrides)
    if preset.model != "tiny" and "train" not in overrides:
        preset = replace(preset, train=replace(PRETRAINED_TRAIN, max_length=preset.train.max_length))
    _check_writers(preset)
    return preset


def _check_writers(preset: Preset) -> None:
    """Refuse, before any work, a run whose reflections or rationales no model of it can write."""
    writes = preset.writer.reflector == "policy" or "star" in preset.methods
    if writes and preset.model == "tiny":
        what = "STaR's rationales" if "star" in preset.methods else "--reflector policy"
        raise InvalidInputError(
            f"{what} need a policy model that writes language; the tiny model is trained from scratch on actions. "
            f"Run with --model smollm2-135m (or a local model folder), or drop "
            + ("star" if "star" in preset.methods else "the option")
        )


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


def _without_rl(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in ("with_rl", "rl", "rl_algos")}


def eval_settings(env: str, thinks: bool = False) -> dict[str, Any]:
    """What `run` evaluates with on `env` (step limit, generation budget, batch): `firsthand eval`'s defaults,
    so that both commands give the same numbers for the same model. `thinks`: an SR model, which writes a
    thought before its action."""
    preset = get_preset("quickstart", env=env)
    return {
        "max_steps": preset.max_steps,
        "max_new_tokens": preset.sr_max_new_tokens if thinks else preset.max_new_tokens,
        "batch_size": preset.eval_batch_size,
    }


def run(preset: Preset, out: Path, progress: Progress = no_progress, *, branches: Path | None = None) -> dict[str, Any]:
    """Run every stage of `preset` into `out`; return the results (also written to results.json).

    `branches`: a finished branch directory to build the training data from, instead of collecting and
    branching into `out` (the points of a sweep share one collection; see `firsthand.sweep`)."""
    out = Path(out)
    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with claimed(out):  # a second launch on the same folder is refused, not run twice
        return _run(preset, out, progress, branches)


def _run(preset: Preset, out: Path, progress: Progress, branches: Path | None) -> dict[str, Any]:
    """`run` inside its claim on `out`."""
    preset_path = out / "preset.json"
    resolved = json.loads(json.dumps(asdict(preset)))
    # RL is added to a finished run without redoing it: its settings are checked by each RL stage instead
    if preset_path.exists() and _without_rl(json.loads(preset_path.read_text())) != _without_rl(resolved):
        raise InvalidInputError(
            f"{str(out)!r} holds a run with other settings; resume it with the same preset and options, "
            f"or choose another --out"
        )
    write_json_atomic(preset_path, resolved)

    if branches is None:
        collected = collect_experts(preset, out / "experts", progress)  # fewer when the split is smaller
        with progress("branch", collected) as advance:
            branching = BranchConfig(k=preset.k)
            branch(out / "experts", out / "branches", branching, workers=preset.workers, on_progress=advance)
        branches = out / "branches"
    data = {}
    not_trained: dict[str, str] = {}
    kinds = [*METHODS, *(["star"] if "star" in preset.methods else [])]
    with progress("build", len(kinds)) as advance:
        for method in kinds:
            cfg = BuildConfig(
                prompt=preset.prompt, sr_alternatives=preset.sr_alternatives, writer=_writer(preset, method)
            )
            try:
                build(method, branches, out / "data" / method, cfg, progress=progress)
                data[method] = out / "data" / method
            except AllDropped as error:  # a weak writer: the other methods still run, the report says why
                log.warning("%s", error)
                not_trained.update({m: str(error) for m in preset.methods if method in needed_data(m)})
            advance(1)
    preset = replace(preset, methods=tuple(m for m in preset.methods if m not in not_trained))

    bases = {}
    for seed in preset.seeds:
        tiny = replace(preset.tiny, seed=seed, walk_tasks=preset.train_episodes)
        folder = out / "models" / f"tiny-seed{seed}"
        bases[seed] = starting_model(preset.model, data.values(), folder, tiny=tiny, env=preset.env, progress=progress)
    workers = preset.jobs or default_workers()
    validators = _validators(preset, out, progress) if "auto" in preset.budgets else {}
    chars = _mean_chars(data)

    def jobs_of(planned: list[Training]) -> list[Job]:
        return [
            Job(
                train,
                (t.method, data, bases[t.seed], out / "train" / f"{t.label}-seed{t.seed}", t.config),
                {"validator": validators.get(_thinks(t.method))} if t.config.validate_every else {},
                # a finished training counts for nothing: the bar shows the work still to do
                total=0 if (out / "train" / f"{t.label}-seed{t.seed}" / MANIFEST).exists() else t.steps,
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
                args = (preset, out, "prompt", seed, bases[seed])
                evals.append(Job(_evaluate, args, {"evaluation": evaluation}, cost=preset.max_new_tokens))
            for t, manifest in zip(runs, manifests, strict=True):
                if t.seed == seed:
                    model = out / "train" / f"{t.label}-seed{seed}" / manifest["model"]
                    compute = {**_compute(manifest), **({"aux_weight": t.config.aux_weight} if t.shown else {})}
                    args = (preset, out, t.reported, seed, model, compute)
                    evals.append(Job(_evaluate, args, {"evaluation": evaluation}, cost=_new_tokens(preset, t.label)))
            evals.append(Job(_evaluate, (preset, out, "random", seed, None), {"evaluation": evaluation}))
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


@dataclass(frozen=True)
class Training:
    """One training of a run: its label (method and budget rule; `il-steps{N}` for IL of N steps), seed,
    method, settings (measured on validation when `config.validate_every`) and planned stages. `label` names
    its folder; `shown`, when set, the label it is reported under (the chosen point of a lambda grid)."""

    label: str
    seed: int
    method: str
    config: TrainConfig
    stages: list[tuple[str, int]]
    shown: str = ""

    @property
    def steps(self) -> int:
        return sum(steps for _, steps in self.stages)

    @property
    def reported(self) -> str:
        return self.shown or self.label


def _label(method: str, rule: str) -> str:
    """A training's label: the method under rule auto (and IL under any), else `{method}-{rule}`."""
    return method if rule == "auto" or method == "il" else f"{method}-{rule}"


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
        runs.append(Training("il", seed, "il", cfg, planned_stages("il", data, cfg)))
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
                label = _label(method, rule)
                grid = preset.aux_weights if method in AUXILIARY and validated and len(preset.aux_weights) > 1 else ()
                for weight in grid:  # one model per lambda; validation keeps one (`_chosen_weights`)
                    weighted = replace(cfg, aux_weight=weight)
                    seed_runs.append(Training(f"{label}-w{weight:g}", seed, method, weighted, stages, shown=label))
                if not grid:
                    seed_runs.append(Training(label, seed, method, cfg, stages))
        if preset.compute_control:  # IL for exactly as many steps as each method (one run per step count)
            for steps in sorted({t.steps for t in seed_runs}):
                cfg = replace(preset.train, seed=seed, budget="paper", steps=steps)
                seed_runs.append(Training(f"il-steps{steps}", seed, "il", cfg, planned_stages("il", data, cfg)))
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
        choices.setdefault(label, {})[str(seed)] = {
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
    controls = {(t.seed, t.steps) for t in runs if t.label.startswith("il-steps")}
    out: dict[str, dict[str, str]] = {}
    for t in runs:
        if not t.label.startswith("il") and (t.seed, t.steps) in controls:
            out.setdefault(t.reported, {})[str(t.seed)] = f"il-steps{t.steps}"
    return out


def _best_step(manifest: dict[str, Any]) -> int:
    """The optimizer step IL's validation chose (its budget), or its whole training without validation."""
    stage = manifest["stages"][-1]
    return int(stage.get("best_step", manifest["count"]))


def _validators(preset: Preset, out: Path, progress: Progress) -> dict[bool, Any]:
    """The validation of the run's trainings, for models that act (False) and that think first (True): the
    `validation_tasks` training tasks after the demonstrations', their expert trajectories collected into
    out/validation."""
    folder = out / "validation"
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
        )
        for thinks in (False, True)
    }


def validator_from_experts(
    folder: Path, prompt: PromptConfig, *, max_new_tokens: int, max_steps: int | None = None, batch_size: int = 50
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
        if label.startswith("il-steps"):
            continue
        model = out / "train" / f"{label}-seed{seed}" / manifest["model"]
        for algo in preset.rl_algos:
            folder = out / "rl" / f"{label}-seed{seed}-{algo}"
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
            started.append((f"{t.reported}@{algo}", seed, folder, _compute(manifest)))
    rl_manifests = run_jobs(jobs, f"rl {len(jobs)} models", workers=workers, progress=progress)
    evals = []
    for (label, seed, folder, trained), manifest in zip(started, rl_manifests, strict=True):
        args = (preset, out, label, seed, folder / manifest["model"], {**trained, "rl_iterations": manifest["count"]})
        total = _episodes_to_evaluate(preset, out, label, seed)
        evals.append(Job(_evaluate, args, total=total, cost=_new_tokens(preset, label)))
    rows = run_jobs(evals, f"evaluate {len(evals)} agents after RL", workers=workers, progress=progress)
    return [row for job_rows in rows for row in job_rows]


def _episodes_to_evaluate(preset: Preset, out: Path, label: str, seed: int, evaluation: str = "greedy") -> int:
    """Episodes a model's evaluation has still to play (evaluations on disk are read, not redone)."""
    folder = out / eval_folder(evaluation)
    todo = [s for s in preset.splits if not (folder / f"{label}-seed{seed}-{s}.json").exists()]
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


def _new_tokens(preset: Preset, method: str) -> int:
    """The generation budget per step: SR's models may write a thought before their action."""
    thinks = any(k in method.split("@")[0].split("-")[0].split("+") for k in RATIONALES)
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
    method: str,
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
        path = out / eval_folder(evaluation) / f"{method}-seed{seed}-{split}.json"
        if path.exists():
            rows.append(json.loads(path.read_text())["summary"])
            continue
        if agent is None:
            agent = make_agent(
                model,
                name=method,
                max_new_tokens=_new_tokens(preset, method),
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
            labels={"method": method, "seed": seed, "evaluation": evaluation, **(compute or {})},
            description=f"eval {method} seed {seed} {split}",
            progress=progress,
        )
        rows.append(summary)
    return rows
