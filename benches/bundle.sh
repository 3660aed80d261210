#!/usr/bin/env bash
# Bundle benchmark: ocibundle bundle / verify / import / size on the shared corpus, side by side
# with `tar -cf` of skopeo's OCI layout (today's best "one file, shared layers once"), and the
# delta figure (engine-a:v2 --since a bundle of engine-a:v1).
#
# Usage: benches/bundle.sh [--small] [--reps N]
#   --small    small corpus (/tmp/testbed/corpus-small, registry 127.0.0.1:5001)
#   --reps N   repetitions of every timed step (default 3); median (min–max) reported
# Environment: CORPUS, PORT, REGDIR, OCIBUNDLE_BIN (as benches/fetch.sh),
#   WORK=/tmp/testbed/bench-bundle-<mode>, KEEP=1 keeps WORK's outputs.
#
# Untimed setup: the corpus (built and pushed by ../shared/bench if missing), an ocibundle store
# filled by `fetch --all-platforms`, and skopeo's OCI layout of the same images.
# Timed steps of every rep (outputs deleted before each step, outside timing; `sync` first):
#   a  ocibundle bundle -o OUT --all
#   b  tar -cf OUT.tar -C SKOPEO_LAYOUT .
#   c  ocibundle verify OUT
#   d  ocibundle import OUT into a fresh store
#   e  ocibundle size --all (prediction; must equal the bytes (a) wrote)
# Checks (outside timing): a second bundle is byte-identical (determinism), sha256sum -c passes,
# the imported store passes fsck. Only 127.0.0.1 is contacted.
# Results: stdout and benches/results/bundle-<small|full>.md.
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
bench_init "$@"
need_tools skopeo curl jq tar sha256sum cmp
scratch=("$WORK/out" "$WORK/import" "$WORK/tar")
ensure_corpus
ocibundle_bin

# ---------------------------------------------------------------- setup (untimed)
mkdir -p "$WORK"
T=$WORK/time; rm -rf "$T"; mkdir -p "$T"
STORE=$WORK/store LAYOUT=$WORK/skopeo
cut -f2 "$CORPUS/images.tsv" | sed "s#^#$REG/#" > "$WORK/images.txt"
log "setup: ocibundle fetch into $STORE"
"$bin" --store "$STORE" fetch --all-platforms --images "$WORK/images.txt" > /dev/null
"$bin" --store "$STORE" store fsck > /dev/null || die "store fsck failed on $STORE"
if [[ ! -f $LAYOUT/index.json ]] || [[ $(jq '.manifests | length' "$LAYOUT/index.json") != "$(wc -l < "$CORPUS/images.tsv")" ]]; then
  log "setup: skopeo copy into $LAYOUT"
  rm -rf "$LAYOUT"
  while read -r name ref fmt; do
    skopeo copy -q --all --preserve-digests --src-tls-verify=false "docker://$REG/$ref" "oci:$LAYOUT:$name"
  done < "$CORPUS/images.tsv"
fi
unique_bytes=$(find "$STORE/blobs/sha256" -type f -printf '%s\n' | awk '{s+=$1} END{print s}')
n_unique=$(find "$STORE/blobs/sha256" -type f | wc -l)

# timed also times the `sync` right after each step: the writeback it left behind (ocibundle
# fsyncs; tar does not).
timed_sync=1

OUT=$WORK/out/site.bundle
# Round 0 only warms up (page cache, this VM's memory): every step once, not counted.
for r in $(seq 0 "$reps"); do
  if ((r == 1)); then for f in "$T"/*.times "$T"/*.sync; do [[ -e $f ]] && : > "$f"; done; fi
  rm -rf "$WORK/out"; mkdir -p "$WORK/out"
  warm "$STORE"
  timed a "$bin" --store "$STORE" bundle -o "$OUT" --all
  log "rep $r: a bundle      $(tail -1 "$T/a.times")"
  rm -rf "$WORK/tar"; mkdir -p "$WORK/tar"
  warm "$LAYOUT"
  timed b tar -cf "$WORK/tar/layout.tar" -C "$LAYOUT" .
  log "rep $r: b tar -cf     $(tail -1 "$T/b.times")"
  warm "$OUT"
  timed c "$bin" verify "$OUT"
  log "rep $r: c verify      $(tail -1 "$T/c.times")"
  rm -rf "$WORK/import"
  warm "$OUT"
  timed d "$bin" --store "$WORK/import" import "$OUT"
  log "rep $r: d import      $(tail -1 "$T/d.times")"
  timed e "$bin" --store "$STORE" size --all --json
  log "rep $r: e size        $(tail -1 "$T/e.times")"
done

# ---------------------------------------------------------------- checks (untimed)
bundle_bytes=$(stat -c %s "$OUT")
predicted=$(jq .bundle_bytes "$T/e.out")
[[ $predicted == "$bundle_bytes" ]] || die "size predicted $predicted bytes, bundle wrote $bundle_bytes"
"$bin" --store "$STORE" bundle -o "$WORK/out/again.bundle" --all > /dev/null
cmp -s "$OUT" "$WORK/out/again.bundle" || die "two bundles of the same images differ"
(cd "$WORK/out" && sha256sum -c --quiet site.bundle.sha256) || die "sha256sum -c failed"
"$bin" --store "$WORK/import" store fsck > /dev/null || die "fsck of the imported store failed"
tar_bytes=$(stat -c %s "$WORK/tar/layout.tar")
sum_per_image=$(jq .sum_per_image_bytes "$T/e.out")

# Delta: engine-a:v2 against a bundle of engine-a:v1.
"$bin" --store "$STORE" bundle -o "$WORK/out/a1.bundle" "$REG/bench/engine-a:v1" > /dev/null
"$bin" --store "$STORE" bundle -o "$WORK/out/a2-delta.bundle" "$REG/bench/engine-a:v2" --since "$WORK/out/a1.bundle" > /dev/null
"$bin" --store "$STORE" bundle -o "$WORK/out/a2-full.bundle" "$REG/bench/engine-a:v2" > /dev/null
delta_bytes=$(stat -c %s "$WORK/out/a2-delta.bundle") a2_full=$(stat -c %s "$WORK/out/a2-full.bundle")
delta_blobs=$("$bin" inspect --json "$WORK/out/a2-delta.bundle" | jq '.blobs')
delta_layers=$("$bin" inspect --json "$WORK/out/a2-delta.bundle" | jq '[.images[].manifests[].layers[].digest] as $l | [.requires[].digest] as $r | $l - $r | length')

# ---------------------------------------------------------------- report
read -r ma na xa ra < <(stats "$T/a.times"); read -r mb nb xb rb < <(stats "$T/b.times")
read -r mc nc xc rc < <(stats "$T/c.times"); read -r md nd xd rd < <(stats "$T/d.times")
read -r me ne xe re < <(stats "$T/e.times")
# Medians of wall + the sync right after, per rep.
withsync() { paste -d' ' <(cut -d' ' -f1 "$T/$1.times") "$T/$1.sync" | awk '{print $1+$2}' | sort -n | awk '{w[NR]=$1} END{print NR%2 ? w[(NR+1)/2] : (w[NR/2]+w[NR/2+1])/2}'; }
sa=$(withsync a) sb=$(withsync b)
rate() { awk -v b="$1" -v s="$2" 'BEGIN{if (s<=0) print "–"; else printf "%.2f GB/s", b/s/1e9}'; }
overhead=$((bundle_bytes - unique_bytes))
report=$WORK/report.md
{
  echo "### ocibundle bundle benchmark ($mode corpus): median of $reps reps after an untimed warm-up round"
  echo
  echo "| step | wall median (min–max) | peak RSS | output | ÷ tar -cf |"
  echo "|---|---:|---:|---:|---:|"
  echo "| (a) ocibundle bundle --all | $(wall "$ma" "$na" "$xa") | $(mib "$ra") | $(mb "$bundle_bytes") | $(ratio "$ma" "$mb") |"
  echo "| (b) tar -cf of skopeo's OCI layout | $(wall "$mb" "$nb" "$xb") | $(mib "$rb") | $(mb "$tar_bytes") | 1.00× |"
  echo "| (c) ocibundle verify ($(rate "$bundle_bytes" "$mc")) | $(wall "$mc" "$nc" "$xc") | $(mib "$rc") | – | $(ratio "$mc" "$mb") |"
  echo "| (d) ocibundle import into a fresh store | $(wall "$md" "$nd" "$xd") | $(mib "$rd") | – | $(ratio "$md" "$mb") |"
  echo "| (e) ocibundle size --all (predicts $predicted B) | $(wall "$me" "$ne" "$xe") | $(mib "$re") | – | – |"
  echo
  echo "Counting the writeback each step leaves behind (median of wall + a \`sync\` right after):"
  echo "(a) $(printf '%.2f' "$sa") s vs (b) $(printf '%.2f' "$sb") s = $(ratio "$sa" "$sb")."
  echo
  echo "| size | bytes |"
  echo "|---|---:|"
  echo "| images summed one by one (what per-image archives carry) | $(mb "$sum_per_image") |"
  echo "| unique blobs in the store ($n_unique: layers, configs, manifests, indexes) | $(mb "$unique_bytes") ($unique_bytes B) |"
  echo "| bundle | $(mb "$bundle_bytes") ($bundle_bytes B) |"
  echo "| bundle overhead over the unique blobs | $overhead B ($(awk -v o="$overhead" -v u="$unique_bytes" 'BEGIN{printf "%.4f %%", 100*o/u}')) |"
  echo "| tar of skopeo's layout | $(mb "$tar_bytes") |"
  echo "| delta: engine-a:v2 --since a bundle of engine-a:v1 ($delta_blobs blobs, $delta_layers layers) | $(mb "$delta_bytes") (full engine-a:v2 bundle: $(mb "$a2_full")) |"
  echo
  echo "Checks (untimed): \`size\` predicted exactly the bytes written; a second bundle is byte-identical;"
  echo "\`sha256sum -c\` passes; the imported store passes \`store fsck\`."
  echo "Inputs read into the page cache right before each timed step (benches/lib/common.sh), \`sync\` before it; ocibundle fsyncs its output, tar does not."
  echo
  echo "Command: \`$invocation\`, $(date -u '+%Y-%m-%d %H:%M UTC'),"
  echo "ocibundle $(git -C "$root" describe --always --dirty 2>/dev/null), $(nproc) cores, $(tar --version | head -1)."
} > "$report"
mkdir -p "$here/results"
cp "$report" "$here/results/bundle-$mode.md"
cat "$report"
