#!/usr/bin/env bash
# The test command: sets up a fresh Debian machine as needed, then runs the whole suite.
#   - installs the system packages the tests use when they are missing (root only)
#   - starts dockerd in the background when no daemon answers, and waits for its socket
#   - creates .venv with sbox and pytest, fetches pinned yarn releases (npm pack, integrity checked)
#   - runs pytest with both backends required
set -euo pipefail
cd "$(dirname "$0")"

log() { printf 'run-tests: %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v bwrap >/dev/null 2>&1 || need_pkgs+=(bubblewrap)
command -v go >/dev/null 2>&1 || need_pkgs+=(golang-go)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v unshare >/dev/null 2>&1 || need_pkgs+=(util-linux)
# libseccomp builds the sandbox's seccomp filter (through pyseccomp); bubblewrap pulls it in too
case "$(/sbin/ldconfig -p 2>/dev/null)" in *'libseccomp.so.2 '*) ;; *) need_pkgs+=(libseccomp2) ;; esac
command -v zsh >/dev/null 2>&1 || need_pkgs+=(zsh)     # `sbox activate zsh` is tested for real
command -v fish >/dev/null 2>&1 || need_pkgs+=(fish)   # and so is `sbox activate fish`
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing ${need_pkgs[*]}; run as root or install them: apt-get install ${need_pkgs[*]}"
    exit 1
  fi
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

docker_ping() {
  python3 - <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect("/var/run/docker.sock")
s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
sys.exit(0 if b"OK" in s.recv(4096) else 1)
PY
}

if ! docker_ping; then
  if [ "$(id -u)" -eq 0 ] && command -v dockerd >/dev/null 2>&1; then
    log "starting dockerd"
    (dockerd >/tmp/sbox-dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker_ping && break; sleep 1; done
    docker_ping || { log "dockerd did not start; see /tmp/sbox-dockerd.log"; tail -20 /tmp/sbox-dockerd.log >&2; exit 1; }
  else
    log "no Docker daemon answers and this user cannot start one; docker tests will be skipped"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# Real yarn releases for the yarn tests (classic, and 2+ in two majors), fetched once through the
# machine's npm from its registry, each pinned by version and checked against its integrity here.
fetch_yarn() {  # directory, package spec, sha512 integrity
  local dest=".tools/$1" tmp got
  [ -f "$dest/package/bin/yarn.js" ] && return 0
  command -v npm >/dev/null 2>&1 || { log "npm is missing: the yarn tests will say so"; return 0; }
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && npm pack --silent "$2" >/dev/null 2>&1); then
    log "could not fetch $2 with npm: the yarn tests will say so"; rm -rf "$tmp"; return 0
  fi
  got="sha512-$(.venv/bin/python -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tmp"/*.tgz)"
  if [ "$got" != "$3" ]; then
    log "$2: integrity $got, not the pinned $3: not used"; rm -rf "$tmp"; return 1
  fi
  mkdir -p "$dest" && tar xzf "$tmp"/*.tgz -C "$dest" && chmod 755 "$dest/package/bin/yarn"
  rm -rf "$tmp"
}
fetch_yarn yarn-1.22.22 yarn@1.22.22 \
  'sha512-prL3kGtyG7o9Z9Sv8IPfBNrWTDmXB4Qbes8A9rEzt6wkJV8mUvoirjU0Mp3GGAU06Y0XQyA3/2/RQFVuK7MTfg=='
fetch_yarn yarn-4.18.1 @yarnpkg/cli-dist@4.18.1 \
  'sha512-EH+A4TxAtBWXKE0DGQxW9Bo9crXHLJ73mfxjTQJuv8XonNWWTpei8BQ5JjczHJNU9GROTycwMFn8iOvRIZXUcA=='
fetch_yarn yarn-3.8.7 @yarnpkg/cli-dist@3.8.7 \
  'sha512-YMoAlLR9f+kxXjK72ggBIidi3ulQQrQpMSxzrLUt0OUk9Xdst2v26LBSYFlzOm+7KRNWgYIJpFjA8uRnCgB5xQ=='

# Root CI has both backends: a skip there would hide a broken sandbox, so make it a failure.
if [ "$(id -u)" -eq 0 ]; then
  export SBOX_REQUIRE_BACKENDS="${SBOX_REQUIRE_BACKENDS:-docker,bwrap}"
fi
exec .venv/bin/python -m pytest -rs "$@"
