"""The generation backends on a real model: Hugging Face in this process, and an OpenAI-compatible server
(`transformers serve`, started here on SmolLM2-135M-Instruct) through the openai client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firsthand import InvalidInputError
from firsthand.artifacts import load_records
from firsthand.inference.backends import BackendUnavailable, OpenAIBackend, Sampling, cut_at_stop, open_backend
from firsthand.models import smollm2_path
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.build import DROPPED, PARTIAL, BuildConfig, WriterConfig, build
from firsthand.stages.collect import collect

PROMPTS = ["Name three fruits.", "What is the capital of France?", "Count from one to ten."]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    try:
        return smollm2_path()
    except Exception as error:  # the wheel is installed by `make setup`
        pytest.skip(f"SmolLM2 is not available: {error}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2: Path) -> Iterator[str]:
    """`transformers serve` on SmolLM2, a real OpenAI-compatible server process (the `serve` extra)."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip("transformers serve needs the serve extra: pip install 'firsthand[serve]'")
    port = _free_port()
    command = [Path(sys.executable).with_name("transformers"), "serve", str(smollm2), "--port", str(port)]
    process = subprocess.Popen(
        [*map(str, command), "--host", "127.0.0.1", "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_cut_at_stop() -> None:
    assert cut_at_stop("a\nAction: x\n\nmore", ("\n\n", "zzz")) == "a\nAction: x"
    assert cut_at_stop("abc", ()) == "abc"


def test_hf_backend_samples_n_per_prompt_reproducibly(smollm2: Path) -> None:
    backend = open_backend("smollm2-135m", backend="hf")
    assert backend.describe() == {"backend": "hf", "model": str(smollm2)}
    sampling = Sampling(max_tokens=12, temperature=0.9, n=2, seed=3, stop=("\n",))
    done: list[int] = []
    first = backend.generate(PROMPTS, sampling, on_progress=done.append)
    assert [len(r) for r in first] == [2, 2, 2] and sum(done) == 3
    assert all(isinstance(t, str) and "\n" not in t for r in first for t in r)
    assert backend.generate(PROMPTS, sampling) == first  # the same seed, the same samples
    greedy = backend.generate(PROMPTS[:1], Sampling(max_tokens=8))
    assert greedy == backend.generate(PROMPTS[:1], Sampling(max_tokens=8, seed=5))  # greedy ignores the seed


def test_tiny_or_no_model_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="trained from scratch"):
        open_backend("tiny")
    with pytest.raises(InvalidInputError, match="neither a built-in model"):
        open_backend(str(tmp_path / "nothing"))
    with pytest.raises(InvalidInputError, match="unknown backend 'tgi'"):
        open_backend("smollm2-135m", backend="tgi")
    with pytest.raises(InvalidInputError, match="--base-url is for the openai backend"):
        open_backend("smollm2-135m", backend="hf", base_url="http://127.0.0.1:1/v1")


def test_an_unreachable_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    started = time.time()
    with pytest.raises(BackendUnavailable, match=f"cannot reach the generation server at '{url}'.*transformers serve"):
        OpenAIBackend(url, "m")
    assert time.time() - started < 30


def test_openai_backend_against_a_real_server(server: str, smollm2: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRSTHAND_TEST_KEY", "sk-secret-never-written")
    backend = open_backend(None, base_url=server, api_key_env="FIRSTHAND_TEST_KEY", concurrency=3)
    assert backend.describe() == {"backend": "openai", "model": str(smollm2), "base_url": server}
    assert "sk-secret" not in repr(backend.describe())
    replies = backend.generate(PROMPTS, Sampling(max_tokens=10, temperature=0.8, n=2, stop=("\n",)))
    assert [len(r) for r in replies] == [2, 2, 2]
    assert all(isinstance(t, str) and "\n" not in t for r in replies for t in r)
    assert any(t.strip() for r in replies for t in r)
    with pytest.raises(InvalidInputError, match="does not serve 'gpt-9'.*it serves"):
        OpenAIBackend(server, "gpt-9")


def test_reflections_written_through_a_server_are_all_accounted(server: str, tmp_path: Path) -> None:
    collect("household", "train", 1, tmp_path / "experts")
    branch(tmp_path / "experts", tmp_path / "branches", BranchConfig(k=2))
    writer = WriterConfig(reflector=str(smollm2_path()), base_url=server, reflection_tokens=24, chunk=4)
    out = tmp_path / "sr"
    try:
        manifest = build("sr", tmp_path / "branches", out, BuildConfig(sr_alternatives=1, writer=writer))
    except InvalidInputError as error:  # a 135M model may have every text dropped: they are still accounted
        assert "the filters dropped all" in str(error)
        written = (out / PARTIAL).read_text().count("\n")
        assert written == (out / DROPPED).read_text().count("\n") > 0
        return
    stats = manifest["stats"]
    assert stats["writer"]["backend"] == "openai" and stats["written"] == stats["sr_written"]
    dropped = (out / DROPPED).read_text().count("\n")
    assert stats["sr_kept"] == len(load_records(out)) and stats["sr_kept"] + dropped == stats["sr_written"]


def test_a_served_model_is_evaluated_through_the_backend(server: str, smollm2: Path, tmp_path: Path) -> None:
    from firsthand.inference.backends import BackendAgent
    from firsthand.prompts import PromptConfig
    from firsthand.stages.evaluate import evaluate, make_agent

    agent = make_agent(str(smollm2), name="served", max_new_tokens=8, base_url=server)
    assert isinstance(agent, BackendAgent)
    summary = evaluate(agent, "household", "id_test", 2, tmp_path / "eval.json", prompt=PromptConfig(), max_steps=2)
    assert summary["episodes"] == 2 and 0 < summary["mean_steps"] <= 2  # played through the server, step by step
    with pytest.raises(
        InvalidInputError, match="--response-prefix, --decision score and --temperature are for the hf backend only"
    ):
        make_agent(str(smollm2), response_prefix="Thought:", base_url=server)
