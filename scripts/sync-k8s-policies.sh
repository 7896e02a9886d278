#!/usr/bin/env bash
# Copy policies/*.yaml into deploy/k8s/policies/ (the kustomization's ConfigMap generator reads it
# there: kustomize refuses files outside its folder) and list them in deploy/k8s/kustomization.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=deploy/k8s/policies
mkdir -p "$dest"
rm -f "$dest"/*.yaml "$dest"/*.yml
cp policies/*.y*ml "$dest"/
python3 - <<'PY'
import re
from pathlib import Path

kust = Path("deploy/k8s/kustomization.yaml")
text = kust.read_text()
files = sorted(p.name for p in Path("deploy/k8s/policies").glob("*.y*ml"))
block = "".join(f"      - policies/{name}\n" for name in files)
new, n = re.subn(r"(  - name: gateway-policies\n    files:\n)(?:      - .*\n)+", lambda m: m.group(1) + block, text)
if n != 1:
    raise SystemExit("sync-k8s-policies: gateway-policies generator not found in kustomization.yaml")
kust.write_text(new)
print(f"sync-k8s-policies: {len(files)} file(s) -> deploy/k8s/policies/")
PY
