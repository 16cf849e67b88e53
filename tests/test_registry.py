"""An environment of the user's own, from the command line and from a script, with several workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from firsthand.testing import EnvContract

LOCKBOX = Path(__file__).resolve().parents[1] / "examples" / "lockbox.py"
SPEC = f"{LOCKBOX}:make_env"
CLI = [sys.executable, "-m", "firsthand.cli"]


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]


class TestLockbox(EnvContract):
    """The example adapter of docs/adapters.md passes the contract the built-in adapters pass."""

    env_name = SPEC


def test_every_stage_runs_on_a_file_spec_with_several_workers(tmp_path: Path) -> None:
    r = run(
        "run", "--preset", "smoke", "--env", SPEC, "--workers", "2", "--jobs", "1", "--eval-episodes", "1",
        "--train-episodes", "4", "--methods", "il", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "has no settings in firsthand.settings.ENV_SETTINGS" in r.stderr  # said, not silently generic
    experts = json.loads((tmp_path / "run" / "experts" / "manifest.json").read_text())
    assert experts["config"]["env"] == SPEC and experts["count"] == 4
    branches = json.loads((tmp_path / "run" / "branches" / "manifest.json").read_text())
    assert branches["count"] > 0 and branches["stats"]["states"] == 4 * 5  # the expert takes 5 steps
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["results"]["il"]["id_test"]["episodes"] == 1


def test_an_installed_package_declares_its_environment(tmp_path: Path) -> None:
    """The entry-point group `firsthand.envs`, as an installed package's metadata declares it."""
    (tmp_path / "lockbox_pkg.py").write_text(LOCKBOX.read_text())
    info = tmp_path / "lockbox_pkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lockbox-pkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[firsthand.envs]\nlockbox = lockbox_pkg:make_env\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    listed = run("envs", env=env)
    assert listed.returncode == 0 and "lockbox" in listed.stdout.split(), listed.stderr
    r = run("collect", "--env", "lockbox", "--episodes", "4", "--workers", "2", "--out", str(tmp_path / "e"), env=env)
    assert r.returncode == 0, r.stderr


def test_a_script_registration_reaches_spawned_workers(tmp_path: Path) -> None:
    """Registered under `if __name__ == "__main__"`, which spawned workers do not run."""
    script = tmp_path / "script.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(LOCKBOX.parent)!r})\n"
        "from lockbox import make_env\n"
        "import firsthand\n"
        "from firsthand.stages.collect import collect\n"
        "if __name__ == '__main__':\n"
        "    firsthand.register('mine', make_env)\n"
        f"    print(collect('mine', 'train', 6, {str(tmp_path / 'e')!r}, workers=2, shard_size=2)['count'])\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "6", r.stderr[-2000:]


def test_bad_specs_say_what_is_wrong(tmp_path: Path) -> None:
    from firsthand import InvalidInputError, UnknownNameError, make

    with pytest.raises(InvalidInputError, match="'nowhere.py'.*does not exist"):
        make("nowhere.py:make_env")
    with pytest.raises(InvalidInputError, match="has no callable 'build'"):
        make(f"{LOCKBOX}:build")
    with pytest.raises(InvalidInputError, match="cannot import 'no_such_module'"):
        make("no_such_module:make_env")
    with pytest.raises(UnknownNameError, match="package.module:factory"):
        make("lockbox-typo")


def test_a_name_carries_the_adapters_arguments() -> None:
    """`name:key=value:...` reaches the adapter, so every stage and worker rebuilds the same environment."""
    from firsthand import InvalidInputError, make
    from firsthand.registry import label, parse_name

    assert parse_name("household") == ("household", {})
    assert parse_name("textworld-express:games=coin,twc:max_steps=30") == (
        "textworld-express",
        {"games": "coin,twc", "max_steps": 30},
    )
    assert parse_name(f"{SPEC}:max_steps=7") == (SPEC, {"max_steps": 7})
    assert parse_name('x:games=["coin"]:flag=true') == ("x", {"games": ["coin"], "flag": True})
    assert label("textworld-express:games=coin,twc") == "textworld-express-games-coin-twc"
    assert label(f"{SPEC}:max_steps=7") == "lockbox-max_steps-7"
    env = make("household:max_steps=3", "id_test")
    assert env.max_steps == 3
    with pytest.raises(InvalidInputError, match=r"'household:colour=red'.*does not take these arguments.*colour"):
        make("household:colour=red")
    with pytest.raises(InvalidInputError, match="max_steps given both"):
        make("household:max_steps=3", max_steps=4)
    with pytest.raises(InvalidInputError, match="'oops' is not an argument"):
        parse_name("household:max_steps=3:oops")
    with pytest.raises(InvalidInputError, match="gives 'max_steps' twice"):
        parse_name("household:max_steps=3:max_steps=4")
    with pytest.raises(InvalidInputError, match="names no environment"):
        parse_name("games=coin")


def test_a_missing_simulator_names_the_environment_and_the_install() -> None:
    from firsthand import DependencyNotInstalled
    from firsthand.registry import _lazy

    factory = _lazy("demo-env", "no_such_simulator.env", "Env", "pip install no-such-simulator", "no-such-simulator")
    with pytest.raises(DependencyNotInstalled, match="'demo-env' needs the package 'no-such-simulator'.*pip install"):
        factory("train")
