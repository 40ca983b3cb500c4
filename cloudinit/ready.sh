#!/bin/bash
# Last boot step: tell the daemon this server is ready, with its SSH host key so the daemon can
# pin it. Values come from /etc/blitzclaw/server.env, which is parsed, never sourced.
# (The two paths can be overridden for tests.)
set -euo pipefail
env_file=${BLITZCLAW_ENV_FILE:-/etc/blitzclaw/server.env}
host_key=${BLITZCLAW_HOST_KEY_FILE:-/etc/ssh/ssh_host_ed25519_key.pub}

value() { sed -n "/^$1=/{s///p;q}" "$env_file"; }
name=$(value BLITZCLAW_SERVER_NAME)
url=$(value BLITZCLAW_READY_URL)
secret=$(value BLITZCLAW_SERVER_SECRET)
for v in "$name" "$url" "$secret"; do
    if [ -z "$v" ]; then
        echo "ready: $env_file lacks a value" >&2
        exit 1
    fi
done

# Only a server that is actually ready may say so.
openclaw --version > /dev/null
ufw status | grep '^Status: active' > /dev/null  # not -q: no SIGPIPE under pipefail

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT  # mktemp -d made it 0700
# JSON built by a JSON encoder, not by string pasting (python3 is there: cloud-init needs it).
python3 - "$name" "$host_key" > "$work/body.json" <<'PY'
import json, sys
name, key_path = sys.argv[1], sys.argv[2]
with open(key_path) as f:
    print(json.dumps({"server_name": name, "host_key": f.read().strip()}))
PY
# The secret goes in a header file, not on the command line where ps would show it.
printf 'Authorization: Bearer %s\n' "$secret" > "$work/headers"
curl -fsS --retry 30 --retry-delay 10 --retry-all-errors --max-time 30 \
    -H @"$work/headers" -H 'Content-Type: application/json' \
    --data-binary @"$work/body.json" "$url"
