"""A language model that plays tau-retail's customer, and the registered `tau-retail` factory that builds
the environment with it (``make("tau-retail:user=smollm2-135m")``): the adapter takes the customer as a
callable, so the environment imports no model code."""

from __future__ import annotations

import os
from typing import Any

from firsthand.inference.backends import Backend, Sampling, open_backend

USER_BASE_URL_ENV = "FIRSTHAND_USER_BASE_URL"
"""Where a served customer model answers (an OpenAI-compatible base URL); unset, the model runs here."""


class ModelCustomer:
    """`model` answering the conversation greedily (a restored snapshot answers the same way), in at most
    `max_tokens`; its backend is opened at the first answer, so environments that never hear `respond` load
    nothing."""

    def __init__(self, model: str, backend: str = "auto", *, max_tokens: int = 96) -> None:
        self.model, self.backend_name, self.max_tokens = model, backend, max_tokens
        self._backend: Backend | None = None

    def __call__(self, messages: list[dict[str, str]]) -> str:
        if self._backend is None:
            url = os.environ.get(USER_BASE_URL_ENV)
            self._backend = open_backend(self.model, backend="openai" if url else self.backend_name, base_url=url)
        return self._backend.generate([messages], Sampling(max_tokens=self.max_tokens))[0][0]


def tau_retail(split: str = "train", *, user: str = "scripted", user_backend: str = "auto", **kwargs: Any) -> Any:
    """The `tau-retail` environment: the scripted customer, or `user` (a built-in pretrained model, a local model
    folder, or a served model's name with its base URL in $FIRSTHAND_USER_BASE_URL) played by `ModelCustomer`."""
    from firsthand.envs.tau_retail import TauRetailEnv  # imports the tau2 package: only when asked for

    customer = None if user == "scripted" else ModelCustomer(user, user_backend)
    return TauRetailEnv(split, customer=customer, **kwargs)
