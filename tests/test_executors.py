"""The Ray executor against the local one, on a Ray instance the tests start: same bytes, retried crashes,
claimed folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from firsthand import DependencyNotInstalled, InvalidInputError, UnknownNameError, executors
from firsthand.artifacts import CLAIM, claimed, read_manifest
from firsthand.pipeline import get_preset, run
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.collect import collect

CRASHY = """
import os
from pathlib import Path

from firsthand.envs.household import HouseholdEnv


class Crashy(HouseholdEnv):
    def __init__(self, split="train", *, marker, **kwargs):
        super().__init__(split, **kwargs)
        self.marker = Path(marker)

    def _step(self, action):
        if not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # the worker process dies mid-shard, as a JVM crash or a lost node would
        return super()._step(action)


def make_env(split="train", **kwargs):
    return Crashy(split, **kwargs)
"""


@pytest.fixture(scope="module")
def on_ray() -> Iterator[None]:
    import ray

    previous = executors.use("ray")
    yield
    executors.use(previous.kind, previous.address)
    ray.shutdown()


def test_collect_and_branch_on_ray_write_the_local_bytes(tmp_path: Path, on_ray: None) -> None:
    with executors.using("local"):
        local = collect("household", "train", 8, tmp_path / "e-local", shard_size=2)
        local_branches = branch(tmp_path / "e-local", tmp_path / "b-local", BranchConfig(k=2))
    remote = collect("household", "train", 8, tmp_path / "e-ray", workers=2, shard_size=2)
    remote_branches = branch(tmp_path / "e-ray", tmp_path / "b-ray", BranchConfig(k=2), workers=2)
    assert remote["content_hash"] == local["content_hash"] and remote["count"] == 8
    assert remote_branches["content_hash"] == local_branches["content_hash"] and remote_branches["count"] > 8
    assert not (tmp_path / "e-ray" / CLAIM).exists()  # released when the stage ends


def test_a_worker_that_dies_mid_shard_is_retried_without_a_lost_or_doubled_shard(tmp_path: Path, on_ray: None) -> None:
    spec = tmp_path / "crashy.py"
    spec.write_text(CRASHY)
    marker = tmp_path / "died"
    name = f"{spec}:make_env:marker={marker}"
    marker.touch()  # the reference run does not crash
    with executors.using("local"):
        local = collect(name, "train", 6, tmp_path / "e-local", shard_size=2)
    marker.unlink()
    remote = collect(name, "train", 6, tmp_path / "e-ray", workers=2, shard_size=2)
    assert marker.exists()  # a worker did die
    assert remote["content_hash"] == local["content_hash"] and remote["files"] == local["files"]
    assert remote["stats"] == local["stats"] and remote["count"] == 6


def test_a_run_on_ray_trains_and_evaluates_the_same_models(tmp_path: Path, on_ray: None) -> None:
    """Trainings and evaluations as Ray tasks of one core each: the models and episodes of two local
    processes of one thread each."""
    preset = get_preset("smoke", methods=("il", "sr"), jobs=2, workers=2)
    on_cluster = run(preset, tmp_path / "ray")
    with executors.using("local"):
        here = run(preset, tmp_path / "local")
    assert on_cluster["results"] == here["results"]
    for label in ("il", "sr"):
        folder = f"train/{label}-seed0"
        model = read_manifest(tmp_path / "ray" / folder, "train")["model"]
        ray_weights, local_weights = (_weights(tmp_path / where / folder / model) for where in ("ray", "local"))
        assert ray_weights.keys() == local_weights.keys()
        for name, tensor in ray_weights.items():  # equal up to float rounding (the CPU's kernels may differ)
            torch.testing.assert_close(tensor, local_weights[name], rtol=1e-4, atol=1e-5)


def _weights(model: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(model.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_a_second_launch_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom firsthand.artifacts import claimed\n"
         f"with claimed({str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(InvalidInputError, match=rf"being written by process {holder.pid} .*delete"):
            with claimed(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with claimed(tmp_path), claimed(tmp_path):  # the dead holder's claim is taken over; this process's nests
        assert json.loads((tmp_path / CLAIM).read_text())["pid"] == os.getpid()
    assert not (tmp_path / CLAIM).exists()


def test_executor_choices_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    before = executors.current()
    with pytest.raises(UnknownNameError, match="'dask'.*local, ray"):
        executors.use("dask")
    with pytest.raises(InvalidInputError, match="'auto' needs --executor ray"):
        executors.use("local", "auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(DependencyNotInstalled, match=r"pip install 'firsthand\[ray\]'"):
        executors.use("ray")
    assert executors.current() == before  # a refused choice changes nothing


def test_the_command_line_refuses_a_bad_executor(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "firsthand.cli", "collect", "--out", str(tmp_path / "e"), "--episodes", "2"]
    r = subprocess.run([*cli, "--executor", "dask"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown executor 'dask'; valid executors: local, ray" in r.stderr
    r = subprocess.run([*cli, "--ray-address", "auto"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--ray-address 'auto' needs --executor ray" in r.stderr
    assert not (tmp_path / "e").exists()  # refused before any work


def test_the_executor_is_reached_from_the_package_as_the_readme_shows() -> None:
    code = "import firsthand\nprint(firsthand.executors.using.__name__, firsthand.sweep.sweep.__name__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == ["using", "sweep"], r.stderr
