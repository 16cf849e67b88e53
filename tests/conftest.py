import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402

SLOW_FILES = {
    # whole files whose every test trains, runs a command end to end, or starts a JVM or a process
    "test_pipeline.py": (),
    "test_every_env.py": (),
    "test_rl.py": (),
    "test_scienceworld.py": (),
    "test_textworld_cooking.py": (),
    "test_textworld_express.py": (),
    "test_tau_retail.py": (),
    "test_bfcl.py": (),
    "test_jvm.py": (),
    "test_sweep.py": (),
    "test_cli.py": (),  # every test but two runs the command line in a subprocess
    "test_registry.py": (),
    "test_jobs.py": (),
    "test_backends.py": ("server",),
    "test_executors.py": ("ray",),
    "test_report_html.py": ("browser",),
}
"""Test files of the slow tier (with their other markers); single slow tests elsewhere carry `pytest.mark.slow`."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        extra = SLOW_FILES.get(item.path.name)
        if extra is not None:
            item.add_marker(pytest.mark.slow)
            for name in extra:
                item.add_marker(getattr(pytest.mark, name))


@pytest.fixture(scope="session")
def household_il(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model folder of IL on 10 household demonstrations (30 epochs, prompt: the last 2 steps, no action
    list): a policy that wins most of those training tasks greedily. Shared by the learning tests of
    training and RL."""
    from firsthand.artifacts import load_records
    from firsthand.models import TinyConfig, create_tiny
    from firsthand.prompts import PromptConfig
    from firsthand.stages.branch import BranchConfig, branch
    from firsthand.stages.build import BuildConfig, build
    from firsthand.stages.collect import collect
    from firsthand.stages.train import TrainConfig, train

    root = tmp_path_factory.mktemp("household-il")
    collect("household", "train", 10, root / "experts")
    branch(root / "experts", root / "branches", BranchConfig(k=1))
    build("il", root / "branches", root / "il", BuildConfig(prompt=PromptConfig(history=2, show_valid_actions=False)))
    texts = (r["prompt"] + r["completion"] for r in load_records(root / "il"))
    base = create_tiny(texts, root / "base", TinyConfig(hidden_size=128, intermediate_size=344, layers=2))
    manifest = train(
        "il", {"il": root / "il"}, base, root / "run", TrainConfig(epochs=30, batch_size=8, learning_rate=3e-3)
    )
    return root / "run" / manifest["model"]


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """A k sweep (k = 1, 2) of the smoke preset with IWM and SR, 2 id_test episodes per point: (spec, folder,
    summary). Its points are complete run directories, so the HTML report's tests read them too."""
    from dataclasses import replace

    from firsthand.pipeline import get_preset
    from firsthand.sweep import Sweep, sweep

    preset = replace(get_preset("smoke", methods=("iwm", "sr")), eval_episodes=2, splits=("id_test",), jobs=1)
    spec = Sweep("k", (1, 2), preset)
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    return spec, out, sweep(spec, out)
