#!/usr/bin/env bash
# Bytes carried whole, per producer: the same corpus images as the corpus wrote them (Python
# zlib), as Go's compress/gzip writes them (default level: BuildKit, Docker) and as skopeo
# recompresses them (klauspost pgzip). Each copy is bundled cold in its own store (format 2)
# and compared with format 1 (the copies are made here: benches/recompress.py,
# scripts/lib/gogz.go, skopeo): bundle size, layers rebuilt and carried whole, raw bytes by
# producer, write time and peak RSS.
#
# Usage: benches/producers.sh [IMAGE...]   IMAGE: a tag in the corpus layout (default:
#   engine-b_v1 engine-c_v1, two CUDA images that share their base).
# Environment: LAYOUT (default /tmp/testbed/corpus/oci, from ../shared/bench/make-corpus.sh),
#   OCIBUNDLE_BIN (default target/release/ocibundle), WORK (default /tmp/ocibundle-bench-producers).
# Needs skopeo and go (scripts/test.sh installs both). No registry, no network.
# Results: stdout (a markdown table) and benches/results/producers.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LAYOUT=${LAYOUT:-/tmp/testbed/corpus/oci}
bin=$(realpath "${OCIBUNDLE_BIN:-$here/../target/release/ocibundle}")
WORK=${WORK:-/tmp/ocibundle-bench-producers}
images=("$@")
((${#images[@]})) || images=(engine-b_v1 engine-c_v1)
[[ -f $LAYOUT/index.json ]] || { echo "no OCI layout at $LAYOUT (run ../shared/bench/make-corpus.sh)" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"; cd "$WORK"
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }

# The Go program (20 lines) that gzips stdin at the level its argument names.
mkdir -p go
GOCACHE=$WORK/go/cache GOPATH=$WORK/go/path GO111MODULE=off GOFLAGS= go build -o go/gogz "$here/../scripts/lib/gogz.go"

# Copies of the chosen images: Go gzip (every layer decompressed and gzipped again by Go),
# pgzip (decompressed, then skopeo --dest-compress, which writes klauspost pgzip).
for img in "${images[@]}"; do skopeo copy -q "oci:$LAYOUT:$img" "oci:$WORK/base:$img"; done
cp -r base go-gzip; python3 "$here/recompress.py" go-gzip "$WORK/go/gogz" -1
cp -r base plain; python3 "$here/recompress.py" plain
for img in "${images[@]}"; do
  skopeo copy -q --dest-compress --dest-compress-format gzip "oci:$WORK/plain:$img" "oci:$WORK/pgzip:$img"
done
rm -rf base plain

rows=()
for copy in corpus go-gzip pgzip; do
  src=$WORK/$copy; [[ $copy == corpus ]] && src=$LAYOUT
  store=$WORK/store-$copy
  "$bin" --store "$store" import "oci:$src" >/dev/null 2>&1
  # Only the chosen images (the corpus layout holds more); names as import gave them.
  refs=()
  for img in "${images[@]}"; do refs+=("$("$bin" --store "$store" store ls | awk -v t=":$img" '$1 ~ t"$" {print $1}')"); done
  # Only the chosen images (the corpus layout holds more).
  /usr/bin/time -f '%e %M' -o "$copy.time" "$bin" --store "$store" bundle -o "$copy.obun" "${refs[@]}" > /dev/null 2> "$copy.err" || { cat "$copy.err" >&2; exit 1; }
  "$bin" --store "$store" bundle --dedup blobs -o "$copy-v1.obun" "${refs[@]}" > /dev/null 2>&1
  "$bin" inspect --json "$copy.obun" > "$copy.json"
  read -r secs kib < "$copy.time"
  raw=$(jq -r '.below_the_layer | "\(.layers_rebuilt) / \(.layers_raw)"' "$copy.json")
  by=$(jq -r '[.below_the_layer.raw[] | {p: .producer, n: .size}] | group_by(.p) | map("\(.[0].p): \(map(.n) | add) bytes") | join("; ") | if . == "" then "none" else . end' "$copy.json")
  rows+=("| $copy | $(mb "$(stat -c %s "$copy.obun")") | $(mb "$(stat -c %s "$copy-v1.obun")") | $raw | $by | $secs s, $((kib / 1024)) MiB |")
  rm -rf "$store"
done
{
  echo "Images: ${images[*]}. Each copy bundled cold (fresh store, no analysis or pack cache)."
  echo
  echo "| copy | format 2 (MB) | format 1 (MB) | layers rebuilt / carried whole | carried whole, by producer | write, peak RSS |"
  echo "|---|---:|---:|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$here/results/producers.md"
