#!/usr/bin/env bash
# Local benchmark without a registry: a docker-archive of 4 images over 8 random-data layers
# (uncompressed tars of 40–68 MB, 432 MB in all, some shared), then for each binary given, in
# turn within every rep (so load from other processes falls on all of them alike):
#   import docker-archive:SRC into a fresh store, bundle --all, verify, export --docker-archive
#   --all (from the store), export --docker-archive --all --from the bundle, store fsck.
# Used to compare builds before and after a change (the pool, the mapping): wall and CPU
# (user + sys) medians per step and binary.
#
# Usage: benches/local.sh REPS BIN...     e.g. benches/local.sh 7 /tmp/ocibundle-old target/release/ocibundle
# Environment: WORK=/tmp/ocibundle-bench-local (kept; the archive is made once).
set -euo pipefail
reps=$1; shift
bins=(); for b in "$@"; do bins+=("$(realpath "$b")"); done
WORK=${WORK:-/tmp/ocibundle-bench-local}
mkdir -p "$WORK"; cd "$WORK"
if [[ ! -f src.tar ]]; then
  python3 - src.tar <<'PY'
import hashlib, io, json, os, sys, tarfile
def tar_of(members):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, raw in members:
            ti = tarfile.TarInfo(name); ti.size = len(raw); ti.mtime = 0
            t.addfile(ti, io.BytesIO(raw))
    return b.getvalue()
members, layers = [], []
for i in range(8):
    raw = tar_of([(f"file{i}.bin", os.urandom(40_000_000 + i * 4_000_000))])
    d = hashlib.sha256(raw).hexdigest()
    members.append((f"{d}.tar", raw)); layers.append(d)
manifest = []
for n, ls in enumerate([[0, 1, 2], [0, 1, 3, 4], [0, 5, 6], [0, 1, 7]]):
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "history": [],
                      "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layers[i]}" for i in ls]}}).encode()
    cd = hashlib.sha256(cfg).hexdigest()
    members.append((f"{cd}.json", cfg))
    manifest.append({"Config": f"{cd}.json", "RepoTags": [f"bench/img{n}:v1"], "Layers": [f"{layers[i]}.tar" for i in ls]})
members.append(("manifest.json", json.dumps(manifest).encode()))
with open(sys.argv[1], "wb") as f:
    f.write(tar_of(members))
PY
fi
: > wall.txt; : > cpu.txt
t() { # step bin args...
  local step=$1 bin=$2; shift 2
  sync
  /usr/bin/time -f "%e %U %S" -o one.time "$bin" "$@" > /dev/null 2>&1
  read -r w u s < one.time
  echo "$bin $step $w" >> wall.txt
  echo "$bin $step $(echo "$u + $s" | bc)" >> cpu.txt
}
for _ in $(seq 1 "$reps"); do
  for bin in "${bins[@]}"; do
    rm -rf st out.bundle exp.tar exp2.tar; cat src.tar > /dev/null
    t import "$bin" --store st import docker-archive:src.tar
    t bundle "$bin" --store st bundle -o out.bundle --all
    t verify "$bin" verify out.bundle
    t export "$bin" --store st export --docker-archive exp.tar --all
    t export-from-bundle "$bin" export --from out.bundle --docker-archive exp2.tar --all
    t fsck "$bin" --store st store fsck
  done
done
rm -rf st out.bundle exp.tar exp2.tar
for f in wall cpu; do
  echo "$f seconds, median (min–max) of $reps:"
  awk '{k=$2" "$1; v[k]=v[k]" "$3} END{for (k in v) print k, v[k]}' $f.txt | sort | while read -r step bin vals; do
    echo "$vals" | tr ' ' '\n' | sort -n | awk -v s="$step" -v b="$bin" '{a[NR]=$1} END{printf "  %-20s %-50s %.2f (%.2f–%.2f)\n", s, b, a[int((NR+1)/2)], a[1], a[NR]}'
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
