"""deploy/k8s renders (a small kustomize: resources, namespace, images, JSON 6902 patches) and validates
offline against the Kubernetes schemas, and its pieces fit together: the router's selector finds the
model-server pods, its flags parse as vllm-router's, the drain outlasts nothing it should, RBAC lets
it list pods, Services and ServiceMonitors point at real ports."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from clawlan.config import load_settings
from clawlan.router.process import RouterOptions

kv = pytest.importorskip("kubernetes_validate")
K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
CRD_GROUPS = ("monitoring.coreos.com/",)  # no schema in kubernetes-validate; checked by hand below


def _pointer(doc: Any, path: str) -> tuple[Any, str]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    for p in parts[:-1]:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc, parts[-1]


def apply_ops(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        parent, key = _pointer(doc, op["path"])
        if op["op"] == "add" and isinstance(parent, list):
            parent.insert(len(parent) if key == "-" else int(key), op["value"])
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace" and key not in parent:
                raise KeyError(f"replace of a missing {op['path']}")
            parent[key] = op["value"]
        else:
            raise ValueError(f"unsupported patch op {op['op']}")


def render(folder: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (folder / res).resolve()
        docs += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in k.get("patches", []):
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        hits = [d for d in docs if d["kind"] == patch["target"]["kind"] and d["metadata"]["name"] == patch["target"]["name"]]
        assert hits, patch
        for d in hits:
            apply_ops(d, ops)
    for d in docs:
        if "namespace" in k and d["kind"] not in CLUSTER_SCOPED:
            d["metadata"]["namespace"] = k["namespace"]
        for image in k.get("images", []):
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return copy.deepcopy(docs)


OVERLAYS = [K8S / "base", K8S / "overlays" / "gpu", K8S / "overlays" / "prometheus-operator"]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    return deploy["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("folder", OVERLAYS, ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schemas(folder: Path) -> None:
    docs = render(folder)
    assert len(docs) >= 10
    for d in docs:
        if d["apiVersion"].startswith(CRD_GROUPS):
            continue
        kv.validate(d, kv.latest_version(), strict=True)  # raises on a wrong field or type


def test_a_broken_manifest_is_rejected() -> None:
    """The validator really checks: a typo'd field and a wrong type both fail."""
    node = one(render(K8S / "base"), "Deployment", "clawlan-node")
    bad = copy.deepcopy(node)
    bad["spec"]["template"]["spec"]["terminationGracePeriod"] = 150
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)
    bad = copy.deepcopy(node)
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, kv.latest_version(), strict=True)


def router_args(docs: list[dict[str, Any]]) -> Any:
    """The manifest's `clawlan router` command through clawlan's own parser and checks, then what it asks
    of vllm-router through vllm-router's parser."""
    from vllm_router.launch_router import parse_router_args

    from clawlan.cli import build_parser
    from clawlan.router.command import check, options_from

    c = container(one(docs, "Deployment", "clawlan-router"))
    assert c["command"] == ["clawlan", "router"]
    args = build_parser().parse_args(["router", *(a.replace("$(POD_NAMESPACE)", "clawlan") for a in c["args"])])
    check(args)  # a one-line ConfigError if the manifest's flags do not go together
    assert (args.host, args.tls, args.advertise, args.discover) == ("0.0.0.0", False, False, False)
    return parse_router_args(options_from(args).argv("vllm-router")[1:])


def test_router_finds_the_model_servers_by_label_with_the_cache_aware_policy() -> None:
    pytest.importorskip("vllm_router")
    docs = render(K8S / "base")
    args = router_args(docs)
    node = one(docs, "Deployment", "clawlan-node")
    labels = node["spec"]["template"]["metadata"]["labels"]
    assert args.service_discovery and args.selector and args.selector.items() <= labels.items()
    # The front end and the router must not match the selector (never route to themselves).
    for name in ("clawlan-router", "clawlan-front"):
        other = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert not args.selector.items() <= other.items()
    ports = {p["containerPort"] for p in container(node)["ports"]}
    assert args.service_discovery_port in ports
    assert args.service_discovery_namespace == "clawlan"
    assert args.policy == "cache_aware"
    assert args.health_check_endpoint == "/health"
    # RBAC: the router's service account may list and watch pods in its namespace.
    sa = one(docs, "Deployment", "clawlan-router")["spec"]["template"]["spec"]["serviceAccountName"]
    binding = one(docs, "RoleBinding", "clawlan-router-pods")
    assert {"kind": "ServiceAccount", "name": sa} in binding["subjects"]
    rules = one(docs, "Role", binding["roleRef"]["name"])["rules"]
    assert any("pods" in r["resources"] and {"list", "watch"} <= set(r["verbs"]) for r in rules)


def test_model_servers_are_ready_on_health_and_drain_streams_on_sigterm() -> None:
    docs = render(K8S / "base")
    node = one(docs, "Deployment", "clawlan-node")
    spec = node["spec"]["template"]["spec"]
    c = container(node)
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    # The variable is a real setting (the loader rejects unknown or out-of-range values).
    drain = load_settings([], {}, env=env).settings.server.drain_seconds
    assert drain == int(env["CLAWLAN_SERVER_DRAIN_SECONDS"]) > 3
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > drain + pre_stop
    mount = next(m for m in c["volumeMounts"] if m["name"] == "models")
    assert mount["readOnly"] and any(a.startswith(f"--model={mount['mountPath']}/") for a in c["args"])
    assert "--no-advertise" in c["args"]
    ann = node["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) in {p["containerPort"] for p in c["ports"]}


def test_gpu_overlay_asks_for_a_gpu_and_offloads() -> None:
    c = container(one(render(K8S / "overlays" / "gpu"), "Deployment", "clawlan-node"))
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--gpu-layers=-1" in c["args"]
    base = container(one(render(K8S / "base"), "Deployment", "clawlan-node"))
    assert "nvidia.com/gpu" not in base["resources"].get("limits", {})


def test_services_and_monitors_point_at_real_pods_and_ports() -> None:
    docs = render(K8S / "overlays" / "prometheus-operator")
    deploys = [d for d in docs if d["kind"] == "Deployment"]
    services = [d for d in docs if d["kind"] == "Service"]
    for s in services:
        pods = [d for d in deploys if s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert pods, s["metadata"]["name"]
        names = {p.get("name") for d in pods for c in d["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in names, (s["metadata"]["name"], p)
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"clawlan-node", "clawlan-router"}
    for m in monitors:
        hits = [s for s in services if m["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert len(hits) == 1, m["metadata"]["name"]
        assert {e["port"] for e in m["spec"]["endpoints"]} <= {p["name"] for p in hits[0]["spec"]["ports"]}
    # The front end talks to the router's Service.
    front = container(one(docs, "Deployment", "clawlan-front"))
    backend = next(a.split("=", 1)[1] for a in front["args"] if a.startswith("--backend="))
    router_svc = one(docs, "Service", "clawlan-router")
    assert re.fullmatch(rf"http://clawlan-router:{router_svc['spec']['ports'][0]['port']}", backend)


def test_clawlan_router_flags_parse_as_vllm_routers() -> None:
    """What `clawlan router` passes the binary is accepted by vllm-router's own parser."""
    pytest.importorskip("vllm_router")
    from vllm_router.launch_router import parse_router_args

    o = RouterOptions(port=9999, policy="round_robin", extra=["--queue-size", "7"])
    args = parse_router_args(o.argv("vllm-router")[1:])
    assert (args.port, args.policy, args.queue_size, args.health_check_interval_secs) == (9999, "round_robin", 7, 2)
    assert args.cb_failure_threshold == 2 and args.worker_urls == []


def test_k8s_selector_flags_are_checked_in_one_line() -> None:
    from clawlan.cli import build_parser
    from clawlan.errors import ConfigError
    from clawlan.router.command import check

    def args(*flags: str) -> Any:
        return build_parser().parse_args(["router", *flags])

    with pytest.raises(ConfigError, match="use it with --no-discover"):
        check(args("--k8s-selector=app=x"))  # mDNS on too: the pool would remove the pods vllm-router found
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        check(args("--no-discover", "--k8s-selector=model-server"))
    with pytest.raises(ConfigError, match="--worker URL or --k8s-selector"):
        check(args("--no-discover"))
    check(args("--no-discover", "--k8s-selector=app=x"))
