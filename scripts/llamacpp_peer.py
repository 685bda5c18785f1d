#!/usr/bin/env python3
"""The peer edgefleet's generate scenario is measured against: llama.cpp (the llama-cpp-python
package) greedy-decoding the same GGUF weights, timed around its eval calls.

usage: llamacpp_peer.py MODEL.gguf --threads N --prompt-tokens P --generate-tokens G --seconds S
       [--sentence TEXT ...]
Prints one JSON object: {"generations", "ttft_ms_p50", "tpot_ms_p50", "tpot_ms_mean",
"decode_tokens_per_s", "prefill_tokens_per_s"}, measured like the agent's generate scenario: the
prompt is the sentences' tokens one after another, repeated and cut to P tokens; time to first
token covers evaluating the prompt and choosing the first token (argmax of its logits); each later
token covers one eval of the previous choice and the argmax. One warm-up generation is not
counted; generations repeat until S seconds and at least 5 generations have passed. Before
timing, it checks that it reads the logits right: greedy decoding answers the chat question "What
is the capital of France?" with "The capital of France is Paris." (as the ONNX decoder does).
"""
import argparse
import json
import statistics
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama

CHECK_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
CHECK_ANSWER = "The capital of France is Paris."


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--prompt-tokens", type=int, required=True)
    parser.add_argument("--generate-tokens", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sentence", action="append", default=[])
    args = parser.parse_args()

    context = max(args.prompt_tokens + args.generate_tokens, 64)
    llm = Llama(model_path=args.gguf, n_ctx=context, n_batch=context,
                n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    ids = []
    for sentence in args.sentence or ["Edge devices run small language models close to the data they serve."]:
        ids += llm.tokenize(sentence.encode(), add_bos=False, special=False)
    if not ids:
        sys.exit("llamacpp_peer: the sentences have no tokens")
    prompt = [ids[i % len(ids)] for i in range(args.prompt_tokens)]
    vocab = llm.n_vocab()

    def next_token():
        """The argmax of the last evaluated position's logits. (Llama.eval keeps logits in
        `scores` only with logits_all, which would copy every prompt position's.)"""
        logits = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(logits, shape=(vocab,))))

    def generation(tokens, count):
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        token = next_token()
        ttft = time.perf_counter() - start
        steps, chosen = [], [token]
        for _ in range(1, count):
            step = time.perf_counter()
            llm.eval([token])
            token = next_token()
            steps.append(time.perf_counter() - step)
            chosen.append(token)
        return ttft, steps, chosen

    check = llm.tokenize(CHECK_PROMPT.encode(), add_bos=False, special=True)
    answer = generation(check, 8)[2]
    text = llm.detokenize(answer[: answer.index(2)] if 2 in answer else answer).decode(errors="replace").strip()
    if text != CHECK_ANSWER:
        sys.exit(f"llamacpp_peer: greedy decoding answered {text!r}, not {CHECK_ANSWER!r}: the logits are misread")

    generation(prompt, args.generate_tokens)  # warm-up
    ttfts, tpots = [], []
    begin = time.perf_counter()
    while len(ttfts) < 5 or time.perf_counter() - begin < args.seconds:
        ttft, steps, _ = generation(prompt, args.generate_tokens)
        ttfts.append(ttft * 1000.0)
        tpots += [s * 1000.0 for s in steps]
    tpot_mean = statistics.fmean(tpots)
    print(json.dumps({
        "generations": len(ttfts),
        "ttft_ms_p50": statistics.median(ttfts),
        "tpot_ms_p50": statistics.median(tpots),
        "tpot_ms_mean": tpot_mean,
        "decode_tokens_per_s": 1000.0 / tpot_mean,
        "prefill_tokens_per_s": args.prompt_tokens / (statistics.fmean(ttfts) / 1000.0),
    }))


if __name__ == "__main__":
    main()
