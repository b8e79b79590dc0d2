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

# `ensure_vulkan`: makes sure wgpu finds a Vulkan driver, installing Debian's
# mesa-vulkan-drivers (lavapipe, a Vulkan driver that runs on the CPU) where none is installed;
# fails, saying why, where that is impossible. Gives Mesa a private XDG_RUNTIME_DIR where none
# is set (a container, CI), which it otherwise complains about on every start.
ensure_vulkan() {
  # An installed Vulkan driver leaves its manifest here (lavapipe: lvp_icd.x86_64.json).
  icds() { ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json 2>/dev/null || true; }
  if [ -z "$(icds)" ]; then
    install_packages "a CPU Vulkan driver for the GPU tests" mesa-vulkan-drivers libvulkan1 || true
  fi
  if [ -z "$(icds)" ]; then
    echo "error: no Vulkan driver is installed and none can be installed here (needs apt-get as root or passwordless sudo); install your GPU's Vulkan driver, or mesa-vulkan-drivers" >&2
    return 1
  fi
  if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    export XDG_RUNTIME_DIR
  fi
}
