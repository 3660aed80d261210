#!/usr/bin/env bash
# Export benchmark: `ocibundle export` (docker-archive from the store, OCI layout from a bundle)
# against what exists today: podman save --multi-image-archive, skopeo's one docker-archive per
# image, and tar -xf of a tar of skopeo's OCI layout. Same corpus and registry as
# benches/fetch.sh (../shared/bench).
#
# Usage: benches/export.sh [--small] [--reps N]
#   --small    small corpus (/tmp/testbed/corpus-small, registry 127.0.0.1:5001)
#   --reps N   repetitions of every timed step (default 3); median (min–max) reported
# Environment: CORPUS, PORT, REGDIR (as benches/fetch.sh), WORK=/tmp/testbed/bench-export-<mode>,
#   KEEP=1 keeps WORK's data at the end (default: removed, podman's ~15 GB vfs store included),
#   OCIBUNDLE_BIN (default: cargo build --release of this checkout),
#   LOAD_MAX=1 / LOAD_WAIT_MIN=30: before the timed part and before each rep, wait (a minute at
#   a time, at most LOAD_WAIT_MIN minutes) until the 1-minute load average is below LOAD_MAX,
#   MIN_FREE_GB (default 45 full, 2 small): free space WORK's file system needs at the start,
#   REDO_MAX=3: how many reps may be measured again because other processes were busy.
#
# Untimed setup, once per run: an ocibundle store (fetch --all-platforms of every corpus image),
# a bundle of it (bundle --all), podman's vfs store (podman pull of every image but the zstd one:
# podman 4.3 cannot save zstd layers to a docker-archive), skopeo's OCI layout of the corpus and
# a tar of it.
# Timed steps of every rep (each output deleted before its step; `sync` before each step; the
# `sync` right after each step is timed too, to show writeback the tool left behind):
#   a   ocibundle export --docker-archive OUT --all            (all 8 images, zstd one included)
#   a2  ocibundle export --docker-archive OUT --images LIST7   (the 7 podman can save)
#   b   podman save --multi-image-archive -o OUT IMG...         (the 7)
#   c   skopeo copy docker://REG/IMG docker-archive:FILE:REF, one archive per image (the 7),
#       from the registry (as in ../shared/bench/baseline.sh), one bash loop
#   d   ocibundle export --oci-layout DIR --from BUNDLE --all  (no store: the air-gapped side)
#   e   tar -xf of the tar of skopeo's OCI layout
# Checks (untimed): every rep, skopeo inspect of every image in (a), (a2), (b) and (c) gives the
# config digest (= image ID) and diff_ids of the corpus; (a)'s tar holds each exported diff_id
# once and nothing but plain ustar framing; (d)'s index.json names every image at the registry's
# manifest digest and its blobs are exactly the corpus digests, re-hashed; (e) has as many files
# and bytes as skopeo's layout. After the last rep: `umoci unpack` of bench/engine-b:v1 from (d),
# `podman load -i` of (a) into a fresh vfs root (8 images, IDs = config digests), and an export
# of the zstd image alone (the only export that decompresses its zstd layer: in (a) that diff_id
# comes from another image's gzip blob).
# Only 127.0.0.1 is contacted. A registry this script starts is stopped at exit.
# Results: stdout and benches/results/export-<small|full>.md.
set -euo pipefail
export LC_NUMERIC=C   # EPOCHREALTIME and awk use a dot

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
bench_init "$@"
invocation="${OCIBUNDLE_BIN:+OCIBUNDLE_BIN=$OCIBUNDLE_BIN }$invocation"
if ((small)); then MIN_FREE_GB=${MIN_FREE_GB:-2}; else MIN_FREE_GB=${MIN_FREE_GB:-45}; fi
LOAD_MAX=${LOAD_MAX:-1} LOAD_WAIT_MIN=${LOAD_WAIT_MIN:-30}
need_tools skopeo podman umoci curl jq tar sha256sum docker-registry
((EUID == 0)) || die "podman runs here as root with a private vfs root (see ../shared/FIELD-NOTES.md): run as root"

# ---------------------------------------------------------------- cleanup, registry, corpus
STORE=$WORK/store BUNDLE=$WORK/site.bundle LAYOUT=$WORK/skopeo LAYOUT_TAR=$WORK/skopeo-layout.tar
PODROOT=$WORK/podroot LOADROOT=$WORK/loadroot OUT=$WORK/out
scratch=("$STORE" "$BUNDLE" "$BUNDLE.sha256" "$LAYOUT" "$LAYOUT_TAR" "$PODROOT" "$PODROOT.run"
  "$LOADROOT" "$LOADROOT.run" "$WORK/zstdroot" "$WORK/zstdroot.run" "$OUT" "$WORK/umoci")
ensure_corpus

# ---------------------------------------------------------------- ocibundle
ocibundle_bin
bin_repo=$(cd "$(dirname "$bin")" && git rev-parse --show-toplevel 2>/dev/null || true)
bin_version="$(git -C "${bin_repo:-$root}" describe --always --dirty 2>/dev/null || echo '?')"
[[ -n ${OCIBUNDLE_BIN:-} ]] && bin_version+=" (OCIBUNDLE_BIN=$bin)"

# ---------------------------------------------------------------- inputs
rm -rf "$WORK"; mkdir -p "$WORK/time"
T=$WORK/time
free_gb=$(df -BG --output=avail "$WORK" | tail -1 | tr -dc 0-9)
((free_gb >= MIN_FREE_GB)) || die "$WORK has $free_gb GB free, this run needs about $MIN_FREE_GB GB (MIN_FREE_GB)"
case $(uname -m) in x86_64) host_arch=amd64 ;; aarch64) host_arch=arm64 ;; *) host_arch=$(uname -m) ;; esac
# What a docker-archive holds per image (one platform: the host's for an index):
#   REF CONFIG_DIGEST DIFF_IDS(,) USIZES(,) ZSTD(true|false)
jq -r --arg arch "$host_arch" '.images[] | .ref as $r
  | (if (.platforms // [] | length) > 0 then (.platforms[] | select(.platform.os == "linux" and .platform.architecture == $arch)) else . end)
  | "\($r)\t\(.config_digest)\t\([.layers[].diff_id] | join(","))\t\([.layers[].usize] | join(","))\t\([.layers[].media_type] | any(test("zstd")))"' \
  "$CORPUS/corpus-manifest.json" > "$WORK/expected-images.tsv"
n_images=$(wc -l < "$CORPUS/images.tsv")
[[ $(wc -l < "$WORK/expected-images.tsv") == "$n_images" ]] || die "corpus manifest: no $host_arch image for some index"
mapfile -t zstd_refs < <(awk -F'\t' '$5=="true"{print $1}' "$WORK/expected-images.tsv")
awk -F'\t' '$5!="true"' "$WORK/expected-images.tsv" > "$WORK/expected-images7.tsv"
n7=$(wc -l < "$WORK/expected-images7.tsv")
cut -f2 "$CORPUS/images.tsv" | sed "s#^#$REG/#" > "$WORK/images.txt"
cut -f1 "$WORK/expected-images7.tsv" | sed "s#^#$REG/#" > "$WORK/images7.txt"
mapfile -t refs7 < "$WORK/images7.txt"
awk -F'\t' 'NR==FNR{keep[$1]=1; next} keep[$2]' "$WORK/expected-images7.tsv" "$CORPUS/images.tsv" > "$WORK/images7.tsv"
# unique diff_ids a docker-archive of all 8 (resp. the 7) carries, with their uncompressed sizes
uniq_diffs() { awk -F'\t' '{n=split($3,d,","); split($4,s,","); for (i=1;i<=n;i++) print d[i], s[i]}' "$1" | sort -u; }
uniq_diffs "$WORK/expected-images.tsv" > "$WORK/diffids.txt"
uniq_diffs "$WORK/expected-images7.tsv" > "$WORK/diffids7.txt"
# (awk's plain `print` turns sums above 2^31 into 2.6e+09 in mawk: always printf %.0f)
diff_bytes=$(awk '{s+=$2} END{printf "%.0f\n", s}' "$WORK/diffids.txt") n_diffs=$(wc -l < "$WORK/diffids.txt")
diff_bytes7=$(awk '{s+=$2} END{printf "%.0f\n", s}' "$WORK/diffids7.txt")
[[ $diff_bytes =~ ^[0-9]+$ && $diff_bytes7 =~ ^[0-9]+$ ]] || die "corpus manifest: bad layer sizes ($diff_bytes, $diff_bytes7)"
corpus_diff_bytes=$(jq .totals.unique_uncompressed_bytes "$CORPUS/corpus-manifest.json")
corpus_n_diffs=$(jq .totals.unique_diff_ids "$CORPUS/corpus-manifest.json")
jq -r -f "$here/lib/blobs.jq" "$CORPUS/corpus-manifest.json" > "$WORK/expected-blobs.txt"   # KIND DIGEST REPO
n_blobs=$(wc -l < "$WORK/expected-blobs.txt")

pm=(podman --storage-driver vfs --cgroup-manager cgroupfs --events-backend file --root "$PODROOT" --runroot "$PODROOT.run")

# ---------------------------------------------------------------- setup (untimed)
log "mode=$mode reps=$reps registry=$REG corpus=$CORPUS images=$n_images (podman/skopeo: $n7) work=$WORK"
log "setup: ocibundle fetch into $STORE"
"$bin" --store "$STORE" fetch --all-platforms --images "$WORK/images.txt" > /dev/null
"$bin" --store "$STORE" store fsck > /dev/null || die "store fsck failed on $STORE"
log "setup: ocibundle bundle -o $BUNDLE --all"
"$bin" --store "$STORE" bundle -o "$BUNDLE" --all > /dev/null
log "setup: skopeo copy of every image into $LAYOUT, tar of it"
while IFS=$'\t' read -r name ref fmt; do
  skopeo copy -q --all --preserve-digests --src-tls-verify=false "docker://$REG/$ref" "oci:$LAYOUT:$name" < /dev/null
done < "$CORPUS/images.tsv"
tar -cf "$LAYOUT_TAR" -C "$LAYOUT" .
log "setup: podman pull of $n7 images into $PODROOT (vfs; not ${zstd_refs[*]})"
pull_t0=$EPOCHREALTIME
for i in "${refs7[@]}"; do "${pm[@]}" pull -q --tls-verify=false "$i" > /dev/null; done
pull_s=$(awk -v a="$pull_t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
podroot_bytes=$(du -sb "$PODROOT" | cut -f1)
log "setup: podman pull took $pull_s s, store $podroot_bytes bytes"

# ---------------------------------------------------------------- commands
cmd_a=("$bin" --store "$STORE" export --docker-archive "$OUT/a/all.tar" --all)
cmd_a2=("$bin" --store "$STORE" export --docker-archive "$OUT/a2/seven.tar" --images "$WORK/images7.txt")
cmd_b=("${pm[@]}" save -q --multi-image-archive -o "$OUT/b/podman.tar" "${refs7[@]}")
skopeo_loop="set -e; while IFS=\$'\\t' read -r name ref fmt; do skopeo copy -q --src-tls-verify=false docker://$REG/\$ref docker-archive:$OUT/c/\$name.tar:$REG/\$ref; done < $WORK/images7.tsv"
cmd_c=(bash -c "$skopeo_loop")
cmd_d=("$bin" --store "$WORK/no-store" export --oci-layout "$OUT/d/layout" --from "$BUNDLE" --all)
cmd_e=(tar -xf "$LAYOUT_TAR" -C "$OUT/e")
[[ ! -e $WORK/no-store ]] || die "$WORK/no-store must not exist: (d) reads the bundle alone"

# timed STEP CMD... (replaces common.sh's timed): one timed run; "wall_s rss_kb cpu_s" appended
# to $T/STEP.times, then the seconds a `sync` right after takes appended to $T/STEP.sync. `sync`
# first (outside timing), so no step pays for the previous one's writeback. Wall time: bash's
# clock around /usr/bin/time (millisecond resolution; GNU time's %e has 10 ms, too coarse for the
# small corpus); peak RSS: GNU time's %M; CPU: GNU time's %U + %S.
timed() {
  local step=$1 t0 t1 t2 b0 b1 e rss usr sys; shift
  sync
  b0=$(busy_s)
  t0=$EPOCHREALTIME
  if ! /usr/bin/time -f '%e %M %U %S' -o "$T/$step.last" "$@" > "$T/$step.out" 2> "$T/$step.err"; then
    echo "--- stderr of step $step:" >&2; tail -20 "$T/$step.err" >&2
    die "step $step failed: $*"
  fi
  t1=$EPOCHREALTIME
  b1=$(busy_s)
  sync
  t2=$EPOCHREALTIME
  read -r e rss usr sys < <(tail -1 "$T/$step.last")
  awk -v b0="$b0" -v b1="$b1" -v u="$usr" -v s="$sys" 'BEGIN{printf "%.1f\n", b1 - b0 - u - s}' >> "$T/$step.other"
  awk -v a="$t0" -v b="$t1" -v c="$t2" -v m="$rss" -v cpu="$usr $sys" 'BEGIN{split(cpu, x, " ")
    printf "%.3f %d %.2f\n", b-a, m, x[1]+x[2]; printf "%.3f\n", c-b > "/dev/stderr"}' \
    >> "$T/$step.times" 2>> "$T/$step.sync"
}
fresh() { rm -rf "$1"; mkdir -p "$1"; }
# CPU seconds all processes (and the kernel) have been busy since boot, from /proc/stat: the
# part of it a step's own %U+%S does not explain is work done by others meanwhile (the registry
# in (c), kernel writeback threads, anyone else on the machine).
clk_tck=$(getconf CLK_TCK)
busy_s() { awk -v hz="$clk_tck" '/^cpu /{printf "%.2f\n", ($2+$3+$4+$7+$8+$9)/hz; exit}' /proc/stat; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------- checks (untimed)
# check_archive_images ARCHIVE EXPECTED_TSV: skopeo inspect of every image: config and diff_ids
check_archive_images() {
  local archive=$1 tsv=$2 ref cfg diffs usz z got bad=0
  while IFS=$'\t' read -r ref cfg diffs usz z; do
    got=$(skopeo inspect --raw "docker-archive:$archive:$REG/$ref" < /dev/null | jq -r '"\(.config.digest)\t\([.layers[].digest] | join(","))"') ||
      { echo "skopeo inspect docker-archive:$archive:$REG/$ref failed" >&2; bad=1; continue; }
    [[ $got == "$cfg"$'\t'"$diffs" ]] || { echo "$archive: $REG/$ref is '$got', expected config $cfg, layers $diffs" >&2; bad=1; }
  done < "$tsv"
  ((bad == 0)) || die "docker-archive $archive does not hold the expected images (see above)"
}
# check_tar_framing ARCHIVE DIFFIDS: each expected diff_id once (at its size), no duplicate entry,
# and the archive is exactly its entries in plain ustar framing. Prints "layer_bytes meta_bytes framing_bytes entries".
check_tar_framing() {
  local archive=$1 diffs=$2 listing
  listing=$(tar --numeric-owner -tvf "$archive" | awk '{print $3, $6}')   # SIZE NAME
  [[ -z $(awk '{print $2}' <<<"$listing" | sort | uniq -d) ]] || die "$archive: duplicate tar entries"
  local want got
  want=$(awk '{sub(/^sha256:/,"",$1); print "blobs/sha256/" $1, $2}' "$diffs" | sort)
  got=$(awk 'NR==FNR{d["blobs/sha256/" substr($1,8)]=1; next} ($2 in d){print $2, $1}' "$diffs" - <<<"$listing" | sort)
  [[ $want == "$got" ]] || die "$archive: layer entries differ from the expected diff_ids: $(diff <(echo "$want") <(echo "$got") | head -5 | tr '\n' ' ')"
  awk -v size="$(stat -c %s "$archive")" 'NR==FNR{d["blobs/sha256/" substr($1,8)]=1; next}
    {n++; frame += 512 + (512 - $1 % 512) % 512; if ($2 in d) l += $1; else m += $1}
    END{frame += 1024; if (l + m + frame != size) {printf "framing: layers %.0f + metadata %.0f + ustar %.0f != %s bytes\n", l, m, frame, size > "/dev/stderr"; exit 1}
        printf "%.0f %.0f %.0f %d\n", l, m, frame, n}' \
    "$diffs" - <<<"$listing" || die "$archive: its size is not its entries plus ustar framing (see above)"
}
check_layout() {
  local dir=$1 kind digest repo hex f bad=0 ref want got
  [[ $(jq '.manifests | length' "$dir/index.json") == "$n_images" ]] || die "$dir/index.json: $(jq '.manifests | length' "$dir/index.json") entries, expected $n_images"
  while read -r ref want; do
    got=$(jq -r --arg r "$REG/$ref" '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest] | join(",")' "$dir/index.json")
    [[ $got == "$want" ]] || { echo "$dir: $REG/$ref -> '$got', registry serves $want" >&2; bad=1; }
  done < <(corpus_refs)
  while read -r kind digest repo; do
    hex=${digest#sha256:}; f=$dir/blobs/sha256/$hex
    if [[ ! -f $f ]]; then echo "$dir: missing $kind $digest ($repo)" >&2; bad=1; continue; fi
    [[ $(sha256sum < "$f" | cut -d' ' -f1) == "$hex" ]] || { echo "$dir: bad digest: $f" >&2; bad=1; }
  done < "$WORK/expected-blobs.txt"
  [[ $(find "$dir/blobs/sha256" -type f | wc -l) == "$n_blobs" ]] || { echo "$dir: $(find "$dir/blobs/sha256" -type f | wc -l) blobs, expected $n_blobs" >&2; bad=1; }
  ((bad == 0)) || die "OCI layout $dir does not match the registry (see above)"
}

# ---------------------------------------------------------------- runs
# wait_quiet: until the 1-minute load average is below LOAD_MAX (our own previous rep counts
# too), a minute at a time, at most LOAD_WAIT_MIN minutes; adds the wait to $waited.
waited=0
wait_quiet() {
  local l w=0
  sync
  while :; do
    l=$(load1)
    awk -v l="$l" -v m="$LOAD_MAX" 'BEGIN{exit !(l < m)}' && break
    if ((w >= LOAD_WAIT_MIN * 60)); then log "load average still $l after $((w / 60)) min: going on (noted in the report)"; break; fi
    log "load average $l ≥ $LOAD_MAX: waiting a minute"
    sleep 60; w=$((w + 60))
  done
  waited=$((waited + w))
}
wait_quiet
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "timed part: load average $load_at_start (waited $waited s)"
rep_loads=()
# A rep during which other processes took much CPU (more than max(3 s, a quarter of the step's
# wall time) in any step) is measured again, at most REDO_MAX times in all; discarded reps are
# kept in $T/discarded.txt and listed in the report.
REDO_MAX=${REDO_MAX:-3}
redone=0
busy_rep() {
  local s w o
  for s in a a2 b c d e; do
    w=$(tail -1 "$T/$s.times" | cut -d' ' -f1) o=$(tail -1 "$T/$s.other")
    awk -v w="$w" -v o="$o" 'BEGIN{lim = w / 4; if (lim < 3) lim = 3; exit !(o > lim)}' && { echo "$s"; return 0; }
  done
  return 1
}
# The first round only warms up (page cache, this VM's memory): every step runs once untimed.
warmup=${WARMUP:-1}
r=0
while ((r < reps)); do
  r=$((r + 1))
  ((r == 1 && redone == 0)) || wait_quiet
  rep_load=$(load1)
  fresh "$OUT/a";  warm "$STORE"; timed a  "${cmd_a[@]}";  log "rep $r: a  ocibundle export --docker-archive (8) $(tail -1 "$T/a.times")  +sync $(tail -1 "$T/a.sync")"
  fresh "$OUT/a2"; warm "$STORE"; timed a2 "${cmd_a2[@]}"; log "rep $r: a2 ocibundle export --docker-archive ($n7) $(tail -1 "$T/a2.times")  +sync $(tail -1 "$T/a2.sync")"
  fresh "$OUT/b";  warm "$PODROOT"; timed b  "${cmd_b[@]}";  log "rep $r: b  podman save --multi-image-archive $(tail -1 "$T/b.times")  +sync $(tail -1 "$T/b.sync")"
  fresh "$OUT/c";  warm "$REGDIR"; timed c  "${cmd_c[@]}";  log "rep $r: c  skopeo copy -> docker-archive x$n7 $(tail -1 "$T/c.times")  +sync $(tail -1 "$T/c.sync")"
  fresh "$OUT/d";  warm "$BUNDLE"; timed d  "${cmd_d[@]}";  log "rep $r: d  ocibundle export --oci-layout --from $(tail -1 "$T/d.times")  +sync $(tail -1 "$T/d.sync")"
  fresh "$OUT/e";  warm "$LAYOUT_TAR"; timed e  "${cmd_e[@]}";  log "rep $r: e  tar -xf of skopeo's layout $(tail -1 "$T/e.times")  +sync $(tail -1 "$T/e.sync")"

  check_archive_images "$OUT/a/all.tar" "$WORK/expected-images.tsv"
  check_archive_images "$OUT/a2/seven.tar" "$WORK/expected-images7.tsv"
  for z in "${zstd_refs[@]}"; do
    ! skopeo inspect --raw "docker-archive:$OUT/a2/seven.tar:$REG/$z" < /dev/null > /dev/null 2>&1 || die "$OUT/a2/seven.tar holds $z"
  done
  framing=$(check_tar_framing "$OUT/a/all.tar" "$WORK/diffids.txt") || exit 1
  read -r layer_bytes meta_bytes frame_bytes n_entries <<<"$framing"
  [[ $layer_bytes == "$diff_bytes" ]] || die "$OUT/a/all.tar: $layer_bytes layer bytes, the exported diff_ids are $diff_bytes"
  check_tar_framing "$OUT/a2/seven.tar" "$WORK/diffids7.txt" > /dev/null || exit 1
  check_archive_images "$OUT/b/podman.tar" "$WORK/expected-images7.tsv"
  [[ $(find "$OUT/c" -name '*.tar' | wc -l) == "$n7" ]] || die "skopeo wrote $(find "$OUT/c" -name '*.tar' | wc -l) archives, expected $n7"
  while IFS=$'\t' read -r name ref fmt; do
    check_archive_images "$OUT/c/$name.tar" <(awk -F'\t' -v r="$ref" '$1==r' "$WORK/expected-images7.tsv")
  done < "$WORK/images7.tsv"
  check_layout "$OUT/d/layout"
  [[ $(find "$OUT/e" -type f | wc -l) == "$(find "$LAYOUT" -type f | wc -l)" && $(du -sb "$OUT/e" | cut -f1) == "$(du -sb "$LAYOUT" | cut -f1)" ]] ||
    die "tar -xf of skopeo's layout: $(find "$OUT/e" -type f | wc -l) files / $(du -sb "$OUT/e" | cut -f1) B, layout has $(find "$LAYOUT" -type f | wc -l) / $(du -sb "$LAYOUT" | cut -f1)"
  outside=$(for s in a a2 b c d e; do printf '%s %s  ' "$s" "$(tail -1 "$T/$s.other")"; done)
  log "rep $r: checks passed; CPU seconds used outside the timed process: $outside"
  if ((warmup > 0)); then
    warmup=$((warmup - 1))
    log "rep $r was the warm-up round (WARMUP=${WARMUP:-1}): not counted"
    for s in a a2 b c d e; do
      for f in times sync other; do sed -i '$d' "$T/$s.$f"; done
    done
    r=$((r - 1))
    continue
  fi
  if ((redone < REDO_MAX)) && busy=$(busy_rep); then
    redone=$((redone + 1))
    log "rep $r: other processes were busy during step $busy: measuring this rep again ($redone of at most $REDO_MAX)"
    echo "load $rep_load; wall/rss/cpu: $(for s in a a2 b c d e; do printf '%s %s; ' "$s" "$(tail -1 "$T/$s.times")"; done)outside CPU: $outside" >> "$T/discarded.txt"
    for s in a a2 b c d e; do
      for f in times sync other; do sed -i '$d' "$T/$s.$f"; done
    done
    r=$((r - 1))
    continue
  fi
  rep_loads+=("$rep_load")
done

# ---------------------------------------------------------------- after the last rep (untimed)
bytes_a=$(stat -c %s "$OUT/a/all.tar") bytes_a2=$(stat -c %s "$OUT/a2/seven.tar") bytes_b=$(stat -c %s "$OUT/b/podman.tar")
bytes_c=$(du -sb "$OUT/c" | cut -f1) bytes_d=$(du -sb "$OUT/d/layout" | cut -f1) bytes_e=$(du -sb "$OUT/e" | cut -f1)
podman_entries=$(tar -tf "$OUT/b/podman.tar" | wc -l)

log "umoci unpack of bench/engine-b:v1 from (d)"
eb_digest=$(jq -r '.images[] | select(.ref == "bench/engine-b:v1") | .registry_digest' "$CORPUS/corpus-manifest.json")
rm -rf "$WORK/umoci"
umoci unpack --image "$OUT/d/layout:$REG/bench/engine-b:v1" "$WORK/umoci" > "$T/umoci.out" 2>&1 || { tail -5 "$T/umoci.out" >&2; die "umoci unpack of $REG/bench/engine-b:v1 from $OUT/d/layout failed"; }
[[ -f $WORK/umoci/sha256_${eb_digest#sha256:}.mtree ]] || die "umoci unpacked another manifest than $eb_digest: $(ls "$WORK/umoci")"
umoci_files=$(find "$WORK/umoci/rootfs" -type f | wc -l)
((umoci_files > 0)) && [[ -d $WORK/umoci/rootfs/usr/bin ]] || die "umoci unpack: empty rootfs"
umoci_check="\`umoci unpack --image LAYOUT:$REG/bench/engine-b:v1\` of (d) exits 0 and unpacks manifest ${eb_digest:0:19}… ($umoci_files regular files)"
rm -rf "$WORK/umoci"

# Room for podman load (another vfs store): drop what is checked already.
rm -rf "$OUT/a2" "$OUT/b" "$OUT/c" "$OUT/d" "$OUT/e"
[[ ${KEEP:-0} == 1 ]] || rm -rf "$PODROOT" "$PODROOT.run"
log "podman load -i (a) into a fresh vfs root"
lpm=(podman --storage-driver vfs --cgroup-manager cgroupfs --events-backend file --root "$LOADROOT" --runroot "$LOADROOT.run")
rm -rf "$LOADROOT" "$LOADROOT.run"
sync
/usr/bin/time -f '%e %M' -o "$T/load.last" "${lpm[@]}" load -q -i "$OUT/a/all.tar" > "$T/load.out" 2> "$T/load.err" ||
  { tail -5 "$T/load.err" >&2; die "podman load -i $OUT/a/all.tar failed"; }
read -r load_s load_kb < "$T/load.last"
"${lpm[@]}" images --format json | jq -r '.[] | .Names[] as $n | "\($n) sha256:\(.Id)"' | sort > "$T/load.images"
awk -F'\t' -v reg="$REG" '{print reg "/" $1, $2}' "$WORK/expected-images.tsv" | sort > "$T/load.expected"
diff "$T/load.expected" "$T/load.images" >&2 || die "podman load of (a): images/IDs differ from the corpus (expected < > podman)"
n_loaded=$(wc -l < "$T/load.images")
rm -rf "$LOADROOT" "$LOADROOT.run"

zstd_check=
for z in "${zstd_refs[@]}"; do
  log "export of $z alone (its zstd layer decompressed), skopeo inspect and podman load"
  zcfg=$(awk -F'\t' -v r="$z" '$1==r{print $2}' "$WORK/expected-images.tsv")
  rm -f "$OUT/zstd.tar"
  "$bin" --store "$STORE" export --docker-archive "$OUT/zstd.tar" "$REG/$z" > "$T/zstd.out" 2> "$T/zstd.err" ||
    { cat "$T/zstd.err" >&2; die "ocibundle export of $REG/$z alone failed"; }
  check_archive_images "$OUT/zstd.tar" <(awk -F'\t' -v r="$z" '$1==r' "$WORK/expected-images.tsv")
  zpm=(podman --storage-driver vfs --cgroup-manager cgroupfs --events-backend file --root "$WORK/zstdroot" --runroot "$WORK/zstdroot.run")
  rm -rf "$WORK/zstdroot" "$WORK/zstdroot.run"
  "${zpm[@]}" load -q -i "$OUT/zstd.tar" > /dev/null 2>&1 || die "podman load of the $z export failed"
  zgot=$("${zpm[@]}" images --format json | jq -r '.[] | .Names[] as $n | "\($n) sha256:\(.Id)"')
  [[ $zgot == "$REG/$z $zcfg" ]] || die "podman load of the $z export: '$zgot', expected '$REG/$z $zcfg'"
  rm -rf "$WORK/zstdroot" "$WORK/zstdroot.run" "$OUT/zstd.tar"
  zstd_check+="$z exported alone (zstd layer decompressed, diff_id checked): skopeo inspect and \`podman load\` OK, ID = config digest. "
done

# ---------------------------------------------------------------- report
# wall + the sync after it, per rep
for s in a a2 b c d e; do
  paste -d' ' "$T/$s.times" "$T/$s.sync" | awk '{printf "%.3f %s\n", $1+$4, $2}' > "$T/$s.durable"
done
for s in a a2 b c d e; do
  read -r "med_$s" "min_$s" "max_$s" "rss_$s" < <(stats "$T/$s.times")
  read -r "smed_$s" _ _ _ < <(stats <(awk '{print $1, 0}' "$T/$s.sync"))
  read -r "dmed_$s" "dmin_$s" "dmax_$s" _ < <(stats "$T/$s.durable")
  read -r "cpu_$s" _ _ _ < <(stats <(awk '{print $3, 0}' "$T/$s.times"))
done
if ((small)); then wall_prec=3; fi   # wall times have ms resolution here (see timed)
secs() { printf '%.*f s' "$wall_prec" "$1"; }
met() { awk -v x="$1" -v y="$2" 'BEGIN{print (x <= y) ? "**met**" : "**missed**"}'; }
r_a2b=$(awk -v x="$med_a2" -v y="$med_b" 'BEGIN{print (y>0) ? x/y : 99}')
r_de=$(awk -v x="$med_d" -v y="$med_e" 'BEGIN{print (y>0) ? x/y : 99}')
rss_max=$(printf '%s\n' "$rss_a" "$rss_a2" "$rss_d" | sort -n | tail -1)
ideal_a=$((diff_bytes + meta_bytes + frame_bytes))
zlist=${zstd_refs[*]}

report=$WORK/report.md
{
  echo "### ocibundle export benchmark ($mode corpus): median of $reps reps after an untimed warm-up round"
  echo
  echo "| step | wall median (min–max) | + sync after | CPU (user+sys) | peak RSS | output | ratio |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  echo "| (a) ocibundle export --docker-archive --all ($n_images images, zstd one included), from the store | $(wall "$med_a" "$min_a" "$max_a") | $(secs "$smed_a") | $(secs "$cpu_a") | $(mib "$rss_a") | $(mb "$bytes_a") | $(ratio "$med_a" "$med_c") of (c) |"
  echo "| (a2) the same, the $n7 images podman can save | $(wall "$med_a2" "$min_a2" "$max_a2") | $(secs "$smed_a2") | $(secs "$cpu_a2") | $(mib "$rss_a2") | $(mb "$bytes_a2") | **$(ratio "$med_a2" "$med_b") of (b)** |"
  echo "| (b) podman save --multi-image-archive ($n7 images, vfs store) | $(wall "$med_b" "$min_b" "$max_b") | $(secs "$smed_b") | $(secs "$cpu_b") | $(mib "$rss_b") | $(mb "$bytes_b") | 1.00× |"
  echo "| (c) skopeo copy → docker-archive, one per image ($n7), from the registry | $(wall "$med_c" "$min_c" "$max_c") | $(secs "$smed_c") | $(secs "$cpu_c") | $(mib "$rss_c") | $(mb "$bytes_c") | 1.00× |"
  echo "| (d) ocibundle export --oci-layout --from BUNDLE --all (no store) | $(wall "$med_d" "$min_d" "$max_d") | $(secs "$smed_d") | $(secs "$cpu_d") | $(mib "$rss_d") | $(mb "$bytes_d") | **$(ratio "$med_d" "$med_e") of (e)** |"
  echo "| (e) tar -xf of a tar of skopeo's OCI layout | $(wall "$med_e" "$min_e" "$max_e") | $(secs "$smed_e") | $(secs "$cpu_e") | $(mib "$rss_e") | $(mb "$bytes_e") | 1.00× |"
  echo
  echo "Ratios divide wall medians (below 1 is faster). ocibundle fsyncs what it writes; podman, skopeo"
  echo "and tar do not, so their writeback shows in \"+ sync after\" (median seconds of a \`sync\` run right"
  echo "after the step). Counting it (wall + sync, median per rep): (a2) $(wall "$dmed_a2" "$dmin_a2" "$dmax_a2") vs (b) $(wall "$dmed_b" "$dmin_b" "$dmax_b") = $(ratio "$dmed_a2" "$dmed_b");"
  echo "(a) $(wall "$dmed_a" "$dmin_a" "$dmax_a") vs (c) $(wall "$dmed_c" "$dmin_c" "$dmax_c") = $(ratio "$dmed_a" "$dmed_c"); (d) $(wall "$dmed_d" "$dmin_d" "$dmax_d") vs (e) $(wall "$dmed_e" "$dmin_e" "$dmax_e") = $(ratio "$dmed_d" "$dmed_e")."
  echo "Wall: bash's clock around the command (ms resolution). CPU: GNU time's %U + %S, median (for (c), the"
  echo "whole loop). Peak RSS: maximum over reps of GNU time's \`%M\` (for (c), the largest single skopeo). Inputs read into the page cache right before each step (benches/lib/common.sh),"
  echo "\`sync\` before every step. (c) reads from the registry on loopback (and decompresses gzip),"
  echo "as ../shared/bench/baseline.sh measured it; the others read local files. (a)/(c) compares"
  echo "$n_images images with $n7: skopeo cannot write $zlist (zstd) to a docker-archive."
  echo
  base=$shared/results/baseline-$mode.md
  if [[ -f $base ]]; then
    cell() { awk -F'|' -v re="$1" '$0 ~ re {gsub(/^ +| +$/, "", $3); print $3; exit}' "$base"; }
    echo "For reference, ../shared/bench/results/baseline-$mode.md measured podman save at $(cell 'podman save --multi-image-archive')"
    echo "and skopeo → docker-archive (the per-image copies summed) at $(cell 'skopeo → docker-archive, one tar per image')."
    echo
  fi
  echo "| target (issue) | measured | |"
  echo "|---|---:|---|"
  echo "| (a2) ≤ 0.4× podman save | $(ratio "$med_a2" "$med_b") | $(met "$r_a2b" 0.4) |"
  echo "| peak RSS ≤ 64 MiB (export steps a, a2, d) | $(mib "$rss_max") | $(met "$rss_max" 65536) |"
  echo "| docker-archive ≤ unique diff_ids + tar overhead | $bytes_a B = $diff_bytes + $meta_bytes (configs, manifests, JSON) + $frame_bytes (ustar) | $(met "$bytes_a" "$ideal_a") |"
  echo "| (d) ≤ 1.5× tar -x | $(ratio "$med_d" "$med_e") | $(met "$r_de" 1.5) |"
  echo
  echo "| size | bytes |"
  echo "|---|---:|"
  echo "| unique diff_ids in the corpus (corpus-manifest.json: $corpus_n_diffs, all platforms) | $(mb "$corpus_diff_bytes") ($corpus_diff_bytes B) |"
  echo "| unique diff_ids of the images exported, $host_arch ($n_diffs; the same $(wc -l < "$WORK/diffids7.txt") for the $n7) | $(mb "$diff_bytes") ($diff_bytes B) |"
  echo "| (a) docker-archive, $n_images images ($n_entries tar entries) | $(mb "$bytes_a") ($bytes_a B) |"
  echo "| &nbsp;&nbsp;over the exported diff_ids: metadata (configs, manifests, index.json, manifest.json, repositories) + ustar headers, padding, end blocks | $((bytes_a - diff_bytes)) B = $meta_bytes + $frame_bytes ($(awk -v o="$((bytes_a - diff_bytes))" -v u="$diff_bytes" 'BEGIN{printf "%.4f %%", 100*o/u}')) |"
  echo "| (a2) docker-archive, $n7 images | $(mb "$bytes_a2") ($bytes_a2 B; $((bytes_a2 - diff_bytes7)) B over its diff_ids) |"
  echo "| (b) podman's multi-image archive, $n7 images ($podman_entries tar entries) | $(mb "$bytes_b") ($bytes_b B; $((bytes_b - diff_bytes7)) B over the diff_ids) |"
  echo "| (c) skopeo's $n7 per-image archives, summed | $(mb "$bytes_c") |"
  echo "| (d) OCI layout from the bundle (bundle: $(mb "$(stat -c %s "$BUNDLE")")) | $(mb "$bytes_d") |"
  echo "| (e) skopeo's layout extracted | $(mb "$bytes_e") |"
  echo
  echo "Checks (untimed). Every rep: \`skopeo inspect --raw docker-archive:FILE:REF\` of every image in (a), (a2),"
  echo "(b) and each (c) archive gives the corpus config digest (= image ID) and diff_ids ($host_arch for the index);"
  echo "(a2) does not hold $zlist; the tars of (a) and (a2) hold each diff_id once at its size and are exactly"
  echo "their entries in ustar framing; (d)'s index.json names all $n_images references at the registry's manifest"
  echo "digests and holds exactly the corpus' $n_blobs digests, re-hashed; (e) has skopeo's files and bytes."
  echo "After the last rep: $umoci_check; \`podman load -i\` of (a) into a fresh vfs root loaded $n_loaded images"
  echo "in $load_s s (peak RSS $(mib "$load_kb")), names and IDs = the corpus' config digests; $zstd_check"
  echo "Note: in (a) the zstd image's only diff_id is also busybox's, so (a) decompresses the gzip blob"
  echo "of that diff_id and never reads the zstd blob; the zstd path is checked by that separate export."
  echo
  echo "Setup (untimed, once): \`podman pull\` of the $n7 images into a vfs root took $pull_s s, $(mb "$podroot_bytes")"
  echo "on disk; $zlist is left out of (a2), (b), (c): podman 4.3 and skopeo 1.9 refuse zstd layers in a"
  echo "docker-archive (\"zstd compression is not supported for docker images\", ../shared/bench/README.md)."
  echo
  echo "Command: \`$invocation\` (from the repo root), $(date -u '+%Y-%m-%d %H:%M UTC'). Steps:"
  echo
  echo '```'
  echo "# (a)";  shell_words "${cmd_a[@]}"
  echo "# (a2)"; shell_words "${cmd_a2[@]}"
  echo "# (b)";  shell_words "${cmd_b[@]}"
  echo "# (c)";  shell_words "${cmd_c[@]}"
  echo "# (d)";  shell_words "${cmd_d[@]}"
  echo "# (e)";  shell_words "${cmd_e[@]}"
  echo '```'
  echo
  echo "Machine: $(nproc) cores ($(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)), kernel $(uname -r),"
  echo "load average at the start of the timed part $load_at_start; 1-min load at the start of each rep (after waiting"
  echo "for it to fall below $LOAD_MAX, $waited s in all): ${rep_loads[*]}. CPU seconds used outside the timed process during each step"
  echo "(/proc/stat busy time minus the step's user+sys: the registry in (c), kernel writeback, anyone else), by rep:"
  for s in a a2 b c d e; do printf '(%s) %s\n' "$s" "$(paste -sd/ "$T/$s.other")"; done | paste -sd';' | sed 's/;/; /g; s/$/./'
  echo "(A few seconds either way, negative values included, are accounting noise: the user+sys GNU time reports for podman and skopeo can exceed the busy time /proc/stat counts.)"
  if [[ -s $T/discarded.txt ]]; then
    echo "Reps measured again because other processes were busy (more than max(3 s, wall/4) of CPU outside a step):"
    sed 's/^/- /' "$T/discarded.txt"
  else
    echo "No rep had to be measured again (other processes' CPU stayed below max(3 s, wall/4) in every step)."
  fi
  echo '```'
  free -g
  echo '```'
  echo "Versions: ocibundle $bin_version, $(rustc --version 2>/dev/null || echo 'rustc ?'),"
  echo "$(skopeo --version), $(podman --version), umoci $(umoci --version | awk '{print $3}'), $(tar --version | head -1), GNU time $(dpkg-query -W -f '${Version}' time 2>/dev/null || echo '?')."
} > "$report"
mkdir -p "$here/results"
cp "$report" "$here/results/export-$mode.md"
cat "$report"
log "written: benches/results/export-$mode.md"
