"""The bundled upstream is a separate service: no module of `upstream_stub` may import `gateway`.

Each module is imported in a fresh interpreter whose `sys.meta_path` starts with a finder that
raises on `gateway` or any `gateway.*` module, so an indirect import (through another upstream
module or a lazy import at module level) is caught too. An attempt that the importer swallows
(`except ImportError`) is reported too. A third test proves the hook does fire.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "upstream_stub"

# Runs in the child: install the guard, import each named module, print a JSON verdict per module.
_CHILD = r"""
import importlib, json, sys, traceback

class GatewayImportForbidden(ImportError):
    pass

attempts = []

class _Guard:
    def find_spec(self, name, path=None, target=None):
        if name == "gateway" or name.startswith("gateway."):
            attempts.append(name)  # recorded even if the importer swallows the ImportError
            raise GatewayImportForbidden(f"upstream_stub must not import {name!r}")
        return None

sys.meta_path.insert(0, _Guard())
for name in list(sys.modules):
    if name == "gateway" or name.startswith("gateway."):
        raise SystemExit("gateway was already imported before the guard was installed")

verdict = {}
for module in sys.argv[1:]:
    del attempts[:]
    try:
        importlib.import_module(module)
    except GatewayImportForbidden as exc:
        verdict[module] = f"imports gateway: {exc}"
    except BaseException as exc:  # any other failure is also a failure of the check
        verdict[module] = "failed to import: " + "".join(traceback.format_exception_only(type(exc), exc)).strip()
    else:
        if attempts:
            verdict[module] = f"tried to import gateway: {sorted(set(attempts))}"
            continue
        leaked = sorted(m for m in sys.modules if m == "gateway" or m.startswith("gateway."))
        verdict[module] = f"gateway modules loaded: {leaked}" if leaked else "ok"
print(json.dumps(verdict))
"""


def _modules() -> list[str]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return out


def _import_guarded(modules: list[str]) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, *modules], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    verdict: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return verdict


def test_the_module_list_is_complete() -> None:
    modules = _modules()
    # The walk must find the package, its entry point and its nested store backends.
    for expected in ("upstream_stub", "upstream_stub.__main__", "upstream_stub.app", "upstream_stub.errors",
                     "upstream_stub.settings"):
        assert expected in modules
    assert any(m.startswith("upstream_stub.store.") for m in modules)


def test_no_upstream_module_imports_gateway() -> None:
    # One interpreter for all modules: a module that fails to import is not cached, so every
    # module that reaches gateway (directly or through another) is reported on its own line.
    verdict = _import_guarded(_modules())
    assert set(verdict) == set(_modules())
    bad = {m: result for m, result in verdict.items() if result != "ok"}
    assert not bad, f"upstream_stub must stand alone: {bad}"


def test_the_guard_catches_a_gateway_import(tmp_path: Path) -> None:
    # A direct and an indirect import of gateway must both be reported (the check cannot pass vacuously).
    pkg = tmp_path / "probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "direct.py").write_text("from gateway.errors import GatewayError\n")
    (pkg / "indirect.py").write_text("from probe_pkg import direct\n")
    (pkg / "clean.py").write_text("import json\n")
    (pkg / "swallowed.py").write_text("try:\n    import gateway\nexcept ImportError:\n    pass\n")
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); sys.argv[1:] = "
         f"['probe_pkg.direct', 'probe_pkg.indirect', 'probe_pkg.clean', 'probe_pkg.swallowed']; exec({_CHILD!r})"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout.strip().splitlines()[-1])
    assert verdict["probe_pkg.direct"].startswith("imports gateway")
    assert verdict["probe_pkg.indirect"].startswith("imports gateway")
    assert verdict["probe_pkg.swallowed"].startswith("tried to import gateway")
    assert verdict["probe_pkg.clean"] == "ok"
