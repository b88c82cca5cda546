#!/usr/bin/env bash
# The system packages the tests need beyond Python's: PostgreSQL's server, for the team tracking
# server's tests (tests/e2e/test_team.py). Installs only what is missing (Debian / Ubuntu apt).
set -euo pipefail
if command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
echo "installed PostgreSQL: $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | tail -1)"
