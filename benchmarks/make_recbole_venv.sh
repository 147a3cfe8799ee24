#!/usr/bin/env bash
# Build the isolated RecBole 1.2.1 environment used by bench_vs_recbole.py.
#
#   bash benchmarks/make_recbole_venv.sh            # creates benchmarks/.recbole-venv
#
# torch is pinned to the CPU wheel 2.13.0 and installed FIRST, so that recbole's
# unpinned `torch>=1.10` requirement is already satisfied and pip never pulls a CUDA build.
# numpy<2 / pandas<3 / scipy<1.13: RecBole 1.2.1 uses np.float/np.int-era APIs and
# scipy.sparse behaviour removed later; setuptools<81 keeps pkg_resources, which the ray 2.6
# that recbole pins imports at `from recbole.quick_start import ...` time.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${RECBOLE_VENV:-$HERE/.recbole-venv}"
PY="${PYTHON:-python3}"

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0" "recbole==1.2.1" \
    "numpy<2" "pandas<3" "scipy<1.13" "setuptools<81" psutil
# Fail loudly if a CUDA torch slipped in or RecBole does not import.
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$VENV/bin/python" - <<'PY'
import torch, numpy, recbole
from recbole.quick_start import run_recbole  # noqa: F401
assert torch.version.cuda is None, f"CUDA torch installed: {torch.__version__}"
print(f"recbole {recbole.__version__} torch {torch.__version__} numpy {numpy.__version__}")
PY
