#!/usr/bin/env bash
# Makes the base image certsync's container tests build on, for machines that cannot pull
# images (no registry, air-gapped sites): a minimal Debian bookworm root file system made with
# `debootstrap --variant=minbase` from Debian's own packages, loaded with `docker import`.
#
# Prints the image tag on stdout (certsync-base:bookworm-<hash>); everything else goes to
# stderr. The tag carries a hash of what goes into the image (suite, mirror, packages, the
# stripping recipe), so changing the package list makes a new image; the same inputs reuse
# the existing tag at once. The root file system tarball is cached in
# ${CERTSYNC_CACHE:-~/.cache/certsync}, so after `docker image rm` (or on a fresh engine) the
# image is re-imported in seconds without running debootstrap again.
#
# Needs root (debootstrap chroots), debootstrap and docker.
#   MIRROR=http://deb.debian.org/debian  Debian mirror (default: the one this machine's apt uses)
#   CERTSYNC_CACHE=DIR                    where the tarball and .deb cache live
#   FORCE=1                               rebuild even if the tag exists
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
# python3 + venv for the certsync virtualenv; ca-certificates and openssl for TLS tooling and
# health checks. grpcio and cryptography ship manylinux wheels: they need glibc only.
PACKAGES=(python3 python3-venv ca-certificates openssl)
# bump when the stripping recipe below changes, so the tag changes with it
RECIPE=1

log() { echo "base-image: $*" >&2; }

detect_mirror() {
  # the first Debian (not -security) URI this machine's apt uses, deb822 or one-line style
  local f uri
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    uri=$(grep -hoE '(URIs:[[:space:]]*|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+/debian/?([[:space:]]|$)' "$f" \
      | grep -oE 'https?://[^[:space:]]+' | grep -v -- '-security' | head -n1 || true)
    if [ -n "$uri" ]; then
      echo "${uri%/}"
      return
    fi
  done
  echo "http://deb.debian.org/debian"
}

MIRROR=${MIRROR:-$(detect_mirror)}
CACHE=${CERTSYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certsync}
hash=$(printf '%s\n' "$SUITE" "$VARIANT" "$MIRROR" "recipe=$RECIPE" "${PACKAGES[@]}" \
  | sha256sum | cut -c1-12)
TAG="certsync-base:$SUITE-$hash"
TARBALL="$CACHE/base-$SUITE-$hash.tar"

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  log "$TAG exists; nothing to do"
  echo "$TAG"
  exit 0
fi

mkdir -p "$CACHE/debs"
if [ "${FORCE:-0}" = 1 ] || [ ! -s "$TARBALL" ]; then
  if [ "$(id -u)" != 0 ]; then
    log "debootstrap needs root; run this script as root (e.g. sudo $0)"
    exit 2
  fi
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || {
    log "debootstrap is not installed; apt-get install debootstrap"
    exit 2
  }
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  log "debootstrap $SUITE ($VARIANT) from $MIRROR with ${PACKAGES[*]}"
  start=$SECONDS
  # --cache-dir keeps the downloaded .debs, so a rebuild with the same packages downloads nothing
  PATH="/usr/sbin:/sbin:$PATH" debootstrap --variant="$VARIANT" \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    --cache-dir="$CACHE/debs" \
    "$SUITE" "$root" "$MIRROR" >&2
  log "debootstrap took $((SECONDS - start))s"

  # strip what a container never reads: docs, man pages, locales, apt and debconf caches
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/usr/share/common-licenses \
    "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/*
  # keep the copyright files' absence from breaking dpkg: nothing here reads them
  # apt inside the image should not fill layers with caches either
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Acquire::Languages "none";
EOF
  printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    >"$root/etc/dpkg/dpkg.cfg.d/docker-minimal"
  : >"$root/etc/hostname"
  : >"$root/etc/resolv.conf"

  tmp_tar=$(mktemp "$CACHE/base.XXXXXX.tar")
  # device nodes, /proc and /sys come from the container runtime
  tar -C "$root" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$tmp_tar" .
  mv "$tmp_tar" "$TARBALL"
  rm -rf "$root"
  trap - EXIT
  log "root file system cached in $TARBALL ($(du -h "$TARBALL" | cut -f1))"
  # older tarballs of this suite are dead weight once a new one exists
  find "$CACHE" -maxdepth 1 -name "base-$SUITE-*.tar" ! -name "$(basename "$TARBALL")" -delete
else
  log "reusing cached $TARBALL"
fi

docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap $SUITE $VARIANT + ${PACKAGES[*]}" \
  "$TARBALL" "$TAG" >/dev/null
docker tag "$TAG" "certsync-base:$SUITE"
log "imported $TAG (also tagged certsync-base:$SUITE)"
echo "$TAG"
