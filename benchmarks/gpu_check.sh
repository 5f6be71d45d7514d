#!/usr/bin/env bash
# The GPU check, one command: every CUDA test, then the GPU benchmarks, into one results file.
#
#   bash benchmarks/gpu_check.sh
#
# Writes $OUT/gpu_check.txt when $OUT is set, else output/gpu_check.txt, and beside it
# benchmark_gpu.json (benchmarks/benchmark_gpu.py --json) and gpu_tests.xml (pytest's JUnit report).
# Exit status 0 when every part passed or was skipped with its reason written, 1 otherwise.
#
# Parts, each under its own time limit (seconds, overridable), about 7.5 minutes at most in all:
#   tests  (GPU_CHECK_TESTS_S=150)  pytest over test/, keeping only the CUDA tests: those with 'cuda' in
#          their function name (the naming rule) and those marked skipif with a reason that names CUDA
#          or a GPU (pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device'),
#          also as a pytest.param mark); tests that need a machine without CUDA are kept too and skip
#          there. Test modules that cannot be imported for want of a package outside the core (rclpy
#          and the ROS messages on a machine without ROS, transformers) are left out, with a line each.
#   bench  (GPU_CHECK_BENCH_S=210)  benchmarks/benchmark_gpu.py: 640x480, 512 / 1024 / 2048 keypoints,
#          fp32 / fp16, sequential / pipelined (eager) / graphs (static_shapes: CUDA graphs) / onnxruntime
#          (where its build has CUDA; the device machine's is CPU-only: reported not available) / two
#          cameras / transformers.
#   node   (GPU_CHECK_NODE_S=90)    benchmarks/benchmark_node_latency.py --device cuda, only where ROS 2
#          and the built messages are importable (not on the device machine: a line says so).
# GPU_CHECK_PARTS="tests bench node" (default) picks parts, e.g. to rerun one. PYTHON: the interpreter
# (default: .venv/bin/python if it imports torch, else python3). Without CUDA the script says so and
# exits 0; GPU_CHECK_CPU=1 runs the same parts on the CPU instead, with the benchmark at 160x120 and
# 128 keypoints (a check of this script, not a measurement).
#
# On the device machine of the `device` tool (nvidia-h200: Python 3.12 with its own torch, numpy,
# opencv-python-headless, safetensors, transformers, pytest, pytest-timeout; no ROS, no registry):
# 1. Here, once: the test frames live in ../shared, outside the repository, and do not travel:
#        mkdir -p output && cp -r ../shared/data/freiburg_sequence output/
#    (output/ is git-ignored; 8 MB.) The script links ../shared/data/freiburg_sequence to them there.
# 2. The tool call, 8-minute limit: about 1-2 minutes to start the machine plus at most 7.5 here,
#    leaving 5 of the 15 device minutes to rerun one part warm (GPU_CHECK_PARTS=bench bash ...):
#        run(command="bash benchmarks/gpu_check.sh", carry=["output/freiburg_sequence"], timeout_s=480)
#    then give_back unless rerunning at once. The results come back under files_at.
# A package missing there can travel as wheels (the device README: pip download ... --python-version
# 3.12 into .whl/, carried): this script installs .whl/*.whl into /tmp/site first when .whl/ exists.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO=$PWD
RESULTS_DIR=${OUT:-$REPO/output}
RESULTS=$RESULTS_DIR/gpu_check.txt
PARTS=" ${GPU_CHECK_PARTS:-tests bench node} "
CPU_MODE=${GPU_CHECK_CPU:-0}
export PYTHONUNBUFFERED=1
mkdir -p "$RESULTS_DIR" || exit 1
: > "$RESULTS"

say() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
logged() { "$@" 2>&1 | tee -a "$RESULTS"; return "${PIPESTATUS[0]}"; }
STATUS=()   # one line per part
FAILED=0
verdict() { STATUS+=("$1"); [ "$2" = ok ] || FAILED=1; }   # verdict LINE ok|fail

if [ -d .whl ] && compgen -G '.whl/*.whl' > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { say "gpu_check: installing the carried wheels in .whl/ failed (above)"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in .venv/bin/python python3; do
        if command -v "$candidate" > /dev/null && "$candidate" -c 'import torch' 2> /dev/null; then PY=$candidate; break; fi
    done
fi
[ -n "$PY" ] || { say "gpu_check: no Python with torch (tried .venv/bin/python, python3): set PYTHON=..."; exit 1; }

CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2> /dev/null)
if [ "$CUDA" != 1 ] && [ "$CPU_MODE" != 1 ]; then
    say "gpu_check: no CUDA device ($("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA build:", torch.version.cuda or "no")')); nothing run."
    say "It runs the CUDA tests and the GPU benchmarks on a machine with CUDA; GPU_CHECK_CPU=1 runs its parts on the CPU."
    exit 0
fi
DEVICE=$([ "$CUDA" = 1 ] && echo cuda || echo cpu)

say "gpu_check $(date -Iseconds) on ${HOSTNAME:-unknown host}, device $DEVICE$([ "$CUDA" = 1 ] || echo ' (GPU_CHECK_CPU=1: not a GPU figure)')"
say "tree: $(git rev-parse --short HEAD 2> /dev/null || echo 'no git') ($(git status --porcelain 2> /dev/null | wc -l) changed files)"
command -v nvidia-smi > /dev/null && logged nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
logged "$PY" - <<'EOF'
import importlib, platform
import torch
print(f'python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, '
      f'cuDNN {torch.backends.cudnn.version()})' + (f', GPU {torch.cuda.get_device_name()}' if torch.cuda.is_available() else ''))
found = []
for name, module in [('numpy', 'numpy'), ('opencv', 'cv2'), ('safetensors', 'safetensors'), ('transformers', 'transformers'),
                     ('pytest', 'pytest'), ('pytest-timeout', 'pytest_timeout'), ('rclpy', 'rclpy')]:
    try:
        found.append(f'{name} {getattr(importlib.import_module(module), "__version__", "(present)")}')
    except Exception:
        found.append(f'{name} MISSING')
print('packages: ' + ', '.join(found))
EOF
if ! "$PY" -c 'import numpy, cv2, safetensors' 2> /dev/null; then
    say "gpu_check: the core needs numpy, opencv-python-headless and safetensors (see above): bring wheels in .whl/"
    exit 1
fi

DATA=$REPO/../shared/data/freiburg_sequence
if ! compgen -G "$DATA/*.png" > /dev/null; then
    if compgen -G "$REPO/output/freiburg_sequence/*.png" > /dev/null \
            && mkdir -p "$REPO/../shared/data" && ln -sfn "$REPO/output/freiburg_sequence" "$DATA"; then
        say "test frames: $DATA -> output/freiburg_sequence (carried)"
    else
        say "test frames: none in $DATA nor in output/freiburg_sequence: copy them there and carry output/freiburg_sequence (header)"
    fi
fi

if [[ $PARTS == *" tests "* ]]; then
    say ""
    say "== tests: the CUDA tests of test/ (limit ${GPU_CHECK_TESTS_S:-150} s)"
    if ! "$PY" -c 'import pytest' 2> /dev/null; then
        say "tests: pytest is not installed: not run (bring its wheel in .whl/)"
        verdict "tests: not run, pytest missing" fail
    else
        # Test modules that cannot be imported because a package outside the core is missing: left out.
        mapfile -t LEFT_OUT < <("$PY" - <<'EOF'
import importlib, sys
from pathlib import Path
sys.path[:0] = ['.', 'test']
CORE = {'torch', 'numpy', 'cv2', 'safetensors', 'pytest', 'superglue_ros', 'conftest', 'model_fixtures'}
for path in sorted(Path('test').glob('test_*.py')):
    try:
        importlib.import_module(path.stem)
    except BaseException as error:  # also pytest.fail() raised while handling the import error
        while error is not None and not isinstance(error, ModuleNotFoundError):
            error = error.__cause__ or error.__context__
        name = getattr(error, 'name', None) or ''  # superglue_ros.msg / .srv: built by colcon with ROS
        if name and (name.split('.')[0] not in CORE or name.startswith(('superglue_ros.msg', 'superglue_ros.srv'))):
            print(f'{path}\t{name}')
        # anything else: pytest reports it
EOF
)
        IGNORE=()
        for entry in "${LEFT_OUT[@]}"; do
            IGNORE+=("--ignore=${entry%%$'\t'*}")
            say "tests: ${entry%%$'\t'*} left out: it needs ${entry#*$'\t'}, not installed here"
        done
        # The selection (header), as a pytest plugin.
        PLUGIN_DIR=$(mktemp -d)
        cat > "$PLUGIN_DIR/gpu_check_select.py" <<'EOF'
import re

NAMES_CUDA = re.compile(r'cuda|gpu', re.IGNORECASE)


def is_cuda_test(item) -> bool:
    if 'cuda' in getattr(item, 'originalname', item.name).lower():
        return True
    return any(NAMES_CUDA.search(str(mark.kwargs.get('reason', ''))) for mark in item.iter_markers('skipif'))


def pytest_collection_modifyitems(config, items):
    config.hook.pytest_deselected(items=[item for item in items if not is_cuda_test(item)])
    items[:] = [item for item in items if is_cuda_test(item)]
EOF
        TIMEOUT_ARG=()
        "$PY" -c 'import pytest_timeout' 2> /dev/null && TIMEOUT_ARG=(--timeout=120)
        PYTHONPATH=$PLUGIN_DIR${PYTHONPATH:+:$PYTHONPATH} logged timeout -k 10 "${GPU_CHECK_TESTS_S:-150}" \
            "$PY" -m pytest test -p gpu_check_select "${IGNORE[@]}" -rs -q -p no:cacheprovider \
            --continue-on-collection-errors "${TIMEOUT_ARG[@]}" --junitxml "$RESULTS_DIR/gpu_tests.xml"
        rc=$?
        rm -rf "$PLUGIN_DIR"
        case $rc in
            0) verdict "tests: passed (skips listed above)" ok ;;
            5) verdict "tests: no CUDA test selected (the header says how they are recognised)" fail ;;
            124|137) verdict "tests: stopped at the ${GPU_CHECK_TESTS_S:-150} s limit" fail ;;
            *) verdict "tests: FAILED (pytest exit $rc, above)" fail ;;
        esac
        if [ "$CUDA" = 1 ] && grep -iE '^SKIPPED.*(cuda|gpu)' "$RESULTS" | grep -qiv 'without cuda'; then
            verdict "tests: some CUDA tests skipped on a CUDA machine (SKIPPED lines above)" fail
        fi
    fi
fi

if [[ $PARTS == *" bench "* ]]; then
    say ""
    say "== bench: benchmarks/benchmark_gpu.py (limit ${GPU_CHECK_BENCH_S:-210} s)"
    if [ "$CUDA" = 1 ]; then
        BENCH_ARGS=(--device cuda --frames 200 --warmup 20)
    else
        BENCH_ARGS=(--device cpu --size 160 120 --keypoints 128 --precisions fp32 fp16 --frames 3 --warmup 1 --threads 1)
    fi
    logged timeout -k 10 "${GPU_CHECK_BENCH_S:-210}" "$PY" benchmarks/benchmark_gpu.py "${BENCH_ARGS[@]}" \
        --json "$RESULTS_DIR/benchmark_gpu.json"
    rc=$?
    case $rc in
        0) verdict "bench: done (figures above and in benchmark_gpu.json)" ok ;;
        124|137) verdict "bench: stopped at the ${GPU_CHECK_BENCH_S:-210} s limit (rows so far in benchmark_gpu.json)" fail ;;
        *) verdict "bench: FAILED (exit $rc, above)" fail ;;
    esac
fi

if [[ $PARTS == *" node "* ]]; then
    say ""
    say "== node: benchmarks/benchmark_node_latency.py (limit ${GPU_CHECK_NODE_S:-90} s)"
    if [ "$CUDA" != 1 ]; then
        verdict "node: not run on the CPU (a frame takes seconds there; see docs/BENCHMARKS.md)" ok
    elif ! "$PY" -c 'import rclpy, superglue_ros.msg' 2> /dev/null; then
        verdict "node: not run: needs ROS 2 (rclpy) and the built messages (make setup; . install/setup.bash), absent here" ok
    else
        logged timeout -k 10 "${GPU_CHECK_NODE_S:-90}" "$PY" benchmarks/benchmark_node_latency.py --device cuda \
            --duration-s 5 --overload-hz 300
        rc=$?
        case $rc in
            0) verdict "node: done (figures above)" ok ;;
            124|137) verdict "node: stopped at the ${GPU_CHECK_NODE_S:-90} s limit" fail ;;
            *) verdict "node: FAILED (exit $rc, above)" fail ;;
        esac
    fi
fi

say ""
say "== summary ($(date -Iseconds))"
for line in "${STATUS[@]}"; do say "$line"; done
say "results: $RESULTS"
exit $FAILED
