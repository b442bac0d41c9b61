"""Run as a script (vLLM spawns its engine processes, so it needs the __main__ guard): load the
model with vLLM's safetensors loader, then with the peer loader once per given configuration,
greedy-decode the same prompts with each, and write the token lists as JSON."""

from __future__ import annotations

import gc
import json
import os
import sys

PROMPTS = ["the night is long and", "def add(a, b):", "tests pass; tests", "0123456789 {}"]


def greedy(model: str, **load_args) -> list[list[int]]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, enforce_eager=True, gpu_memory_utilization=0.1, max_model_len=256,
              dtype="float32", seed=0, **load_args)
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=24), use_tqdm=False)
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    return tokens


def main() -> None:
    model, configs_json, out = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    result = {"safetensors": greedy(model, load_format="safetensors")}
    for name, extra in json.loads(configs_json).items():  # {run name: model_loader_extra_config}
        result[name] = greedy(model, load_format="nightshift-peer", model_loader_extra_config=extra)
    with open(out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
