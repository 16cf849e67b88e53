"""Validation: what a checkpoint is measured and chosen by."""

from __future__ import annotations

from pathlib import Path

import pytest

from firsthand import InvalidInputError
from firsthand.models import TinyConfig, create_tiny, load
from firsthand.prompts import PromptConfig
from firsthand.validation import Validator, validator

PROMPT = "Goal: put a mug in the sink\nObservation: You are in the kitchen."
REPLY = "Action: go to sink 1"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    folder = create_tiny([PROMPT + REPLY] * 4, tmp_path_factory.mktemp("v") / "m", TinyConfig(layers=1, heads=2))
    return load(Path(folder))


def test_accuracy_alone_chooses_and_plays_no_episode(model: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    import firsthand.validation as validation

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("select_by='accuracy' played an episode")

    monkeypatch.setattr(validation, "run_episodes", refuse)
    v = Validator("household", ("train-40",), (PROMPT,), (REPLY,), PromptConfig(), select_by="accuracy")
    measured = v.measure(*model)
    assert measured["selection"] == measured["accuracy"] and "success" not in measured
    assert v.describe()["select_by"] == "accuracy"  # part of the stage's configuration: no resume under another


def test_success_chooses_by_the_episodes_with_accuracy_breaking_ties(model: tuple) -> None:
    v = Validator("household", ("train-40", "train-41"), (PROMPT,), (REPLY,), PromptConfig(history=2), max_steps=2)
    measured = v.measure(*model)
    assert measured["selection"] == pytest.approx(measured["success"] + measured["accuracy"] / 100)


def test_an_unknown_selection_is_refused_naming_both() -> None:
    with pytest.raises(InvalidInputError, match="'loss'.*success or accuracy"):
        validator("household", [], [], PromptConfig(), select_by="loss")
