#!/usr/bin/env bash
# Run the test suite: installs the test dependencies when missing (Debian 12,
# as root), then `cargo test --all-targets`, forwarding any arguments, e.g.
#   scripts/test.sh                 everything
#   scripts/test.sh -- fetch_real   only the tests whose name contains fetch_real
# Exits with cargo's status. The integration tests start their own registries
# on 127.0.0.1 and drive the real peer tools (skopeo, podman, umoci, containerd, dockerd).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/ensure-tools.sh
source scripts/lib/ensure-tools.sh

ensure_tools docker-registry=docker-registry skopeo=skopeo podman=podman umoci=umoci oci-image-tool=oci-image-tool \
  htpasswd=apache2-utils openssl=openssl curl=curl jq=jq zstd=zstd /usr/bin/time=time \
  python3=python3 sha256sum=coreutils containerd=containerd ctr=containerd pigz=pigz go=golang-go
# ISA-L for src/codec/gunzip.rs: libisal-dev (the header build.rs looks for) and libisal2 (loaded at
# run time) are files, not commands, so ensure_tools cannot check them. Optional: without them
# the build has only the flate2 path and the tests skip the ISA-L variants with a note.
if [[ ! -e /usr/include/isa-l/igzip_lib.h ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing libisal-dev libisal2 (ISA-L gzip inflate)" >&2
    # touch: build.rs does not watch a header that was missing (that would rerun it every build)
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libisal-dev libisal2 \
        && touch build.rs; } || echo "note: could not install ISA-L; its tests will be skipped" >&2
  else
    echo "note: no ISA-L (as root: apt-get install libisal-dev libisal2); its tests will be skipped" >&2
  fi
fi
# dockerd (Debian docker.io) for the real `docker load` test, which runs its own private daemon:
# installed without starting the system service (policy-rc.d says no while apt runs).
if ! command -v dockerd >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing docker.io (dockerd for the docker load test; the service is not started)" >&2
    policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; own_policy=1; fi
    rc=0
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io; } || rc=$?
    if ((own_policy)); then rm -f "$policy"; fi
    ((rc == 0)) || { echo "error: could not install docker.io" >&2; exit 1; }
  else
    echo "error: missing dockerd (as root: apt-get install docker.io)" >&2
    exit 1
  fi
fi
need_cargo
exec cargo test --all-targets "$@"
