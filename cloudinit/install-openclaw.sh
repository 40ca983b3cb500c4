#!/bin/bash
# Node.js from NodeSource (signing key checked against a pinned fingerprint, exact version held)
# and a pinned OpenClaw, installed globally under /usr/local.
# Usage: install-openclaw.sh NODE_MAJOR NODE_VERSION OPENCLAW_VERSION NODESOURCE_KEY_FINGERPRINT
set -euo pipefail
node_major=$1 node_version=$2 openclaw_version=$3 key_fingerprint=$4
export DEBIAN_FRONTEND=noninteractive

keyring=/etc/apt/keyrings/nodesource.gpg
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsSL --retry 10 --retry-all-errors --max-time 60 -o "$work/key.asc" \
    https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key
# The file must hold exactly the pinned primary key: fetching a key is not verifying it.
primaries=$(GNUPGHOME="$work" gpg --batch --show-keys --with-colons "$work/key.asc" |
    awk -F: '$1 == "pub" { want = 1; next } want && $1 == "fpr" { print $10; want = 0 }')
if [ "$primaries" != "$key_fingerprint" ]; then
    echo "NodeSource signing key is not the pinned one: got '$primaries'" >&2
    exit 1
fi
install -d -m 0755 /etc/apt/keyrings
GNUPGHOME="$work" gpg --batch --yes --dearmor -o "$keyring" "$work/key.asc"
chmod 0644 "$keyring"
echo "deb [signed-by=$keyring] https://deb.nodesource.com/node_${node_major}.x nodistro main" \
    > /etc/apt/sources.list.d/nodesource.list
# Ubuntu's own (older) nodejs must never win over NodeSource's.
printf 'Package: nodejs\nPin: origin deb.nodesource.com\nPin-Priority: 1001\n' \
    > /etc/apt/preferences.d/nodejs
apt-get update
apt-get install -y "nodejs=${node_version}-1nodesource1"
apt-mark hold nodejs
test "$(node --version)" = "v${node_version}"

npm install --global --prefix /usr/local --no-audit --no-fund "openclaw@${openclaw_version}"
/usr/local/bin/openclaw --version | grep -F "OpenClaw ${openclaw_version} " > /dev/null

# The instance's state lives in the unprivileged user's home; only it may read it.
install -d -o openclaw -g openclaw -m 0700 /home/openclaw/.openclaw \
    /home/openclaw/.openclaw/workspace
