#!/usr/bin/env bash
# Format 2 (content below the layer) on the shared corpus, side by side in one run: bundle size
# and time (cold analysis cache, then every layer analysed), format 1 (`--dedup blobs`) and
# `tar -c` of skopeo's OCI layout through `zstd -3 -T0` (the one-file form Hauler-style tools
# write), the delta engine-a:v2 --since engine-a:v1, engine-c:v1 added to engine-a/b, bytes
# carried whole per producer, export --docker-archive from v2 vs v1, import and export
# --oci-layout from v2 (exact rebuild, digests checked), peak RSS of every ocibundle step.
#
# Usage: benches/chunks.sh [LAYOUT]    LAYOUT: skopeo's OCI layout of the corpus
#   (default /tmp/testbed/corpus/oci, which ../shared/bench/make-corpus.sh writes)
# Environment: OCIBUNDLE_BIN (default target/release/ocibundle), WORK (default /tmp/ocibundle-bench-chunks).
# No registry, no network. Results: stdout (a markdown table) and benches/results/chunks-full.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LAYOUT=${1:-/tmp/testbed/corpus/oci}
bin=$(realpath "${OCIBUNDLE_BIN:-$here/../target/release/ocibundle}")
WORK=${WORK:-/tmp/ocibundle-bench-chunks}
[[ -f $LAYOUT/index.json ]] || { echo "no OCI layout at $LAYOUT (run ../shared/bench/make-corpus.sh)" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
rows=()
# run NAME CMD...: wall seconds and peak RSS (MiB) of one command.
run() {
  local name=$1; shift
  sync
  /usr/bin/time -f '%e %M' -o "$name.time" "$@" > "$name.out" 2> "$name.err" || { cat "$name.err" >&2; exit 1; }
  read -r secs kib < "$name.time"
  echo "$name: ${secs} s, $((kib / 1024)) MiB" >&2
}
secs() { cut -d' ' -f1 "$1.time"; }
rss() { echo $(( $(cut -d' ' -f2 "$1.time") / 1024 )); }
size() { stat -c %s "$1"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
ob() { "$bin" --store "$WORK/store" "$@"; }

ob import "oci:$LAYOUT" > /dev/null 2>&1
refs=$(ob store ls 2>/dev/null | awk '{print $1}' | grep -v '^REF' || true)
[[ -n $refs ]] || refs=$("$bin" --store "$WORK/store" store ls --json | jq -r '.[].name')
sel() { for r in $refs; do case $r in *$1*) echo "$r";; esac; done; }

run v1 "$bin" --store "$WORK/store" bundle --dedup blobs -o v1.obun --all
run v2-cold "$bin" --store "$WORK/store" bundle -o v2.obun --all --json
cp v2.obun v2-first.obun; rm v2.obun
run v2-warm "$bin" --store "$WORK/store" bundle -o v2.obun --all --json
cmp -s v2.obun v2-first.obun || { echo "bundle not deterministic" >&2; exit 1; }
tar -cf - -C "$LAYOUT" . | zstd -3 -T0 -q > hauler.tar.zst
run verify "$bin" verify v2.obun
run verify-deep "$bin" verify --deep v2.obun
run import "$bin" --store "$WORK/imported" import v2.obun
for f in store/blobs/sha256/*; do cmp -s "$f" "imported/blobs/sha256/${f##*/}" || { echo "restored blob differs: ${f##*/}" >&2; exit 1; }; done
run export-oci "$bin" export --from v2.obun --all --oci-layout "$WORK/ol"
run da-v2 "$bin" export --from v2.obun --all --docker-archive "$WORK/da2.tar"
rm -f da2.tar
run da-v1 "$bin" export --from v1.obun --all --docker-archive "$WORK/da1.tar"
rm -f da1.tar
# Delta: engine-a:v2 since a bundle of engine-a:v1.
a1=$(sel engine-a_v1); a2=$(sel engine-a_v2); b1=$(sel engine-b_v1); c1=$(sel engine-c_v1)
ob bundle -o a1.obun "$a1" > /dev/null 2>&1
ob bundle --dedup blobs -o a1-v1.obun "$a1" > /dev/null 2>&1
run delta "$bin" --store "$WORK/store" bundle -o delta.obun --since a1.obun "$a2"
ob bundle --dedup blobs -o delta-v1.obun --since a1-v1.obun "$a2" > /dev/null 2>&1
ob bundle -o ab.obun "$a1" "$b1" > /dev/null 2>&1
ob bundle -o abc.obun "$a1" "$b1" "$c1" > /dev/null 2>&1
ob bundle --dedup blobs -o ab1.obun "$a1" "$b1" > /dev/null 2>&1
ob bundle --dedup blobs -o abc1.obun "$a1" "$b1" "$c1" > /dev/null 2>&1
raw=$(jq -r '.size.chunks | "\(.layers_raw) layers, \(.raw_bytes) bytes"' v2-cold.out)
{
  echo "| measure | ocibundle format 2 | compare | ratio |"
  echo "|---|---:|---:|---:|"
  echo "| bundle of all corpus images (MB) | $(mb "$(size v2.obun)") | format 1: $(mb "$(size v1.obun)"); tar+zstd -3: $(mb "$(size hauler.tar.zst)") | $(awk -v a="$(size v2.obun)" -v b="$(size v1.obun)" 'BEGIN{printf "%.2f", a/b}') |"
  echo "| write, cold analysis cache (s) | $(secs v2-cold) | format 1: $(secs v1) | |"
  echo "| write, every layer analysed (s) | $(secs v2-warm) | | |"
  echo "| delta engine-a:v2 --since engine-a:v1 (MB) | $(mb "$(size delta.obun)") | format 1: $(mb "$(size delta-v1.obun)") | |"
  echo "| engine-c:v1 added to engine-a/b (MB) | $(mb $(( $(size abc.obun) - $(size ab.obun) ))) | format 1: $(mb $(( $(size abc1.obun) - $(size ab1.obun) ))) | |"
  echo "| layers carried whole | $raw | | |"
  echo "| export --docker-archive (s) | $(secs da-v2) | from format 1: $(secs da-v1) | $(awk -v a="$(secs da-v2)" -v b="$(secs da-v1)" 'BEGIN{printf "%.2f", a/b}') |"
  echo "| import (exact rebuild, digests checked) (s) | $(secs import) | | |"
  echo "| export --oci-layout (s) | $(secs export-oci) | | |"
  echo "| verify / verify --deep (s) | $(secs verify) / $(secs verify-deep) | | |"
  echo "| peak RSS (MiB): write cold, warm, import, export-oci, docker-archive, verify --deep | $(rss v2-cold), $(rss v2-warm), $(rss import), $(rss export-oci), $(rss da-v2), $(rss verify-deep) | | |"
} | tee "$here/results/chunks-full.md"
