#!/usr/bin/env python3
"""Check the prepared SmolLM2-135M-Instruct decoder (model.q4.onnx + tokenizer.json) with ONNX Runtime.

usage: PYTHONPATH=.cache/edgefleet/python python3 scripts/check_smollm2.py [MODEL_DIR]

MODEL_DIR defaults to $EDGEFLEET_CACHE/models/smollm2-135m (EDGEFLEET_CACHE defaults to
.cache/edgefleet, as in setup.sh). It checks the interface (names, dtypes, dims), that a first call
with an empty past ([1, 3, 0, 64]) works, that greedy decoding with the KV cache answers the chat
question "What is the capital of France?" with "The capital of France is Paris.", and prints the
latency of a 32-token prefill and the mean per-token decode over 64 tokens on one intra-op
thread. Exits non-zero when a check fails.
"""
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
EXPECTED = "The capital of France is Paris."
EOS = 2  # <|im_end|>, which is also the GGUF's end-of-sequence id


class Decoder:
    def __init__(self, path, threads=1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        past = next(i for i in self.session.get_inputs() if i.name.startswith("past_key_values."))
        self.kv_heads, self.head_dim = past.shape[1], past.shape[3]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # The fused layout (GroupQueryAttention) reads positions from attention_mask.
        self.has_positions = any(i.name == "position_ids" for i in self.session.get_inputs())

    def empty_cache(self):
        return {n: np.zeros((1, self.kv_heads, 0, self.head_dim), np.float32) for n in self.past_names}

    def step(self, ids, cache):
        """Run ids (a list) after the cached positions; returns (logits [1, len, vocab], new cache)."""
        past = next(iter(cache.values())).shape[2]
        feed = {
            "input_ids": np.array([ids], np.int64),
            "attention_mask": np.ones((1, past + len(ids)), np.int64),
            **cache,
        }
        if self.has_positions:
            feed["position_ids"] = np.arange(past, past + len(ids), dtype=np.int64)[None]
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        new_cache = {n: outputs[n.replace("past_key_values.", "present.")] for n in self.past_names}
        return outputs["logits"], new_cache

    def greedy(self, ids, max_new, stop=None):
        logits, cache = self.step(ids, self.empty_cache())
        out = []
        for _ in range(max_new):
            token = int(logits[0, -1].argmax())
            if token == stop:
                break
            out.append(token)
            logits, cache = self.step([token], cache)
        return out


def check_interface(decoder, failures):
    s = decoder.session
    inputs = {i.name: i for i in s.get_inputs()}
    outputs = {o.name: o for o in s.get_outputs()}
    layers = len(decoder.past_names) // 2
    print(f"interface: {len(inputs)} inputs, {len(outputs)} outputs, {layers} layers")
    for name in ("input_ids", "attention_mask", "position_ids")[: 3 if decoder.has_positions else 2]:
        print(f"  in  {name:28s} {inputs[name].type:16s} {inputs[name].shape}")
        if inputs[name].type != "tensor(int64)":
            failures.append(f"{name} is {inputs[name].type}, not int64")
    for name in ("past_key_values.0.key", "logits", "present.0.key"):
        io = inputs.get(name) or outputs[name]
        print(f"  {'in ' if name in inputs else 'out'} {name:28s} {io.type:16s} {io.shape}")
    expected = {f"past_key_values.{i}.{k}" for i in range(layers) for k in ("key", "value")}
    if set(decoder.past_names) != expected or {f"present.{n[16:]}" for n in expected} - set(outputs):
        failures.append("past_key_values.* / present.* do not pair up")

    # A first call with an empty past: present grows to the prompt length, logits cover every position.
    logits, cache = decoder.step([1, 2, 3], decoder.empty_cache())
    shapes = {tuple(v.shape) for v in cache.values()}
    print(f"  empty past [1, {decoder.kv_heads}, 0, {decoder.head_dim}] -> "
          f"logits {list(logits.shape)}, present {sorted(shapes)}")
    if logits.shape[:2] != (1, 3) or shapes != {(1, decoder.kv_heads, 3, decoder.head_dim)}:
        failures.append("a call with an empty past returned unexpected shapes")


def check_answer(decoder, tokenizer, failures):
    ids = tokenizer.encode(PROMPT).ids
    answer_ids = decoder.greedy(ids, 32, stop=EOS)
    answer = tokenizer.decode(answer_ids).strip()
    print(f"prompt: {len(ids)} tokens; greedy answer ({len(answer_ids)} tokens): {answer!r}")
    if answer != EXPECTED:
        failures.append(f"answer {answer!r}, expected {EXPECTED!r}")


def time_it(decoder):
    prefill_ids = list(np.random.default_rng(0).integers(100, 40000, 32))
    decoder.step(prefill_ids, decoder.empty_cache())  # warm-up (first-run allocations)
    prefill = []
    for _ in range(5):
        t0 = time.perf_counter()
        logits, cache = decoder.step(prefill_ids, decoder.empty_cache())
        prefill.append(time.perf_counter() - t0)
    token, decode = int(logits[0, -1].argmax()), []
    for _ in range(64):
        t0 = time.perf_counter()
        logits, cache = decoder.step([token], cache)
        decode.append(time.perf_counter() - t0)
        token = int(logits[0, -1].argmax())
    print(f"latency (1 intra-op thread): 32-token prefill {statistics.median(prefill) * 1e3:.1f} ms (median of 5), "
          f"decode {statistics.mean(decode) * 1e3:.1f} ms/token (mean of 64 after the prefill, "
          f"min {min(decode) * 1e3:.1f}, max {max(decode) * 1e3:.1f})")


def main():
    cache_dir = os.environ.get("EDGEFLEET_CACHE", os.path.join(ROOT, ".cache", "edgefleet"))
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(cache_dir, "models", "smollm2-135m")
    model = os.path.join(model_dir, "model.q4.onnx")
    print(f"{model}: {os.path.getsize(model) / 1e6:.1f} MB (onnxruntime {ort.__version__})")
    t0 = time.perf_counter()
    decoder = Decoder(model)
    print(f"session created in {time.perf_counter() - t0:.2f} s")
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    failures = []
    check_interface(decoder, failures)
    check_answer(decoder, tokenizer, failures)
    time_it(decoder)
    for f in failures:
        print(f"check_smollm2: FAILED: {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print("check_smollm2: ok")


if __name__ == "__main__":
    main()
