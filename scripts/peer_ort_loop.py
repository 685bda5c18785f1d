#!/usr/bin/env python3
"""The peer edgefleet's harness is measured against: a plain Python loop around
onnxruntime.InferenceSession.run, timed with time.perf_counter.

usage: peer_ort_loop.py JOB.json   (the same WorkerJob JSON the agent's worker reads)
Prints one JSON object: {"samples", "p50_ms", "mean_ms", "min_ms"}.
"""
import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

job = json.load(open(sys.argv[1]))
options = ort.SessionOptions()
options.intra_op_num_threads = job["threads"]
options.inter_op_num_threads = 1
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(job["model_path"], options, providers=["CPUExecutionProvider"])

tokenizer = Tokenizer.from_file(job["tokenizer_path"])
tokenizer.no_padding()
tokenizer.no_truncation()
wanted = {i.name for i in session.get_inputs()}
feeds = []
for sentence in job["sentences"]:
    enc = tokenizer.encode(sentence)
    arrays = {
        "input_ids": enc.ids,
        "attention_mask": enc.attention_mask,
        "token_type_ids": enc.type_ids,
    }
    feeds.append({k: np.array([v], dtype=np.int64) for k, v in arrays.items() if k in wanted})

for i in range(job["warmup_queries"] + 1):
    session.run(None, feeds[i % len(feeds)])
n = job["min_queries"]
latencies = []
for i in range(n):
    start = time.perf_counter()
    session.run(None, feeds[i % len(feeds)])
    latencies.append((time.perf_counter() - start) * 1000.0)
print(json.dumps({
    "samples": n,
    "p50_ms": sorted(latencies)[(n + 1) // 2 - 1],   # nearest rank, as edgefleet
    "mean_ms": statistics.fmean(latencies),
    "min_ms": min(latencies),
}))
