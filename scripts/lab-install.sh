#!/usr/bin/env bash
# Install (idempotently) everything the persona live lab needs on a Debian-family host, as root:
#   - Docker engine (docker.io), iptables, debootstrap, busybox-static
#   - CRIU >= 4.2: the distro's if new enough, else Debian unstable's binaries extracted into a
#     private prefix ($PERSONA_CRIU_PREFIX, default /opt/persona-criu) with a `criu` wrapper on PATH
#   - /etc/criu/runc.conf with tcp-established (runc hands that file to CRIU)
#   - pycriu (Debian python3-pycriu 4.x, pure Python) importable from the virtualenv via a .pth
#   - a running `dockerd --experimental` (no systemd here: started in the background)
# Nothing is written outside those places; Debian unstable is used through a PRIVATE apt state
# under the prefix, so the system's sources and package lists are never touched.
#
# usage: scripts/lab-install.sh [--venv DIR] [--no-engine]
set -euo pipefail

VENV=""
START_ENGINE=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --venv) VENV="$2"; shift 2 ;;
    --no-engine) START_ENGINE=0; shift ;;
    *) echo "lab-install: unknown argument $1 (use --venv DIR, --no-engine)" >&2; exit 2 ;;
  esac
done

P="${PERSONA_CRIU_PREFIX:-/opt/persona-criu}"
WRAPPER="${PERSONA_CRIU_WRAPPER:-/usr/local/sbin/criu}"
MIN_CRIU="4.2"
log() { echo "lab-install: $*" >&2; }

[[ $(id -u) -eq 0 ]] || { log "must run as root (try: sudo $0)"; exit 1; }
command -v apt-get >/dev/null || { log "not a Debian-family host (no apt-get): install docker, criu>=$MIN_CRIU, iptables by hand"; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- distro packages
need=()
for pkg in docker.io iptables debootstrap busybox-static; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [[ ${#need[@]} -gt 0 ]]; then
  log "installing ${need[*]}"
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

# ---------------------------------------------------------------- CRIU >= 4.2
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" == "$2" ]]; }
criu_version() { "$1" --version 2>/dev/null | awk '/^Version:/ {print $2}'; }

have=""
if command -v criu >/dev/null; then have="$(criu_version criu || true)"; fi
if [[ -n "$have" ]] && version_ge "$have" "$MIN_CRIU"; then
  log "criu $have already on PATH"
else
  distro="$(apt-cache policy criu 2>/dev/null | awk '/Candidate:/ {print $2}' | sed 's/^[0-9]*://; s/-.*//')"
  if [[ -n "$distro" && "$distro" != "(none)" ]] && version_ge "$distro" "$MIN_CRIU"; then
    log "installing distro criu $distro"
    apt-get install -y -q criu python3-pycriu >/dev/null
  else
    log "distro criu is '${distro:-none}' (< $MIN_CRIU): extracting Debian unstable's into $P"
    mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    [[ -n "$mirror" ]] || mirror="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
    [[ -n "$mirror" ]] || { log "no Debian mirror configured in /etc/apt/sources.list.d/debian.sources"; exit 1; }
    A="$P/.apt"; rm -rf "$A"; mkdir -p "$A/lists/partial" "$A/archives/partial" "$A/debs" "$P"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror unstable main" > "$A/sources.list"
    APT=(-o "Dir::Etc::SourceList=$A/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
         -o "Dir::State::Lists=$A/lists" -o "Dir::Cache::archives=$A/archives"
         -o "Dir::Cache::pkgcache=$A/pkgcache.bin" -o "Dir::Cache::srcpkgcache=$A/srcpkgcache.bin"
         -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1")
    apt-get "${APT[@]}" update -q >/dev/null
    pkgs=(criu libcompel1 python3-pycriu libc6 libnet9 libnl-3-200 libnftables1 libprotobuf-c1
          libgnutls30t64 libbsd0 libmd0 libuuid1 libcap2 libmnl0 libnftnl11 libjansson4 libxtables12
          libgmp10 libp11-kit0 libidn2-0 libunistring5 libtasn1-6 libnettle8t64 libhogweed6t64
          libffi8 libedit2 libtinfo6 libgcc-s1 libzstd1 liblz4-1 liblzma5 zlib1g libsystemd0
          libcap-ng0 libaudit1 libselinux1 libpcre2-8-0)
    (cd "$A/debs" && apt-get "${APT[@]}" download "${pkgs[@]}" >/dev/null)
    for deb in "$A/debs"/*.deb; do dpkg -x "$deb" "$P"; done
    rm -rf "$A"
  fi
fi

if [[ -x "$P/usr/sbin/criu" ]] && ! { command -v criu >/dev/null && version_ge "$(criu_version criu || echo 0)" "$MIN_CRIU"; }; then
  mkdir -p "$(dirname "$WRAPPER")"
  cat > "$WRAPPER" <<EOF
#!/bin/sh
# persona lab: CRIU from Debian unstable, run with its own glibc from the private prefix $P
exec $P/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path $P/usr/lib/x86_64-linux-gnu:$P/lib/x86_64-linux-gnu $P/usr/sbin/criu "\$@"
EOF
  chmod 755 "$WRAPPER"
fi
got="$(criu_version criu || true)"
if [[ -z "$got" ]] || ! version_ge "$got" "$MIN_CRIU"; then
  log "criu on PATH is '${got:-missing}', need >= $MIN_CRIU; run: $WRAPPER --version to see why"; exit 1
fi
log "criu $got ($(command -v criu))"

# ---------------------------------------------------------------- runc.conf
mkdir -p /etc/criu
touch /etc/criu/runc.conf
grep -qx 'tcp-established' /etc/criu/runc.conf || echo 'tcp-established' >> /etc/criu/runc.conf

# ---------------------------------------------------------------- pycriu into the venv
if [[ -n "$VENV" ]]; then
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  for d in "$P/usr/lib/python3/dist-packages" /usr/lib/python3/dist-packages; do
    if [[ -d "$d/pycriu" ]]; then
      # only pycriu and crit from that folder: a dedicated folder of symlinks keeps other
      # distro modules out of the virtualenv
      mkdir -p "$P/venv-path"
      ln -sfn "$d/pycriu" "$P/venv-path/pycriu"
      [[ -d "$d/crit" ]] && ln -sfn "$d/crit" "$P/venv-path/crit"
      echo "$P/venv-path" > "$site/persona-pycriu.pth"
      break
    fi
  done
  "$VENV/bin/python" -c 'import pycriu.images' || { log "pycriu is not importable in $VENV"; exit 1; }
fi

# ---------------------------------------------------------------- engine
if [[ $START_ENGINE -eq 1 ]]; then
  if ! docker version --format '{{.Server.Experimental}}' 2>/dev/null | grep -q true; then
    if pgrep -x dockerd >/dev/null; then
      log "dockerd runs without --experimental: stop it (kill \$(pidof dockerd)) and rerun"; exit 1
    fi
    log "starting dockerd --experimental (log: /var/log/dockerd.log)"
    nohup dockerd --experimental >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
      docker version >/dev/null 2>&1 && break
      sleep 0.5
    done
    docker version --format '{{.Server.Experimental}}' 2>/dev/null | grep -q true \
      || { log "dockerd did not come up with experimental mode; see /var/log/dockerd.log"; exit 1; }
  fi
  log "docker engine $(docker version --format '{{.Server.Version}}') experimental=true"
fi
log "ok"
