#!/usr/bin/env bash
# One hash of everything the deploy test proves: deploy/ (less docs and local, ignored files), the image's
# .dockerignore, pyproject.toml (the image's dependencies) and the deploy test itself.
# scripts/deploy-test.sh writes it to deploy/tested.sha256 when it passes; .ci/run runs the deploy
# test whenever the current hash differs from that committed stamp.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  find deploy -type f ! -path 'deploy/wheelhouse/*' ! -path 'deploy/wheelhouse.tmp/*' ! -name '.env' \
       ! -name 'tested.sha256' ! -name '*.md' ! -path '*/__pycache__/*' -print
  printf '%s\n' .dockerignore pyproject.toml scripts/deploy-test.sh scripts/deploy_smoke.py \
       scripts/deploy-inputs-hash.sh
} | LC_ALL=C sort | while IFS= read -r f; do
  printf '%s %s\n' "$(sha256sum < "$f" | cut -d' ' -f1)" "$f"
done | sha256sum | cut -d' ' -f1
