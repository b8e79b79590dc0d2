# Sourced by the test scripts: installs system packages where that is possible.
# shellcheck shell=bash

have() { command -v "$1" >/dev/null 2>&1; }

# `install_packages WHY PACKAGE…`: installs the packages with apt-get, as root or through
# passwordless sudo; does nothing where neither is possible (the caller checks the result).
install_packages() {
  local why="$1"
  shift
  local sudo=()
  if have apt-get && [ "$(id -u)" = 0 ]; then
    :
  elif have apt-get && have sudo && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    return 0
  fi
  echo "== installing $* ($why${sudo:+, sudo})"
  "${sudo[@]}" apt-get update -qq &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
