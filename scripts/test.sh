#!/usr/bin/env bash
# The whole test suite, on a fresh machine: install what the tests need (apt, pip; as
# root), check formatting and lints, run every test. The README's test command, and what
# CI runs (.ci/run). Every tool a test needs is installed here, and a test whose tool is
# missing fails loudly instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installing and the network-namespace tests need root. Run as a user, the script asks sudo
# for it and keeps the user's toolchain: sudo's own PATH would not find a rustup cargo.
if [ "$(id -u)" -ne 0 ]; then
  exec sudo env "PATH=$PATH" \
    "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" \
    bash scripts/test.sh "$@"
fi

packages=(
  docker-registry   # distribution 2.8: the real upstream for OCI interop tests
  skopeo            # real OCI client
  containerd        # real containerd + ctr, pulling through hosts.toml
  ansible-core      # real ansible-vault for vault interop tests
  curl              # real proxy client for egress and raw-proxy tests
  tinyproxy         # a site's outbound proxy: [upstream_proxy] and deploy downloads through it
  rpm               # rpmbuild: the yum tests build their packages
  createrepo-c      # createrepo_c: the yum tests build their repositories
  dnf               # real yum client
  gnupg             # signs the yum test repository
  maven             # real Maven client (and Debian's Maven repository as an upstream)
  libmaven-dependency-plugin-java  # `mvn dependency:get`, resolved through the gateway
  junit4            # an artifact with maven-metadata.xml in Debian's Maven repository
  openssh-server    # sshd on the deploy/preflight test hosts
  openssh-client    # ssh: deploy's transport
  sudo              # privilege escalation (ansible_become) over ssh
  iproute2          # ip netns / veth / bridge for the deploy test bed
  util-linux        # unshare, nsenter: separate mount namespaces per test host
  python3           # static file servers in tests
  python3-venv      # a private environment for py-rattler where pip may not install
  systemd           # systemd-analyze security: the exposure score of the gateway's unit
  passwd            # useradd: deploy creates the gateway's system user on the test bed
  chromium          # a real browser for the console test (headless)
  chromium-driver   # chromedriver: the console test drives chromium through it (selenium)
  ca-certificates
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Python clients tests drive, pinned (the versions the tests were written for): the
# conda client (py-rattler) and selenium (the console's browser test). Where the system's
# python3 lacks them, they go into a virtual environment of their own (a distribution's
# python refuses system-wide pip installs, PEP 668), put first on PATH.
python_clients=(py-rattler==0.28.0 selenium==4.51.0)
if ! python3 -c "import rattler, selenium" 2>/dev/null; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/airlock-tests/python"
  if ! "$venv/bin/python3" -c "import rattler, selenium" 2>/dev/null; then
    echo "installing: ${python_clients[*]} (into $venv)"
    python3 -m venv "$venv"
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "${python_clients[@]}"
  fi
  export PATH="$venv/bin:$PATH"
fi

# Garage, the S3-compatible object store the s3 backend's tests run against (a real
# bucket, no mock S3): built from source once, a few minutes, then kept in ~/.cargo/bin.
garage_version=2.5.0
if ! garage --version 2>/dev/null | grep -qF "$garage_version"; then
  echo "installing: garage $garage_version (cargo install, once)"
  cargo install garage --locked --version "$garage_version" --quiet
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "== tests (the README's test command)"
cargo test --workspace --locked
