#!/usr/bin/env bash
# Fetch benchmark: ocibundle against skopeo and the raw-transfer floor (curl),
# side by side in one run, on the shared bench corpus (../shared/bench).
#
# Usage: benches/fetch.sh [--small] [--reps N]
#   --small    small corpus (/tmp/testbed/corpus-small, registry 127.0.0.1:5001)
#              instead of the full one (/tmp/testbed/corpus, 127.0.0.1:5000)
#   --reps N   repetitions of every step (default 3); median (min–max) reported
#
# Environment (defaults follow ../shared/bench/README.md, so corpora and
# registries built there are reused):
#   CORPUS, PORT, REGDIR   corpus dir, registry port, registry storage dir
#   WORK=/tmp/testbed/bench-fetch-<mode>   scratch (stores, layouts, blobs)
#   KEEP=1                 keep WORK's outputs at the end (default: removed)
#   OCIBUNDLE_BIN          ocibundle binary to run (default: cargo build --release of this checkout)
#
# Steps of every rep (each output is deleted before its step, outside timing):
#   a  ocibundle --store FRESH fetch --all-platforms --images LIST
#   b  skopeo copy --all --preserve-digests, every image into one OCI layout
#   c  curl of every unique blob, 4 in parallel: the raw-transfer floor
#   d  ocibundle fetch again into the full store of (a): nothing to download
# Each rep's ocibundle store is checked outside timing: `store fsck` exits 0,
# every corpus digest is present and re-hashes to its name, nothing else is
# there, and every reference points at the digest the registry serves.
#
# Only 127.0.0.1 is contacted. A registry this script starts is stopped at exit.
# Results: stdout and benches/results/fetch-<small|full>.md.
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
bench_init "$@"
need_tools skopeo curl jq python3 xargs sha256sum docker-registry
scratch=("$WORK/store" "$WORK/skopeo" "$WORK/curl")
ensure_corpus

# ---------------------------------------------------------------- inputs
rm -rf "$WORK"; mkdir -p "$WORK/time"
T=$WORK/time
jq -r -f "$here/lib/blobs.jq" "$CORPUS/corpus-manifest.json" > "$WORK/expected.txt"   # KIND DIGEST REPO
n_expected=$(wc -l < "$WORK/expected.txt")
n_layers=$(awk '$1=="layer"' "$WORK/expected.txt" | wc -l)
[[ $n_layers == "$(jq .totals.unique_blobs "$CORPUS/corpus-manifest.json")" ]] ||
  die "corpus manifest: $n_layers unique layers found, totals say $(jq .totals.unique_blobs "$CORPUS/corpus-manifest.json")"
n_images=$(wc -l < "$CORPUS/images.tsv")
cut -f2 "$CORPUS/images.tsv" | sed "s#^#$REG/#" > "$WORK/images.txt"
# curl floor: every unique blob (configs and layers; manifests are not blobs), "OUTFILE URL" pairs
awk -v reg="$REG" -v out="$WORK/curl" '$1!="manifest"{d=$2; sub(/^sha256:/,"",d); print out "/" d, "http://" reg "/v2/" $3 "/blobs/" $2}' \
  "$WORK/expected.txt" > "$WORK/curl-list.txt"
n_blobs=$(wc -l < "$WORK/curl-list.txt")
blob_bytes=$(jq '[.layers[].size] | add' "$CORPUS/corpus-manifest.json")

# ---------------------------------------------------------------- ocibundle
ocibundle_bin

# ---------------------------------------------------------------- commands
STORE=$WORK/store LAYOUT=$WORK/skopeo
cmd_a=("$bin" --store "$STORE" fetch --all-platforms --images "$WORK/images.txt")
skopeo_loop="set -e; while read -r name ref fmt; do skopeo copy -q --all --preserve-digests --src-tls-verify=false docker://$REG/\$ref oci:$LAYOUT:\$name; done < $CORPUS/images.tsv"
cmd_b=(bash -c "$skopeo_loop")
cmd_c=(bash -c "mkdir -p $WORK/curl && xargs -P4 -n2 curl -sfS --noproxy '*' -o < $WORK/curl-list.txt")
cmd_d=("${cmd_a[@]}")

count_files() { find "$1" -type f | wc -l; }

# Sum of a column of ocibundle's text output (REFERENCE DIGEST fetched BYTES present BYTES).
fetched_bytes() { awk '$3=="fetched"{s+=$4} END{print s+0}' "$1"; }
present_bytes() { awk '$5=="present"{s+=$6} END{print s+0}' "$1"; }

# Check the store against the corpus (outside timing). Prints a one-line summary.
verify_store() {
  local store=$1 kind digest repo hex f bad=0 fsck_json
  fsck_json=$("$bin" --store "$store" store fsck --json) || {
    "$bin" --store "$store" store fsck >&2 || true
    die "ocibundle store fsck failed on $store"
  }
  while read -r kind digest repo; do
    hex=${digest#sha256:}; f=$store/blobs/sha256/$hex
    if [[ ! -f $f ]]; then echo "missing $kind $digest ($repo)" >&2; bad=1; continue; fi
    [[ $(sha256sum < "$f" | cut -d' ' -f1) == "$hex" ]] || { echo "bad digest: $f" >&2; bad=1; }
  done < "$WORK/expected.txt"
  local extra
  extra=$(comm -13 <(awk '{sub(/^sha256:/,"",$2); print $2}' "$WORK/expected.txt" | sort) \
                   <(find "$store/blobs/sha256" -type f -printf '%f\n' | sort))
  [[ -z $extra ]] || { echo "unexpected blobs in the store: $extra" >&2; bad=1; }
  local ref want got
  while read -r ref want; do
    got=$(jq -r --arg r "$REG/$ref" '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest] | join(",")' "$store/index.json")
    [[ $got == "$want" ]] || { echo "ref $REG/$ref -> '${got}', registry serves $want" >&2; bad=1; }
  done < <(corpus_refs)
  ((bad == 0)) || die "ocibundle's store $store does not hold the corpus (see above)"
  echo "fsck: $(jq -c . <<<"$fsck_json"); $n_expected/$n_expected corpus digests present and re-hashed, no others; $n_images/$n_images refs at the registry's digests"
}

# ---------------------------------------------------------------- runs
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "mode=$mode reps=$reps registry=$REG corpus=$CORPUS images=$n_images digests=$n_expected blobs=$n_blobs work=$WORK"
# Round 0 only warms up (page cache, this VM's memory): every step once, not counted.
for r in $(seq 0 "$reps"); do
  if ((r == 1)); then for f in "$T"/*.times "$T"/*.sync; do [[ -e $f ]] && : > "$f"; done; fi
  rm -rf "$STORE"; mkdir -p "$STORE"
  warm "$REGDIR"
  timed a "${cmd_a[@]}"
  log "rep $r: a ocibundle fetch    $(tail -1 "$T/a.times")  (fetched $(fetched_bytes "$T/a.out") B)"

  rm -rf "$LAYOUT"
  warm "$REGDIR"
  timed b "${cmd_b[@]}"
  log "rep $r: b skopeo copy        $(tail -1 "$T/b.times")"

  rm -rf "$WORK/curl"
  warm "$REGDIR"
  timed c "${cmd_c[@]}"
  log "rep $r: c curl floor         $(tail -1 "$T/c.times")"

  warm "$REGDIR" "$STORE"
  timed d "${cmd_d[@]}"
  log "rep $r: d ocibundle again    $(tail -1 "$T/d.times")  (fetched $(fetched_bytes "$T/d.out") B)"

  verified=$(verify_store "$STORE")
  [[ $(awk '$3=="fetched" && $5=="present"' "$T/d.out" | wc -l) == "$n_images" ]] ||
    die "ocibundle fetch printed no 'REFERENCE DIGEST fetched BYTES present BYTES' line per image (output: $T/d.out)"
  [[ $(fetched_bytes "$T/d.out") == 0 ]] || die "repeat fetch downloaded $(fetched_bytes "$T/d.out") bytes, expected 0 (output: $T/d.out)"
  [[ $(count_files "$WORK/curl") == "$n_blobs" ]] || die "curl floor: $(count_files "$WORK/curl") files, expected $n_blobs"
  [[ $(count_files "$LAYOUT/blobs/sha256") == "$n_expected" ]] ||
    die "skopeo layout holds $(count_files "$LAYOUT/blobs/sha256") blobs, expected $n_expected"
done
log "rep $reps verified: $verified"

# ---------------------------------------------------------------- report
bytes_of() { du -sb "$1" | cut -f1; }
size_a=$(bytes_of "$STORE") size_b=$(bytes_of "$LAYOUT") size_c=$(bytes_of "$WORK/curl")
fetched_a=$(fetched_bytes "$T/a.out") present_d=$(present_bytes "$T/d.out")

read -r med_a min_a max_a rss_a < <(stats "$T/a.times")
read -r med_b min_b max_b rss_b < <(stats "$T/b.times")
read -r med_c min_c max_c rss_c < <(stats "$T/c.times")
read -r med_d min_d max_d rss_d < <(stats "$T/d.times")

report=$WORK/report.md
{
  echo "### ocibundle fetch benchmark ($mode corpus): median of $reps reps after an untimed warm-up round"
  echo
  echo "| step | wall median (min–max) | peak RSS | bytes on disk | ÷ skopeo | ÷ curl floor |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "| (a) ocibundle fetch, fresh store | $(wall "$med_a" "$min_a" "$max_a") | $(mib "$rss_a") | $(mb "$size_a") | $(ratio "$med_a" "$med_b") | $(ratio "$med_a" "$med_c") |"
  echo "| (b) skopeo copy, all $n_images images into one OCI layout | $(wall "$med_b" "$min_b" "$max_b") | $(mib "$rss_b") | $(mb "$size_b") | 1.00× | $(ratio "$med_b" "$med_c") |"
  echo "| (c) curl floor: $n_blobs blobs, 4 parallel, no verification | $(wall "$med_c" "$min_c" "$max_c") | $(mib "$rss_c") | $(mb "$size_c") | $(ratio "$med_c" "$med_b") | 1.00× |"
  echo "| (d) ocibundle fetch again, everything present | $(wall "$med_d" "$min_d" "$max_d") | $(mib "$rss_d") | (same store) | $(ratio "$med_d" "$med_b") | $(ratio "$med_d" "$med_c") |"
  echo
  echo "Ratios divide wall-clock medians (below 1 is faster). Peak RSS is the maximum over reps of GNU time's"
  echo "\`%M\` for the timed command (for the bash loops, the largest single process; for (c), one curl)."
  echo "Bytes on disk: \`du -sb\` of the output after the last rep. Registry storage read into the page cache right before each step (benches/lib/common.sh), \`sync\`"
  echo "before every timed step, registry on loopback; wall times have 10 ms resolution."
  echo
  echo "Corpus: \`$CORPUS\` ($mode), $n_images images from \`images.tsv\`, $n_expected unique digests"
  echo "($n_layers layers = $(mb "$blob_bytes"), $((n_blobs - n_layers)) configs, $((n_expected - n_blobs)) manifests);"
  echo "registry \`$REG\` (distribution $(docker-registry --version 2>/dev/null | awk '{print $3}'), plain HTTP)."
  echo "ocibundle reported $(mb "$fetched_a") ($fetched_a B) fetched in (a); in (d) 0 fetched, $(mb "$present_d") present."
  echo
  echo "Checks (outside timing, every rep): $verified;"
  echo "skopeo's layout holds the same $n_expected digests; curl wrote $n_blobs files."
  echo
  echo "Command: \`$invocation\` (from the repo root), $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo '```'
  echo "# (a) and (d)"; shell_words "${cmd_a[@]}"
  echo "# (b)"; shell_words "${cmd_b[@]}"
  echo "# (c)"; shell_words "${cmd_c[@]}"
  echo '```'
  echo
  echo "Machine: $(nproc) cores ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), load average at start $load_at_start."
  echo '```'
  free -g
  echo '```'
  echo "Versions: ocibundle $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?')" \
       "($("$bin" --version 2>/dev/null || echo "no --version")), $(rustc --version 2>/dev/null || echo 'rustc ?'),"
  echo "$(skopeo --version), $(curl --version | head -1 | cut -d' ' -f1-2), GNU time $(dpkg-query -W -f '${Version}' time 2>/dev/null || echo '?')."
} > "$report"
mkdir -p "$here/results"
cp "$report" "$here/results/fetch-$mode.md"
cat "$report"
log "written: benches/results/fetch-$mode.md"
