"""Stage artifacts on disk: JSONL shards written atomically, and a manifest per stage directory.

Every stage writes its output directory as a set of shard files plus ``manifest.json``::

    {"stage": "branch", "count": 7312, "config": {...}, "versions": {...},
     "content_hash": "sha256:...", "files": ["shard-00000.jsonl", ...],
     "file_hashes": {"shard-00000.jsonl": "sha256:...", ...}, "created": "..."}

A stage whose manifest exists is complete, and is reused only by a call with the same config (paths in a
config are relative to the stage directory, so a run folder can be moved or copied whole); a stage without
one is resumed shard by shard, since each shard is written to a temporary name and renamed into place only
once it is whole. Readers check every file against the manifest's hashes before using it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from firsthand.contract import Branch, InvalidInputError, Trajectory
from firsthand.prompts import PromptConfig

MANIFEST = "manifest.json"
CLAIM = ".claim"
"""In a folder being written: which process writes it (see `claimed`)."""
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
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that `path` exists only when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file written by firsthand (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise InvalidInputError(
                        f"{str(path)!r} line {lineno} is not valid JSON ({e.msg}, column {e.colno}): the file is "
                        f"damaged; run the stage that wrote it again into a new --out"
                    ) from None


def _feed(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    _feed(h, path)
    return "sha256:" + h.hexdigest()


def _combined(hashes: dict[str, str]) -> str:
    """One hash over file names and their hashes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(hashes):
        h.update(name.encode())
        h.update(hashes[name].encode())
    return "sha256:" + h.hexdigest()


def content_hash(root: Path, names: Iterable[str]) -> str:
    """sha256 over the names (relative to `root`) and bytes of files, in sorted name order: equal outputs give
    equal hashes wherever the folder lies."""
    return _combined({name: file_hash(Path(root) / name) for name in names})


def model_hash(folder: Path) -> str:
    """content_hash of the files at the top of a model folder (weights, config, tokenizer)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"model folder {str(folder)!r} does not exist")
    return content_hash(folder, [f.name for f in folder.iterdir() if f.is_file()])


def relative(path: Path | str, out: Path) -> str:
    """`path` as seen from stage directory `out`: what a config records, so that a run folder moved or copied
    whole (or named from another working directory) keeps the same config."""
    return os.path.relpath(Path(path).resolve(), Path(out).resolve())


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
    """Seal stage directory `out`: hash its `files` (paths relative to `out`) and write manifest.json last."""
    hashes = {name: file_hash(out / name) for name in sorted(files)}
    manifest = {
        "stage": stage,
        "count": count,
        "config": config,
        "versions": package_versions(packages),
        "content_hash": _combined(hashes),  # each file read once
        "files": sorted(files),
        "file_hashes": hashes,
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
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{str(path)!r} is not valid JSON ({e.msg}): the stage directory is damaged") from None
    if stage is not None and manifest.get("stage") != stage:
        raise InvalidInputError(
            f"{str(directory)!r} holds the output of stage {manifest.get('stage')!r}, but a {stage!r} directory "
            f"is needed here"
        )
    return manifest


def verified_manifest(directory: Path, stage: str) -> dict[str, Any]:
    """`read_manifest`, after checking that every file it lists is on disk with the bytes it had when the
    stage finished (a cut or edited shard is named, never read silently)."""
    directory = Path(directory)
    manifest = read_manifest(directory, stage)
    for name in manifest["files"]:
        if not (directory / name).is_file():
            raise InvalidInputError(
                f"{str(directory / name)!r} is listed in {str(directory / MANIFEST)!r} but missing: run the "
                f"{stage} stage again into a new --out"
            )
    for name, expected in manifest["file_hashes"].items():
        if file_hash(directory / name) != expected:
            raise InvalidInputError(
                f"{str(directory / name)!r} differs from what the {stage} stage wrote (its hash is not the one in "
                f"{MANIFEST}): the file was cut or edited; run the stage again into a new --out"
            )
    return manifest


def check_output_dir(out: Path) -> None:
    """Refuse an output folder that is an existing file, before any work is done."""
    if Path(out).exists() and not Path(out).is_dir():
        raise InvalidInputError(f"--out {str(out)!r} is an existing file; give a folder to write the stage into")


@contextmanager
def claimed(directory: Path) -> Iterator[None]:
    """Hold `directory` for this process while it writes there.

    A second launch on the same output (another terminal, another machine sharing the folder) is refused,
    naming the holder, instead of doing the same work twice; a claim left by a process of this machine that
    no longer runs is taken over; claims of this process nest."""
    path = Path(directory) / CLAIM
    me = {
        "host": platform.node(),
        "pid": os.getpid(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # being written this instant, or removed: look again
                continue
            if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                yield  # this process already holds it
                return
            if holder.get("host") == me["host"] and not _running(int(holder.get("pid", 0))):
                path.unlink(missing_ok=True)  # left by a process that died
                continue
            raise InvalidInputError(
                f"{str(directory)!r} is being written by process {holder.get('pid')} on {holder.get('host')!r} "
                f"since {holder.get('since')}; wait for it to finish, or, if that process is gone, delete "
                f"{str(path)!r} and run again"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
        return
    raise InvalidInputError(
        f"could not claim {str(directory)!r}: {str(path)!r} keeps changing; is another run starting?"
    )


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def finished(out: Path, stage: str, config: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of `stage` in `out` when it finished with `config`; None when it has not finished.

    A finished stage with other settings is refused, naming what differs: reusing it would label old data
    with new settings.
    """
    out = Path(out)
    check_output_dir(out)
    if not (out / MANIFEST).exists():
        return None
    manifest = read_manifest(out, stage)
    differences = config_differences(manifest["config"], config)
    if differences:
        changed = "; ".join(f"{key}: {a!r} there, {b!r} now" for key, a, b in differences)
        raise InvalidInputError(
            f"{str(out)!r} already holds a finished {stage} stage made with other settings ({changed}); run with "
            f"the same settings to reuse it, or choose another --out"
        )
    return manifest


def check_config(out: Path, config: dict[str, Any]) -> None:
    """Record `config` in out/config.json, or check that a resumed (unfinished) stage uses the same one."""
    path = Path(out) / "config.json"
    if path.exists():
        differences = config_differences(json.loads(path.read_text(encoding="utf-8")), config)
        if differences:
            changed = ", ".join(key for key, _, _ in differences)
            raise InvalidInputError(
                f"{str(out)!r} holds an unfinished run with other settings (differs in: {changed}); resume it "
                f"with the same settings, or choose another --out"
            )
    else:
        write_json_atomic(path, config)


SETTINGS_ADDED: dict[str, Any] = {"select_by": "success", "packing": False}
"""Settings added after runs were saved without them, each with the value that does what the code did before
it existed: a saved config that lacks one matches a new config holding that value, so such runs resume."""


def config_differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every setting that differs between two configs, compared as
    they read back from JSON (tuples as lists). A key of `SETTINGS_ADDED` missing from `old` differs only
    from another value than the one listed."""
    if not prefix:
        old, new = json.loads(json.dumps(old)), json.loads(json.dumps(new))
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            diff
            for key in sorted(set(old) | set(new))
            if not (key not in old and key in SETTINGS_ADDED and new[key] == SETTINGS_ADDED[key])
            for diff in config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


# ------------------------------------------------------------------------------------------------
# Readers, one per stage format (each beside the writer's conventions above)
# ------------------------------------------------------------------------------------------------
def load_trajectories(directory: Path) -> list[Trajectory]:
    """Read the trajectories of a finished collect directory, in order."""
    manifest = verified_manifest(Path(directory), "collect")
    return [Trajectory.from_dict(r) for name in manifest["files"] for r in read_jsonl(Path(directory) / name)]


def load_branches(directory: Path) -> tuple[list[Trajectory], list[Branch]]:
    """Read a finished branch directory: the expert trajectories and their Branch records, in order."""
    directory = Path(directory)
    manifest = verified_manifest(directory, "branch")
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
    verified_manifest(Path(directory), "build")
    return list(read_jsonl(Path(directory) / "data.jsonl"))


def write_model_prompt(model: Path, prompt: dict[str, Any]) -> None:
    """Record in a model folder the prompt settings (a PromptConfig as a dict) it was trained with."""
    write_json_atomic(Path(model) / MODEL_PROMPT, prompt)


def trained_method(model: Path | str) -> str:
    """The method of the firsthand run (`train`, or `rl` from a trained model) that made the model folder
    `model`, read from that run's manifest beside it; "" for any other folder."""
    manifest = Path(model).parent / MANIFEST
    if not manifest.is_file():
        return ""
    return str(json.loads(manifest.read_text(encoding="utf-8")).get("config", {}).get("method", ""))


def read_model_prompt(model: Path) -> PromptConfig | None:
    """The prompt settings a `firsthand train` model was trained with; None for other model folders."""
    path = Path(model) / MODEL_PROMPT
    if not path.is_file():
        return None
    return PromptConfig(**json.loads(path.read_text(encoding="utf-8")))
