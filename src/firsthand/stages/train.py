"""The train stage: IL, IWM or SR under one optimizer-step budget, with TRL's SFTTrainer.

- ``il``:  SFT on the expert data for `budget` steps (the budget is IL's: epochs x steps per epoch).
- ``iwm``: stage 1, next-observation prediction on the IWM data (one epoch, capped at `iwm_share` of the
  budget); stage 2, SFT on the expert data for the rest. Same weights, same total steps as IL.
- ``sr``:  SFT on reflections mixed with the expert data, shuffled, for the same total steps as IL.

Loss is on completion tokens only (TRL's ``completion_only_loss`` on prompt/completion records in
conversational form, so the model's chat template frames both). bf16 autocast on CPU where supported.
Each stage checkpoints; an interrupted run resumes from its last checkpoint, and a finished stage is
skipped. Several devices: launch the same command with ``accelerate launch -m firsthand.cli train ...``
(or ``torchrun --nproc_per_node N -m firsthand.cli train ...``); the Trainer runs data-parallel, each process
takes ``batch_size / N`` examples a step so that the global batch and the step budget stay the method's, and
only the main process writes firsthand's files (see `distributed`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from firsthand.artifacts import (
    check_config,
    finished,
    load_records,
    model_hash,
    read_manifest,
    relative,
    write_json_atomic,
    write_manifest,
    write_model_prompt,
)
from firsthand.contract import RATIONALES, InvalidInputError, UnknownNameError
from firsthand.device import distributed, fast_bf16, world_size
from firsthand.models import load, require_training_stack, save_model
from firsthand.packing import block_mask, collate_packs, pack
from firsthand.progress import Progress, no_progress
from firsthand.prompts import with_placeholder_thought
from firsthand.stats import BUDGET_RULES, plan_steps
from firsthand.validation import Validator

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method (so budgets stay matched)."""

    epochs: float = 2.0
    """IL epochs over the expert data; this fixes the step budget of every method."""
    batch_size: int = 16
    """Examples per optimizer step (over all processes)."""
    learning_rate: float = 1e-3
    """1e-3 suits the tiny model trained from scratch; use ~1e-5 (full) or ~2e-4 (LoRA) for pretrained ones."""
    max_length: int = 1024
    """Longer examples are truncated from the end (and dropped when no completion token is left)."""
    iwm_share: float = 0.5
    """Largest share of the budget the IWM world-model stage may take."""
    bf16: bool | None = None
    """bf16 mixed precision; None = only where it is fast (see `fast_bf16`)."""
    lora: bool = False
    """Train LoRA adapters (peft) instead of all weights."""
    lora_rank: int = 16
    """Rank of the LoRA adapters."""
    seed: int = 0
    """Seed of initialisation, data order and sampling."""
    save_steps: int = 200
    """Checkpoint every this many steps (the unit of resumption)."""
    budget: str = "paper"
    """How the other methods' steps relate to IL's (`stats.plan_steps`): paper (the authors' released
    configurations: one epoch of world-model data before IL's budget; SR's epochs over the mixed set), auto
    (paper, from the IL budget its validation chose: `il_steps`) or matched (every method gets IL's optimizer
    steps, a compute-matched variant)."""
    il_steps: int | None = None
    """IL's budget in optimizer steps, chosen on validation (rule auto); None: `epochs` over the expert data."""
    steps: int | None = None
    """Train IL for exactly this many optimizer steps instead of its epochs (the compute control)."""
    validate_every: int = 0
    """Measure the model on the validation tasks every this many steps (and at the last) and finish at the
    best checkpoint (`validation`); 0: never, the model is the last step's."""
    patience: int | None = None
    """With `validate_every`: stop after this many validations without a better one (IL's budget search:
    the best step becomes every method's budget); None: train the whole budget."""
    aux_weight: float = 0.05
    """iwm-aux and actobs: the weight lambda of the world-model records' loss beside the expert records' (rLLM
    recommends 0.01-0.05; one large model collapsed at 0.05)."""
    placeholder_thought: bool = True
    """In SR's and STaR's mixed set, expert records begin with a placeholder thought, as reflections begin with
    theirs (`prompts.PLACEHOLDER_THOUGHT`, the authors' ALFWorld release), so an SR model thinks before it
    acts at evaluation."""

    packing: bool = False
    """Train the world-model stage's records of one state as one sequence, their shared prompt once
    (`firsthand.packing`: the same loss and gradients per record; 3.5 to 3.9 times fewer tokens at K = 8,
    docs/benchmarks.md). A batch then holds `batch_size` states, so one world-model epoch is as many steps
    as IL's epoch, not K + 1 times more."""

    def validate(self) -> None:
        if self.budget not in BUDGET_RULES:
            raise UnknownNameError(f"unknown budget rule {self.budget!r}; valid rules: {', '.join(BUDGET_RULES)}")
        if self.budget == "auto" and self.il_steps is None:
            raise InvalidInputError(
                "budget auto needs IL's validated budget (il_steps): `firsthand run` finds it by training IL with "
                "validation first; for `firsthand train`, pass --il-steps N or choose --budget paper or matched"
            )
        if self.aux_weight < 0:
            raise InvalidInputError(f"aux_weight must be at least 0, got {self.aux_weight!r}")
        if self.validate_every < 0 or (self.patience is not None and self.patience < 1):
            raise InvalidInputError(
                f"validate_every must be at least 0 (got {self.validate_every!r}) and patience at least 1 or None "
                f"(got {self.patience!r})"
            )


def _conversational(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "completion": [{"role": "assistant", "content": r["completion"]}],
            **({"weight": r["weight"]} if "weight" in r else {}),  # a loss weight (`auxiliary_batches`)
        }
        for r in records
    ]


def sft_config(config: TrainConfig, steps: int, out: Path, parameters: int | None = None, **overrides: Any) -> Any:
    """The TRL SFTConfig of every training stage (and of bench/training.py, which must measure the same);
    `parameters`: the model's size, which decides automatic bf16 on a CPU (`device.fast_bf16`)."""
    import torch
    from trl import SFTConfig

    settings: dict[str, Any] = dict(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=config.batch_size // world_size(),  # the global batch is batch_size
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        max_length=config.max_length,
        completion_only_loss=True,
        bf16=fast_bf16(parameters) if config.bf16 is None else config.bf16,
        activation_checkpointing=False,  # ~25% faster for small models; memory is not the limit here
        use_cpu=not torch.cuda.is_available(),
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_steps=max(1, steps // 20),
        report_to="none",
        push_to_hub=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # several processes: every trained weight gets a gradient
        # Random batches: length-grouped ones (TRL's other choice) put one kind of state together and
        # learned worse on household (docs/calibration.md).
        train_sampling_strategy="random",
        include_num_input_tokens_seen="non_padding",  # the training tokens every results row reports
    )
    settings.update(overrides)
    return SFTConfig(**settings)


def completion_trainer() -> type:
    """TRL's SFTTrainer with a loss that scores only the positions that have a label.

    With completion-only loss most positions are prompt, yet on a CPU TRL's fused head scores every position
    (its compact path is for GPUs); here the LM head runs only where some row of the batch has a label. Same
    loss, same gradients (tested against TRL's), less work: docs/benchmarks.md.
    """
    from trl import SFTTrainer

    class CompletionSFTTrainer(SFTTrainer):
        validator: Validator | None = None
        """Set: evaluation measures the model on the validation tasks (`validation.Validator`)."""

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> Any:
            if self.validator is None:
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            measured = self.validator.measure(self.model, self.processing_class)
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in measured.items()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            for column in ("weight", "segment_ids", "position_ids"):  # loss weights, packs: to the collator
                if column not in self._signature_columns:
                    self._signature_columns = [*self._signature_columns, column]

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            loss, outputs = completion_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as TRL: DDP averages the gradients over processes
            return (loss, outputs) if return_outputs else loss

    return CompletionSFTTrainer


def completion_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> tuple[Any, Any]:
    """The mean cross-entropy of a batch's labelled tokens, the LM head run only where some row has a label;
    rows weighted by ``weight`` (auxiliary methods) and packed rows (``segment_ids``) as they come."""
    import torch

    weight = inputs.pop("weight", None)  # [B]: each record's loss weight (auxiliary methods), or none
    segments = inputs.pop("segment_ids", None)  # [B, T]: packed rows (`firsthand.packing`), or none
    labels = inputs["labels"][:, 1:]  # [B, T-1]: the token each position predicts
    if segments is not None:
        return _packed_loss(model, inputs, block_mask(segments), labels, num_items_in_batch)
    keep = (labels != -100).any(0).nonzero().squeeze(1)  # positions with a label in some row
    outputs = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs.get("attention_mask"),
        use_cache=False,
        logits_to_keep=keep,
    )
    logits = outputs.logits.float()  # [B, len(keep), V]
    if weight is None:
        total = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), labels[:, keep].flatten(), ignore_index=-100, reduction="sum"
        )
    else:
        per_token = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels[:, keep], ignore_index=-100, reduction="none"
        )  # [B, len(keep)]
        total = (per_token * weight.to(per_token.dtype)[:, None]).sum()
    count = (labels != -100).sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count).clamp(min=1), outputs


def _packed_loss(
    model: Any, inputs: dict[str, Any], mask: Any, labels: Any, num_items_in_batch: Any
) -> tuple[Any, Any]:
    """`completion_loss` of packed rows: the LM head only at the labelled tokens themselves. Packed labels sit
    at other positions in every row, so the positions labelled in some row (the unpacked path's choice) are
    1.5 times as many (SmolLM2, 4 household states: 386 x 4 rows against 1,060; a step 3-4% faster)."""
    import torch

    hidden = model.get_decoder()(
        input_ids=inputs["input_ids"], attention_mask=mask, position_ids=inputs["position_ids"], use_cache=False
    ).last_hidden_state[:, :-1]  # [B, T-1, H]: the positions that predict `labels`
    where = labels != -100
    logits = model.get_output_embeddings()(hidden[where]).float()  # [labelled tokens, V]
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    total = torch.nn.functional.cross_entropy(logits, labels[where], reduction="sum")
    count = where.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count).clamp(min=1), None


def _sft_stage(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    steps: int,
    out: Path,
    config: TrainConfig,
    on_step: Callable[[int], None] | None,
    validator: Validator | None = None,
    packed: bool = False,
) -> dict[str, Any]:
    """One SFTTrainer run of exactly `steps` optimizer steps on `records` (cycling epochs as needed); with a
    `validator` and `config.validate_every`, measured every so many steps and finished at the best
    checkpoint, stopping early after `config.patience` validations without a better one. `packed`: the
    records of each state train as one sequence (`firsthand.packing`), `batch_size` states a batch."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback, TrainerCallback

    class Progress(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if on_step:
                on_step(1)

    validating = validator is not None and config.validate_every > 0
    overrides: dict[str, Any] = {}
    if validating:
        # Hugging Face's own best-checkpoint tracking: a checkpoint at every validation, the best one kept beside
        # the last (save_total_limit 1) and loaded at the end; both resume with the trainer's state.
        overrides = dict(
            eval_strategy="steps",
            eval_steps=config.validate_every,
            save_steps=config.validate_every,
            load_best_model_at_end=True,
            metric_for_best_model="selection",
            greater_is_better=True,
        )
    weighted = bool(records) and "weight" in records[0]
    if weighted:  # auxiliary batches: read in the order built, twice the batch (expert + world-model records)
        overrides.update(
            train_sampling_strategy="sequential",
            per_device_train_batch_size=2 * config.batch_size // world_size(),
        )
    args = sft_config(config, steps, out, parameters=model.num_parameters(), **overrides)
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # TRL's tokenizing bars would cut through the caller's progress display
    try:
        callbacks: list[Any] = [Progress()]
        if validating and config.patience is not None:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.patience))
        trainer_class = completion_trainer()
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(
                # packed: each row keeps its state, which survives TRL dropping rows it truncated to nothing
                [
                    {**c, "state": "|".join(map(str, _state(r)))}
                    for c, r in zip(_conversational(records), records, strict=True)
                ]
                if packed
                else _conversational(records)
            ),
            # the Trainer wants evaluation data to evaluate at all; the validator measures instead
            eval_dataset=Dataset.from_list(_conversational(records[:1])) if validating else None,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
        trainer.validator = validator if validating else None
        if weighted:
            trainer.data_collator = _with_weights(trainer.data_collator)
        if packed:
            trainer.train_dataset = Dataset.from_list(
                pack(rows := list(trainer.train_dataset), [row["state"] for row in rows], config.max_length)
            )
            pad = tokenizer.pad_token_id
            trainer.data_collator = lambda packs: collate_packs(packs, pad)
    finally:
        if shown:
            datasets.enable_progress_bars()
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # losses go to the log history and the manifest, not stdout
    resume = any(out.glob("checkpoint-*"))
    if resume and on_step:
        last = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
        on_step(last)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - start
    tokens = sum(len(x["input_ids"]) for x in trainer.train_dataset)
    summary = {
        "steps": trainer.state.global_step,  # `steps`, unless validation stopped the stage early
        "planned_steps": steps,
        "examples": len(records),
        "seconds": seconds,
        "train_loss": result.training_loss,
        # passes over the expert data (auxiliary batches: over its records of weight 1, half of every batch)
        "epochs": steps * config.batch_size / len(_expert_records(records)),
        "processes": world_size(),  # data-parallel processes sharing each batch of `batch_size`
        "tokens_per_epoch": tokens,
        **({"packs": len(trainer.train_dataset)} if packed else {}),
        "tokens": int(trainer.state.num_input_tokens_seen),  # processed, prompt and completion, no padding
        "loss_history": [h for h in trainer.state.log_history if "loss" in h],
    }
    if validating:
        summary["validation"] = [
            {"step": h["step"], **{k[5:]: v for k, v in h.items() if k.startswith("eval_") and k[5:] in _MEASURES}}
            for h in trainer.state.log_history
            if "eval_selection" in h
        ]
        summary["best_step"] = trainer.state.best_global_step or trainer.state.global_step
    return summary


_MEASURES = ("accuracy", "success", "selection")


def _expert_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct records a stage imitates: all of them, or those of weight 1 in auxiliary batches."""
    if not records or "weight" not in records[0]:
        return records
    return list({(r["prompt"], r["completion"]): r for r in records if r["weight"] == 1.0}.values())


def _with_weights(collate: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """TRL's collator, with each record's loss weight beside the batch it pads (it knows no such column)."""
    import torch

    def collate_weighted(examples: list[dict[str, Any]]) -> dict[str, Any]:
        weights = [float(e.get("weight", 1.0)) for e in examples]
        batch = collate([{k: v for k, v in e.items() if k != "weight"} for e in examples])
        batch["weight"] = torch.tensor(weights)
        return batch

    return collate_weighted


TRAIN_METHODS: tuple[str, ...] = ("il", "iwm", "sr", "iwm+sr", "star", "iwm-aux", "actobs")
"""What `train` can run: IL, IWM, SR, IWM's world-model stage followed by SR's data (the paper never
combines the two), the STaR baseline (its rationales mixed with the expert data, SR's budget), and world
modeling as an auxiliary loss in IL's own steps: on the branched alternatives' outcomes (`iwm-aux`) or, the
control, on the expert's own next observations only (`actobs`, no branching)."""
AUXILIARY = {"iwm-aux": "alternative", "actobs": "expert_transition"}
"""The auxiliary methods and the IWM records each adds to every batch (by `kind`): every executed action's
outcome (the expert's and the alternatives'), or only the expert's."""


def needed_data(method: str) -> list[str]:
    """The build directories `method` trains on: the expert (IL) data always, and its own."""
    if method in AUXILIARY:
        return ["il", "iwm"]
    return ["il"] + [kind for kind in ("iwm", *RATIONALES) if kind in method.split("+")]


def check_data(method: str, data: dict[str, Path]) -> None:
    """Every method needs the IL (expert) dataset; iwm, sr and iwm+sr also need their own."""
    if method not in TRAIN_METHODS:
        raise UnknownNameError(f"unknown method {method!r}; valid methods: {', '.join(TRAIN_METHODS)}")
    missing = [m for m in needed_data(method) if m not in data]
    if missing:
        raise InvalidInputError(
            f"method {method!r} needs the {', '.join(missing)} dataset(s): build them with "
            f"`firsthand build --method {missing[0]}` and pass the directory (--data for iwm/sr)"
        )


def plan_budget(
    method: str, n_expert: int, n_extra: int, config: TrainConfig, *, n_sr: int = 0
) -> list[tuple[str, int]]:
    """The stages of `method` as (data, steps) under `config.budget` (see `stats.plan_steps`).

    `n_extra` is the size of the method's own data (the IWM data for iwm and iwm+sr, the reflections for
    sr, the rationales for star) and `n_sr` the reflections of iwm+sr. STaR is planned as SR is.
    `config.steps` overrides IL's budget (the compute control).
    """
    if config.steps is not None:
        if method != "il" or config.steps < 1:
            raise InvalidInputError(
                f"steps={config.steps!r}: a fixed step count is for IL (the compute control), at least 1"
            )
        return [("expert", config.steps)]
    if method in AUXILIARY:  # world modeling takes no imitation step: IL's budget, both kinds in every batch
        il = plan_steps(
            "il",
            config.budget,
            expert=n_expert,
            batch_size=config.batch_size,
            epochs=config.epochs,
            il_steps=config.il_steps,
        )
        return [(f"expert+{method}", il[0][1])]
    iwm = n_extra if "iwm" in method else 0
    sr = n_sr if method == "iwm+sr" else n_extra if method in RATIONALES else 0
    stages = plan_steps(
        "sr" if method == "star" else method,
        config.budget,
        expert=n_expert,
        iwm=iwm,
        sr=sr,
        batch_size=config.batch_size,
        epochs=config.epochs,
        iwm_share=config.iwm_share,
        il_steps=config.il_steps,
    )
    return [("star+expert" if method == "star" and kind == "sr+expert" else kind, steps) for kind, steps in stages]


def planned_stages(method: str, data: dict[str, Path], config: TrainConfig) -> list[tuple[str, int]]:
    """The stages `train` will run as (data, steps), from the build manifests' record counts (no data read)."""
    check_data(method, data)
    counts = {kind: read_manifest(data[kind], "build")["count"] for kind in needed_data(method)}
    if config.packing and "iwm" in counts:  # a packed world-model epoch: one pack per state
        counts["iwm"] = len(_by_state(load_records(data["iwm"])))
    own = counts.get("iwm", counts.get("sr", counts.get("star", 0)))
    return plan_budget(method, counts["il"], own, config, n_sr=counts.get("sr", 0))


def train(
    method: str,
    data: dict[str, Path],
    base_model: Path,
    out: Path,
    config: TrainConfig | None = None,
    *,
    progress: Progress = no_progress,
    validator: Validator | None = None,
) -> dict[str, Any]:
    """Train `method` from `base_model` on the build directories in `data` (keys il, iwm, sr).

    Writes the final model to `out`/model, with the prompt settings of its data beside the weights
    (`artifacts.MODEL_PROMPT`), and returns the manifest (stage "train"). With a `validator` and
    `config.validate_every`, every policy stage (not IWM's world-model stage) finishes at its best checkpoint.
    """
    require_training_stack()
    config = config or TrainConfig()
    out = Path(out)
    check_data(method, data)
    config.validate()
    processes = world_size()
    if config.batch_size % processes:
        raise InvalidInputError(
            f"batch_size {config.batch_size!r} does not split over {processes} processes; "
            f"choose a multiple of {processes} (--batch-size)"
        )
    stages = planned_stages(method, data, config)  # the same plan the pipeline sized its jobs by
    stage_config = {
        "method": method,
        "base_model": relative(base_model, out),
        "base_model_hash": model_hash(Path(base_model)),
        "data": {k: relative(v, out) for k, v in sorted(data.items())},
        "data_hashes": {k: read_manifest(v, "build")["content_hash"] for k, v in sorted(data.items())},
        "train": asdict(config),
        "stages": stages,
    }
    if validator is not None and config.validate_every:
        stage_config["validation"] = validator.describe()
    done = finished(out, "train", stage_config)
    if done is not None:
        return done
    state = distributed()
    main = state is None or state.is_main_process
    sync = state.wait_for_everyone if state is not None else lambda: None
    records = {kind: load_records(data[kind]) for kind in needed_data(method)}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        check_config(out, stage_config)  # an interrupted training resumes only with the same settings
    sync()

    import torch

    torch.manual_seed(config.seed)
    model, tokenizer = _prepare(*load(base_model, for_training=True), config)
    with progress(f"train {method} seed {config.seed}", sum(steps for _, steps in stages)) as advance:
        stage_dir, summaries = _train_stages(model, tokenizer, stages, records, out, config, advance, validator)
    final = out / "model"
    if main:
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(stage_dir / "model", final, copy_function=os.link)  # hard links: no second copy on disk
        write_model_prompt(final, read_manifest(data["il"], "build")["config"]["prompt"])
        write_manifest(
            out,
            stage="train",
            count=sum(s["steps"] for s in summaries),
            config=stage_config,
            files=["config.json", *(f"model/{f.name}" for f in sorted(final.iterdir()) if f.is_file())],
            extra={"stages": summaries, "model": "model"},
            packages=("torch", "transformers", "trl", "peft", "datasets"),
        )
    sync()
    return read_manifest(out, "train")


def _train_stages(
    model: Any,
    tokenizer: Any,
    stages: list[tuple[str, int]],
    records: dict[str, list[dict[str, Any]]],
    out: Path,
    config: TrainConfig,
    on_step: Callable[[int], None],
    validator: Validator | None = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Run `stages` in order, each from the model the one before left; return the last stage's folder
    and every stage's summary."""
    rng = random.Random(config.seed)  # the same draws in every process: they train on the same records
    summaries: list[dict[str, Any]] = []
    state = distributed()
    main = state is None or state.is_main_process
    sync = state.wait_for_everyone if state is not None else lambda: None
    for index, (kind, steps) in enumerate(stages):
        if steps == 0:
            continue
        stage_dir = out / f"stage{index + 1}-{kind}"
        if (stage_dir / "stage.json").exists():  # finished before an interruption: continue from its model
            model, tokenizer = _prepare(*load(stage_dir / "model", for_training=True), config)
            summaries.append(json.loads((stage_dir / "stage.json").read_text()))
            continue
        examples = stage_examples(kind, steps, records, config, rng)
        policy = validator if kind != "iwm" else None  # a world-model stage is no policy to validate
        packed = config.packing and kind == "iwm"
        summary = {
            "data": kind,
            **_sft_stage(model, tokenizer, examples, steps, stage_dir, config, on_step, policy, packed=packed),
        }
        if main:
            _save(model, tokenizer, stage_dir / "model", config)
            for checkpoint in stage_dir.glob("checkpoint-*"):  # the stage's model is saved: checkpoints can go
                shutil.rmtree(checkpoint)
            write_json_atomic(stage_dir / "stage.json", summary)  # written last: marks the stage done
        sync()
        summaries.append(summary)
    return stage_dir, summaries


def stage_examples(
    kind: str, steps: int, records: dict[str, list[dict[str, Any]]], config: TrainConfig, rng: random.Random
) -> list[dict[str, Any]]:
    """The records a stage trains on: the expert data; one epoch (at most `steps` batches) of the IWM data; or
    the reflections (rationales) mixed with the expert data, whose records then begin with a placeholder
    thought (`TrainConfig.placeholder_thought`), shuffled."""
    if kind == "expert":
        return records["il"]
    if kind.startswith("expert+") and kind[7:] in AUXILIARY:
        return auxiliary_batches(records, AUXILIARY[kind[7:]], steps, config, rng)
    if kind == "iwm" and config.packing:  # whole states: each trains as one pack
        states = list(_by_state(records["iwm"]).values())
        return [r for state in rng.sample(states, min(len(states), steps * config.batch_size)) for r in state]
    if kind == "iwm":
        return rng.sample(records["iwm"], min(len(records["iwm"]), steps * config.batch_size))
    expert = records["il"]
    if config.placeholder_thought:
        expert = [{**r, "completion": with_placeholder_thought(r["completion"])} for r in expert]
    examples = records[kind.split("+")[0]] + expert  # sr+expert, star+expert
    rng.shuffle(examples)
    return examples


def _state(record: dict[str, Any]) -> tuple[str, int]:
    """The expert state a record was made at: the records of one state share their prompt's beginning."""
    return record.get("trajectory_id", ""), record.get("step_index", -1)


def _by_state(records: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(_state(record), []).append(record)
    return groups


def auxiliary_batches(
    records: dict[str, list[dict[str, Any]]], kind: str, steps: int, config: TrainConfig, rng: random.Random
) -> list[dict[str, Any]]:
    """`steps` batches in order, each `batch_size` expert records (epoch after epoch, reshuffled, as IL sees
    them) then `batch_size` world-model records (of `kind`; the expert transitions count for "alternative"
    too: every executed action's outcome), those weighted by `aux_weight`. Read in this order (a sequential
    sampler, batches of twice `batch_size`), IL's step count and its expert batches stay IL's."""
    aux = [r for r in records["iwm"] if r["kind"] == kind or kind == "alternative"]
    if not aux:
        raise InvalidInputError(f"the IWM data holds no {kind} records to add as an auxiliary loss")

    def cycle(items: list[dict[str, Any]]) -> Any:
        while True:
            order = list(items)
            rng.shuffle(order)
            yield from order

    expert, world = cycle(records["il"]), cycle(aux)
    out = []
    for _ in range(steps):
        out += [{**next(expert), "weight": 1.0} for _ in range(config.batch_size)]
        out += [{**next(world), "weight": config.aux_weight} for _ in range(config.batch_size)]
    return out


def _prepare(model: Any, tokenizer: Any, config: TrainConfig) -> tuple[Any, Any]:
    """Wrap the model in LoRA adapters when configured (peft)."""
    if config.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=config.lora_rank, lora_alpha=2 * config.lora_rank, target_modules="all-linear", task_type="CAUSAL_LM"
            ),
        )
    return model, tokenizer


def _save(model: Any, tokenizer: Any, path: Path, config: TrainConfig) -> None:
    """Save a plain (merged) model folder atomically; training goes on with the unmerged model."""
    if config.lora:
        model = copy.deepcopy(model).merge_and_unload()
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(model, tokenizer, tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
