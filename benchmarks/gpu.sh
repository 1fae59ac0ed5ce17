#!/usr/bin/env bash
# The speed suite on one CUDA device, in fp32 and bf16, and a refit of the `auto` product rule's constants.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: benchmarks/gpu.sh [--device cuda:0] [--out DIR] [--python PY] [--profile quick|full] [--help]

Runs, on one CUDA device (a few minutes for --profile quick):
  1. python -m benchmarks.run --profile PROFILE --only layers   (every family, both products, PEFT pairs)
  2. python -m benchmarks.structured --dtype float32            (families and PEFT's structured baselines)
  3. python -m benchmarks.structured --dtype bfloat16
  4. python -m benchmarks.calibrate --tokens 1024,4096          (refits FFT_FLOP_COST for the `auto` rule)
and writes the JSON files to DIR (default benchmarks/results), named *-cuda*.json. The fitted constants
are printed at the end: copy them into FFT_FLOP_COST["cuda"] in surmlab/layer.py if they lose less time
than the current ones (both are in calibration-cuda.json).

  --device DEV     a CUDA device torch can see (default cuda:0)
  --out DIR        where the results go (default benchmarks/results)
  --python PY      the interpreter with surmlab installed (default .venv/bin/python, else python3)
  --profile NAME   quick (default) or full
  -h, --help       this text

Exit status: 0 done, 2 bad arguments or no CUDA device.
USAGE
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
device="cuda:0"
out="$repo/benchmarks/results"
python=""
profile="quick"
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --device|--out|--python|--profile)
            [[ $# -ge 2 && -n "$2" ]] || { echo "gpu.sh: $1 needs a value" >&2; usage >&2; exit 2; }
            case "$1" in
                --device) device="$2" ;;
                --out) out="$2" ;;
                --python) python="$2" ;;
                --profile) profile="$2" ;;
            esac
            shift 2 ;;
        *) echo "gpu.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
case "$profile" in quick|full) ;; *) echo "gpu.sh: --profile must be quick or full, got '$profile'" >&2; exit 2 ;; esac
case "$device" in cuda|cuda:[0-9]*) ;; *) echo "gpu.sh: --device must be cuda or cuda:N, got '$device'" >&2; exit 2 ;; esac
if [[ -z "$python" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi
command -v "$python" >/dev/null 2>&1 || { echo "gpu.sh: no python at '$python'" >&2; exit 2; }

if ! "$python" - "$device" <<'PY'
import sys
import torch
device = sys.argv[1]
index = int(device.split(":")[1]) if ":" in device else 0
if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: torch {torch.__version__} sees no CUDA device here; this script needs one ({device})")
if index >= torch.cuda.device_count():
    sys.exit(f"gpu.sh: {device} does not exist; torch sees {torch.cuda.device_count()} CUDA device(s)")
print(f"gpu.sh: {device} is {torch.cuda.get_device_name(index)}", file=sys.stderr)
PY
then
    exit 2
fi

mkdir -p "$out"
cd "$repo"
set -x
"$python" -m benchmarks.run --profile "$profile" --only layers --device "$device" --out "$out/$profile-cuda.json"
"$python" -m benchmarks.structured --profile "$profile" --device "$device" --dtype float32 \
    --out "$out/structured-$profile-cuda.json"
"$python" -m benchmarks.structured --profile "$profile" --device "$device" --dtype bfloat16 \
    --out "$out/structured-$profile-cuda-bfloat16.json"
"$python" -m benchmarks.calibrate --device "$device" --tokens 1024,4096 --out "$out/calibration-cuda.json"
