"""The `firsthand` command line. Each command only wires library calls; heavy imports stay inside."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Train language agents from their own early experience (arXiv 2510.08558).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False)],
        force=True,
    )


@contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar (only the CLI draws them); yields `advance(n)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


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
    from firsthand.registry import make

    with _errors():
        passed = check_env(make(env, split), tasks=tasks)
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
    workers: Workers = 1,
    verbose: Verbose = False,
) -> None:
    """Collect expert trajectories (or import demonstrations), each verified by replay."""
    from firsthand.experts import collect as run_collect
    from firsthand.registry import make

    _setup_logging(verbose)
    with _errors():
        make(env, split)  # fail on a bad name before drawing anything
        total = episodes
        if source is not None and source.is_file():
            total = sum(1 for line in source.open(encoding="utf-8") if line.strip())
            total = min(total, episodes) if episodes else total
        with _progress("collect", total) as advance:
            manifest = run_collect(env, split, episodes, out, source=source, workers=workers, on_progress=advance)
    _summary(f"collect {env}/{split}", manifest, out)
    rejected = out / "rejected.jsonl"
    if rejected.exists() and rejected.stat().st_size:
        for line in rejected.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            typer.secho(f"line {r['line']}: {r['reason']}", fg=typer.colors.YELLOW, err=True)


@app.command()
def branch(
    experts: Annotated[Path, typer.Option(help="A `firsthand collect` output directory.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    k: Annotated[int, typer.Option("--k", help="Alternative actions per expert state.")] = 8,
    proposer: Annotated[str, typer.Option(help="uniform, policy or mixed.")] = "uniform",
    model: Annotated[str | None, typer.Option(help="Policy model for --proposer policy/mixed.")] = None,
    mode: Annotated[str, typer.Option(help="Return to states by: auto, snapshot or replay.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the alternative sampling.")] = 0,
    shard_size: Annotated[int, typer.Option(help="Trajectories per shard (unit of resumption).")] = 16,
    workers: Workers = 1,
    verbose: Verbose = False,
) -> None:
    """Branch at every expert state: execute K alternatives and record what really happened."""
    from firsthand.artifacts import read_manifest
    from firsthand.branching import BranchConfig
    from firsthand.branching import branch as run_branch

    _setup_logging(verbose)
    with _errors():
        config = BranchConfig(k=k, proposer=proposer, seed=seed, mode=mode, shard_size=shard_size)
        config.validate()
        total = read_manifest(experts, "collect")["count"]
        with _progress("branch", total) as advance:
            manifest = run_branch(experts, out, config, model=model, workers=workers, on_progress=advance)
    _summary(f"branch k={k} proposer={proposer}", manifest, out)


@app.command()
def run(
    out: Annotated[Path, typer.Option(help="Run directory (stages resume from what is there).")] = Path(
        "runs/quickstart"
    ),
    env: Annotated[str, typer.Option(help="Environment name.")] = "household",
    episodes: Annotated[int, typer.Option(help="Expert trajectories to collect.")] = 100,
    k: Annotated[int, typer.Option("--k", help="Alternatives per state.")] = 8,
    workers: Workers = 1,
    verbose: Verbose = False,
) -> None:
    """The main job: collect expert trajectories, then branch them, and print a summary."""
    from firsthand.branching import BranchConfig
    from firsthand.branching import branch as run_branch
    from firsthand.experts import collect as run_collect

    _setup_logging(verbose)
    with _errors():
        with _progress("collect", episodes) as advance:
            collected = run_collect(env, "train", episodes, out / "experts", workers=workers, on_progress=advance)
        _summary("collect", collected, out / "experts")
        with _progress("branch", collected["count"]) as advance:
            branched = run_branch(
                out / "experts", out / "branches", BranchConfig(k=k), workers=workers, on_progress=advance
            )
        _summary(f"branch k={k}", branched, out / "branches")


if __name__ == "__main__":  # pragma: no cover
    app()
