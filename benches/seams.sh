#!/usr/bin/env bash
# Exact rebuild of one big layer on 1 core and on every core: how a zlib replay scales once its
# body has seams (codec/segments.rs). For one image (default engine-b_v1, whose 553 MB cuBLAS layer
# dominates), each binary writes a format 2 bundle from a fresh store (cold analysis), then
# `export --oci-layout` rebuilds every blob from it, pinned to one core (taskset -c 0) and on all
# of them; the table gives the seconds and the speed-up. With OLD_BIN (a build before seams) the
# same runs with it go beside, so the two are measured in one run on one machine.
#
# Usage: benches/seams.sh [LAYOUT]    LAYOUT: skopeo's OCI layout of the corpus
#   (default /tmp/testbed/corpus/oci, which ../shared/bench/make-corpus.sh writes)
# Environment: OCIBUNDLE_BIN (default target/release/ocibundle), OLD_BIN (optional), IMAGE
#   (default engine-b_v1; engine-a_v1 has several big layers), WORK (default /tmp/ocibundle-bench-seams).
# No registry, no network. Results: stdout (a markdown table) and benches/results/seams-full.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LAYOUT=${1:-/tmp/testbed/corpus/oci}
IMAGE=${IMAGE:-engine-b_v1}
WORK=${WORK:-/tmp/ocibundle-bench-seams}
[[ -f $LAYOUT/index.json ]] || { echo "no OCI layout at $LAYOUT (run ../shared/bench/make-corpus.sh)" >&2; exit 1; }
command -v taskset > /dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
declare -A bins=([new]=$(realpath "${OCIBUNDLE_BIN:-$here/../target/release/ocibundle}"))
[[ -n ${OLD_BIN:-} ]] && bins[old]=$(realpath "$OLD_BIN")
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
cores=$(nproc)
# run NAME CMD...: wall seconds of one command.
run() {
  local name=$1; shift
  sync
  /usr/bin/time -f '%e %M' -o "$name.time" "$@" > "$name.out" 2> "$name.err" || { cat "$name.err" >&2; exit 1; }
  echo "$name: $(cut -d' ' -f1 "$name.time") s, $(( $(cut -d' ' -f2 "$name.time") / 1024 )) MiB" >&2
}
secs() { cut -d' ' -f1 "$1.time"; }
rows=()
for k in new old; do
  [[ -n ${bins[$k]:-} ]] || continue
  bin=${bins[$k]}
  "$bin" --store "$WORK/$k-store" import "oci:$LAYOUT" > /dev/null 2>&1
  ref=$("$bin" --store "$WORK/$k-store" store ls --json | jq -r '.images[].reference' | grep -- "$IMAGE" | head -1)
  run "$k-write" "$bin" --store "$WORK/$k-store" bundle -o "$k.obun" "$ref"
  run "$k-export-1" taskset -c 0 "$bin" export --from "$k.obun" --all --oci-layout "$WORK/$k-ol1"
  run "$k-export-n" "$bin" export --from "$k.obun" --all --oci-layout "$WORK/$k-oln"
  # The rebuilt layout must hold the store's exact blobs.
  for f in "$k-oln"/blobs/sha256/*; do cmp -s "$f" "$k-store/blobs/sha256/${f##*/}" || { echo "$k: rebuilt blob differs: ${f##*/}" >&2; exit 1; }; done
  rm -rf "$k-ol1" "$k-oln"
  label=$([[ $k == new ]] && echo "this build" || echo "before seams")
  rows+=("| $label | $(secs "$k-write") | $(secs "$k-export-1") | $(secs "$k-export-n") | $(awk -v a="$(secs "$k-export-1")" -v b="$(secs "$k-export-n")" 'BEGIN{printf "%.2f", a/b}') |")
done
{
  echo "| $IMAGE, format 2 | write, cold (s) | export --oci-layout, 1 core (s) | export --oci-layout, $cores cores (s) | speed-up |"
  echo "|---|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
} | tee "$here/results/seams-full.md"
