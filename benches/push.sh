#!/usr/bin/env bash
# Push benchmark: `ocibundle push --from BUNDLE --all` into a fresh registry, side by side with
# skopeo copying each image from local data (a `dir:` copy per image: skopeo's `oci:` reader
# cannot see the corpus's Docker schema2 image), both
# into a fresh distribution registry on loopback; plus a repeat push with everything present.
#
# Usage: benches/push.sh [--small] [--reps N]
# Environment: CORPUS, PORT, REGDIR (source registry, as benches/fetch.sh), DEST_PORT (default
#   5090), WORK=/tmp/testbed/bench-push-<mode>, KEEP=1 keeps WORK's outputs.
# Untimed setup: the corpus (built if missing), an ocibundle store and bundle of it, skopeo's OCI
# layout of it. Timed steps of every rep (each into a fresh, empty registry; `sync` first):
#   a  ocibundle push --from BUNDLE --all --to 127.0.0.1:DEST_PORT/o
#   b  skopeo copy --all --preserve-digests dir:DIRS/NAME docker://127.0.0.1:DEST_PORT/s/REPO:TAG, every image
#   c  ocibundle push again (everything present)
# Checks (untimed): every image's manifest digest in the target registry equals the source's,
# for both ocibundle and skopeo. Only 127.0.0.1 is contacted. Results: benches/results/push-<mode>.md.
set -euo pipefail
die() { echo "push.sh: error: $*" >&2; exit 1; }
log() { printf '[push.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

mode=full reps=3
while (($#)); do
  case $1 in
    --small) mode=small ;;
    --reps) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--reps needs a positive integer"; reps=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "usage: benches/push.sh [--small] [--reps N]" >&2; exit 2 ;;
  esac
  shift
done
small=0; [[ $mode == small ]] && small=1
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
shared=$root/../shared/bench
[[ -x $shared/make-corpus.sh ]] || die "$shared not found: the repo must be cloned with shared/ beside it"
shared=$(cd "$shared" && pwd)
# shellcheck source=lib/common.sh
source "$root/benches/lib/common.sh"
if ((small)); then
  CORPUS=${CORPUS:-/tmp/testbed/corpus-small} PORT=${PORT:-5001} REGDIR=${REGDIR:-/tmp/testbed/registry-small}
else
  CORPUS=${CORPUS:-/tmp/testbed/corpus} PORT=${PORT:-5000} REGDIR=${REGDIR:-/tmp/testbed/registry}
fi
DEST_PORT=${DEST_PORT:-5090}
WORK=${WORK:-/tmp/testbed/bench-push-$mode}
REG=127.0.0.1:$PORT DEST=127.0.0.1:$DEST_PORT
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
for t in skopeo curl jq cargo; do command -v "$t" >/dev/null || die "missing tool: $t"; done
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (package time)"

started_registry=0
cleanup() {
  local rc=$?
  "$shared/registry.sh" stop "$WORK/dest" >/dev/null 2>&1 || true
  if [[ ${KEEP:-0} != 1 && -d $WORK ]]; then rm -rf "$WORK/dest"; fi
  if ((started_registry)); then "$shared/registry.sh" stop "$REGDIR" >&2 || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ $(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "http://$REG/v2/" || true) != 200 ]]; then
  "$shared/registry.sh" start "$REGDIR" "$PORT" >&2
  started_registry=1
fi
if [[ ! -f $CORPUS/corpus-manifest.json ]] || [[ $(curl -s --noproxy '*' "http://$REG/v2/_catalog" | jq '.repositories | length') == 0 ]]; then
  log "building the $mode corpus into $CORPUS"
  env SMALL="$small" PORT="$PORT" REGDIR="$REGDIR" "$shared/make-corpus.sh" "$CORPUS" >&2
fi
log "cargo build --release"
(cd "$root" && cargo build --release -q) || die "cargo build --release failed"
bin=${OCIBUNDLE_BIN:-$root/target/release/ocibundle}

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
timed() {
  local step=$1; shift
  sync
  if ! /usr/bin/time -f '%e %M' -o "$T/$step.last" "$@" > "$T/$step.out" 2> "$T/$step.err"; then
    tail -20 "$T/$step.err" >&2; die "step $step failed: $*"
  fi
  tail -1 "$T/$step.last" >> "$T/$step.times"
}
# digest_of REPO:TAG -> the manifest digest the target registry serves
digest_of() {
  curl -s --noproxy '*' -I -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json' \
    "http://$DEST/v2/${1%:*}/manifests/${1##*:}" | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}'
}
check_dest() {
  local prefix=$1 ref want got bad=0
  while read -r ref want; do
    got=$(digest_of "$prefix/$ref")
    [[ $got == "$want" ]] || { echo "$prefix/$ref: target serves ${got:-nothing}, source is $want" >&2; bad=1; }
  done < <(jq -r '.images[] | "\(.ref) \(.registry_digest)"' "$CORPUS/corpus-manifest.json")
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

stats() { sort -n -k1,1 "$T/$1.times" | awk '{w[NR]=$1; if ($2>m) m=$2}
  END{med = NR%2 ? w[(NR+1)/2] : (w[NR/2]+w[NR/2+1])/2; print med, w[1], w[NR], m}'; }
read -r ma na xa ra < <(stats a); read -r mb nb xb rb < <(stats b); read -r mc nc xc rc < <(stats c)
wall() { printf '%.2f s (%.2f–%.2f)' "$1" "$2" "$3"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f MiB", k/1024}'; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN{if (y<=0) print "–"; else printf "%.2f×", x/y}'; }
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
  echo "Command: \`benches/push.sh$( ((small)) && echo ' --small') --reps $reps\`, $(date -u '+%Y-%m-%d %H:%M UTC'),"
  echo "ocibundle $(git -C "$root" describe --always --dirty 2>/dev/null), $(skopeo --version), $(nproc) cores, load at end $(cut -d' ' -f1-3 /proc/loadavg)."
} > "$report"
mkdir -p "$root/benches/results"
cp "$report" "$root/benches/results/push-$mode.md"
cat "$report"
