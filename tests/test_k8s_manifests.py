"""deploy/k8s renders with plain `kubectl kustomize` (no load-restrictor flag) and every rendered
object passes the Kubernetes OpenAPI schemas in strict mode (unknown fields are errors).

The schemas come bundled with the `kubernetes-validate` package (offline). The render uses
`kubectl kustomize` when kubectl is installed; without kubectl the test renders the kustomization
with the small renderer below, which implements only what deploy/k8s/kustomization.yaml uses
(resources, namespace, one configMapGenerator with fixed names and labels) and refuses anything
else. When kubectl is there, the renderer is checked against it, so it cannot drift silently.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
# Oldest and newest Kubernetes minor versions the manifests are checked against.
VERSIONS = ["1.27.0", "1.37.0"]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
KNOWN_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "generatorOptions"}


def python_render(directory: Path) -> list[dict[str, Any]]:
    """The subset of kustomize that deploy/k8s uses; anything more is refused, not guessed."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - KNOWN_KEYS
    if unknown:
        raise NotImplementedError(f"renderer does not support {sorted(unknown)}")
    namespace = kust.get("namespace")
    out: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        path = (directory / res).resolve()
        if directory.resolve() not in path.parents:
            raise PermissionError(f"{res} is outside {directory} (kustomize refuses it)")
        out += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    options = kust.get("generatorOptions", {})
    if options.get("disableNameSuffixHash") is not True:
        raise NotImplementedError("renderer only supports disableNameSuffixHash: true")
    for gen in kust.get("configMapGenerator", []):
        data = {}
        for rel in gen["files"]:
            path = (directory / rel).resolve()
            if directory.resolve() not in path.parents:
                raise PermissionError(f"{rel} is outside {directory} (kustomize refuses it)")
            data[path.name] = path.read_text()
        meta: dict[str, Any] = {"name": gen["name"]}
        if options.get("labels"):
            meta["labels"] = dict(options["labels"])
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    for obj in out:
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
    return out


def kubectl_render(directory: Path) -> list[dict[str, Any]]:
    exe = shutil.which("kubectl")
    assert exe
    proc = subprocess.run([exe, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def render(directory: Path = K8S) -> list[dict[str, Any]]:
    return kubectl_render(directory) if shutil.which("kubectl") else python_render(directory)


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render()


def test_plain_kustomize_renders_everything(rendered: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in rendered}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "ServiceAccount"} <= kinds
    assert "Secret" not in kinds  # the real Secret is created out of band, never overwritten
    (cm,) = [o for o in rendered if key(o) == ("ConfigMap", "edge-gateway", "gateway-policies")]
    assert set(cm["data"]) == {p.name for p in (ROOT / "policies").glob("*.y*ml")}
    for name, text in cm["data"].items():
        assert text == (ROOT / "policies" / name).read_text(), f"ConfigMap {name} differs from policies/{name}"
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "edge-gateway", key(obj)


@pytest.mark.parametrize("version", VERSIONS)
def test_rendered_objects_pass_the_kubernetes_schemas(rendered: list[dict[str, Any]], version: str) -> None:
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key(obj)} fails the Kubernetes {version} schema: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("version", VERSIONS)
def test_secret_template_passes_the_schemas(version: str) -> None:
    (secret,) = [d for d in yaml.safe_load_all((K8S / "secret.yaml").read_text()) if d]
    kubernetes_validate.validate(secret, version, strict=True)


@pytest.mark.parametrize("mutation", ["unknown field", "wrong type", "missing required"])
def test_the_schema_check_catches_mistakes(rendered: list[dict[str, Any]], mutation: str) -> None:
    (dep,) = [copy.deepcopy(o) for o in rendered if key(o) == ("Deployment", "edge-gateway", "gateway")]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    if mutation == "unknown field":
        dep["spec"]["replica"] = 3  # typo of `replicas`: only strict mode catches it
    elif mutation == "wrong type":
        container["ports"][0]["containerPort"] = "8080"
    else:
        del container["name"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, VERSIONS[-1], strict=True)


def test_python_renderer_matches_kubectl() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl absent: the rendered-manifest tests above used the Python renderer")
    ours = {key(o): o for o in python_render(K8S)}
    theirs = {key(o): o for o in kubectl_render(K8S)}
    assert ours.keys() == theirs.keys()
    for k, obj in ours.items():
        assert obj == theirs[k], k


def test_kustomize_refuses_files_outside_the_folder(tmp_path: Path) -> None:
    """Why the policies are copied into deploy/k8s: a generator reading ../ fails the plain render."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("a: 1\n")
    kdir = tmp_path / "k"
    kdir.mkdir()
    (kdir / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "configMapGenerator:\n  - name: x\n    files: [../policies/p.yaml]\n"
        "generatorOptions: {disableNameSuffixHash: true}\n")
    with pytest.raises((AssertionError, PermissionError)):
        render(kdir)


def test_k8s_policy_copies_match_policies() -> None:
    ours = {p.name: p.read_text() for p in (K8S / "policies").glob("*.y*ml")}
    source = {p.name: p.read_text() for p in (ROOT / "policies").glob("*.y*ml")}
    assert ours == source, "deploy/k8s/policies/ differs from policies/: run `bash scripts/sync-k8s-policies.sh`"


# --- the PostgreSQL overlay (deploy/k8s-postgres) --------------------------------------------------

PG = ROOT / "deploy" / "k8s-postgres"


@pytest.fixture(scope="module")
def pg_rendered() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl absent: the overlay's patches need real kustomize (the base was checked above)")
    return kubectl_render(PG)


@pytest.mark.parametrize("version", VERSIONS)
def test_postgres_overlay_passes_the_schemas(pg_rendered: list[dict[str, Any]], version: str) -> None:
    for obj in pg_rendered:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{key(obj)} fails the Kubernetes {version} schema: {exc.message} at {list(exc.path)}")
    (secret,) = [d for d in yaml.safe_load_all((PG / "secret.yaml").read_text()) if d]
    kubernetes_validate.validate(secret, version, strict=True)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_postgres_overlay_migrates_first_and_keeps_the_owner_away(pg_rendered: list[dict[str, Any]]) -> None:
    objs = {key(o): o for o in pg_rendered}
    base = {key(o) for o in render(K8S)}
    assert base <= objs.keys()  # the overlay adds to the base, drops nothing
    up = objs[("Deployment", "edge-gateway", "upstream")]["spec"]["template"]["spec"]
    (migrate,) = up["initContainers"]
    assert migrate["command"] == ["python", "-m", "upstream_stub", "migrate"]
    menv = _env(migrate)
    assert menv["UPSTREAM_DATABASE_OWNER_URL"]["secretKeyRef"] == {"name": "upstream-db",
                                                                  "key": "UPSTREAM_DATABASE_OWNER_URL"}
    (server,) = up["containers"]
    senv = _env(server)
    assert senv["UPSTREAM_DATABASE_URL"]["secretKeyRef"]["key"] == "UPSTREAM_DATABASE_URL"
    assert "UPSTREAM_DATABASE_OWNER_URL" not in senv, "the serving upstream must not hold the owner credentials"
    assert {"GATEWAY_IDENTITY_SECRET", "UPSTREAM_ENCRYPTION_KEY"} <= senv.keys()  # base env kept by the merge
    assert migrate["image"] == server["image"]
    # Only upstream pods reach PostgreSQL; the default deny of the base covers the rest.
    (np,) = [o for o in pg_rendered if o["kind"] == "NetworkPolicy"
             and o["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": "postgres"}]
    (rule,) = np["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "upstream"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    sts = objs[("StatefulSet", "edge-gateway", "postgres")]["spec"]["template"]["spec"]
    assert sts["securityContext"]["runAsNonRoot"] is True
    init = objs[("ConfigMap", "edge-gateway", "postgres-init")]
    assert init["data"]["init-roles.sh"] == (PG / "init-roles.sh").read_text()
