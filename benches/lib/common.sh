# shellcheck shell=bash disable=SC2034  # sets variables the sourcing scripts read
# Shared by the bench scripts (sourced right after `set -euo pipefail`). Owns:
#   die MSG / log MSG   error exit / timestamped progress line on stderr, both naming the script
#   bench_init ARGS...  command line (--small, --reps N|--reps=N, -h|--help = the script's header
#                       comment) -> mode reps small small_flag invocation; root here shared (checks
#                       ../shared/bench); CORPUS PORT REGDIR (small/full defaults), REG, WORK (default
#                       /tmp/testbed/bench-NAME-MODE); no_proxy for loopback; the EXIT/INT/TERM traps
#   on_exit             EXIT trap: cleanup_hook (if the script defines one), rm -rf "${scratch[@]}"
#                       unless KEEP=1, then stops the registry if this run started it
#   need_tools TOOL...  dies naming every missing tool (also checks /usr/bin/time, and cargo
#                       unless OCIBUNDLE_BIN is set)
#   registry_up         true if a registry answers at $REG
#   ensure_corpus       starts a registry at $REG if none answers (started_registry=1), builds the
#                       corpus if missing or not served; dies unless the registry serves it and it
#                       is a $mode corpus
#   build_corpus        ../shared/bench/make-corpus.sh into $CORPUS, pushing to $REG
#   manifest_digest HOST REPO:TAG   the manifest digest the registry at HOST serves ("" if none)
#   corpus_refs         "REPO:TAG MANIFEST_DIGEST" of every corpus image, as the registry serves it
#   registry_matches_corpus  every corpus image is at $REG with the digest the corpus recorded
#   ocibundle_bin       bin=$OCIBUNDLE_BIN, else `cargo build --release -q` in $root and its binary
#   timed STEP CMD...   `sync`, then one run under GNU time: "wall_s rss_kb" appended to $T/STEP.times;
#                       with timed_sync=1 also the seconds of a `sync` right after, to $T/STEP.sync
#   stats FILE          "median min max peak_rss_kb" of a file of "wall rss" lines
#   wall MED MIN MAX / mib KB / mb BYTES / ratio X Y   report cells (wall: wall_prec decimals, 2 by
#                       default; ratio: 3 decimals below 0.1×, else 2)
#   shell_words ARG...  the command as one line a shell reads back (single quotes where needed)
#   warm PATH...        reads every file under the paths (see below)

started_registry=0 scratch=() timed_sync=0 wall_prec=2

die() { echo "${0##*/}: error: $*" >&2; exit 1; }
log() { printf '[%s %(%H:%M:%S)T] %s\n' "${0##*/}" -1 "$*" >&2; }

bench_init() {
  local name=${0##*/}
  mode=full reps=3
  while (($#)); do
    case $1 in
      --small) mode=small ;;
      --reps) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--reps needs a positive integer"; reps=$2; shift ;;
      --reps=*) reps=${1#--reps=}; [[ $reps =~ ^[1-9][0-9]*$ ]] || die "--reps needs a positive integer" ;;
      -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
      *) echo "usage: benches/$name [--small] [--reps N]" >&2; exit 2 ;;
    esac
    shift
  done
  small=0 small_flag=
  if [[ $mode == small ]]; then small=1 small_flag=' --small'; fi
  invocation="benches/$name$small_flag --reps $reps"

  root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
  here=$root/benches
  shared=$root/../shared/bench
  [[ -x $shared/make-corpus.sh && -x $shared/registry.sh ]] ||
    die "$shared not found: the repo must be cloned with shared/ beside it"
  shared=$(cd "$shared" && pwd)

  if ((small)); then
    CORPUS=${CORPUS:-/tmp/testbed/corpus-small} PORT=${PORT:-5001} REGDIR=${REGDIR:-/tmp/testbed/registry-small}
  else
    CORPUS=${CORPUS:-/tmp/testbed/corpus} PORT=${PORT:-5000} REGDIR=${REGDIR:-/tmp/testbed/registry}
  fi
  WORK=${WORK:-/tmp/testbed/bench-${name%.sh}-$mode}
  REG=127.0.0.1:$PORT
  # Loopback only: never send anything through a proxy.
  export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"

  trap on_exit EXIT
  trap 'exit 130' INT TERM
}

on_exit() {
  local rc=$?
  if declare -F cleanup_hook > /dev/null; then cleanup_hook || true; fi
  if [[ ${KEEP:-0} != 1 && -d $WORK ]] && ((${#scratch[@]})); then rm -rf "${scratch[@]}"; fi
  if ((started_registry)); then "$shared/registry.sh" stop "$REGDIR" >&2 || true; fi
  exit "$rc"
}

need_tools() {
  local t missing=()
  for t; do command -v "$t" > /dev/null || missing+=("$t"); done
  [[ -n ${OCIBUNDLE_BIN:-} ]] || command -v cargo > /dev/null || missing+=(cargo)
  [[ -x /usr/bin/time ]] || missing+=("/usr/bin/time (package time)")
  ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (scripts/test.sh installs most of them as root)"
}

# ---------------------------------------------------------------- registry and corpus
registry_up() { [[ $(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "http://$REG/v2/" || true) == 200 ]]; }

build_corpus() {
  log "building the $mode corpus into $CORPUS (pushing to $REG)"
  env SMALL="$small" PORT="$PORT" REGDIR="$REGDIR" "$shared/make-corpus.sh" "$CORPUS" >&2
}

manifest_digest() {
  curl -s --noproxy '*' -I \
    -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json' \
    "http://$1/v2/${2%:*}/manifests/${2##*:}" | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}'
}

corpus_refs() { jq -r '.images[] | "\(.ref) \(.registry_digest)"' "$CORPUS/corpus-manifest.json"; }

registry_matches_corpus() {
  local repo want got
  while read -r repo want; do
    got=$(manifest_digest "$REG" "$repo")
    [[ $got == "$want" ]] || { log "registry: $repo is ${got:-missing}, corpus says $want"; return 1; }
  done < <(corpus_refs)
}

ensure_corpus() {
  if ! registry_up; then
    log "no registry at $REG: starting one (storage $REGDIR)"
    "$shared/registry.sh" start "$REGDIR" "$PORT" >&2
    started_registry=1
  fi
  if [[ ! -f $CORPUS/images.tsv ]] || ! jq -e '.totals and (.images | all(.registry_digest))' "$CORPUS/corpus-manifest.json" > /dev/null 2>&1; then
    build_corpus
  elif ! registry_matches_corpus; then
    build_corpus
  fi
  registry_matches_corpus || die "registry $REG does not serve the corpus in $CORPUS"
  [[ $(jq -r .mode "$CORPUS/corpus-manifest.json") == "$mode" ]] || die "$CORPUS is not a $mode corpus"
}

# ---------------------------------------------------------------- ocibundle
ocibundle_bin() {
  if [[ -n ${OCIBUNDLE_BIN:-} ]]; then
    bin=$OCIBUNDLE_BIN
  else
    log "cargo build --release"
    (cd "$root" && cargo build --release -q) || die "cargo build --release failed"
    bin=$root/target/release/ocibundle
  fi
  [[ -x $bin ]] || die "$bin is not executable"
}

# ---------------------------------------------------------------- timing
# `sync` first (outside timing), so no step pays for the previous one's writeback.
timed() {
  local step=$1 t0; shift
  sync
  if ! /usr/bin/time -f '%e %M' -o "$T/$step.last" "$@" > "$T/$step.out" 2> "$T/$step.err"; then
    echo "--- stderr of step $step:" >&2; tail -20 "$T/$step.err" >&2
    die "step $step failed: $*"
  fi
  tail -1 "$T/$step.last" >> "$T/$step.times"
  if ((timed_sync)); then
    t0=$EPOCHREALTIME; sync
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f\n", b-a}' >> "$T/$step.sync"
  fi
}

stats() { sort -n -k1,1 "$1" | awk '{w[NR]=$1; if ($2>m) m=$2}
  END{med = NR%2 ? w[(NR+1)/2] : (w[NR/2]+w[NR/2+1])/2; print med, w[1], w[NR], m+0}'; }

# ---------------------------------------------------------------- report cells
wall() { printf '%.*f s (%.*f–%.*f)' "$wall_prec" "$1" "$wall_prec" "$2" "$wall_prec" "$3"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.0f MiB", k/1024}'; }
mb() { awk -v b="$1" 'BEGIN{printf "%.1f MB", b/1e6}'; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN{if (y<=0) print "–"; else if (x/y<0.1) printf "%.3f×", x/y; else printf "%.2f×", x/y}'; }

shell_words() {
  local a out=()
  for a; do
    if [[ $a =~ ^[][A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  echo "${out[*]}"
}

# warm PATH...: reads every file under the paths, so the timed step that follows finds its input
# in the page cache. Needed on this machine: a DAMON "pageout" scheme
# (/sys/kernel/mm/damon/admin/kdamonds/0) evicts file pages left untouched for about a minute, so
# whichever tool ran last found its input warm and the other read from disk (measured: push 9.8 s
# cold vs 6.1 s warm for the same bundle). Every tool's input is warmed the same way right before
# its step.
warm() {
  find "$@" -type f -print0 2>/dev/null | xargs -0 -r cat > /dev/null
}
