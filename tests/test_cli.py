"""Smoke tests: the real `firsthand` command through subprocess, on a tiny budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "firsthand.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command() -> None:
    r = run("--help")
    assert r.returncode == 0
    for command in ("collect", "branch", "check", "envs", "run", "rl", "sweep", "report", "samples"):
        assert command in r.stdout


def test_collect_then_branch(tmp_path: Path) -> None:
    r = run("collect", "--env", "household", "--split", "train", "--episodes", "12", "--out", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr
    r = run(
        "branch",
        "--experts",
        str(tmp_path / "e"),
        "--k",
        "3",
        "--workers",
        "2",
        "--shard-size",
        "4",
        "--out",
        str(tmp_path / "b"),
    )
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["stage"] == "branch" and manifest["config"]["branch"]["k"] == 3
    assert manifest["count"] == 4 * manifest["stats"]["states"] > 0


def test_build_takes_every_prompt_setting_from_the_command_line(tmp_path: Path) -> None:
    assert run("collect", "--episodes", "3", "--out", str(tmp_path / "e")).returncode == 0
    assert run("branch", "--experts", str(tmp_path / "e"), "--k", "2", "--out", str(tmp_path / "b")).returncode == 0
    r = run(
        "build",
        "--method",
        "sr",
        "--from",
        str(tmp_path / "b"),
        "--out",
        str(tmp_path / "sr"),
        "--history",
        "1",
        "--no-show-valid-actions",
        "--max-observation-chars",
        "50",
        "--sr-alternatives",
        "1",
    )
    assert r.returncode == 0, r.stderr
    config = json.loads((tmp_path / "sr" / "manifest.json").read_text())["config"]
    assert config["sr_alternatives"] == 1
    assert config["prompt"] == {
        "history": 1,
        "show_valid_actions": False,
        "max_observation_chars": 50,
        "past_actions": False,
        "restate_goal": True,
    }
    r = run("samples", str(tmp_path / "sr"), "-n", "2")  # records in full, to read
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("=== COMPLETION ===\nThought: My goal is to") == 2 and "step" in r.stdout
    r = run("samples", str(tmp_path / "sr"), "--dropped")
    assert r.returncode == 2 and "has no dropped.jsonl" in r.stderr
    r = run("build", "--method", "star", "--from", str(tmp_path / "b"), "--out", str(tmp_path / "star"))
    assert r.returncode == 2 and "pass --reflector MODEL" in r.stderr


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    r = run("collect", "--env", "alfworld", "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and "unknown environment 'alfworld'" in r.stderr and "household" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("collect", "--split", "dev", "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and "unknown split 'dev'" in r.stderr and "ood_test" in r.stderr
    r = run("collect", "--episodes", "3", "--out", str(tmp_path / "e"))
    r = run("branch", "--experts", str(tmp_path / "e"), "--k", "0", "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "--k must be at least 1" in r.stderr
    assert not (tmp_path / "b").exists()


def test_train_without_its_dataset_says_which_to_build(tmp_path: Path) -> None:
    run("collect", "--episodes", "3", "--out", str(tmp_path / "e"))
    run("branch", "--experts", str(tmp_path / "e"), "--k", "1", "--out", str(tmp_path / "b"))
    assert run("build", "--method", "il", "--from", str(tmp_path / "b"), "--out", str(tmp_path / "il")).returncode == 0
    r = run("train", "--method", "sr", "--expert-data", str(tmp_path / "il"), "--out", str(tmp_path / "t"))
    assert r.returncode == 2 and "needs the sr dataset" in r.stderr and "firsthand build --method sr" in r.stderr
    assert not (tmp_path / "t").exists()
    # iwm+sr needs both of its datasets; each --data directory says which method it holds
    iwm = run("build", "--method", "iwm", "--from", str(tmp_path / "b"), "--out", str(tmp_path / "iwm"))
    assert iwm.returncode == 0
    r = run(
        "train",
        "--method",
        "iwm+sr",
        "--expert-data",
        str(tmp_path / "il"),
        "--data",
        str(tmp_path / "iwm"),
        "--out",
        str(tmp_path / "t"),
    )
    assert r.returncode == 2 and "needs the sr dataset" in r.stderr and not (tmp_path / "t").exists()


def test_import_reports_bad_lines(tmp_path: Path) -> None:
    demos = tmp_path / "demos.jsonl"
    demos.write_text('{"task": "train-0", "actions": ["look"]}\n{"task": "train-1", "act\n')
    r = run("collect", "--from", str(demos), "--episodes", "0", "--out", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("line 1: the demonstration does not win") == 1  # once, not again from the log
    assert r.stderr.count("line 2: not valid JSON") == 1 and "string starting at, column 21)" in r.stderr


def test_bad_paths_and_numbers_are_one_line_errors_before_any_work(tmp_path: Path) -> None:
    """Every option that takes a path, a model or a number: a one-line error naming the value, exit 2."""
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x")
    assert run("collect", "--episodes", "2", "--out", str(tmp_path / "e")).returncode == 0
    assert run("branch", "--experts", str(tmp_path / "e"), "--k", "1", "--out", str(tmp_path / "b")).returncode == 0
    assert run("build", "--method", "il", "--from", str(tmp_path / "b"), "--out", str(tmp_path / "il")).returncode == 0
    cases = [
        (("collect", "--episodes", "2", "--out", str(a_file)), "is an existing file"),
        (("collect", "--episodes", "-1", "--out", str(tmp_path / "e2")), "--episodes must be at least 0"),
        (("collect", "--episodes", "2", "--out", str(tmp_path / "e"), "--split", "id_test"), "split: 'train' there"),
        (("branch", "--experts", str(tmp_path / "e"), "--out", str(a_file)), "is an existing file"),
        (("branch", "--experts", str(tmp_path / "e"), "--k", "3", "--out", str(tmp_path / "b")), "branch.k: 1 there"),
        (("build", "--method", "il", "--from", str(tmp_path / "b"), "--out", str(a_file)), "is an existing file"),
        (("train", "--method", "il", "--expert-data", str(tmp_path / "il"), "--out", str(a_file)), "existing file"),
        (("run", "--preset", "smoke", "--out", str(a_file)), "is an existing file"),
        (("eval", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")), "does not exist"),
        (("eval", "--model", str(tmp_path / "e"), "--out", str(tmp_path / "x.json")), "is not a model folder"),
        (("eval", "--model", "random", "--episodes", "-1", "--out", str(tmp_path / "x.json")), "at least 1, got -1"),
        (("eval", "--model", "random", "--episodes", "1", "--out", str(tmp_path)), "is a directory"),
    ]
    for args, message in cases:
        r = run(*args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-600:])
        assert len(r.stderr.strip().splitlines()) == 1 and not r.stdout.strip(), (args, r.stdout, r.stderr)
    assert not (tmp_path / "e2").exists() and not (tmp_path / "x.json").exists()


def test_eval_uses_what_run_uses_on_the_environment(tmp_path: Path) -> None:
    """`eval` and `run` give one model the same numbers: household's 20-step limit, not a generic one."""
    r = run("eval", "--model", "random", "--episodes", "2", "--out", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    episodes = json.loads((tmp_path / "r.json").read_text())["episodes"]
    assert [e["steps"] for e in episodes] == [20, 20]  # random never wins; it stops at the limit


def test_check_command() -> None:
    r = run("check", "--env", "household", "--split", "ood_test", "--tasks", "2")
    assert r.returncode == 0 and "passed" in r.stdout


def test_run_smoke_preset_end_to_end(tmp_path: Path) -> None:
    """The real main job on the smoke preset: every stage, results.json/md/png, printed table."""
    command = [*CLI, "run", "--preset", "smoke", "--eval-episodes", "3", "--jobs", "1", "--out", str(tmp_path / "run")]
    r = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["preset"] == "smoke" and results["seeds"] == [0]
    for method in ("random", "il", "iwm", "sr"):
        for split in ("id_test", "ood_test"):
            cell = results["results"][method][split]
            assert cell["episodes"] == 3 and 0 <= cell["ci_low"] <= cell["success"] <= cell["ci_high"] <= 1
    assert (tmp_path / "run" / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "IWM" in r.stdout and "ood_test" in r.stdout and "minus IL" in r.stdout
    table = r.stdout[r.stdout.index("success %") : r.stdout.index("every table:")]
    assert max(map(len, table.splitlines())) <= 80  # fits a terminal; results.md holds every table
    assert "train 1 IL models: " in r.stdout and "train 2 models: " in r.stdout  # IL first: its budget for the rest
    assert "evaluate 4 agents (greedy): 24/24 (100%)" in r.stdout and "evaluate 4 agents (score): " in r.stdout
    assert set(results["versus_il"]) == {"iwm", "sr"} and results["versus_il"]["sr"]["id_test"]["episodes"] == 3
    for stage in ("experts", "branches", "data/il", "data/iwm", "data/sr", "train/il-seed0", "train/sr-seed0"):
        assert (tmp_path / "run" / stage / "manifest.json").exists(), stage
    assert "report with an episode viewer" in r.stdout and (tmp_path / "run" / "report.html").is_file()
    report = run("report", str(tmp_path / "run"), "--out", str(tmp_path / "page.html"), "--samples", "1")
    assert report.returncode == 0 and "minus IL" in report.stdout and (tmp_path / "page.html").is_file()
    # A second run finds every stage done and only reprints the table.
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "IWM" in again.stdout
    # RL is added to the finished run: every trained model continues with each algorithm and is evaluated again
    with_rl = [*command, "--with-rl", "--rl-iterations", "1", "--rl-algos", "grpo,gigpo"]
    r = subprocess.run(with_rl, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    labels = {f"{m}@{a}" for m in ("il", "iwm", "sr") for a in ("grpo", "gigpo")}
    assert set(results["after_rl"]) == set(results["rl_gains"]) == labels
    assert results["after_rl"]["sr@gigpo"]["ood_test"]["episodes"] == 3
    assert set(results["results"]) == {"random", "il", "iwm", "sr"}  # the supervised table is unchanged
    assert (tmp_path / "run" / "rl.png").read_bytes()[:4] == b"\x89PNG"
    assert "rl.png" in (tmp_path / "run" / "report.html").read_text()  # the report shows the RL curves too
    assert "after RL" in r.stdout and "SR + GIGPO" in r.stdout and "train 2 models: 0/0" in r.stdout
    assert "| IL | GRPO |" in (tmp_path / "run" / "results.md").read_text()
    table = r.stdout[r.stdout.index("success %") : r.stdout.index("every table:")]
    assert max(map(len, table.splitlines())) <= 80


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("size",), "unknown sweep axis 'size'; valid axes: demos, k, width, aux-weight"),
        (("aux-weight",), "add them (--methods il,iwm-aux,actobs)"),
        (("k", "--values", "1,x"), "--values takes comma-separated numbers (e.g. 1,2,4,8), got '1,x'"),
        (("demos", "--values", "0.5,2"), "in (0, 1]; got 2.0"),
        (("width", "--tiny-layers", "0"), "--tiny-layers must be at least 1, got 0"),
    ],
)
def test_sweep_rejects_bad_arguments_before_any_work(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    r = run("sweep", *args, "--preset", "smoke", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def test_run_rejects_unknown_preset(tmp_path: Path) -> None:
    r = run("run", "--preset", "huge", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown preset 'huge'" in r.stderr and "quickstart" in r.stderr


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--seeds", "0,x", "--seeds takes comma-separated integers (e.g. 0,1,2), got '0,x'"),
        ("--seeds", "1,1", "seeds must be distinct and at least one, got [1, 1]"),
        ("--eval-episodes", "0", "eval_episodes must be at least 1, got 0"),
        ("--k", "-2", "--k must be at least 1 (alternatives per state), got -2"),
    ],
)
def test_run_rejects_bad_overrides(tmp_path: Path, option: str, value: str, message: str) -> None:
    r = run("run", "--preset", "smoke", option, value, "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and message in r.stderr
    assert not (tmp_path / "x").exists()


def test_run_sets_any_stage_setting_and_the_last_word_is_the_users() -> None:
    """run's options are the preset's fields, the nested stage configs' included: a nested option stands over
    the preset, the environment's settings and the pretrained model's training alike."""
    from typer.testing import CliRunner

    from firsthand.cli import app
    from firsthand.settings import PRETRAINED_TRAIN, get_preset

    seen = {}

    def capture(preset: object, out: object, progress: object) -> None:
        seen["preset"] = preset
        raise SystemExit(0)

    import firsthand.pipeline

    original = firsthand.pipeline.run
    firsthand.pipeline.run = capture  # the command resolves the preset, then hands it to the pipeline
    try:
        args = ["run", "--preset", "smoke", "--learning-rate", "5e-4", "--history", "3", "--tiny-layers", "1"]
        args += ["--rl-iterations", "3", "--seeds", "2,5", "--aux-weights", "0.1", "--no-past-actions"]
        result = CliRunner().invoke(app, args)
    finally:
        firsthand.pipeline.run = original
    assert result.exit_code == 0, result.output
    preset = seen["preset"]
    assert preset.train.learning_rate == 5e-4 and preset.train.batch_size == get_preset("smoke").train.batch_size
    assert preset.prompt.history == 3 and preset.prompt.past_actions is False  # over household's own prompt
    assert preset.tiny.layers == 1 and preset.rl.iterations == 3 and preset.seeds == (2, 5)
    assert preset.aux_weights == (0.1,)
    pretrained = get_preset("smoke", {"train": {"learning_rate": 1e-4}}, model="smollm2-135m").train
    assert pretrained.lora and pretrained.learning_rate == 1e-4 and pretrained.epochs == PRETRAINED_TRAIN.epochs


def test_a_lambda_grid_without_validation_is_refused(tmp_path: Path) -> None:
    r = run("run", "--preset", "smoke", "--methods", "il,iwm-aux", "--budgets", "paper", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "add auto to --budgets, or give one weight (--aux-weights 0.05)" in r.stderr
    assert not (tmp_path / "x").exists()


def test_environment_settings_replace_generic_defaults_only() -> None:
    from firsthand.settings import ENV_SETTINGS, get_preset

    assert get_preset("quickstart", env="bfcl").max_new_tokens == ENV_SETTINGS["bfcl"]["max_new_tokens"]
    assert get_preset("quickstart", env="bfcl").prompt == ENV_SETTINGS["bfcl"]["prompt"]
    assert get_preset("smoke", env="bfcl").max_steps == 4  # the preset's own choice stands
    assert get_preset("quickstart", env="bfcl", max_new_tokens=7).max_new_tokens == 7  # so does an override
    assert get_preset("quickstart").max_steps is None  # the adapter's own step limit


def test_run_refuses_several_processes(tmp_path: Path) -> None:
    """Only `firsthand train` is data-parallel; `run` launched by torchrun says so instead of running its
    stages once per process."""
    import os

    r = subprocess.run(
        [*CLI, "run", "--preset", "smoke", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WORLD_SIZE": "2", "RANK": "0"},
    )
    assert r.returncode == 2 and "launched on 2 processes" in r.stderr and "firsthand train" in r.stderr
    assert not (tmp_path / "x").exists()


def test_progress_off_a_terminal_is_printed_as_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Redirected to a log, a rich bar draws nothing: lines at the first unit done, as time passes, and at the
    end; nothing before any work is done."""
    from firsthand import cli

    monkeypatch.setattr(cli, "PROGRESS_LINE_SECONDS", 0.0)  # a line at every advance
    with cli._progress("train il seed 0", 4) as advance:
        advance(1)
        advance(2)
    lines = capsys.readouterr().out.splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == [
        "train il seed 0: 1/4 (25%)",
        "train il seed 0: 3/4 (75%)",
        "train il seed 0: 4/4 (100%)",
    ]
    with pytest.raises(ValueError), cli._progress("collect", 4):
        raise ValueError("bad input")  # refused before any work: no line
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder `rl` and `eval` accept (untrained: these tests never get as far as using it)."""
    from dataclasses import asdict

    from firsthand.artifacts import write_model_prompt
    from firsthand.models import TinyConfig, create_tiny
    from firsthand.prompts import PromptConfig

    folder = create_tiny(["Goal: a\nAction: look"], tmp_path_factory.mktemp("tiny") / "m", TinyConfig(layers=1))
    write_model_prompt(folder, asdict(PromptConfig()))
    return folder


def test_every_command_checks_its_arguments_before_loading_or_writing(tmp_path: Path, tiny_folder: Path) -> None:
    """Environment names and their arguments, files and model names: one line, exit 2, nothing written."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = tmp_path / "out"
    cases = [
        (("collect", "--from", str(empty), "--episodes", "0"), "holds no demonstrations"),
        (("collect", "--from", str(tmp_path), "--episodes", "0"), "is a directory; give the JSONL file"),
        (("collect", "--env", "household:habit=2"), "habit must be above 0 and at most 1, got 2.0"),
        (("rl", "--model", str(tiny_folder), "--env", "TYPO"), "unknown environment 'TYPO'"),
        (("rl", "--model", str(tiny_folder), "--env", "household:bogus=1"), "does not take these arguments"),
        (("rl", "--model", str(tiny_folder), "--algo", "ppo"), "unknown RL algorithm 'ppo'"),
        (("run", "--preset", "smoke", "--env", "TYPO"), "unknown environment 'TYPO'"),
        (("run", "--preset", "smoke", "--env", "household:receptacles=0"), "receptacles must be above 0"),
        (("run", "--preset", "smoke", "--model", "nosuch"), "model 'nosuch' is neither a built-in model"),
        (("run", "--preset", "smoke", "--reflector", "nosuch"), "model 'nosuch' is neither a built-in model"),
        (("sweep", "k", "--preset", "smoke", "--env", "TYPO"), "unknown environment 'TYPO'"),
        (("train", "--method", "il", "--expert-data", str(tmp_path), "--model", "nosuch"), "neither a built-in"),
    ]
    for args, message in cases:
        r = run(*args, "--out", str(out))
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-600:])
        assert len(r.stderr.strip().splitlines()) == 1 and not r.stdout.strip(), (args, r.stdout, r.stderr)
        assert not out.exists(), args
    r = run("eval", "--model", "random", "--env", "TYPO", "--out", str(tmp_path / "x.json"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()


def test_the_python_api_plays_the_episodes_the_cli_plays(tmp_path: Path) -> None:
    """`firsthand.evaluate` and `firsthand eval` share household's step limit; an Env object where a name is
    expected is refused with the name to pass."""
    import firsthand
    from firsthand.contract import InvalidInputError

    summary = firsthand.evaluate(firsthand.make_agent("random"), "household", "id_test", 2, tmp_path / "api.json")
    assert summary["mean_steps"] == 20  # the random agent never wins: it plays to the limit, as `eval` does
    with pytest.raises(InvalidInputError, match="pass its name, 'household'"):
        firsthand.evaluate(firsthand.make_agent("random"), firsthand.make("household"), "id_test", 2, tmp_path / "x")
