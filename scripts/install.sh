#!/usr/bin/env bash
# Installs attnbench into the current Python environment (activate a venv first if you want one).
#
# torch: an environment that already has torch (for example a CUDA build on a GPU machine) keeps it as it is.
# Otherwise the pinned stack below is installed: on this project's CPU machines pip takes it from the local disk,
# so no multi-GB download happens. It is the stack that also has torchvision (accuracy sweeps) and triton
# (kernel tests under TRITON_INTERPRET=1).
#
# Usage: scripts/install.sh [--test]   (--test also installs the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_PIN=${ATTNBENCH_TORCH_PIN:-"torch==2.14.1 torchvision==0.29.1"}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[install] no torch in $("$PY" -c 'import sys; print(sys.prefix)'): installing $TORCH_PIN"
    "$PY" -m pip install -q $TORCH_PIN
else
    echo "[install] keeping torch $("$PY" -c 'import torch; print(torch.__version__)')"
fi

extras=""
# The accuracy extra (torchvision, timm) is added only where torchvision already matches the torch in place:
# asking pip for torchvision beside a foreign torch would replace that torch.
if "$PY" -c "import torchvision" >/dev/null 2>&1; then
    extras="accuracy"
else
    echo "[install] no torchvision beside this torch: skipping the accuracy extra (install a matching torchvision, then rerun)"
fi
"$PY" -c "import triton" >/dev/null 2>&1 || extras="${extras:+$extras,}kernels"
if [ "${1:-}" = "--test" ]; then extras="${extras:+$extras,}test"; fi
"$PY" -m pip install -q -e ".${extras:+[$extras]}"
