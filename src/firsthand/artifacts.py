"""Stage artifacts on disk: JSONL shards written atomically, and a manifest per stage directory.

Every stage writes its output directory as a set of shard files plus ``manifest.json``::

    {"stage": "branch", "count": 7312, "config": {...}, "versions": {...},
     "content_hash": "sha256:...", "files": ["shard-00000.jsonl", ...], "created": "..."}

A stage whose manifest exists is complete; a stage without one is resumed shard by shard, since
each shard is written to a temporary name and renamed into place only once it is whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from firsthand.contract import Branch, InvalidInputError, Trajectory
from firsthand.prompts import PromptConfig

MANIFEST = "manifest.json"
MODEL_PROMPT = "firsthand_prompt.json"
"""In a trained model's folder: the prompt settings of its training data, which evaluation renders with."""


def write_jsonl_atomic(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write `records` to `path` as JSONL so that `path` exists only when complete. Returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file written by firsthand (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def content_hash(paths: Iterable[Path]) -> str:
    """sha256 over the bytes of `paths` in sorted name order: equal outputs give equal hashes."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


def package_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Versions of Python, firsthand and the named packages that are installed."""
    versions = {"python": platform.python_version()}
    for name in ("firsthand", *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(
    out: Path,
    *,
    stage: str,
    count: int,
    config: dict[str, Any],
    files: list[str],
    extra: dict[str, Any] | None = None,
    packages: Iterable[str] = (),
) -> dict[str, Any]:
    """Seal stage directory `out`: hash its `files` and write manifest.json last."""
    manifest = {
        "stage": stage,
        "count": count,
        "config": config,
        "versions": package_versions(packages),
        "content_hash": content_hash(out / f for f in files),
        "files": sorted(files),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def read_manifest(directory: Path, stage: str | None = None) -> dict[str, Any]:
    """Read `directory`/manifest.json, checking that it is complete and (if given) of `stage`."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise InvalidInputError(
            f"{str(directory)!r} has no {MANIFEST}: it is not a finished firsthand stage directory "
            f"(run the stage that produces it, or let an interrupted run finish)"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if stage is not None and manifest.get("stage") != stage:
        raise InvalidInputError(
            f"{str(directory)!r} holds the output of stage {manifest.get('stage')!r}, but a {stage!r} directory "
            f"is needed here"
        )
    return manifest


# ------------------------------------------------------------------------------------------------
# Readers, one per stage format (each beside the writer's conventions above)
# ------------------------------------------------------------------------------------------------
def load_trajectories(directory: Path) -> list[Trajectory]:
    """Read the trajectories of a finished collect directory, in order."""
    manifest = read_manifest(Path(directory), "collect")
    return [Trajectory.from_dict(r) for name in manifest["files"] for r in read_jsonl(Path(directory) / name)]


def load_branches(directory: Path) -> tuple[list[Trajectory], list[Branch]]:
    """Read a finished branch directory: the expert trajectories and their Branch records, in order."""
    directory = Path(directory)
    manifest = read_manifest(directory, "branch")
    trajectories = [Trajectory.from_dict(r) for r in read_jsonl(directory / "trajectories.jsonl")]
    branches = [
        Branch.from_dict(r)
        for name in manifest["files"]
        if name.startswith("branches-")
        for r in read_jsonl(directory / name)
    ]
    return trajectories, branches


def load_records(directory: Path) -> list[dict[str, Any]]:
    """The prompt/completion records of a finished build directory."""
    read_manifest(Path(directory), "build")
    return list(read_jsonl(Path(directory) / "data.jsonl"))


def write_model_prompt(model: Path, prompt: dict[str, Any]) -> None:
    """Record in a model folder the prompt settings (a PromptConfig as a dict) it was trained with."""
    write_json_atomic(Path(model) / MODEL_PROMPT, prompt)


def read_model_prompt(model: Path) -> PromptConfig | None:
    """The prompt settings a `firsthand train` model was trained with; None for other model folders.

    Data built before `restate_goal` existed did not restate the goal, so a missing key reads as False.
    """
    path = Path(model) / MODEL_PROMPT
    if not path.is_file():
        return None
    return PromptConfig(**{"restate_goal": False, **json.loads(path.read_text(encoding="utf-8"))})
