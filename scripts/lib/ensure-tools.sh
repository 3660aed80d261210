# shellcheck shell=bash
# ensure_tools TOOL=PACKAGE...
# Makes sure every TOOL (a command name or an absolute path) is there. If any is
# missing: as root on Debian, `apt-get update` once, then installs every listed
# PACKAGE; otherwise prints what to install and exits 1. Does nothing (no apt at
# all) when every tool is already present.
ensure_tools() {
  local spec tool missing=() missing_pkgs=() pkgs=()
  for spec; do
    tool=${spec%%=*}
    pkgs+=("${spec#*=}")
    command -v "$tool" >/dev/null 2>&1 || { missing+=("$tool"); missing_pkgs+=("${spec#*=}"); }
  done
  ((${#missing[@]} == 0)) && return 0
  # one package may provide several tools: list each once, in order
  local -A seen=(); local p uniq=()
  for p in "${pkgs[@]}"; do [[ -n ${seen[$p]:-} ]] || { seen[$p]=1; uniq+=("$p"); }; done
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing tools: ${missing[*]}" >&2
    echo "install them (Debian 12, as root): apt-get update && apt-get install -y $(printf '%s\n' "${missing_pkgs[@]}" | sort -u | tr '\n' ' ')" >&2
    exit 1
  fi
  echo "missing tools: ${missing[*]}; installing: ${uniq[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${uniq[@]}"
  for spec; do
    command -v "${spec%%=*}" >/dev/null 2>&1 || { echo "error: ${spec%%=*} still missing after installing ${spec#*=}" >&2; exit 1; }
  done
}

# need_cargo: the Rust toolchain is not a Debian package we install; say so.
need_cargo() {
  command -v cargo >/dev/null 2>&1 && return 0
  echo "error: cargo not found: install the Rust toolchain (https://rustup.rs) and put ~/.cargo/bin on PATH" >&2
  exit 1
}
