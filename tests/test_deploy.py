"""The deployment files under deploy/: they parse, they fit the gateway, the rules are tested.

No container engine or cluster runs here: these tests read the files, check them against the
gateway (its metric names, its rules validator, its Dockerfile, its endpoints) and run
`promtool check rules` / `promtool test rules` (Debian/Ubuntu: `apt-get install -y prometheus`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.config import load_rules
from router.observability import Metrics

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "goproxy-router.json"
OPERATIONS = REPO / "docs" / "operations.md"

# Metric names fixed ahead of the features that will emit them. Alerts and the dashboard may
# use them; nothing else may be unknown. Empty: every metric they use is emitted.
LATER: set[str] = set()
METRIC = re.compile(r"\b(goproxy_router_[a-zA-Z0-9_]+)")
RECORDED = re.compile(r"\b(goproxy_router:[a-zA-Z0-9_:]+)")
SEVERITIES = {"critical", "warning"}


# ----------------------------------------------------------------------------- helpers


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_all(path: Path) -> list[Any]:
    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(load_all(path))
    return docs


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in deploy/k8s, found {len(found)}"
    return found[0]


def exported_names() -> set[str]:
    """Every sample name the gateway exports (without the `_created` series)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def alert_rules() -> list[dict[str, Any]]:
    doc = load_all(PROM / "alerts.yaml")[0]
    return [r for g in doc["groups"] for r in g["rules"]]


def recording_rules() -> list[dict[str, Any]]:
    doc = load_all(PROM / "recording.yaml")[0]
    return [r for g in doc["groups"] for r in g["rules"]]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[tuple[str, str]]:
    d = dashboard()
    out = [(p["title"], t["expr"]) for p in panels(d["panels"]) for t in p.get("targets", [])]
    out += [(f"annotation {a['name']}", a["expr"]) for a in d["annotations"]["list"] if "expr" in a]
    for var in d["templating"]["list"]:
        query = var.get("query")
        if var["type"] == "query":
            out.append(
                (f"variable {var['name']}", query["query"] if isinstance(query, dict) else query)
            )
    return out


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = re.sub(r"[`*_\[\]()]", "", m.group(1)).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed, so the Prometheus rules cannot be checked. "
            "Install it (Debian/Ubuntu, as root): apt-get install -y prometheus"
        )
    return path


def run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


# ----------------------------------------------------------------------------- every YAML


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_under_deploy_parses(path: Path) -> None:
    assert load_all(path), f"{path} holds no document"


# ----------------------------------------------------------------------------- Kubernetes


def test_k8s_objects_have_api_version_kind_and_name() -> None:
    docs = k8s_docs()
    assert docs
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        assert doc.get("metadata", {}).get("name"), doc


def test_kustomization_lists_every_manifest_and_only_existing_ones() -> None:
    kust = load_all(K8S / "kustomization.yaml")[0]
    listed = set(kust["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_deployment_probes_hit_readyz_and_healthz_on_the_container_port() -> None:
    dep = one("Deployment", "goproxy-router")
    assert dep["spec"]["replicas"] == 3
    (container,) = [
        c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"
    ]
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}

    def port_of(probe: dict[str, Any]) -> int:
        port = probe["httpGet"]["port"]
        return ports[port] if isinstance(port, str) else int(port)

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert port_of(container[probe]) in ports.values()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ROUTER_REDIS_URL"].startswith("redis://")
    assert port_of(container["readinessProbe"]) == int(env["ROUTER_LISTEN"].rsplit(":", 1)[1])


def test_deployment_drains_before_it_is_killed_and_runs_locked_down() -> None:
    spec = one("Deployment", "goproxy-router")["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "gateway"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = 30  # server.shutdown_timeout default
    assert spec["terminationGracePeriodSeconds"] > drain + int(pre_stop[1])
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    rules = volumes[mounts["/etc/goproxy-router"]]
    assert rules["configMap"]["name"] == "goproxy-router-rules"


def test_configmap_rules_pass_the_gateways_own_validator(tmp_path: Path) -> None:
    data = one("ConfigMap", "goproxy-router-rules")["data"]
    assert data
    for name, text in data.items():
        assert name.endswith((".yaml", ".yml"))
        (tmp_path / name).write_text(text)
    result = load_rules([tmp_path])
    assert result.rules is not None and not result.errors, [str(p) for p in result.errors]


def test_service_pdb_and_hpa_select_the_gateway_pods() -> None:
    labels = one("Deployment", "goproxy-router")["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    assert selects(one("Service", "goproxy-router")["spec"]["selector"])
    assert selects(one("PodDisruptionBudget", "goproxy-router")["spec"]["selector"]["matchLabels"])
    hpa = one("HorizontalPodAutoscaler", "goproxy-router")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "goproxy-router"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert one("Service", "redis")["spec"]["ports"][0]["port"] == 6379
    one("Deployment", "redis")


# ----------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load_all(DEPLOY / "docker-compose.yaml")[0]
    return doc


def test_compose_has_the_four_services_and_the_gateway_uses_redis() -> None:
    services = compose()["services"]
    assert {"gateway", "redis", "prometheus", "grafana"} <= set(services)
    gw = services["gateway"]
    command = gw["command"]
    assert "--redis" in command
    assert command[command.index("--redis") + 1] == "redis://redis:6379/0"
    assert "ROUTER_WORKERS" in gw["environment"]
    assert "/healthz" in " ".join(gw["healthcheck"]["test"])
    assert (DEPLOY / gw["build"]["context"] / gw["build"]["dockerfile"]).is_file()
    rules = [v for v in gw["volumes"] if v.split(":")[1] == "/etc/goproxy-router"]
    assert rules and (DEPLOY / rules[0].split(":")[0]).resolve() == REPO / "rules"


def test_compose_matches_the_dockerfile_entrypoint() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for var in ("ROUTER_WORKERS", "ROUTER_LISTEN"):
        assert var in dockerfile, f"the Dockerfile no longer reads {var}; update deploy/"
    entrypoint = next(line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT"))
    assert '\\"$@\\"' in entrypoint, "compose's command is appended to serve through $@"
    assert "/etc/goproxy-router" in entrypoint


def test_compose_mounts_only_files_that_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    ds = load_all(DEPLOY / "grafana/provisioning/datasources/prometheus.yaml")[0]
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    prov = load_all(DEPLOY / "grafana/provisioning/dashboards/goproxy-router.yaml")[0]
    path = prov["providers"][0]["options"]["path"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert any(v.startswith("./grafana/goproxy-router.json:" + path + "/") for v in mounts)


# ----------------------------------------------------------------------------- dashboard


def test_dashboard_parses_and_is_templated() -> None:
    d = dashboard()
    assert 36 <= d["schemaVersion"] <= 41
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert {"tenant", "pool", "upstream"} <= set(variables)
    ids = [p["id"] for p in panels(d["panels"])]
    assert len(ids) == len(set(ids))
    for panel in panels(d["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]


def test_dashboard_has_the_panels_an_sre_looks_for_with_the_seed_thresholds() -> None:
    by_title = {p["title"]: p for p in panels(dashboard()["panels"])}
    for title in (
        "Traffic by tenant",
        "Status classes",
        "Cache hit rate",
        "Upstream share",
        "Upstream p99 time to first byte",
        "Score components",
        "Upstream errors by cause",
        "Ejected upstreams",
        "Cache entries by tier",
        "Cache bytes by tier",
        "Estimated spend rate",
        "In-flight requests",
        "Redis up",
        "Redis errors by operation",
        "Rules reloads",
    ):
        assert title in by_title, title

    def steps(title: str) -> set[float]:
        th = by_title[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return {s["value"] for s in th if s["value"] is not None}

    assert {0.75, 0.85} <= steps("Cache hit rate")
    assert 1.2 in steps("Upstream p99 time to first byte")


def test_dashboard_queries_use_only_metrics_the_gateway_exports() -> None:
    known = exported_names() | LATER
    for where, expr in dashboard_exprs():
        for name in METRIC.findall(expr):
            assert name in known, f"dashboard {where}: unknown metric {name}"


# ----------------------------------------------------------------------------- Prometheus rules


def test_alert_and_recording_rules_use_only_known_metrics() -> None:
    known = exported_names() | LATER
    recorded = {r["record"] for r in recording_rules()}
    for rule in alert_rules() + recording_rules():
        for name in METRIC.findall(rule["expr"]):
            assert name in known, f"{rule.get('alert') or rule['record']}: unknown metric {name}"
        for name in RECORDED.findall(rule["expr"]):
            assert name in recorded, f"{rule.get('alert') or rule['record']}: {name} not recorded"


def test_every_alert_has_severity_summary_description_and_a_live_runbook_link() -> None:
    anchors = github_anchors(OPERATIONS.read_text())
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], rule["alert"]
        page, _, anchor = ann["runbook_url"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]


def test_the_seed_thresholds_are_the_defaults() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    assert "< 0.85" in exprs["GoproxyRouterCacheHitRateLow"]
    assert "< 0.75" in exprs["GoproxyRouterCacheHitRateCritical"]
    assert "> 1.2" in exprs["GoproxyRouterUpstreamSlow"]


def test_metrics_and_later_metrics_are_documented() -> None:
    text = OPERATIONS.read_text()
    families = {
        n.removesuffix("_bucket") for n in exported_names() if not n.endswith(("_sum", "_count"))
    }
    for name in sorted(families | LATER):
        assert f"`{name}`" in text, f"docs/operations.md does not describe {name}"


def promtool_tests() -> list[dict[str, Any]]:
    tests = []
    for path in sorted((PROM / "tests").glob("*.yaml")):
        tests.extend(load_all(path)[0]["tests"])
    return tests


def test_every_alert_has_promtool_cases_that_fire_and_that_stay_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in promtool_tests():
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"


def test_every_recording_rule_has_a_promtool_case() -> None:
    tested = " ".join(
        check["expr"] for case in promtool_tests() for check in case.get("promql_expr_test", [])
    )
    for rule in recording_rules():
        assert rule["record"] in tested, rule["record"]


def test_promtool_check_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", *map(str, sorted(PROM.glob("*.yaml")))])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    result = run([promtool, "test", "rules", *map(str, sorted((PROM / "tests").glob("*.yaml")))])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config(promtool: str, tmp_path: Path) -> None:
    """prometheus.yml with the container's rule paths pointed at the repository's files."""
    text = (PROM / "prometheus.yml").read_text().replace("/etc/prometheus/rules/", f"{PROM}/")
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    result = run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule promtool parses."""
    macros = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m"}
    rules = []
    for i, (where, expr) in enumerate(dashboard_exprs()):
        if expr.startswith("label_values("):
            continue
        for macro, value in macros.items():
            expr = expr.replace(macro, value)
        expr = re.sub(r"\$\{?(\w+)\}?", ".*", expr)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr, "labels": {"where": where}})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- object store

OBJECT_STORE = DEPLOY / "object-store"


def _object_store_k8s() -> list[dict[str, Any]]:
    return load_all(OBJECT_STORE / "k8s.yaml")


def test_object_store_rules_pass_the_validator_and_the_configmap_is_their_copy() -> None:
    rules = OBJECT_STORE / "rules.yaml"
    result = load_rules([rules])
    assert result.rules is not None, [str(p) for p in result.errors]
    assert result.rules.cache.dir == "/var/cache/goproxy-router"
    (cm,) = [d for d in _object_store_k8s() if d["kind"] == "ConfigMap"]
    assert cm["data"]["rules.yaml"] == rules.read_text()


def test_object_store_compose_runs_two_replicas_on_redis_and_minio() -> None:
    services = load_all(OBJECT_STORE / "docker-compose.yaml")[0]["services"]
    gateways = [s for n, s in services.items() if n.startswith("gateway-")]
    assert len(gateways) == 2
    assert {"redis", "minio", "bucket"} <= set(services)
    stores = {v.split(":")[0] for g in gateways for v in g["volumes"] if "goproxy-router" in v}
    assert stores == {"./rules.yaml", "store-1", "store-2"}  # a store volume per replica
    for g in gateways:
        assert g["command"] == ["--redis", "redis://redis:6379/0"]
        assert "AWS_SECRET_ACCESS_KEY" in g["environment"]
    for path in (v.split(":")[0] for g in gateways for v in g["volumes"]):
        assert path.startswith("store-") or (OBJECT_STORE / path).exists(), path


def test_object_store_tool_commands_are_ones_the_cli_accepts() -> None:
    from router.cli import _parser

    services = load_all(OBJECT_STORE / "docker-compose.yaml")[0]["services"]
    commands = [services["gc"]["command"], services["warm"]["command"]]
    (cron,) = [d for d in _object_store_k8s() if d["kind"] == "CronJob"]
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["goproxy-router"]
    commands.append(container["args"])
    for args in commands:
        parsed = _parser().parse_args(args)
        assert parsed.command in ("store", "warm")


def test_object_store_k8s_objects_are_complete() -> None:
    docs = _object_store_k8s()
    assert {d["kind"] for d in docs} == {
        "Secret",
        "ConfigMap",
        "Deployment",
        "CronJob",
        "StatefulSet",
        "Service",
    }
    for doc in docs:
        assert doc["apiVersion"] and doc["metadata"]["name"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    labels = spec["selector"]["matchLabels"]
    assert spec["template"]["metadata"]["labels"] == labels
    pod = spec["template"]["spec"]
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/etc/goproxy-router", "/var/cache/goproxy-router"} <= mounts
    secrets = {e["secretRef"]["name"] for e in pod["containers"][0]["envFrom"] if "secretRef" in e}
    assert secrets == {"goproxy-router-s3"}
