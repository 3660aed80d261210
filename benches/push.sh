#!/usr/bin/env bash
# Push benchmark: `ocibundle push --from BUNDLE --all` into a fresh registry, side by side with
# skopeo copying each image from local data (a `dir:` copy per image: skopeo's `oci:` reader
# cannot see the corpus's Docker schema2 image), both
# into a fresh distribution registry on loopback; plus a repeat push with everything present.
#
# Usage: benches/push.sh [--small] [--reps N]
# Environment: CORPUS, PORT, REGDIR (source registry), OCIBUNDLE_BIN (as benches/fetch.sh),
#   DEST_PORT (default 5090), WORK=/tmp/testbed/bench-push-<mode>, KEEP=1 keeps WORK's outputs.
# Untimed setup: the corpus (built if missing), an ocibundle store and bundle of it, skopeo's OCI
# layout of it. Timed steps of every rep (each into a fresh, empty registry; `sync` first):
#   a  ocibundle push --from BUNDLE --all --to 127.0.0.1:DEST_PORT/o
#   b  skopeo copy --all --preserve-digests dir:DIRS/NAME docker://127.0.0.1:DEST_PORT/s/REPO:TAG, every image
#   c  ocibundle push again (everything present)
# Checks (untimed): every image's manifest digest in the target registry equals the source's,
# for both ocibundle and skopeo. Only 127.0.0.1 is contacted. Results: benches/results/push-<mode>.md.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
bench_init "$@"
DEST_PORT=${DEST_PORT:-5090}
DEST=127.0.0.1:$DEST_PORT
need_tools skopeo curl jq
scratch=("$WORK/dest")
# The target registry is stopped at exit whatever KEEP says (its storage is kept with KEEP=1).
cleanup_hook() { "$shared/registry.sh" stop "$WORK/dest" > /dev/null 2>&1 || true; }
ensure_corpus
ocibundle_bin

# ---------------------------------------------------------------- setup (untimed)
mkdir -p "$WORK"; T=$WORK/time; rm -rf "$T"; mkdir -p "$T"
STORE=$WORK/store DIRS=$WORK/skopeo-dirs BUNDLE=$WORK/corpus.bundle
cut -f2 "$CORPUS/images.tsv" | sed "s#^#$REG/#" > "$WORK/images.txt"
log "setup: fetch, bundle, skopeo dir: copies"
"$bin" --store "$STORE" fetch --all-platforms --images "$WORK/images.txt" > /dev/null
rm -f "$BUNDLE" "$BUNDLE.sha256"
"$bin" --store "$STORE" bundle -o "$BUNDLE" --all > /dev/null
while read -r name ref fmt; do
  [[ -f $DIRS/$name/manifest.json ]] && continue
  mkdir -p "$DIRS/$name"
  skopeo copy -q --all --preserve-digests --src-tls-verify=false "docker://$REG/$ref" "dir:$DIRS/$name"
done < "$CORPUS/images.tsv"

fresh_dest() {
  "$shared/registry.sh" stop "$WORK/dest" >/dev/null 2>&1 || true
  rm -rf "$WORK/dest"
  "$shared/registry.sh" start "$WORK/dest" "$DEST_PORT" >/dev/null
}
check_dest() {
  local prefix=$1 ref want got bad=0
  while read -r ref want; do
    got=$(manifest_digest "$DEST" "$prefix/$ref")
    [[ $got == "$want" ]] || { echo "$prefix/$ref: target serves ${got:-nothing}, source is $want" >&2; bad=1; }
  done < <(corpus_refs)
  return $bad
}
skopeo_loop="set -e; while read -r name ref fmt; do
  skopeo copy -q --all --preserve-digests --dest-tls-verify=false dir:$DIRS/\$name docker://$DEST/s/\$ref
done < $CORPUS/images.tsv"

# Round 0 only warms up (page cache, this VM's memory): every step once, not counted.
for r in $(seq 0 "$reps"); do
  if ((r == 1)); then for f in "$T"/*.times "$T"/*.sync; do [[ -e $f ]] && : > "$f"; done; fi
  fresh_dest
  warm "$BUNDLE"
  timed a "$bin" push --from "$BUNDLE" --all --to "$DEST/o"
  log "rep $r: a ocibundle push  $(tail -1 "$T/a.times")"
  warm "$BUNDLE"
  timed c "$bin" push --from "$BUNDLE" --all --to "$DEST/o"
  log "rep $r: c push again      $(tail -1 "$T/c.times")"
  check_dest o || die "ocibundle's push does not match the source digests"
  fresh_dest
  warm "$DIRS"
  timed b bash -c "$skopeo_loop"
  log "rep $r: b skopeo copy     $(tail -1 "$T/b.times")"
  # skopeo rewrites the v2s2 image's digest only if it converts; report rather than fail.
  check_dest s > "$T/skopeo-check.txt" 2>&1 || true
done

read -r ma na xa ra < <(stats "$T/a.times"); read -r mb nb xb rb < <(stats "$T/b.times")
read -r mc nc xc rc < <(stats "$T/c.times")
pushed=$(grep -c ' pushed ' "$T/a.out" || true)
report=$WORK/report.md
{
  echo "### ocibundle push benchmark ($mode corpus): median of $reps reps after an untimed warm-up round"
  echo
  echo "| step | wall median (min–max) | peak RSS | ÷ skopeo |"
  echo "|---|---:|---:|---:|"
  echo "| (a) ocibundle push --from BUNDLE --all, fresh registry | $(wall "$ma" "$na" "$xa") | $(mib "$ra") | $(ratio "$ma" "$mb") |"
  echo "| (b) skopeo copy --all --preserve-digests dir:IMG, each image, fresh registry | $(wall "$mb" "$nb" "$xb") | $(mib "$rb") | 1.00× |"
  echo "| (c) ocibundle push again, everything present | $(wall "$mc" "$nc" "$xc") | $(mib "$rc") | $(ratio "$mc" "$mb") |"
  echo
  echo "Both start from local data on this machine and push into a fresh distribution registry on"
  echo "127.0.0.1:$DEST_PORT (plain HTTP). ocibundle pushed $pushed images; every manifest digest in the"
  echo "target equals the source's (checked each rep). skopeo's digest check: $( [[ -s $T/skopeo-check.txt ]] && tr '\n' ' ' < "$T/skopeo-check.txt" || echo 'all equal')."
  echo
  echo "Command: \`$invocation\`, $(date -u '+%Y-%m-%d %H:%M UTC'),"
  echo "ocibundle $(git -C "$root" describe --always --dirty 2>/dev/null), $(skopeo --version), $(nproc) cores, load at end $(cut -d' ' -f1-3 /proc/loadavg)."
} > "$report"
mkdir -p "$here/results"
cp "$report" "$here/results/push-$mode.md"
cat "$report"
