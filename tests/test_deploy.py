"""deploy/ is consistent with the code: promtool passes, manifests parse, and every image, port,
variable, timing and metric they name is one the gateway actually has."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.settings import Settings
from tests.support.procs import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"

PORTS = {8080, 9090, 8081, 6379}
OUR_IMAGE = "edge-gateway"
PUBLIC_IMAGES = {"redis", "nginx", "prom/prometheus", "grafana/grafana", "postgres"}
def _contract_metrics() -> set[str]:
    """Every gateway_* family named in deploy/README.md's "Metrics (contract)" (tests/test_metrics.py
    checks that list against what a scrape serves): each gets a dashboard panel."""
    text = (DEPLOY / "README.md").read_text()
    section = text.split("## Metrics (contract)", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(gateway_[a-z_]+)", section))


METRICS = _contract_metrics()
HISTOGRAMS = {"gateway_request_duration_seconds", "gateway_upstream_duration_seconds",
              "gateway_event_loop_lag_seconds"}
KOMMO_VARS = {"KOMMO_WEBHOOK_SECRET", "KOMMO_CHANNEL_SECRET", "KOMMO_CLIENT_ID", "KOMMO_CLIENT_SECRET",
              "KOMMO_REDIRECT_URI"}
UPSTREAM_VARS = {"UPSTREAM_HOST", "UPSTREAM_PORT", "UPSTREAM_DB", "UPSTREAM_ENCRYPTION_KEY"}
OUR_PREFIXES = ("GATEWAY_", "KOMMO_", "UPSTREAM_")
# Named by the environment contract of the product (README / deploy/README.md) and read by code that
# may not be on this branch yet: the audit chain's key, the CORS origins, the upstream's PostgreSQL URLs.
CONTRACT_VARS = {"GATEWAY_AUDIT_KEY", "GATEWAY_AUDIT_CHECKPOINTS", "GATEWAY_CORS_ORIGINS",
                 "UPSTREAM_DATABASE_URL", "UPSTREAM_DATABASE_OWNER_URL"}
# Read by deploy/k8s-postgres/init-roles.sh (the database container), not by the gateway or upstream.
INIT_ROLES_VARS = {"UPSTREAM_DB_OWNER_PASSWORD", "UPSTREAM_DB_APP_PASSWORD"}
GATEWAY_LABELS = {"app.kubernetes.io/name": "gateway"}
UPSTREAM_LABELS = {"app.kubernetes.io/name": "upstream"}


# --- what the code knows ------------------------------------------------------------------------


def _upstream_vars() -> set[str]:
    """UPSTREAM_* names the upstream's settings read (validation aliases), plus the contract list."""
    names = set(UPSTREAM_VARS)
    try:
        from upstream_stub.settings import UpstreamSettings
    except ImportError:  # the upstream package is optional for this check
        return names
    for field in UpstreamSettings.model_fields.values():
        alias = field.validation_alias
        for choice in getattr(alias, "choices", [alias]):
            if isinstance(choice, str):
                names.add(choice)
    return names


def _policy_vars() -> set[str]:
    """`${VAR}` names the shipped policy files reference (e.g. GATEWAY_REPLICAS)."""
    found: set[str] = set()
    for path in (ROOT / "policies").glob("*.y*ml"):
        found |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", path.read_text()))
    return found


KNOWN_VARS = (
    {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    | KOMMO_VARS | _upstream_vars() | _policy_vars() | CONTRACT_VARS | INIT_ROLES_VARS
)


def unknown_vars(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith(OUR_PREFIXES) and n not in KNOWN_VARS}


# --- loading ------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


_DEFAULT = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}")


def with_defaults(text: str) -> str:
    """`${VAR:-default}` as compose resolves it with VAR unset (`${VAR:?...}` is left as is)."""
    return _DEFAULT.sub(lambda m: m.group(2), text)


def compose(*overrides: str) -> dict[str, Any]:
    """compose.yaml (+ override files, merged as compose merges mappings) with defaults resolved."""
    data: dict[str, Any] = yaml.safe_load(with_defaults((DEPLOY / "compose.yaml").read_text()))
    for name in overrides:
        extra = yaml.safe_load(with_defaults((DEPLOY / name).read_text()))
        for key, value in extra.items():
            if key.startswith("x-"):
                continue
            for sub, cfg in value.items():
                merged = data.setdefault(key, {}).setdefault(sub, {})
                for field, v in (cfg or {}).items():
                    if isinstance(v, dict) and isinstance(merged.get(field), dict):
                        merged[field] = {**merged[field], **v}
                    else:
                        merged[field] = v
    return data


def k8s_objects() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        out += [doc for doc in load_docs(path) if doc.get("kind") != "Kustomization"]
    return out


def k8s(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def deployment(name: str) -> dict[str, Any]:
    (dep,) = k8s("Deployment", name)
    return dep


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def image_repo(image: str) -> tuple[str, str | None]:
    """('prom/prometheus', 'v2.53.0') from 'docker.io/prom/prometheus:v2.53.0'."""
    name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0]):
        parts = parts[1:]  # registry host
    if parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts), tag or None


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", {}) or {}
    if selector.get("matchExpressions"):
        return True  # be conservative: treat expressions as possibly matching
    return all(labels.get(k) == v for k, v in match.items())


# --- promtool -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        if os.environ.get("GATEWAY_TEST_NO_PROMTOOL") == "1":
            pytest.skip("promtool absent and GATEWAY_TEST_NO_PROMTOOL=1")
        pytest.fail("promtool not found: install Debian's `prometheus` package (the test setup does)")
    return exe


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"


def test_promtool_check_config(promtool: str) -> None:
    run([promtool, "check", "config", str(PROM / "prometheus.yml")])


def test_promtool_check_rules(promtool: str) -> None:
    run([promtool, "check", "rules", str(PROM / "alerts.yml")])


def test_promtool_alert_unit_tests(promtool: str) -> None:
    run([promtool, "test", "rules", str(PROM / "alerts_test.yml")])


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool has no offline query parser; a recording rule per query gets the same check.
    grafana_vars = {"$__rate_interval": "5m", "$__range": "1h", "$route": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for var, value in grafana_vars.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([promtool, "check", "rules", str(path)])


# --- every YAML parses ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs and all(isinstance(doc, dict) for doc in docs)


def test_k8s_objects_are_well_formed() -> None:
    objects = k8s_objects()
    assert {o["kind"] for o in objects} >= {
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
        "HorizontalPodAutoscaler", "NetworkPolicy",
    } - {"ConfigMap"}  # the policies ConfigMap is generated by kustomize
    for obj in objects:
        assert obj.get("apiVersion") and obj["metadata"].get("name"), obj
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "edge-gateway", obj["metadata"]["name"]


# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_dockerfile_contract() -> None:
    lines = dockerfile()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", "\n".join(lines), re.M))
    stages = [line.split()[1].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", "")) for line in lines
              if line.startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage build"
    assert stages[-1] == "python:3.11-slim"
    assert any(re.search(r"pip install .*--no-deps .*\.( |$)", line) for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (health,) = [line for line in lines if line.startswith("HEALTHCHECK")]
    assert "urllib" in health and "/healthz" in health
    exposed = {int(p) for line in lines if line.startswith("EXPOSE ") for p in line.split()[1:]}
    assert exposed == {8080, 9090}
    assert any(re.match(r"COPY .*policies/? /etc/gateway/policies/?$", line) for line in lines)
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    assert json.loads(cmd[4:]) == ["gateway", "serve"]
    env = dict(re.findall(r"\b([A-Z][A-Z0-9_]+)=(\S+)", " ".join(x for x in lines if x.startswith("ENV "))))
    assert not unknown_vars(set(env))
    assert env["GATEWAY_PORT"] == "8080" and env["GATEWAY_ADMIN_PORT"] == "9090"
    assert env["GATEWAY_HOST"] == "0.0.0.0" and env["GATEWAY_POLICY_DIR"] == "/etc/gateway/policies"


def test_dockerfile_copies_files_that_exist() -> None:
    for line in dockerfile():
        if line.startswith("COPY ") and "--from=" not in line:
            for src in [s for s in line.split()[1:-1] if not s.startswith(("--", "$"))]:
                if "*" not in src:
                    assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


# --- compose --------------------------------------------------------------------------------------


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def gateway_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items()
            if svc.get("command") is None and svc.get("image", "").startswith(OUR_IMAGE)}


def test_compose_images_are_built_or_public() -> None:
    for name, svc in compose()["services"].items():
        repo, tag = image_repo(svc["image"])
        assert tag and tag != "latest", f"{name}: pin the image tag"
        if "build" in svc:
            assert repo == OUR_IMAGE, name
            assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == (
                DEPLOY / "Dockerfile").resolve()
        else:
            assert repo in PUBLIC_IMAGES, f"{name}: {svc['image']} is neither built here nor well known"


def test_compose_topology() -> None:
    services = compose()["services"]
    gateways = gateway_services()
    assert len(gateways) == 2
    assert {"redis", "upstream", "lb", "prometheus"} <= services.keys()
    ports: set[int] = set()
    for svc in services.values():
        for p in svc.get("expose", []) + svc.get("ports", []):
            ports.add(int(str(p).split(":")[-1].split("/")[0]))  # the container side
    assert ports <= PORTS, ports - PORTS
    for name, svc in gateways.items():
        env = compose_env(svc)
        assert (env["GATEWAY_PORT"], env["GATEWAY_ADMIN_PORT"]) == ("8080", "9090")
        upstream, redis = urlsplit(env["GATEWAY_UPSTREAM_URL"]), urlsplit(env["GATEWAY_REDIS_URL"])
        assert (upstream.hostname, upstream.port) == ("upstream", 8081)
        assert (redis.hostname, redis.port) == ("redis", 6379)
        assert compose_env(services["upstream"])["UPSTREAM_PORT"] == "8081"
        grace = float(env["GATEWAY_DRAIN_DELAY"]) + float(env["GATEWAY_GRACE_TIMEOUT"])
        assert int(svc["stop_grace_period"].rstrip("s")) > grace, name
        assert env["GATEWAY_REPLICAS"] == str(len(gateways))


def test_compose_trusts_only_the_load_balancer() -> None:
    data = compose()
    lb = data["services"]["lb"]
    (net, cfg), = lb["networks"].items()
    lb_ip = ipaddress.ip_address(cfg["ipv4_address"])
    subnet = ipaddress.ip_network(data["networks"][net]["ipam"]["config"][0]["subnet"])
    assert lb_ip in subnet
    for name, svc in gateway_services().items():
        cidrs = compose_env(svc)["GATEWAY_TRUSTED_PROXIES"].split(",")
        trusted = [ipaddress.ip_network(c.strip()) for c in cidrs]
        assert any(lb_ip in t for t in trusted), name
        assert all(t.num_addresses == 1 for t in trusted), f"{name}: trust the LB, not its whole subnet"
    conf = (DEPLOY / "nginx" / "lb.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    backends = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, re.M))
    assert backends == {(name, "8080") for name in gateway_services()}
    assert re.search(r"listen\s+8080;", conf)
    # The upstream is not reachable from the LB or Prometheus networks.
    upstream_nets = set(data["services"]["upstream"]["networks"])
    for other in ("lb", "prometheus"):
        assert not upstream_nets & set(data["services"][other]["networks"]), other
    assert data["networks"]["backend"].get("internal") is True
    # Every network pinned, none overlapping: an unpinned one may get a /16 over the fixed `edge`.
    subnets = [ipaddress.ip_network(n["ipam"]["config"][0]["subnet"]) for n in data["networks"].values()]
    assert len(subnets) == len(data["networks"])
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:])


def test_compose_variables_are_known() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    for svc in compose()["services"].values():
        used |= set(compose_env(svc))
    assert not unknown_vars(used)
    example = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (DEPLOY / "env.example").read_text(), re.M))
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text))
    assert required <= example, f"env.example lacks {required - example}"


def test_prometheus_scrapes_every_gateway_admin_port() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "gateway"]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"{name}:9090" for name in gateway_services()}
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]


def test_nginx_config_is_valid(tmp_path: Path) -> None:
    exe = shutil.which("nginx")
    if exe is None:
        pytest.skip("nginx not installed")
    conf = (DEPLOY / "nginx" / "lb.conf").read_text()
    conf = re.sub(r"server\s+[\w.-]+:8080", "server 127.0.0.1:9", conf)  # compose names do not resolve here
    conf = conf.replace("listen 8080", f"listen 127.0.0.1:{free_port()}")
    (tmp_path / "lb.conf").write_text(conf)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/lb.conf;\n}}\n"
    )
    run([exe, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
         "-e", str(tmp_path / "e.log")])


# --- Kubernetes -----------------------------------------------------------------------------------


def pod_containers(dep: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["containers"]
    return containers


def test_k8s_images_ports_and_variables() -> None:
    secret_keys = set(k8s("Secret", "gateway-secrets")[0]["stringData"])
    for dep in k8s("Deployment"):
        pod = dep["spec"]["template"]
        assert selects(dep["spec"]["selector"], pod["metadata"]["labels"])
        assert pod["spec"].get("automountServiceAccountToken") is False
        for c in pod_containers(dep):
            repo, tag = image_repo(c["image"])
            assert tag and tag != "latest"
            assert repo == OUR_IMAGE or repo in PUBLIC_IMAGES, c["image"]
            assert {p["containerPort"] for p in c["ports"]} <= PORTS
            env = container_env(c)
            assert not unknown_vars(set(env)), dep["metadata"]["name"]
            for value in env.values():
                if isinstance(value, dict) and "secretKeyRef" in value:
                    ref = value["secretKeyRef"]
                    assert ref["name"] == "gateway-secrets" and ref["key"] in secret_keys
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert not unknown_vars(secret_keys)
    for placeholder in k8s("Secret", "gateway-secrets")[0]["stringData"].values():
        assert "REPLACE_ME" in placeholder  # placeholders only, never a real secret


def test_k8s_services_reach_named_ports() -> None:
    for svc in k8s("Service"):
        deps = [d for d in k8s("Deployment") if selects({"matchLabels": svc["spec"]["selector"]},
                                                         d["spec"]["template"]["metadata"]["labels"])]
        assert len(deps) == 1, svc["metadata"]["name"]
        named = {p["name"]: p["containerPort"] for c in pod_containers(deps[0]) for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            target = port["targetPort"]
            assert (named[target] if isinstance(target, str) else target) in PORTS


def test_gateway_deployment_drains_before_it_dies() -> None:
    dep = deployment("gateway")
    spec = dep["spec"]["template"]["spec"]
    (c,) = pod_containers(dep)
    env = container_env(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert (env["GATEWAY_PORT"], env["GATEWAY_ADMIN_PORT"]) == ("8080", "9090")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert ports[c[probe]["httpGet"]["port"]] == 8080  # health is on the public port
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    drain, grace = float(env["GATEWAY_DRAIN_DELAY"]), float(env["GATEWAY_GRACE_TIMEOUT"])
    assert pre_stop == drain
    assert spec["terminationGracePeriodSeconds"] > pre_stop + drain + grace
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["policies"] == env["GATEWAY_POLICY_DIR"] == "/etc/gateway/policies"
    assert os.path.dirname(env["GATEWAY_AUDIT_LOG"]) in mounts.values()  # writable despite read-only root
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["policies"]["configMap"]["name"] == "gateway-policies"
    upstream_svc = urlsplit(env["GATEWAY_UPSTREAM_URL"])
    assert (upstream_svc.hostname or "").split(".")[0] == "upstream" and upstream_svc.port == 8081
    assert urlsplit(env["GATEWAY_REDIS_URL"]).port == 6379


def test_gateway_availability() -> None:
    dep = deployment("gateway")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (pdb,) = k8s("PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], labels)
    (hpa,) = k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert container_env(pod_containers(dep)[0])["GATEWAY_REPLICAS"] == str(hpa["spec"]["minReplicas"])


@pytest.mark.parametrize(("target", "port"), [
    pytest.param(UPSTREAM_LABELS, 8081, id="upstream"),
    pytest.param({"app.kubernetes.io/name": "redis"}, 6379, id="redis"),
])
def test_network_policy_admits_only_gateway_pods(target: dict[str, str], port: int) -> None:
    policies = [p for p in k8s("NetworkPolicy") if selects(p["spec"]["podSelector"], target)]
    assert any("Ingress" in p["spec"].get("policyTypes", []) for p in policies)
    allowed_ports: set[int] = set()
    for policy in policies:  # NetworkPolicies add up: every one selecting the pods must be tight
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            assert peers, f"{policy['metadata']['name']}: an ingress rule without `from` admits everyone"
            for peer in peers:
                assert set(peer) == {"podSelector"}, f"{policy['metadata']['name']}: {peer}"
                assert peer["podSelector"].get("matchLabels") == GATEWAY_LABELS
            allowed_ports |= {p["port"] for p in rule.get("ports", [])}
    assert allowed_ports == {port}
    gateway_pod_labels = deployment("gateway")["spec"]["template"]["metadata"]["labels"]
    assert selects({"matchLabels": GATEWAY_LABELS}, gateway_pod_labels)


def test_kustomization_covers_manifests_and_policies() -> None:
    (kust,) = load_docs(K8S / "kustomization.yaml")
    listed = set(kust["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.yaml"}
    assert listed == on_disk
    (gen,) = [g for g in kust["configMapGenerator"] if g["name"] == "gateway-policies"]
    files = {Path(f).name for f in gen["files"]}
    assert all(Path(f).parent == Path("policies") for f in gen["files"]), "generator must read deploy/k8s/policies/"
    policies = {p.name for p in (ROOT / "policies").glob("*.y*ml")}
    assert files == policies, "deploy/k8s/kustomization.yaml must list exactly the files in policies/ " \
                              "(run `bash scripts/sync-k8s-policies.sh`)"


# --- metrics named in alerts and the dashboard ------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    names = set()
    for name in re.findall(r"\b(gateway_[a-z_]+)", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.add(base if base in HISTOGRAMS else name)
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    return data


def dashboard_exprs() -> list[str]:
    data = dashboard()
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in data.get("annotations", {}).get("list", []) if "expr" in a]
    return exprs


def test_dashboard_uses_only_gateway_metrics() -> None:
    data = dashboard()
    assert data["uid"] and data["title"]
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"query on no gateway metric: {expr}"
        assert names <= METRICS, names - METRICS
        used |= names
    assert used == METRICS, f"no panel for {METRICS - used}"


def test_alerts_use_only_gateway_metrics() -> None:
    (rules,) = load_docs(PROM / "alerts.yml")
    seen: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names <= METRICS, (rule["alert"], names - METRICS)
            assert rule["labels"]["severity"] in ("warning", "critical")
            assert rule["annotations"]["summary"]
            seen.add(rule["alert"])
    for needed in ("GatewayDenialSpike", "GatewayWebhookSignatureFailures", "GatewayUpstreamErrors",
                   "GatewayUpstreamTimeouts", "GatewayRateLimitDegraded", "GatewayPolicyReloadFailed",
                   "GatewayAuditFailures", "GatewayAuditTampered", "GatewayNotReady",
                   "GatewayUpstreamProbeFailing", "GatewayBruteForceCampaign", "GatewayVerifyBudgetSpent",
                   "GatewayHttpLayerRefusals", "GatewayRateLimitKeysEvicted", "GatewayEventLoopBlocked"):
        assert needed in seen


# --- offline build, Debian-package images, PostgreSQL add-on, deploy test wiring --------------------


def test_dockerfile_builds_online_or_from_a_wheelhouse() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = dockerfile()
    assert not re.search(r"^#\s*syntax=", text, re.M), "a # syntax= line makes BuildKit pull a frontend image"
    assert "ARG WHEELHOUSE=" in lines  # empty default: online
    (copy_wh,) = [line for line in lines if "${WHEELHOUSE}" in line and line.startswith("COPY ")]
    assert copy_wh.split()[1] == "pyproject.toml"  # always a source, so the COPY is valid without one
    install = " ".join(line for line in lines if line.startswith("RUN ") and "requirements" in line)
    assert "--no-index --find-links /wheels" in install and 'if [ -n "${WHEELHOUSE}" ]' in install
    assert sum("pip check" in line for line in lines) >= 2  # builder and runtime stage
    runtime = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]
    assert not any(re.search(r"\b(gcc|build-essential|apt-get install)\b", line) for line in runtime)
    assert any(line.startswith("COPY --from=builder /opt/venv") for line in runtime)


def test_dockerignore_files_agree_and_admit_the_wheelhouse() -> None:
    buildkit = (DEPLOY / "Dockerfile.dockerignore").read_text()
    classic = (ROOT / ".dockerignore").read_text()
    assert buildkit == classic, ".dockerignore (classic builder) must equal deploy/Dockerfile.dockerignore"
    rules = [line for line in buildkit.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "**" and "!deploy/wheelhouse/" in rules
    assert "!.venv/" not in rules and "!deploy/.env" not in rules


@pytest.mark.parametrize("path", sorted((DEPLOY / "images").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_debian_package_images(path: Path) -> None:
    text = path.read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+", text, re.M) and "FROM ${BASE_IMAGE}" in text
    assert "apt-get install" in text and "rm -rf /var/lib/apt/lists/*" in text
    for line in text.splitlines():
        if line.startswith("COPY "):
            assert (path.parent / line.split()[1]).exists(), line


def test_postgres_addon_separates_roles_and_orders_the_migration() -> None:
    data = compose("compose.postgres.yaml")
    services = data["services"]
    pg, migrate, upstream = services["postgres"], services["migrate"], services["upstream"]
    assert image_repo(pg["image"])[0] == "postgres" and image_repo(pg["image"])[1]
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert upstream["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert migrate["command"] == ["python", "-m", "upstream_stub", "migrate"]
    assert migrate["restart"] == "no" and migrate["image"] == upstream["image"]
    menv, uenv = compose_env(migrate), compose_env(upstream)
    required = re.compile(r"\$\{(\w+):\?[^}]*\}")  # a required variable stands for its own name here
    owner = urlsplit(required.sub(r"\1", menv["UPSTREAM_DATABASE_OWNER_URL"]))
    app = urlsplit(required.sub(r"\1", menv["UPSTREAM_DATABASE_URL"]))
    assert owner.username != app.username and owner.password != app.password
    assert uenv["UPSTREAM_DATABASE_URL"] == menv["UPSTREAM_DATABASE_URL"]
    assert "UPSTREAM_DATABASE_OWNER_URL" not in uenv, "the serving upstream must not hold the owner credentials"
    assert set(pg["networks"]) == set(migrate["networks"]) == {"backend"}
    text = (DEPLOY / "compose.postgres.yaml").read_text()
    secrets = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert {"POSTGRES_PASSWORD", "UPSTREAM_DB_OWNER_PASSWORD", "UPSTREAM_DB_APP_PASSWORD"} <= secrets
    example = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (DEPLOY / "env.example").read_text(), re.M))
    assert secrets <= example
    roles = (DEPLOY / "k8s-postgres" / "init-roles.sh").read_text()
    for role in (owner.username, app.username):
        assert re.search(rf"CREATE ROLE {role} LOGIN PASSWORD :'\w+' NOSUPERUSER .*NOBYPASSRLS;", roles), role
    assert f"CREATE DATABASE {owner.path.lstrip('/')} OWNER {owner.username};" in roles


def test_deploy_test_is_wired() -> None:
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^deploy-test:\n\tbash scripts/deploy-test\.sh", make, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci and "bash scripts/deploy-test.sh" in ci
    assert "deploy/tested.sha256" in ci and "GATEWAY_CI_DEPLOY" in ci
    script = (ROOT / "scripts" / "deploy-test.sh").read_text()
    for step in ("tools", "dockerd", "base-image", "wheelhouse", "image", "compose-up", "smoke"):
        assert f'step "{step}"' in script, step
    proc = subprocess.run(["bash", "-n", str(ROOT / "scripts" / "deploy-test.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
