"""The shape of the package: the Env base owns the episode rules, stages never import each other, and
every config field is a CLI option."""

from __future__ import annotations

import ast
import dataclasses
import pickle
from pathlib import Path
from typing import Any, ClassVar

import pytest

import firsthand
from firsthand import Env, InvalidInputError, make, register
from firsthand.options import _fields, field_docs

SRC = Path(firsthand.__file__).parent


class Counter(Env):
    """The smallest adapter: count up to the task's number; every action adds one."""

    name: ClassVar[str] = "counter"
    snapshot_native: ClassVar[bool] = True
    default_max_steps: ClassVar[int] = 4

    def tasks(self, limit: int | None = None) -> list[str]:
        return ["3", "9"][:limit]

    def _reset(self, task: str, seed: int | None) -> tuple[str, dict[str, Any]]:
        self.target, self.count = int(task), 0
        return "0", {"goal": f"count to {task}", "task": task}

    def _step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self.count += 1
        won = self.count == self.target
        return str(self.count), float(won), won, won, {}

    def valid_actions(self) -> list[str]:
        return ["add"]

    def _snapshot(self) -> Any:
        return (self.target, self.count)

    def _restore(self, snapshot: Any) -> None:
        self.target, self.count = snapshot

    def expert_actions(self) -> list[str]:
        return ["add"] * self.target


def test_the_base_owns_guards_step_counting_and_truncation() -> None:
    env = Counter("train")
    with pytest.raises(InvalidInputError, match="call reset"):
        env.step("add")
    env.reset("3")
    results = [env.step("add") for _ in range(3)]
    assert [r.won for r in results] == [False, False, True] and results[-1].terminated
    assert not any(r.truncated for r in results) and env.elapsed_steps == 3
    with pytest.raises(InvalidInputError, match="episode is over"):
        env.step("add")
    env.reset("9")  # the step limit (4) comes before the goal
    results = [env.step("add") for _ in range(4)]
    assert [r.truncated for r in results] == [False, False, False, True]
    assert not results[-1].terminated and not results[-1].won
    with pytest.raises(InvalidInputError, match="episode is over"):
        env.step("add")


def test_snapshots_carry_the_step_counter() -> None:
    env = Counter("train", max_steps=5)
    env.reset("9")
    env.step("add")
    snap = pickle.loads(pickle.dumps(env.snapshot()))
    for _ in range(4):
        env.step("add")
    env.restore(snap)  # back to one step taken: four more before truncation
    assert env.elapsed_steps == 1
    assert [env.step("add").truncated for _ in range(4)] == [False, False, False, True]


def test_optional_capabilities_have_defaults() -> None:
    env = Counter("train")
    assert env.candidate_actions() == [] and env.prepare(["3"]) is None and env.close() is None


def test_make_refuses_a_factory_that_is_not_an_env() -> None:
    register("not-an-env", lambda split, **kwargs: object())
    try:
        with pytest.raises(InvalidInputError, match="subclass firsthand.Env"):
            make("not-an-env")
    finally:
        firsthand.registry._REGISTRY.pop("not-an-env")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_stages_never_import_each_other_nor_what_sits_above_them() -> None:
    stages = {f"firsthand.stages.{p.stem}" for p in (SRC / "stages").glob("*.py") if p.stem != "__init__"}
    above = {"firsthand.pipeline", "firsthand.sweep", "firsthand.report_html", "firsthand.cli", "firsthand.options"}
    above |= {"firsthand.settings", "firsthand.pooling"}
    for path in (SRC / "stages").glob("*.py"):
        wrong = _imports(path) & (stages | above)
        assert not wrong, f"{path.name} imports {sorted(wrong)}"
    for path in SRC.glob("*.py"):  # shared machinery sits below the stages
        if f"firsthand.{path.stem}" not in above:
            assert not {m for m in _imports(path) if m.startswith("firsthand.stages")}, path.name


@pytest.mark.parametrize("command", ["branch", "build", "train", "eval", "rl"])
def test_every_config_field_is_a_documented_cli_option(command: str) -> None:
    import typer

    from firsthand.cli import app
    from firsthand.stages.branch import BranchConfig
    from firsthand.stages.build import BuildConfig
    from firsthand.stages.evaluate import EvalConfig
    from firsthand.stages.rl import RLConfig
    from firsthand.stages.train import TrainConfig

    config = {"branch": BranchConfig, "build": BuildConfig, "train": TrainConfig, "eval": EvalConfig, "rl": RLConfig}
    config = config[command]
    options = {opt: p.help for p in typer.main.get_command(app).commands[command].params for opt in p.opts}
    for path, _, _, doc in _fields(config):
        assert doc, f"{config.__name__}.{'.'.join(path)} has no docstring"
        assert options[f"--{path[-1].replace('_', '-')}"] == doc
    settable = {path[-1] for path, *_ in _fields(config)}
    skipped = {f.name for f in dataclasses.fields(config)} - settable - {"prompt", "writer"}  # nested: flattened
    assert skipped <= {"env_kwargs"}  # dict-valued: set through the Python API
    assert field_docs(config)  # the docstrings are read from the source


ACROSS_MODULES = {"test_layout.py": "the package's shape", "envs/test_every_env.py": "every data stage on every env"}


def test_test_files_mirror_the_package() -> None:
    """tests/X/test_Y.py tests src/firsthand/X/Y.py (or the package X/Y/), so a module's tests are found by
    its path; the files that test across modules are named in ACROSS_MODULES."""
    tests = Path(__file__).parent
    for path in sorted(tests.rglob("test_*.py")):
        relative = path.relative_to(tests).as_posix()
        folder, name = SRC / path.parent.relative_to(tests), path.name.removeprefix("test_")
        candidates = [folder / name, folder / f"_{name}", folder / name.removesuffix(".py")]  # module, private, package
        if relative not in ACROSS_MODULES:
            assert any(c.exists() for c in candidates), f"tests/{relative} names no module of src/firsthand"


def test_every_option_of_every_command_says_what_it_does() -> None:
    import typer

    from firsthand.cli import app

    for name, command in typer.main.get_command(app).commands.items():
        for p in command.params:
            if isinstance(p, typer.core.TyperOption):
                assert p.help, f"firsthand {name} {p.opts[0]} has no help"


def test_the_cli_reference_is_the_one_the_configs_generate(tmp_path: Path) -> None:
    """docs/cli.md is generated (`make docs`); an option added, renamed or documented anew shows here."""
    import subprocess
    import sys

    out = tmp_path / "cli.md"
    generate = "import sys; from typer.cli import main; sys.argv[0] = 'typer'; main()"
    args = ["firsthand.cli", "utils", "docs", "--name", "firsthand", "--title", "CLI reference", "--output", str(out)]
    subprocess.run([sys.executable, "-c", generate, *args], check=True, capture_output=True)
    assert out.read_text() == (SRC.parents[1] / "docs" / "cli.md").read_text(), "docs/cli.md is stale: run make docs"


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_every_preset_field_is_a_documented_option_of_run_and_sweep(command: str) -> None:
    """run and sweep take their options from `settings.Preset` and the stage configs it nests: every field a
    run does not set itself is one option, with the field's docstring as its help."""
    import typer

    from firsthand.cli import app
    from firsthand.options import override_fields
    from firsthand.settings import PRESET_EXCLUDED, PRESET_PREFIXES, Preset

    options = {opt: p.help for p in typer.main.get_command(app).commands[command].params for opt in p.opts}
    generated = list(override_fields(Preset, PRESET_PREFIXES, PRESET_EXCLUDED))
    for name, path, _, doc in generated:
        assert doc and doc != "Comma-separated.", f"Preset field {'.'.join(path)} has no docstring"
        assert options[f"--{name.replace('_', '-')}"] == doc
    covered = {".".join(path) for _, path, *_ in generated} | PRESET_EXCLUDED
    for f in dataclasses.fields(Preset):
        nested = (
            [g for g in dataclasses.fields(type(getattr(Preset(name="x"), f.name)))]
            if f.name in ("writer", "prompt", "train", "tiny", "rl")
            else []
        )
        for path in [f"{f.name}.{g.name}" for g in nested] or [f.name]:
            assert path in covered, f"Preset field {path} is neither an option nor set by the run"


@pytest.mark.parametrize(
    ("text", "label", "name"),
    [
        ("il", ("il", "", None, "", None), "IL"),
        ("iwm-matched", ("iwm", "matched", None, "", None), "IWM (matched budget)"),
        ("iwm+sr-paper", ("iwm+sr", "paper", None, "", None), "IWM+SR (paper budget)"),
        ("iwm-aux", ("iwm-aux", "", None, "", None), "IWM, auxiliary loss"),
        ("il-steps1200", ("il", "", 1200, "", None), "IL, 1,200 steps"),
        ("sr@grpo", ("sr", "", None, "grpo", None), "SR + GRPO"),
        ("iwm-matched@gigpo", ("iwm", "matched", None, "gigpo", None), "IWM (matched budget) + GIGPO"),
        ("actobs-w0.05", ("actobs", "", None, "", 0.05), "ActObs"),
    ],
)
def test_a_label_reads_back_what_it_writes(text: str, label: tuple, name: str) -> None:
    from firsthand.layout import Label

    parsed = Label.parse(text)
    assert (parsed.method, parsed.rule, parsed.steps, parsed.algo, parsed.weight) == label
    assert str(parsed) == text and parsed.name == name


def test_the_run_layout_lists_what_it_names(tmp_path: Path) -> None:
    """Every evaluation file and RL folder the layout names is listed back as the label, seed and split it
    was named from: the pipeline writes, the report and the HTML page read, through one object."""
    from firsthand.layout import Label, RunLayout

    layout = RunLayout(tmp_path)
    written = {
        (Label("iwm", "matched"), 0, "id_test", "greedy"),
        (Label("il", steps=700), 1, "ood_test", "greedy"),
        (Label("sr", algo="grpo"), 2, "novel_test", "greedy"),
        (Label("sr"), 0, "id_test", "score"),
    }
    for label, seed, split, evaluation in written:
        path = layout.eval_file(label, seed, split, evaluation)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    listed = {(label, seed, split, e) for e in ("greedy", "score") for label, seed, split, _ in layout.evaluations(e)}
    assert listed == written
    layout.rl(Label("iwm-aux"), 3, "gigpo").mkdir(parents=True)
    assert [(str(label), seed) for label, seed, _ in layout.rl_runs()] == [("iwm-aux@gigpo", 3)]
    assert Label.of("sr", "auto") == Label("sr") and Label.of("il", "matched") == Label("il")
    assert Label("sr").thinks and Label("iwm+sr").thinks and not Label("iwm").thinks
