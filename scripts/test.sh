#!/usr/bin/env bash
# Run the test suite: installs the test dependencies when missing (Debian 12,
# as root), then `cargo test --all-targets`, forwarding any arguments, e.g.
#   scripts/test.sh                 everything
#   scripts/test.sh -- fetch_real   only the tests whose name contains fetch_real
# Exits with cargo's status. The integration tests start their own registries
# on 127.0.0.1 and drive the real peer tools (skopeo, podman, umoci, containerd).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/ensure-tools.sh
source scripts/lib/ensure-tools.sh

ensure_tools docker-registry=docker-registry skopeo=skopeo podman=podman umoci=umoci \
  htpasswd=apache2-utils openssl=openssl curl=curl jq=jq zstd=zstd /usr/bin/time=time \
  python3=python3 sha256sum=coreutils containerd=containerd ctr=containerd
need_cargo
exec cargo test --all-targets "$@"
