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

die() { echo "fetch.sh: error: $*" >&2; exit 1; }
log() { printf '[fetch.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

mode=full reps=3
while (($#)); do
  case $1 in
    --small) mode=small ;;
    --reps) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--reps needs a positive integer"; reps=$2; shift ;;
    --reps=*) reps=${1#--reps=}; [[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps needs a positive integer" ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "usage: benches/fetch.sh [--small] [--reps N]" >&2; exit 2 ;;
  esac
  shift
done
small=0 small_flag=
if [[ $mode == small ]]; then small=1 small_flag=' --small'; fi
invocation="benches/fetch.sh$small_flag --reps $reps"

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
here=$root/benches
shared=$root/../shared/bench
[[ -x $shared/make-corpus.sh && -x $shared/registry.sh ]] ||
  die "$shared not found: the repo must be cloned with shared/ beside it"
shared=$(cd "$shared" && pwd)
# shellcheck source=lib/common.sh
source "$root/benches/lib/common.sh"

if ((small)); then
  CORPUS=${CORPUS:-/tmp/testbed/corpus-small} PORT=${PORT:-5001} REGDIR=${REGDIR:-/tmp/testbed/registry-small}
else
  CORPUS=${CORPUS:-/tmp/testbed/corpus} PORT=${PORT:-5000} REGDIR=${REGDIR:-/tmp/testbed/registry}
fi
WORK=${WORK:-/tmp/testbed/bench-fetch-$mode}
REG=127.0.0.1:$PORT
# Loopback only: never send anything through a proxy.
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"

missing=()
for t in skopeo curl jq python3 xargs sha256sum docker-registry cargo; do
  command -v "$t" >/dev/null || missing+=("$t")
done
[[ -x /usr/bin/time ]] || missing+=("/usr/bin/time (package time)")
((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (scripts/test.sh installs them as root)"

# ---------------------------------------------------------------- registry
started_registry=0
cleanup() {
  local rc=$?
  if [[ ${KEEP:-0} != 1 && -d $WORK ]]; then rm -rf "$WORK/store" "$WORK/skopeo" "$WORK/curl"; fi
  if ((started_registry)); then "$shared/registry.sh" stop "$REGDIR" >&2 || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

registry_up() { [[ $(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "http://$REG/v2/" || true) == 200 ]]; }
if ! registry_up; then
  log "no registry at $REG: starting one (storage $REGDIR)"
  "$shared/registry.sh" start "$REGDIR" "$PORT" >&2
  started_registry=1
fi

# ---------------------------------------------------------------- corpus
build_corpus() {
  log "building the $mode corpus into $CORPUS (pushing to $REG)"
  env SMALL="$small" PORT="$PORT" REGDIR="$REGDIR" \
    "$shared/make-corpus.sh" "$CORPUS" >&2
}
# "REPO:TAG MANIFEST_DIGEST" for every corpus image, as the registry serves it
corpus_refs() { jq -r '.images[] | "\(.ref) \(.registry_digest)"' "$CORPUS/corpus-manifest.json"; }
# Every image must be in the registry with the manifest digest the corpus recorded.
registry_matches_corpus() {
  local repo want got
  while read -r repo want; do
    got=$(curl -s --noproxy '*' -I \
      -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json' \
      "http://$REG/v2/${repo%:*}/manifests/${repo##*:}" | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}')
    [[ $got == "$want" ]] || { log "registry: $repo is ${got:-missing}, corpus says $want"; return 1; }
  done < <(corpus_refs)
}
if [[ ! -f $CORPUS/images.tsv ]] || ! jq -e '.totals and (.images | all(.registry_digest))' "$CORPUS/corpus-manifest.json" >/dev/null 2>&1; then
  build_corpus
elif ! registry_matches_corpus; then
  build_corpus
fi
registry_matches_corpus || die "registry $REG does not serve the corpus in $CORPUS"
[[ $(jq -r .mode "$CORPUS/corpus-manifest.json") == "$mode" ]] || die "$CORPUS is not a $mode corpus"

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
if [[ -n ${OCIBUNDLE_BIN:-} ]]; then
  bin=$OCIBUNDLE_BIN
else
  log "cargo build --release"
  (cd "$root" && cargo build --release -q) || die "cargo build --release failed"
  bin=$root/target/release/ocibundle
fi
[[ -x $bin ]] || die "$bin is not executable"

# ---------------------------------------------------------------- commands
STORE=$WORK/store LAYOUT=$WORK/skopeo
cmd_a=("$bin" --store "$STORE" fetch --all-platforms --images "$WORK/images.txt")
skopeo_loop="set -e; while read -r name ref fmt; do skopeo copy -q --all --preserve-digests --src-tls-verify=false docker://$REG/\$ref oci:$LAYOUT:\$name; done < $CORPUS/images.tsv"
cmd_b=(bash -c "$skopeo_loop")
cmd_c=(bash -c "mkdir -p $WORK/curl && xargs -P4 -n2 curl -sfS --noproxy '*' -o < $WORK/curl-list.txt")
cmd_d=("${cmd_a[@]}")

# timed STEP CMD...: one timed run; "wall_s rss_kb" appended to $T/STEP.times.
# `sync` first (outside timing), so no step pays for the previous one's writeback.
timed() {
  local step=$1; shift
  sync
  if ! /usr/bin/time -f '%e %M' -o "$T/$step.last" "$@" > "$T/$step.out" 2> "$T/$step.err"; then
    echo "--- stderr of step $step:" >&2; tail -20 "$T/$step.err" >&2
    die "step $step failed: $*"
  fi
  tail -1 "$T/$step.last" >> "$T/$step.times"
}

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

# stats STEP -> "median min max peak_rss_kb"
stats() { sort -n -k1,1 "$T/$1.times" | awk '{w[NR]=$1; if ($2>m) m=$2}
  END{med = NR%2 ? w[(NR+1)/2] : (w[NR/2]+w[NR/2+1])/2; print med, w[1], w[NR], m}'; }
read -r med_a min_a max_a rss_a < <(stats a)
read -r med_b min_b max_b rss_b < <(stats b)
read -r med_c min_c max_c rss_c < <(stats c)
read -r med_d min_d max_d rss_d < <(stats d)
wall() { printf '%.2f s (%.2f–%.2f)' "$1" "$2" "$3"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f MiB", k/1024}'; }
mb() { awk -v b="$1" 'BEGIN{printf "%.1f MB", b/1e6}'; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN{if (y<=0) print "–"; else if (x/y<0.1) printf "%.3f×", x/y; else printf "%.2f×", x/y}'; }

# shell_words ARG...: the command as one line a shell reads back (single quotes where needed)
shell_words() {
  local a out=()
  for a; do
    if [[ $a =~ ^[][A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}

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
