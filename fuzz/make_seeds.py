#!/usr/bin/env python3
"""Writes the hand-made seed corpus under fuzz/corpus/TARGET/: small valid inputs for every
target (suites from bench-suites/suites, the one-Add ONNX model, tiny WAV, PNG and JPEG files,
encoded protobuf messages, a CSR, tokens, an HdrHistogram). Run from the repository root:

    PYTHONPATH=.cache/edgefleet/python python3 fuzz/make_seeds.py

Pillow (for the images) and `cryptography` (for the CSR and the manifest signature) come from
the set-up's Python folder; the seeds are committed, so this only runs again when they change.
"""

import base64
import hashlib
import io
import os
import shutil
import struct
import sys
import zlib

from PIL import Image
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    folder = os.path.join(ROOT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# Protobuf, by hand: enough for strings, bytes, varints, doubles and nested messages.
def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, value):
    if isinstance(value, bool):
        return varint(number << 3) + varint(int(value))
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, float):
        return varint(number << 3 | 1) + struct.pack("<d", value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def message(*fields):
    return b"".join(field(n, v) for n, v in fields)


def map_entry(number, key, value):
    return field(number, message((1, key), (2, value)))


# --- suite_parse: the shipped suites, and a few names.
suites = os.path.join(os.path.dirname(ROOT), "..", "bench-suites", "suites")
for name in sorted(os.listdir(suites)):
    if name.endswith(".toml"):
        with open(os.path.join(suites, name), "rb") as f:
            write("suite_parse", name, f.read())
write("suite_parse", "model-ref", b"minilm@2")
write("suite_parse", "names", b"model.onnx\ntokenizer.json\n.staging-1\nactive\n")

# --- manifest: [mode][bytes]; mode 0: manifest then a 64-byte signature, 1: signed by the key
# the target holds, 2: a key's hex text.
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([7] * 32))
sha = "ab" * 32
manifest = message(
    (1, "minilm"),
    (2, "2"),
    (3, "int8"),
    (4, 17),
    (5, message((1, "model.onnx"), (2, sha), (3, 1234))),
    (5, message((1, "tokenizer.json"), (2, "cd" * 32), (3, 99))),
    (6, message((1, "input_ids"), (2, "int64"), (3, "batch"), (3, "seq"))),
    (7, message((1, "last_hidden_state"), (2, "float32"), (3, "batch"))),
    (8, 1_700_000_000_000),
)
write("manifest", "signed-by-key", b"\x00" + manifest + KEY.sign(manifest))
write("manifest", "other-signature", b"\x00" + manifest + bytes(64))
write("manifest", "verified-bytes", b"\x01" + manifest)
bad_names = message((1, "../etc"), (2, "1"), (5, message((1, "manifest.pb"), (2, sha), (3, 1))))
write("manifest", "verified-bad-names", b"\x01" + bad_names)
public = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
write("manifest", "key-text", b"\x02" + public.hex().encode())

# --- onnx_inspect: the one-Add model (133 bytes) and one with typed, shaped inputs (no .onnx
# suffix: the repository ignores *.onnx).
cache = os.path.join(os.path.dirname(ROOT), "..", ".cache", "edgefleet")
write("onnx_inspect", "add-model", open(os.path.join(cache, "models", "tiny", "add.onnx"), "rb").read())


def value_info(name, elem, dims):
    dim = b"".join(
        field(1, message((1, d)) if isinstance(d, int) else message((2, d))) for d in dims
    )
    tensor = message((1, elem), (2, dim))
    return message((1, name), (2, message((1, tensor))))


graph = message(
    (1, message((1, "x"), (1, "y"), (2, "z"), (4, "Add"))),
    (11, value_info("x", 1, ["batch", 3])),
    (11, value_info("y", 7, [1, 3])),
    (12, value_info("z", 1, ["batch", 3])),
)
model = message((1, 8), (7, graph), (8, message((1, ""), (2, 17))))
write("onnx_inspect", "typed-model", model)

# --- wav_decode: tiny files in each encoding parse_wav reads.


def wav(tag, channels, rate, bits, data, extra=b"", chunks=()):
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits) + extra
    body = b"WAVE"
    for cid, chunk in [(b"fmt ", fmt), *chunks, (b"data", data)]:
        body += cid + struct.pack("<I", len(chunk)) + chunk + (b"\0" if len(chunk) % 2 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


pcm16 = struct.pack("<8h", 0, 16384, -32768, 32767, 1, -1, 100, -100)
write("wav_decode", "pcm16-mono.wav", wav(1, 1, 16000, 16, pcm16))
write("wav_decode", "pcm16-stereo-list.wav", wav(1, 2, 8000, 16, pcm16, chunks=[(b"LIST", b"abc")]))
write("wav_decode", "pcm8.wav", wav(1, 1, 16000, 8, bytes([128, 192, 0, 255])))
write("wav_decode", "pcm24.wav", wav(1, 1, 16000, 24, bytes([0, 0, 0x40, 0, 0, 0xC0])))
write("wav_decode", "pcm32.wav", wav(1, 1, 16000, 32, struct.pack("<2i", 1 << 30, -(1 << 30))))
write("wav_decode", "float32.wav", wav(3, 1, 16000, 32, struct.pack("<2f", 0.25, -0.75)))
extensible = struct.pack("<HHI", 22, 32, 4) + bytes([3, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71])
write("wav_decode", "extensible-float.wav", wav(0xFFFE, 1, 16000, 32, struct.pack("<2f", 0.5, -0.5), extensible))
write("wav_decode", "truncated.wav", wav(1, 1, 16000, 16, pcm16)[:-3])

# --- image_decode: [mode][file]; the mode byte picks the target size and padding.


def image_bytes(img, fmt, **kw):
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


rgb = Image.new("RGB", (5, 3), (200, 10, 30))
rgb.putpixel((1, 1), (0, 255, 0))
write("image_decode", "rgb.png", b"\x35" + image_bytes(rgb, "PNG"))
write("image_decode", "rgba.png", b"\x22" + image_bytes(rgb.convert("RGBA"), "PNG"))
write("image_decode", "gray.png", b"\x11" + image_bytes(rgb.convert("L"), "PNG"))
write("image_decode", "palette.png", b"\x47" + image_bytes(rgb.convert("P"), "PNG"))
write("image_decode", "gray16.png", b"\x13" + image_bytes(rgb.convert("I;16"), "PNG"))
write("image_decode", "interlaced.png", b"\x20" + image_bytes(rgb, "PNG", optimize=False))
write("image_decode", "baseline.jpg", b"\x33" + image_bytes(rgb, "JPEG", quality=50))
write("image_decode", "progressive.jpg", b"\x31" + image_bytes(Image.new("RGB", (9, 7), (1, 2, 3)), "JPEG", progressive=True))
write("image_decode", "gray.jpg", b"\x02" + image_bytes(rgb.convert("L"), "JPEG"))

# --- link_messages: [which][encoded message]; 0 AgentMessage, 1 EnrollRequest,
# 2 RenewRequest, 3 FetchArtifactRequest.
hello = message(
    (1, "0123456789abcdef"),
    (2, "rpi5-lab-1"),
    (4, ""),
    (5, "0.1.0"),
    (6, message((1, "aarch64"), (2, "Cortex-A76"), (3, 4), (4, 8 << 30), (9, "1.23.2"), (10, "cpu"))),
    (7, sha),
    (8, message((1, "minilm"), (2, "2"), (3, "2"), (3, "1"))),
)
hello = map_entry(3, "site", "lab") + hello
write("link_messages", "hello", b"\x00" + field(1, hello))
write("link_messages", "heartbeat", b"\x00" + field(2, message((1, 1_700_000_000_000), (2, 4_000_000), (3, 1))))


def hdr_v2_deflate(values_ns, digits=3):
    """An HdrHistogram V2 encoding, deflate-wrapped, as the agent's `hdrhistogram` writes it."""
    sub_bucket_half_count_magnitude = max(0, (2 * 10 ** digits - 1).bit_length() - 1)
    sub_bucket_count = 1 << (sub_bucket_half_count_magnitude + 1)
    half = sub_bucket_count // 2
    counts = {}
    for v in values_ns:
        bucket = max(0, v.bit_length() - (sub_bucket_half_count_magnitude + 1))
        sub = v >> bucket
        index = (bucket + 1) * half + (sub - half)
        counts[index] = counts.get(index, 0) + 1
    payload = bytearray()
    zeros = 0
    for i in range(max(counts) + 1):
        c = counts.get(i, 0)
        if c == 0:
            zeros += 1
            continue
        if zeros:
            payload += varint(((-zeros) << 1) ^ ((-zeros) >> 63))
            zeros = 0
        payload += varint((c << 1) ^ (c >> 63))
    header = struct.pack(">IIIIqqd", 0x1C849313, len(payload), 0, digits, 1, 3_600_000_000_000, 1.0)
    raw = header + bytes(payload)
    packed = zlib.compress(raw)
    return struct.pack(">II", 0x1C849314, len(packed)) + packed


hist = hdr_v2_deflate([1_000_000 + 1000 * i for i in range(50)])
measurement = message((1, 50), (2, 1.5), (3, True), (10, "onnxruntime"), (13, 4), (14, 1_700_000_000_000), (18, hist), (19, 1))
write("link_messages", "job-result", b"\x00" + field(3, message((1, "run-1"), (2, "job-1"), (3, measurement))))
write("link_messages", "job-failed", b"\x00" + field(3, message((1, "run-1"), (2, "job-2"), (4, "the worker crashed"))))
write("link_messages", "install-result", b"\x00" + field(4, message((1, "i-1"), (2, True), (4, "minilm"), (5, "2"), (12, message((1, "minilm"), (2, "2"), (3, "2"))))))

device_key = ec.generate_private_key(ec.SECP256R1())
csr = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet-agent")]))
    .sign(device_key, hashes.SHA256())
    .public_bytes(serialization.Encoding.PEM)
)
secret = base64.urlsafe_b64encode(bytes([7] * 32)).rstrip(b"=").decode()
body = f"efe1.{secret}.{'ab' * 32}"
token = f"{body}.{hashlib.sha256(body.encode()).hexdigest()[:8]}"
write("link_messages", "enroll", b"\x01" + message((1, token), (2, csr), (3, "rpi5-lab-1"), (5, True)) + map_entry(4, "site", "lab"))
write("link_messages", "renew", b"\x02" + message((1, csr)))
write("link_messages", "fetch", b"\x03" + message((1, sha), (2, 4096), (3, "0123456789abcdef"), (4, 1 << 20)))

# --- admin_messages: [which][encoded request], numbered as in the target.
body = f"efa1.{secret}"
write("admin_messages", "bearer", b"\x00" + f"{body}.{hashlib.sha256(body.encode()).hexdigest()[:8]}".encode())
header = message((1, "minilm"), (2, "2"), (3, "int8"), (4, message((1, "model.onnx"), (2, 1234))), (4, message((1, "tokenizer.json"), (2, 99))))
write("admin_messages", "add-model", b"\x01" + field(1, header))
with open(os.path.join(suites, "quick.toml"), "rb") as f:
    quick = f.read()
write("admin_messages", "start-bench", b"\x02" + message((1, quick), (2, "quick.toml"), (3, "hw=rpi5"), (3, "site!=lab")))
write("admin_messages", "start-rollout", b"\x03" + message((1, "minilm"), (2, "2"), (3, "hw=rpi5,site!=lab"), (4, "10%,50%,100%"), (5, "95%"), (6, "2"), (7, "p90<=1.10x,energy<=1.10x,quality>=0.99"), (8, "bench")))
write("admin_messages", "add-schedule", b"\x04" + message((1, "nightly"), (2, "0 0 3 * * *"), (3, quick), (4, "quick.toml"), (6, "hw=rpi5"), (7, 60000), (8, True)) + field(9, 70.0))
write("admin_messages", "compare", b"\x05" + message((1, "minilm@1"), (2, "minilm@2"), (3, "quick"), (4, "hw=rpi5"), (5, "p90")) + field(6, 0.05))
write("admin_messages", "admin-token", b"\x06" + message((1, "ci"), (2, "viewer")))
write("admin_messages", "get-results", b"\x07" + message((1, "run-1"), (2, "quick"), (3, 1_700_000_000_000), (4, "arch=aarch64")))
write("admin_messages", "enrollment-token", b"\x08" + message((1, "rpi5-lab-1"), (3, 3600)) + map_entry(2, "site", "lab"))
write("admin_messages", "control-rollout", b"\x0f" + message((1, "r-1"), (2, "pause")))

total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
count = sum(len(fs) for _, _, fs in os.walk(ROOT))
print(f"{count} seeds, {total} bytes, under {ROOT}")
