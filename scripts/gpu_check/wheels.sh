#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels that scripts/gpu_check.sh installs offline on a GPU machine lacking them
# (into .whl/ of the repository, git-ignored; gpu_check.sh installs every *.whl found there, with --no-deps).
#
#   scripts/gpu_check/wheels.sh                     # Python 3.12, manylinux x86-64 (the H200 image of this workplace)
#   PY_VERSION=3.11 scripts/gpu_check/wheels.sh datasets==5.2.0 fastcore==1.12.47
#
# By default: the packages the trainers and nbdev_test need beyond torch / transformers (datasets, fastcore, nbdev,
# execnb), at the versions installed here, with their dependencies; then the wheels of packages the GPU image already
# has (HAVE below, from /work/.library/device/KINDS.md: torch, numpy, pyarrow, pandas, ...) are removed, so that what
# travels stays small. vLLM (hundreds of MB) and bitsandbytes are left out: their parts report them missing.
set -eu
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${GPU_CHECK_WHEELS:-$ROOT/.whl}"
PYV="${PY_VERSION:-3.12}"
PY="${PYTHON:-python3}"
if [ $# -gt 0 ]; then PKGS=("$@"); else
  mapfile -t PKGS < <("$PY" -c "
import importlib.metadata as m
for n in ('datasets', 'fastcore', 'nbdev', 'execnb'):
    try: print(f'{n}=={m.version(n)}')
    except m.PackageNotFoundError: print(n)")
fi
HAVE="accelerate aiohttp aiosignal aiohappyeyeballs annotated-doc anyio attrs certifi charset-normalizer click filelock frozenlist
fsspec h11 hf-xet httpcore httpx huggingface-hub idna jinja2 markupsafe multidict numpy packaging pandas peft pip propcache
protobuf psutil pyarrow pygments python-dateutil pytz pyyaml regex requests rich safetensors setuptools six tokenizers torch
tqdm transformers triton typing-extensions tzdata urllib3 wheel xxhash yarl markdown-it-py mdurl shellingham typer"
mkdir -p "$DEST"
"$PY" -m pip download -q --only-binary=:all: --python-version "$PYV" --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$DEST" "${PKGS[@]}"
for w in "$DEST"/*.whl; do
  name="$(basename "$w" | cut -d- -f1 | tr '[:upper:]_' '[:lower:]-')"
  for h in $HAVE; do if [ "$name" = "$h" ]; then rm -f "$w"; break; fi; done
done
echo "wheels in $DEST: $(ls "$DEST"/*.whl | wc -l), $(du -sh "$DEST" | cut -f1) (the device tool carries at most 64 MiB with the tree: carry .whl)"
