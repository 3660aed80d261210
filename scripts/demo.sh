#!/usr/bin/env bash
# ocibundle in two minutes, on a fresh Debian 12 machine with the Rust toolchain
# (run as root so missing tools can be installed):
#   - installs docker-registry, skopeo and umoci if missing (and libisal-dev, optional);
#   - builds ocibundle (cargo build --release);
#   - starts a private registry on a free 127.0.0.1 port (storage in the demo dir);
#   - builds 3 small images with umoci: demo/base:1, demo/app:1 (on top of the
#     same base layer) and demo/tools:1 (pushed as Docker schema2);
#   - fetches them into a store, lists and checks the store, fetches again
#     (nothing is downloaded twice) and lets skopeo read the store;
#   - predicts and writes one bundle (shared base once), checks it with sha256sum,
#     verifies and imports it into an empty "offline" store and exports one
#     docker-archive of all three, which skopeo reads.
# Everything lives in a temp dir (removed at exit) or in $DEMO_DIR (kept).
# Only 127.0.0.1 is contacted; the registry is stopped at exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/ensure-tools.sh
source "$root/scripts/lib/ensure-tools.sh"
export no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"

bold='' plain=''
if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "tools"
ensure_tools docker-registry=docker-registry skopeo=skopeo umoci=umoci curl=curl
# libisal-dev: ISA-L inflates export's gzip layers faster (src/codec/gunzip.rs). Optional, and a
# header rather than a command, so not for ensure_tools; build.rs does not watch a header that
# was missing (that would rerun it on every build), hence the touch.
if [[ ! -e /usr/include/isa-l/igzip_lib.h && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libisal-dev && touch "$root/build.rs"; } \
    || echo "note: could not install libisal-dev: gzip layers are inflated with zlib-rs" >&2
fi
need_cargo
echo "docker-registry, skopeo, umoci, curl and cargo are here"

step "build: cargo build --release"
(cd "$root" && cargo build --release)
bin=$root/target/release/ocibundle

if [[ -n ${DEMO_DIR:-} ]]; then
  mkdir -p "$DEMO_DIR"; dir=$(cd "$DEMO_DIR" && pwd)
  rm -rf "$dir/registry" "$dir/images" "$dir/src" "$dir/store" "$dir/offline-store" "$dir"/site.bundle* "$dir/images.tar"
  keep=1
else
  dir=$(mktemp -d /tmp/ocibundle-demo.XXXXXX); keep=0
fi
reg_pid=
cleanup() {
  local rc=$?
  if [[ -n $reg_pid ]]; then kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null || true; fi
  if ((keep)); then echo "demo files kept in $dir"; else rm -rf "$dir"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- registry
step "registry: docker-registry on a free 127.0.0.1 port, storage in $dir/registry"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start_registry() {
  local port=$1
  mkdir -p "$dir/registry/data"
  cat > "$dir/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/registry/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: ocibundle-demo-not-a-secret
health:
  storagedriver:
    enabled: false
EOF
  docker-registry serve "$dir/registry/config.yml" > "$dir/registry/log" 2>&1 < /dev/null &
  reg_pid=$!
  for _ in $(seq 1 100); do
    if [[ $(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" || true) == 200 ]]; then
      return 0
    fi
    kill -0 "$reg_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null || true; reg_pid=
  return 1
}
port=
for p in $(shuf -i 20000-60999 -n 20); do
  port_free "$p" || continue
  if start_registry "$p"; then port=$p; break; fi   # lost a race for the port: try another
done
[[ -n $port ]] || { echo "error: could not start docker-registry; log:" >&2; tail -5 "$dir/registry/log" >&2; exit 1; }
REG=127.0.0.1:$port
echo "registry up: http://$REG/v2/ (pid $reg_pid)"

# ---------------------------------------------------------------- images
step "images: 3 small images built with umoci, pushed with skopeo"
L=$dir/images
src=$dir/src
mkdir -p "$src/base/etc" "$src/base/usr/share/demo" "$src/app/opt/app" "$src/tools/usr/local/bin"
printf 'NAME="ocibundle demo base"\nID=demo\n' > "$src/base/etc/os-release"
seq 1 200000 > "$src/base/usr/share/demo/numbers.txt"                 # ~1.3 MB, compresses well
head -c 262144 /dev/urandom > "$src/base/usr/share/demo/random.bin"  # 256 KiB that does not
printf '#!/bin/sh\necho "hello from demo/app"\n' > "$src/app/opt/app/run.sh"; chmod 755 "$src/app/opt/app/run.sh"
printf '{"greeting": "hello", "version": 1}\n' > "$src/app/opt/app/config.json"
printf '#!/bin/sh\necho "demo tool"\n' > "$src/tools/usr/local/bin/demo-tool"; chmod 755 "$src/tools/usr/local/bin/demo-tool"

run umoci init --layout "$L"
# base: one layer
run umoci new --image "$L:base"
run umoci insert --image "$L:base" "$src/base" /
run umoci config --image "$L:base" --config.cmd /bin/sh --author ocibundle-demo
# app: the base image plus one layer (shares the base layer blob)
run umoci tag --image "$L:base" app
run umoci insert --image "$L:app" "$src/app" /
run umoci config --image "$L:app" --config.cmd /opt/app/run.sh --config.workingdir /opt/app
# tools: an unrelated image, pushed as Docker schema2 below
run umoci new --image "$L:tools"
run umoci insert --image "$L:tools" "$src/tools" /
run umoci config --image "$L:tools" --config.entrypoint /usr/local/bin/demo-tool

run skopeo copy -q --dest-tls-verify=false "oci:$L:base" "docker://$REG/demo/base:1"
run skopeo copy -q --dest-tls-verify=false "oci:$L:app" "docker://$REG/demo/app:1"
run skopeo copy -q --dest-tls-verify=false --format v2s2 "oci:$L:tools" "docker://$REG/demo/tools:1"
refs=("$REG/demo/base:1" "$REG/demo/app:1" "$REG/demo/tools:1")

# ---------------------------------------------------------------- ocibundle
store=$dir/store
step "fetch all three into a fresh store (plain HTTP is allowed for loopback registries)"
run "$bin" --store "$store" fetch "${refs[@]}"

step "the store holds them (an OCI image layout)"
run "$bin" --store "$store" store ls

step "fsck re-hashes every blob and walks every reference"
run "$bin" --store "$store" store fsck && echo "fsck: no problems"

step "fetch again: everything is present, nothing is downloaded"
run "$bin" --store "$store" fetch "${refs[@]}"

step "a real tool reads the store: skopeo inspect oci:STORE:REF"
run skopeo inspect "oci:$store:$REG/demo/app:1"

step "how big will one bundle of all three be? (exact, before writing; shared base counted once)"
run "$bin" --store "$store" size "${refs[@]}"

step "write the bundle: one file, every blob once, with a sha256sum file beside it"
run "$bin" --store "$store" bundle -o "$dir/site.bundle" "${refs[@]}"
(cd "$dir" && run sha256sum -c site.bundle.sha256)

step "offline side: verify, import into an empty store, export one docker-archive"
run "$bin" verify "$dir/site.bundle"
run "$bin" --store "$dir/offline-store" import "$dir/site.bundle"
run "$bin" --store "$dir/offline-store" export --docker-archive "$dir/images.tar" --all
run skopeo inspect --format '{{.Digest}} {{len .Layers}} layers' "docker-archive:$dir/images.tar:$REG/demo/app:1"

step "done: the store is a plain OCI image layout"
run ls "$store" "$store/blobs/sha256"
((keep)) || echo "($dir is removed at exit; run with DEMO_DIR=DIR to keep it)"
