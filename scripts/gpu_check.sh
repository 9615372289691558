#!/usr/bin/env bash
# The GPU check of issue 17: one prepared script, at most 8 minutes on one GPU (--budget 470 s by default), no downloads.
#
#   1. env        torch / transformers / CUDA versions, the GPU, which packages are missing
#   2. notebooks  `nbdev_test --flags cuda` on every notebook with a `#| cuda` cell (in parallel, each with a time limit),
#                 plus a probe notebook whose `#| cuda` cell writes a file: proof that the flag runs such cells
#   3. build      a BPE tokenizer trained on the toy world's text and a random-init Llama built from a config:
#                 hidden 1024, 24 layers, 16 heads, intermediate 4096, vocab 32000 (0.47B parameters), saved in bf16
#   4. trainers   2 bf16 optimizer steps of each trainer on that model (SFT, reward model, stable alignment, DPO, SSO,
#                 RL PPO and RLOO, one small RAFT iteration): setup and per-step seconds, loss (must be finite), peak GPU memory
#   5. mfu        bench_trainers.py's model FLOP/s (6 x matmul parameters x tokens/s of DPO, its `timed_train`) in bf16,
#                 as a share of a measured 8192^3 bf16 matmul's FLOP/s; matmul probes and training runs interleaved
#   6. generation vLLM (`social_align.generation.VLLMGenerator`) on the saved model: tokens/s (skipped if vLLM is missing)
#
# Each part runs in a child process under its own time limit, so a hang costs that part only. At the end: a summary
# (each part ok / failed / timeout / skipped, its time and numbers) and a JSON file: $OUT/gpu_check.json where OUT is
# set (the device tool returns files under $OUT), else runs/gpu_check/gpu_check.json (--json PATH to choose), with
# the children's stderr beside it (gpu_check.log). Exit status 0 when nothing failed or timed out.
#
#   scripts/gpu_check.sh                      # on a GPU machine, from anywhere
#   scripts/gpu_check.sh --cpu                # every code path on the CPU with a tiny model, in about a minute
#   GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh # the same
#   scripts/gpu_check.sh --parts env,build,trainers --trainers dpo,ppo
#   scripts/gpu_check.sh --help               # every option (scripts/gpu_check/run.py's)
#
# Setting up, from what the machine has (no network needed):
#   * Python: $GPU_CHECK_PYTHON, else python3, else python.
#   * Wheels: every *.whl in $GPU_CHECK_WHEELS (default: .whl/ in the repository, git-ignored) is installed with
#     `pip install --no-index --no-deps --target` into a temporary folder put first on PYTHONPATH (for packages the
#     machine lacks: datasets, fastcore, nbdev, execnb, ...; scripts/gpu_check/wheels.sh downloads them where PyPI
#     is reachable, about 8 MB for this workplace's H200 image; with its device tool: carry [".whl"], run
#     `bash scripts/gpu_check.sh`, timeout_s 540).
#   * social_align: used from this checkout (PYTHONPATH=<repo>) when it is not installed; GPU_CHECK_INSTALL=1 first
#     tries `pip install --no-index --no-deps --no-build-isolation -e .` and reports whether that worked.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

PY="${GPU_CHECK_PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3 python; do if command -v "$c" >/dev/null 2>&1; then PY="$c"; break; fi; done
fi
if [ -z "$PY" ]; then echo "gpu_check: no python3 or python on PATH (set GPU_CHECK_PYTHON)" >&2; exit 2; fi
echo "gpu_check: python $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"

WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.whl}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE="$(mktemp -d /tmp/gpu_check_site.XXXXXX)"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl; then
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    echo "gpu_check: installed $(ls "$WHEELS"/*.whl | wc -l) wheel(s) from $WHEELS into $SITE"
  else
    echo "gpu_check: installing the wheels in $WHEELS failed; going on without them" >&2
  fi
fi

if ! "$PY" -c 'import torch, transformers' 2>/dev/null; then
  echo "gpu_check: torch and transformers must be importable by $PY:" >&2
  "$PY" -c 'import torch, transformers' 2>&1 | tail -1 >&2
fi   # run.py still runs: its env part reports what is missing in the summary and the JSON

if ! "$PY" -c 'import social_align' 2>/dev/null; then
  if [ "${GPU_CHECK_INSTALL:-0}" = 1 ]; then
    if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e "$ROOT" >/tmp/gpu_check_pip.log 2>&1; then
      echo "gpu_check: pip install -e . worked (offline, no dependencies)"
    else
      echo "gpu_check: pip install -e . failed offline ($(tail -1 /tmp/gpu_check_pip.log)); using PYTHONPATH=$ROOT" >&2
    fi
  else
    echo "gpu_check: social_align is not installed; using this checkout (PYTHONPATH=$ROOT)"
  fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m scripts.gpu_check.run "$@"
