#!/bin/bash
# gogcli (the `gog` CLI of OpenClaw's bundled gog skill: Gmail, Calendar), a pinned release
# whose archive must match the pinned SHA-256; installed as /usr/local/bin/gog.
# Usage: install-gog.sh GOG_VERSION SHA256_OF_THE_LINUX_AMD64_ARCHIVE
set -euo pipefail
version=$1 checksum=$2
bin_dir=${BLITZCLAW_BIN_DIR:-/usr/local/bin}  # elsewhere only in the tests
if [ "$(dpkg --print-architecture)" != amd64 ]; then
    echo "install-gog.sh: only the amd64 archive's checksum is pinned" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
archive="$work/gogcli_${version}_linux_amd64.tar.gz"
curl -fsSL --retry 10 --retry-all-errors --max-time 120 -o "$archive" \
    "https://github.com/openclaw/gogcli/releases/download/v${version}/gogcli_${version}_linux_amd64.tar.gz"
# Downloading is not verifying: the archive must be exactly the pinned one.
printf '%s  %s\n' "$checksum" "$archive" | sha256sum --check --strict --quiet
tar -xzf "$archive" -C "$work" gog
install -m 0755 "$work/gog" "$bin_dir/gog"
"$bin_dir/gog" --version > /dev/null
