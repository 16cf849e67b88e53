"""The `firsthand` command line. Each command only wires library calls; heavy imports stay inside."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from firsthand.options import nested_overrides, with_configs, with_overrides
from firsthand.settings import PRESET_EXCLUDED, PRESET_PREFIXES, Preset
from firsthand.stages.branch import BranchConfig
from firsthand.stages.build import BuildConfig
from firsthand.stages.evaluate import EvalConfig
from firsthand.stages.rl import RLConfig
from firsthand.stages.train import TrainConfig

app = typer.Typer(
    help="Train language agents from their own early experience (arXiv 2510.08558).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _setup_logging(verbose: bool) -> None:
    """Log records go to stderr: rich's handler on a terminal, one plain line each elsewhere (a log file is
    searched with grep; rich would wrap it at 80 columns)."""
    import sys

    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(stderr=True)
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)


PROGRESS_LINE_SECONDS = 30.0
"""Off a terminal (a log file, CI, a cluster job) a bar draws nothing, so a line is printed this often."""


@contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal, progress lines elsewhere (only the CLI draws them); yields `advance(n)`.

    Nothing is drawn before the first unit of work is done: a stage that refuses its input says so alone.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not Console().is_terminal:
        with _progress_lines(description, total) as advance:
            yield advance
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, transient=False)
    task = None

    def advance(n: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(description, total=total)
        bar.advance(task, n)

    try:
        yield advance
        advance(0)
        bar.update(task, completed=total)  # the stage is done (all of it, when resumed from its files)
    finally:
        if task is not None:
            bar.stop()


@contextmanager
def _progress_lines(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """`description: done/total (pct) elapsed` at the first unit done, every PROGRESS_LINE_SECONDS, and at the
    end."""
    import time

    start = time.monotonic()
    last: float | None = None
    done = 0
    printed = -1

    def line(count: int) -> None:
        nonlocal printed
        printed = count
        elapsed = int(time.monotonic() - start)
        percent = f" ({100 * count // total}%)" if total else ""
        typer.echo(f"{description}: {count}/{total}{percent} {elapsed // 60}:{elapsed % 60:02d}")

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        if last is None or time.monotonic() - last >= PROGRESS_LINE_SECONDS:
            last = time.monotonic()
            line(done)

    yield advance
    if printed != total:
        line(total)  # the stage is done (all of it, when resumed from its files)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn firsthand's own errors into a one-line message and exit code 2."""
    from firsthand.contract import FirsthandError

    try:
        yield
    except FirsthandError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _summary(title: str, manifest: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for key, value in manifest.get("stats", {}).items():
        table.add_row(key, str(value))
    table.add_row("records", str(manifest["count"]))
    table.add_row("output", str(out))
    Console().print(table)


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")]
Workers = Annotated[int, typer.Option(help="Worker processes.")]
ExecutorName = Annotated[
    str, typer.Option(help="Where shards and jobs run: local (processes of this machine) or ray (docs/scaling.md).")
]
RayAddress = Annotated[
    str | None, typer.Option(help="With --executor ray: auto or HOST:PORT of a running cluster (default: a local one).")
]


def _use_executor(executor: str, address: str | None) -> None:
    from firsthand.executors import use

    use(executor, address)


def _seeds(text: str | None) -> tuple[int, ...] | None:
    from firsthand.contract import InvalidInputError

    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InvalidInputError(f"--seeds takes comma-separated integers (e.g. 0,1,2), got {text!r}") from None


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option (methods, budget rules, algorithms) as a list; None when not given."""
    return text.split(",") if text else None


@app.command()
def envs() -> None:
    """List the registered environments."""
    from firsthand.registry import names

    for name in names():
        typer.echo(name)


@app.command()
def check(
    env: Annotated[str, typer.Option(help="Environment name.")] = "household",
    split: Annotated[str, typer.Option(help="Task split.")] = "train",
    tasks: Annotated[int, typer.Option(help="How many tasks to check.")] = 5,
) -> None:
    """Run the environment contract checks (types, determinism, snapshots, expert) on an adapter."""
    from firsthand.checks import check_env
    from firsthand.registry import opened

    with _errors():
        with opened(env, split) as instance:
            passed = check_env(instance, tasks=tasks)
    typer.echo(f"{env}/{split}: passed {', '.join(passed)} on {tasks} tasks")


@app.command()
def collect(
    out: Annotated[Path, typer.Option(help="Output directory.")],
    env: Annotated[str, typer.Option(help="Environment name (see `firsthand envs`).")] = "household",
    split: Annotated[str, typer.Option(help="Task split: train, id_test or ood_test.")] = "train",
    episodes: Annotated[
        int, typer.Option(help="Tasks to run the expert on (with --from: lines to read, 0 = all).")
    ] = 100,
    source: Annotated[Path | None, typer.Option("--from", help="Import demonstrations from this JSONL file.")] = None,
    skip: Annotated[
        int, typer.Option(help="Run the expert on the tasks after the split's first SKIP (validation tasks).")
    ] = 0,
    workers: Workers = 1,
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    verbose: Verbose = False,
) -> None:
    """Collect expert trajectories (or import demonstrations), each verified by replay."""
    from firsthand.registry import opened
    from firsthand.stages.collect import collect as run_collect

    _setup_logging(verbose)
    with _errors():  # the stage checks its arguments and --out before any work; the bar starts with the work
        _use_executor(executor, ray_address)
        with opened(env, split):  # fail on a bad name before drawing anything
            pass
        total = episodes
        if source is not None and source.is_file():
            total = sum(1 for line in source.open(encoding="utf-8") if line.strip())
            total = min(total, episodes) if episodes else total
        with _progress("collect", total) as advance:
            manifest = run_collect(
                env, split, episodes, out, source=source, workers=workers, skip=skip, on_progress=advance
            )
    _summary(f"collect {env}/{split}", manifest, out)
    rejected = out / "rejected.jsonl"
    if rejected.exists() and rejected.stat().st_size:
        for line in rejected.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            typer.secho(f"line {r['line']}: {r['reason']}", fg=typer.colors.YELLOW, err=True)


@app.command()
@with_configs(config=BranchConfig)
def branch(
    experts: Annotated[Path, typer.Option(help="A `firsthand collect` output directory.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    config: BranchConfig,
    model: Annotated[str | None, typer.Option(help="Policy model for --proposer policy/mixed.")] = None,
    workers: Workers = 1,
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    verbose: Verbose = False,
) -> None:
    """Branch at every expert state: execute K alternatives and record what really happened."""
    from firsthand.artifacts import read_manifest
    from firsthand.stages.branch import branch as run_branch

    _setup_logging(verbose)
    with _errors():
        _use_executor(executor, ray_address)
        config.validate()
        total = read_manifest(experts, "collect")["count"]
        with _progress("branch", total) as advance:
            manifest = run_branch(experts, out, config, model=model, workers=workers, on_progress=advance)
    _summary(f"branch k={config.k} proposer={config.proposer}", manifest, out)


@app.command()
@with_configs(config=BuildConfig)
def build(
    method: Annotated[str, typer.Option(help="il, iwm, sr, or star (the STaR baseline's rationales).")],
    source: Annotated[Path, typer.Option("--from", help="A `firsthand branch` output directory.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    config: BuildConfig,
    verbose: Verbose = False,
) -> None:
    """Build the IL, IWM, SR or STaR training set (prompt/completion, chat files, Parquet); SR's reflections
    from a template or written by a model (--reflector), STaR's by a model."""
    from firsthand.stages.build import build as run_build

    _setup_logging(verbose)
    with _errors():
        manifest = run_build(method, source, out, config, progress=_progress)
    _summary(f"build {method}", manifest, out)
    typer.echo(
        f"read records in full: firsthand samples {out}"
        + ("  (dropped: --dropped)" if (out / "dropped.jsonl").exists() else "")
    )


@app.command()
def samples(
    data: Annotated[Path, typer.Argument(help="A `firsthand build` output directory.")],
    n: Annotated[int, typer.Option("-n", help="How many records.")] = 5,
    dropped: Annotated[
        bool, typer.Option("--dropped", help="Show texts the filters dropped, with their reasons.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Which random records.")] = 0,
) -> None:
    """Print random records of a built dataset in full (prompt and completion), to read what a model wrote."""
    import random

    from firsthand.artifacts import load_records, read_jsonl, read_manifest
    from firsthand.contract import InvalidInputError

    with _errors():
        if n < 1:
            raise InvalidInputError(f"-n must be at least 1, got {n!r}")
        if dropped:  # also after a build whose every text was dropped (it has no manifest then)
            if not (data / "dropped.jsonl").exists():
                raise InvalidInputError(f"{str(data)!r} has no dropped.jsonl: its texts were not written by a model")
            records = list(read_jsonl(data / "dropped.jsonl"))
            stats = {}
        else:
            stats = read_manifest(data, "build").get("stats", {})
            records = load_records(data)
        picks = random.Random(seed).sample(records, min(n, len(records)))
    counted = [f"{k} {v}" for k, v in stats.items() if k.endswith(("_written", "_kept")) or "_filtered_" in k]
    typer.echo(
        f"{data}: {len(records)} {'dropped texts' if dropped else 'records'}"
        + (f"; {', '.join(counted)}" if counted else "")
    )
    for r in picks:
        where = f"{r['trajectory_id']} step {r['step_index']}"
        if dropped:
            typer.echo(f"\n=== {where}: dropped ({', '.join(r['problems'])}); action {r['action']!r} ===\n{r['text']}")
        else:
            typer.echo(f"\n=== {where}: PROMPT ===\n{r['prompt']}\n=== COMPLETION ===\n{r['completion']}")


@app.command()
@with_configs(config=TrainConfig)
def train(
    method: Annotated[str, typer.Option(help="il, iwm, sr or iwm+sr.")],
    expert_data: Annotated[Path, typer.Option(help="The `build --method il` directory (every method uses it).")],
    out: Annotated[Path, typer.Option(help="Run directory (resumes from its checkpoints).")],
    config: TrainConfig,
    data: Annotated[
        list[Path] | None, typer.Option(help="The iwm and/or sr build directories the method needs (repeatable).")
    ] = None,
    model: Annotated[
        str, typer.Option(help="tiny, smollm2-135m, gemma3-270m, or a local Hugging Face model folder.")
    ] = "tiny",
    validation: Annotated[
        Path | None,
        typer.Option(
            help="Expert trajectories of validation tasks (`firsthand collect --skip N`): with --validate-every, "
            "finish at the best checkpoint."
        ),
    ] = None,
    select_by: Annotated[
        str,
        typer.Option(
            help="With --validation: choose the checkpoint by success on the validation episodes (accuracy breaking "
            "ties) or by teacher-forced accuracy alone (no episode played)."
        ),
    ] = "success",
    verbose: Verbose = False,
) -> None:
    """Train with IL, IWM (world model, then IL), SR (reflections + expert) or IWM+SR, under a budget rule."""
    from firsthand.artifacts import check_output_dir, read_manifest
    from firsthand.device import is_main_process, main_process_first
    from firsthand.models import TinyConfig, check_model_name, starting_model
    from firsthand.progress import no_progress
    from firsthand.stages.train import check_data
    from firsthand.stages.train import train as run_train

    _setup_logging(verbose)
    with _errors():
        check_output_dir(out)
        check_model_name(model)
        own = {read_manifest(d, "build")["config"]["method"]: d for d in data or []}  # each names its method
        datasets = {**own, "il": expert_data}
        check_data(method, datasets)  # before any model is built
        checker = None
        if validation is not None:
            from firsthand.contract import RATIONALES
            from firsthand.pipeline import validator_from_experts
            from firsthand.prompts import PromptConfig
            from firsthand.stages.evaluate import ACTION_TOKENS, THOUGHT_TOKENS

            thinks = any(k in method.split("+") for k in RATIONALES)
            checker = validator_from_experts(
                validation,
                PromptConfig(**read_manifest(expert_data, "build")["config"]["prompt"]),  # the data's prompt
                max_new_tokens=THOUGHT_TOKENS if thinks else ACTION_TOKENS,
                thinks=thinks,
                select_by=select_by,
            )
        with main_process_first():  # launched on several processes: one of them makes the base model
            tiny = TinyConfig(seed=config.seed)
            base = starting_model(model, datasets.values(), out / "tiny-init", tiny=tiny)
        progress = _progress if is_main_process() else no_progress  # one bar, not one per process
        manifest = run_train(method, datasets, base, out, config, progress=progress, validator=checker)
    if is_main_process():
        typer.echo(f"model: {out / manifest['model']}  ({manifest['count']} optimizer steps)")


@app.command("eval")
@with_configs(config=EvalConfig)
def evaluate(
    model: Annotated[str, typer.Option(help="A trained model folder, or 'random'.")],
    out: Annotated[Path, typer.Option(help="JSON file for the summary and every episode.")],
    config: EvalConfig,
) -> None:
    """Evaluate a model (or the random agent) on a split: success with a 95% Wilson interval."""
    from firsthand.contract import InvalidInputError
    from firsthand.settings import eval_settings
    from firsthand.stages.evaluate import check_arguments, expert_step_accuracy, make_agent, model_prompt, thinks
    from firsthand.stages.evaluate import evaluate as run_evaluate

    c = config
    with _errors():
        check_arguments(c.episodes, out)
        local = c.base_url is None or Path(model).is_dir()  # a served model's name is no folder to read from
        if not local and c.history is None:
            raise InvalidInputError(
                f"the served model {model!r} carries no prompt settings: choose the prompt with --history N"
            )
        prompt = model_prompt(model if local else None, c.history)
        defaults = eval_settings(c.env, thinks=local and thinks(model))
        agent = make_agent(
            model,
            max_new_tokens=defaults["max_new_tokens"] if c.max_new_tokens is None else c.max_new_tokens,
            response_prefix=c.response_prefix,
            seed=c.seed,
            backend=c.backend,
            base_url=c.base_url,
            decision=c.decision,
            temperature=c.temperature,
        )
        common = {
            "prompt": prompt,
            "batch_size": defaults["batch_size"] if c.batch_size is None else c.batch_size,
            "labels": {"model": model, "env": c.env},
            "progress": _progress,
        }
        if c.expert_states:
            summary = expert_step_accuracy(agent, c.env, c.split, c.episodes, out, **common)
            typer.echo(
                f"{c.split}: expert's action at {100 * summary['step_accuracy']:.1f}% of {summary['states']} expert "
                f"states (95% CI {100 * summary['ci_low']:.1f}-{100 * summary['ci_high']:.1f}); first step "
                f"{100 * summary['first_step_accuracy']:.1f}%; every step of a task "
                f"{100 * summary['all_steps_right']:.1f}%"
            )
            return
        steps = defaults["max_steps"] if c.max_steps is None else c.max_steps
        summary = run_evaluate(agent, c.env, c.split, c.episodes, out, max_steps=steps, **common)
    typer.echo(
        f"{c.split}: success {100 * summary['success']:.1f}% (95% CI {100 * summary['ci_low']:.1f}-"
        f"{100 * summary['ci_high']:.1f}) over {summary['episodes']} episodes; mean steps "
        f"{summary['mean_steps']:.1f}; invalid actions {100 * summary['invalid_rate']:.1f}%"
    )


@app.command()
@with_configs(config=RLConfig)
def rl(
    model: Annotated[str, typer.Option(help="The model/ folder of a `firsthand train` run (or any model folder).")],
    out: Annotated[Path, typer.Option(help="RL run directory (resumes from its last iteration).")],
    config: RLConfig,
    env: Annotated[str, typer.Option(help="Environment name (its training tasks are played).")] = "household",
    history: Annotated[
        int | None,
        typer.Option(help="Past steps in each prompt (default: as the model was trained; required for other models)."),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Continue a checkpoint with multi-turn RL (GRPO or GiGPO) on the environment's reward."""
    from firsthand.registry import opened
    from firsthand.settings import eval_settings
    from firsthand.stages.evaluate import model_prompt, thinks
    from firsthand.stages.rl import rl as run_rl

    _setup_logging(verbose)
    logging.getLogger("firsthand.stages.rl").setLevel(logging.INFO)  # a line per iteration: success, KL, ...
    with _errors():
        config.validate()
        with opened(env, "train"):  # every argument is checked before a model is loaded or a file written
            pass
        prompt = model_prompt(model, history)
        defaults = eval_settings(env, thinks=thinks(model))
        config = replace(
            config,
            max_steps=config.max_steps or defaults["max_steps"],
            max_new_tokens=config.max_new_tokens or defaults["max_new_tokens"],
        )
        manifest = run_rl(Path(model), env, out, config, prompt=prompt, progress=_progress)
    final = manifest["final"]
    typer.echo(
        f"model: {out / manifest['model']}  ({manifest['count']} iterations; last iteration: success "
        f"{100 * final.get('success', 0):.1f}% of {final.get('episodes', 0)} rollouts, KL {final.get('kl', 0):.4f}); "
        f"statistics: {out / 'iterations.jsonl'}"
    )


@app.command()
@with_overrides(Preset, prefixes=PRESET_PREFIXES, exclude=PRESET_EXCLUDED)
def run(
    overrides: dict[tuple[str, ...], Any],
    preset: Annotated[str, typer.Option(help="quickstart, standard or smoke.")] = "quickstart",
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/PRESET).")] = None,
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    verbose: Verbose = False,
) -> None:
    """The main job: collect, branch, build, train IL/IWM/SR, evaluate, and print the table.

    Every setting option left out keeps the preset's value (`firsthand.settings.PRESETS`, with the
    environment's own settings); the last word is the user's."""
    from firsthand.contract import InvalidInputError
    from firsthand.device import world_size
    from firsthand.pipeline import run as run_pipeline
    from firsthand.settings import get_preset

    _setup_logging(verbose)
    with _errors():
        _use_executor(executor, ray_address)
        if world_size() > 1:
            raise InvalidInputError(
                f"`firsthand run` was launched on {world_size()} processes (torchrun / accelerate launch); it runs "
                f"its stages in one process. Launch `firsthand train` that way, one method at a time, and run "
                f"the other stages directly"
            )
        top, nested = nested_overrides(overrides)
        chosen = get_preset(preset, nested, **top)
        from firsthand.registry import label

        out = out or Path("runs") / (chosen.name if chosen.env == "household" else f"{chosen.name}-{label(chosen.env)}")
        run_pipeline(chosen, out, _progress)
    from firsthand.stages.report import terminal_summary

    typer.echo(terminal_summary(json.loads((out / "results.json").read_text(encoding="utf-8"))))
    plots = f"{out / 'results.png'}" + (f", {out / 'rl.png'}" if (out / "rl.png").exists() else "")
    typer.echo(f"every table: {out / 'results.md'}; plots: {plots}; data: {out / 'results.json'}")
    typer.echo(f"report with an episode viewer: {out / 'report.html'}")


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="The directory of a finished `firsthand run` or `firsthand sweep`.")],
    html: Annotated[
        bool, typer.Option("--html/--no-html", help="Write the page report.html (tables, plots, episode viewer).")
    ] = True,
    out: Annotated[Path | None, typer.Option(help="Where to write the page (default RUN/report.html).")] = None,
    samples: Annotated[int, typer.Option(help="Expert trajectories, IWM targets and reflections shown.")] = 4,
) -> None:
    """Print a finished run's results; write its self-contained HTML report (no network needed to open it)."""
    from firsthand.contract import InvalidInputError
    from firsthand.report_html import write_html
    from firsthand.stages.report import terminal_summary

    with _errors():
        if samples < 0:
            raise InvalidInputError(f"--samples must be at least 0, got {samples!r}")
        if (run / "results.json").is_file():
            typer.echo(terminal_summary(json.loads((run / "results.json").read_text(encoding="utf-8"))))
        elif (run / "sweep.md").is_file():
            typer.echo((run / "sweep.md").read_text(encoding="utf-8"))
        page = write_html(run, out, samples=samples) if html else None
    if page:
        typer.echo(f"report: {page}")


@app.command()
def pool(
    runs: Annotated[list[Path], typer.Argument(help="Finished runs that differ only in their seeds (one part each).")],
    out: Annotated[Path, typer.Option(help="Where to write the pooled results.json, results.md and results.png.")],
) -> None:
    """Pool the parts of a study run one seed at a time into one set of tables, with intervals over all their
    seeds and tasks (each part's results.json is enough: its run folder may be gone)."""
    from firsthand.pooling import pool_runs
    from firsthand.stages.report import terminal_summary

    with _errors():
        results = pool_runs(runs, out)
    typer.echo(terminal_summary(results))
    typer.echo(f"results: {out / 'results.md'}")


@app.command()
@with_overrides(Preset, prefixes=PRESET_PREFIXES, exclude=PRESET_EXCLUDED)
def sweep(
    overrides: dict[tuple[str, ...], Any],
    axis: Annotated[
        str, typer.Argument(help="demos (fraction of the demonstrations), k, width (tiny model) or aux-weight.")
    ],
    out: Annotated[Path | None, typer.Option(help="Sweep directory (default runs/sweep-AXIS).")] = None,
    values: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated values (demos: 0.125,0.25,0.5,1; k: 1,2,4,8; width: 128,256,448; aux-weight: "
            "0.01,0.05,0.2,1)."
        ),
    ] = None,
    preset: Annotated[str, typer.Option(help="The preset every point starts from.")] = "quickstart",
    executor: ExecutorName = "local",
    ray_address: RayAddress = None,
    verbose: Verbose = False,
) -> None:
    """The main job at several values of one setting (the paper's ablations, model size): a table and a plot.

    Every setting option left out keeps the preset's value, as in `run`."""
    from firsthand.contract import InvalidInputError
    from firsthand.settings import get_preset
    from firsthand.sweep import AXES, Sweep
    from firsthand.sweep import sweep as run_sweep

    _setup_logging(verbose)
    with _errors():
        _use_executor(executor, ray_address)
        top, nested = nested_overrides(overrides)
        chosen = get_preset(preset, nested, **top)
        try:
            numbers = tuple(float(v) for v in values.split(",")) if values else AXES.get(axis, ())
        except ValueError:
            raise InvalidInputError(f"--values takes comma-separated numbers (e.g. 1,2,4,8), got {values!r}") from None
        out = out or Path("runs") / f"sweep-{axis}"
        run_sweep(Sweep(axis, numbers, chosen), out, _progress)
    typer.echo((out / "sweep.md").read_text(encoding="utf-8"))
    typer.echo(f"plot: {out / 'sweep.png'}; data: {out / 'sweep-results.json'}; each point: {out / 'points'}/")
    typer.echo(f"report: {out / 'report.html'}")


if __name__ == "__main__":  # pragma: no cover
    app()
