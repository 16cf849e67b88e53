"""Every run-level setting in one place: the presets, each environment's changes to them, and how `run`,
`sweep` and `eval` override them.

A `Preset` holds the stage configs a run hands down (`TrainConfig`, `PromptConfig`, `WriterConfig`,
`TinyConfig`, `RLConfig`) beside the run's own settings; `firsthand run` and `firsthand sweep` take one option
per field (`options.with_overrides`: nested fields flattened, `tiny` and `rl` ones prefixed), so every stage
setting a run uses can be set from the command line, with its docstring as its help.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from typing import Any

from firsthand.contract import InvalidInputError, UnknownNameError
from firsthand.models import TinyConfig, check_model_name
from firsthand.policy_gradient import ALGORITHMS
from firsthand.prompts import PromptConfig
from firsthand.registry import opened, parse_name
from firsthand.stages.branch import BranchConfig
from firsthand.stages.build import WriterConfig
from firsthand.stages.evaluate import ACTION_TOKENS, THOUGHT_TOKENS
from firsthand.stages.report import EVALUATIONS
from firsthand.stages.rl import RLConfig
from firsthand.stages.train import AUXILIARY, TRAIN_METHODS, TrainConfig
from firsthand.stats import BUDGET_RULES
from firsthand.validation import SELECT_BY

log = logging.getLogger(__name__)


RL_SETTINGS = RLConfig(iterations=8, learning_rate=1e-4, temperature=0.5)
"""`run --with-rl`'s budget for the tiny model: 8 iterations of 16 tasks x 8 rollouts. Temperature 0.5 and
learning rate 1e-4 were chosen on IL alone (docs/rl.md: at 1.0 the tiny model's samples are mostly noise)."""


@dataclass
class Preset:
    """Everything a run needs; `firsthand run --preset NAME` picks one of PRESETS."""

    name: str
    """The preset's name (`PRESETS`); a run folder refuses to resume under another."""
    env: str = "household"
    """Environment name, with arguments as NAME:key=value:... (`firsthand envs` lists them)."""
    model: str = "tiny"
    """tiny (trained from scratch), smollm2-135m, gemma3-270m, or a local model folder."""
    train_episodes: int = 400
    """Expert trajectories collected on the train split (the paper's low-data regime: ALFWorld has ~3,500)."""
    k: int = 8
    """Alternatives per expert state (IWM uses all; SR contrasts `sr_alternatives` of them)."""
    sr_alternatives: int = 2
    """Alternatives each reflection contrasts with the expert's action (of the K branched)."""
    eval_episodes: int = 50
    """Episodes per split and seed."""
    splits: tuple[str, ...] = ("id_test", "ood_test")
    """Test splits every model is evaluated on (household also has novel_test)."""
    seeds: tuple[int, ...] = (0,)
    """Seeds: each trains every method from its own initialisation and data order."""
    methods: tuple[str, ...] = ("il", "iwm", "sr")
    """Training methods (`stages.train.TRAIN_METHODS`): il, iwm, sr, iwm+sr, star, iwm-aux, actobs."""
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
    select_by: str = "success"
    """What chooses each checkpoint and IL's budget: success on the validation episodes (teacher-forced
    accuracy breaking ties), or accuracy (teacher-forced expert-action accuracy on the validation states
    alone; no episode is played). The same for every method."""
    patience: int = 4
    """IL's budget search stops after this many validations without a better one."""
    max_epochs: float = 40.0
    """The longest IL's budget search may train, in epochs over the expert data."""
    evaluations: tuple[str, ...] = ("greedy", "score")
    """How each model is evaluated: greedy (free generation, parsed), score (the likeliest valid action:
    decisions apart from spelling; only where the environment lists valid actions), sample (generation at
    `sample_temperature`, the paper's evaluation). Each has its tables."""
    sample_temperature: float = 0.4
    """Temperature of the `sample` evaluation (the paper's 0.4)."""
    aux_weights: tuple[float, ...] = (0.01, 0.05, 0.2, 1.0)
    """The grid of iwm-aux's and actobs's weight lambda: under rule auto each seed trains one model per value
    and keeps the one its validation scores best (the same rule for every seed; the choice is reported). One
    value: that lambda, no choice made."""
    max_steps: int | None = None
    """Step limit of evaluation episodes (None: the adapter's `default_max_steps`)."""
    eval_batch_size: int = 50
    """Episodes stepped together in evaluation and validation (one generate call per step)."""
    max_new_tokens: int = ACTION_TOKENS
    """Generation budget per step for IL/IWM; SR gets `sr_max_new_tokens` for its thought."""
    sr_max_new_tokens: int = THOUGHT_TOKENS
    """Generation budget per step of models that think before they act (SR, STaR)."""
    prompt: PromptConfig = field(default_factory=lambda: PromptConfig(history=2, show_valid_actions=False))
    """How states are rendered into prompts, in training data, validation and evaluation alike."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, batch_size=4, learning_rate=1e-3))
    """Small batches: at the same tokens, more steps of batch 4 beat fewer of batch 16 (docs/calibration.md)."""
    tiny: TinyConfig = field(default_factory=TinyConfig)
    """Shape and walk pretraining of the `tiny` model (used when model == "tiny")."""
    workers: int = 1
    """Worker processes for collection and branching."""
    arms: tuple[int, ...] = ()
    """Further demonstration counts (the low-data regime of the paper's Fig. 4a): after the run itself, the same
    run on the first N demonstrations, into out/demos-N, each with its own validated budgets and tables."""
    with_rl: bool = False
    """RL after supervised training (`firsthand run --with-rl`): every trained model continues with the one RL
    budget `rl`, once per algorithm of `rl_algos`, and is evaluated again."""
    rl: RLConfig = field(default_factory=lambda: RL_SETTINGS)
    """The one RL budget of `with_rl` (its algorithm and seed are set per training)."""
    rl_algos: tuple[str, ...] = ("grpo",)
    """RL algorithms every trained model continues with under `with_rl` (grpo, gigpo)."""
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
        validation_tasks=40,
        # At 40 demonstrations IL wins 0-4 of 40 validation episodes: checkpoints chosen by that are chosen by
        # noise, and SR's validations (a thought at every step of every episode) took half of make run's time.
        select_by="accuracy",
    ),
    # The fair comparison (docs/results.md): IL, IWM, SR and IWM+SR under auto with matched beside it, each
    # method at its own validated checkpoint, IL of the same steps for every method, 5 seeds, 300 episodes
    # per split, both decision modes, at 150 demonstrations and at a quarter of them. Household holds 8 goal
    # kinds out of every expert target, for the split novel_test; resumable, to be run in parts.
    "standard": Preset(
        name="standard",
        env="household:novel_objects=true",
        splits=("id_test", "ood_test", "novel_test"),
        arms=(38,),
        train_episodes=150,
        tiny=TinyConfig(layers=2),
        seeds=(0, 1, 2, 3, 4),
        eval_episodes=300,
        methods=("il", "iwm", "sr", "iwm+sr"),
        budgets=("auto", "matched"),
        compute_control=True,
        validation_tasks=50,
        evaluations=("greedy", "score", "sample"),
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


NESTED = ("writer", "prompt", "train", "tiny", "rl")
"""The Preset fields that are stage configs: their own fields are overridden one by one (`get_preset`)."""


def preset_from_dict(saved: dict[str, Any]) -> Preset:
    """The Preset a run saved (preset.json, results.json's `config`): lists back to tuples, stage configs
    rebuilt; a setting added since keeps its default, one this version does not know is refused."""

    def rebuilt(cls: type, values: dict[str, Any], where: str) -> Any:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInputError(f"{where} holds settings this version does not know: {unknown!r}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    plain = {k: v for k, v in saved.items() if k not in NESTED}
    nested = {k: rebuilt(type(getattr(PRESETS["smoke"], k)), v, k) for k, v in saved.items() if k in NESTED}
    return replace(rebuilt(Preset, plain, "the saved preset"), **nested)


def get_preset(name: str, nested: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> Preset:
    """Preset `name` with `overrides` of its fields (None: not given), then the environment's settings
    where the preset keeps the generic value, then `nested`: single fields of its stage configs
    (``{"train": {"learning_rate": 5e-4}}``), applied last so that they stand over both. Every value is
    checked here, before any work."""
    nested = {k: dict(v) for k, v in (nested or {}).items() if v}
    unknown = set(nested) - set(NESTED)
    if unknown:
        raise UnknownNameError(f"unknown settings group {sorted(unknown)!r}; valid groups: {', '.join(NESTED)}")
    if name not in PRESETS:
        raise UnknownNameError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    _check_overrides(overrides, nested)
    preset = _with_model_settings(PRESETS[name], overrides, nested)
    for split in ("train", *preset.splits):  # a bad name, argument or split is refused before any warning or work
        with opened(preset.env, split):
            pass
    check_model_name(preset.model)
    env = parse_name(preset.env)[0]  # the adapter's settings hold whatever arguments its name carries
    if env not in ENV_SETTINGS:
        log.warning(
            "environment %r has no settings in firsthand.settings.ENV_SETTINGS: the generic ones apply (step limit: "
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
    preset = replace(preset, **settings)
    preset = replace(preset, **{group: replace(getattr(preset, group), **values) for group, values in nested.items()})
    _check_preset(preset)
    return preset


def _check_overrides(overrides: dict[str, Any], nested: dict[str, dict[str, Any]]) -> None:
    """Refuse a bad top-level override, naming it; move the writer's and RL's into `nested`; lists as tuples."""
    for key in ("train_episodes", "eval_episodes", "jobs", "validation_tasks", "validate_every", "patience"):
        if key in overrides and overrides[key] < 1:
            raise InvalidInputError(f"{key} must be at least 1, got {overrides[key]!r}")
    _check_names(overrides)
    if "k" in overrides:  # checked here, before collection runs, by branching's own rule
        BranchConfig(k=overrides["k"]).validate()
    if "rl_iterations" in overrides:  # applied to the preset's own RL settings
        nested.setdefault("rl", {})["iterations"] = overrides.pop("rl_iterations")
    for key in ("reflector", "backend", "base_url"):  # the writer's, named at the top for the Python API
        if key in overrides:
            nested.setdefault("writer", {})[key] = overrides.pop(key)
    if "aux_weights" in overrides:
        overrides["aux_weights"] = tuple(float(w) for w in overrides["aux_weights"])
        if not overrides["aux_weights"] or min(overrides["aux_weights"]) < 0:
            raise InvalidInputError(
                f"aux_weights must be one or more weights >= 0, got {list(overrides['aux_weights'])!r}"
            )
    if "splits" in overrides:
        overrides["splits"] = tuple(overrides["splits"])
        if not overrides["splits"] or "train" in overrides["splits"]:
            raise InvalidInputError(f"splits are the test splits to evaluate on, got {list(overrides['splits'])!r}")
    if "seeds" in overrides:
        overrides["seeds"] = tuple(overrides["seeds"])
        if not overrides["seeds"] or len(set(overrides["seeds"])) != len(overrides["seeds"]):
            raise InvalidInputError(f"seeds must be distinct and at least one, got {list(overrides['seeds'])!r}")


def _check_preset(preset: Preset) -> None:
    """Refuse a resolved preset whose stage configs or combination of settings cannot run."""
    preset.train.validate()
    preset.rl.validate()
    if preset.select_by not in SELECT_BY:
        raise InvalidInputError(
            f"--select-by {preset.select_by!r} is not a selection; choose one of: {', '.join(SELECT_BY)}"
        )
    for n in preset.arms:
        if not 1 <= n < preset.train_episodes:
            raise InvalidInputError(
                f"--arms {n!r}: an arm trains on fewer demonstrations than the run's {preset.train_episodes} "
                f"(--train-episodes); choose counts from 1 to {preset.train_episodes - 1}"
            )
    shape = ("vocab_size", "hidden_size", "intermediate_size", "layers", "heads", "max_positions", "walk_batch")
    for name in shape:
        if getattr(preset.tiny, name) < 1:
            raise InvalidInputError(
                f"--tiny-{name.replace('_', '-')} must be at least 1, got {getattr(preset.tiny, name)!r}"
            )
    if preset.writer.reflector not in ("template", "policy") and preset.writer.base_url is None:
        check_model_name(preset.writer.reflector)  # a served model's name is the server's to check
    grid = [m for m in preset.methods if m in AUXILIARY]
    weights = ",".join(f"{w:g}" for w in preset.aux_weights)
    if grid and len(preset.aux_weights) > 1 and "auto" not in preset.budgets:
        raise InvalidInputError(
            f"{', '.join(grid)} choose their weight from --aux-weights {weights} "
            f"on validation, which only the budget rule auto runs: add auto to --budgets, or give one weight "
            f"(--aux-weights 0.05)"
        )


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


def _with_model_settings(preset: Preset, overrides: dict[str, Any], nested: dict[str, dict[str, Any]]) -> Preset:
    """`preset` with `overrides`: a pretrained model trains with `PRETRAINED_TRAIN` unless told otherwise, and
    writers no model of the run can be are refused (the writer as `nested` will set it)."""
    preset = replace(preset, **overrides)
    if preset.model != "tiny" and "train" not in overrides:
        preset = replace(preset, train=replace(PRETRAINED_TRAIN, max_length=preset.train.max_length))
    _check_writers(replace(preset, writer=replace(preset.writer, **nested.get("writer", {}))))
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


def eval_settings(env: str, thinks: bool = False) -> dict[str, Any]:
    """What `run` evaluates with on `env` (step limit, generation budget, batch): `firsthand eval`'s defaults,
    so that both commands give the same numbers for the same model. `thinks`: an SR model, which writes a
    thought before its action. The generic preset's fields with the environment's changes (`ENV_SETTINGS`)."""
    settings = {**{f.name: f.default for f in fields(Preset) if f.name in _EVAL_FIELDS}}
    settings.update({k: v for k, v in ENV_SETTINGS.get(parse_name(env)[0], {}).items() if k in _EVAL_FIELDS})
    return {
        "max_steps": settings["max_steps"],
        "max_new_tokens": settings["sr_max_new_tokens" if thinks else "max_new_tokens"],
        "batch_size": settings["eval_batch_size"],
    }


_EVAL_FIELDS = ("max_steps", "max_new_tokens", "sr_max_new_tokens", "eval_batch_size")


PRESET_PREFIXES = {"tiny": "tiny_", "rl": "rl_"}
"""How `run` and `sweep` name the options of the nested configs: `--tiny-layers`, `--rl-iterations`; the
fields of `train`, `prompt` and `writer` are named as in `firsthand train` and `firsthand build`."""

PRESET_EXCLUDED = {
    "name",
    *(f"train.{f}" for f in ("seed", "budget", "il_steps", "steps", "validate_every", "patience", "aux_weight")),
    "tiny.seed",
    "tiny.walk_tasks",
    *(f"rl.{f}" for f in ("algo", "seed", "max_steps", "max_new_tokens")),
}
"""Fields a run sets itself, so no option: each training's seed, budget rule and validation (from `seeds`,
`budgets`, `validate_every`, `patience`), lambda (from `aux_weights`), the tiny model's seed and walk tasks,
each RL run's algorithm, seed, step limit and generation budget (from `rl_algos` and the evaluation's)."""
