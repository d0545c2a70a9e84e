"""The Helm chart, rendered by Helm's own engine and checked offline.

The renders, the Kubernetes schema validation and the property checks live in
scripts/helm_check.py (which `make helm-check` runs); these tests run the same code per
variant and property, and show that each check does catch the violation it is about.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

import pytest

from scripts.helm_check import (
    BAD_VALUES,
    CHECKS,
    FAKE_SECRETS,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    OTLP_ENDPOINT,
    PORTS,
    RELEASE,
    SERVICES,
    VARIANTS,
    Manifest,
    Rendered,
    Variant,
    check_enabled_only,
    check_migrations,
    check_network_policies,
    check_no_secret_values,
    check_probes,
    check_security,
    check_topology_spread,
    containers,
    expected_calls,
    lint,
    parse,
    policy_graph,
    render,
    render_variant,
    resolve_env,
    schema_rejects,
    sentinel_values,
    service_deployments,
    validate,
    variant,
)

# The call graph as the services' contracts define it, spelled out independently of the
# chart's table and of helm_check's copy.
CALLS = {
    ("profile", "identity"),
    ("cart", "inventory"),
    ("recommendation", "profile"),
    ("recommendation", "inventory"),
    ("notification", "identity"),
    ("notification", "profile"),
    ("notification", "cart"),
    ("notification", "inventory"),
    ("notification", "recommendation"),
}


@functools.cache
def rendered(name: str) -> Rendered:
    return render_variant(variant(name))


def render_values(values: dict[str, Any], *, release: str = RELEASE) -> Rendered:
    files = render(values, release=release)
    return Rendered(Variant("adhoc", "", values), files, parse(files))


def env_of(r: Rendered, service: str) -> dict[str, str]:
    deployment = service_deployments(r)[service]
    return resolve_env(next(containers([deployment])), FAKE_SECRETS)


VARIANT_NAMES = [v.name for v in VARIANTS]


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_every_rendered_object_is_valid_kubernetes(name: str) -> None:
    r = rendered(name)
    assert r.manifests
    problems = [
        p for m in r.manifests for version in KUBERNETES_VERSIONS for p in validate(m, version)
    ]
    assert problems == []


def test_validation_catches_a_malformed_object() -> None:
    deployment = copy.deepcopy(service_deployments(rendered("default"))["cart"])
    spec = deployment.obj["spec"]["template"]["spec"]
    spec["containers"][0]["ports"][0]["containerPort"] = "grpc"
    spec["containers"][0]["startupProbe"]["grpcc"] = {}
    problems = validate(deployment, "1.30")
    assert any("containerPort" in p for p in problems)
    assert any("grpcc" in p for p in problems)


def test_the_default_render_is_the_suite() -> None:
    r = rendered("default")
    assert sorted(service_deployments(r)) == sorted(SERVICES)
    services = {m.name: m for m in r.of_kind("Service")}
    for name in SERVICES:
        svc = services[f"{RELEASE}-continuum-{name}"]
        assert svc.obj["spec"]["ports"][0]["port"] == PORTS[name]
    assert not r.of_kind("StatefulSet")  # no in-chart stores by default
    assert not r.of_kind("HorizontalPodAutoscaler")


def test_helm_lint_is_clean() -> None:
    errors, warnings = lint()
    assert errors == []
    assert warnings == []
    for v in VARIANTS:
        assert lint(v.values)[0] == [], v.name


@pytest.mark.parametrize(("what", "values", "path"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_schema_rejects_bad_values(what: str, values: dict[str, Any], path: str) -> None:
    message = schema_rejects(values)
    assert message is not None, f"accepted: {what}"
    assert path in message


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_schema_accepts_every_variant(name: str) -> None:
    assert schema_rejects(variant(name).values) is None


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_property_holds(name: str, check: str) -> None:
    assert CHECKS[check](rendered(name)) == []


def test_network_policies_allow_exactly_the_call_graph() -> None:
    for name in ("default", "everything-on", "external-stores"):
        graph = policy_graph(rendered(name))
        assert graph.ingress == CALLS, name
        assert graph.egress == CALLS, name
        assert graph.channel_ingress == set(SERVICES)
        assert graph.problems == []


def test_checks_catch_what_they_are_about() -> None:
    base = rendered("default")

    def mutated(edit: Any) -> Rendered:
        manifests = [Manifest(m.source, copy.deepcopy(m.obj)) for m in base.manifests]
        edit(manifests)
        files = dict(base.files)
        files["mutated.json"] = json.dumps([m.obj for m in manifests])
        return Rendered(base.variant, files, manifests)

    def deployment(ms: list[Manifest], name: str) -> dict[str, Any]:
        found = next(m for m in ms if m.kind == "Deployment" and m.name.endswith(name))
        container: dict[str, Any] = found.obj["spec"]["template"]["spec"]["containers"][0]
        return container

    def writable(ms: list[Manifest]) -> None:
        deployment(ms, "cart")["securityContext"]["readOnlyRootFilesystem"] = False

    assert check_security(mutated(writable)) == [
        f"Deployment/{RELEASE}-continuum-cart/cart: root filesystem is writable"
    ]

    def root_job(ms: list[Manifest]) -> None:
        job = next(m for m in ms if m.kind == "Job")
        job.obj["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False
        job.obj["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 0
        del job.obj["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"]
        del job.obj["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]

    assert len(check_security(mutated(root_job))) == 2

    def http_probe(ms: list[Manifest]) -> None:
        deployment(ms, "inventory")["livenessProbe"] = {"tcpSocket": {"port": 50054}}

    assert check_probes(mutated(http_probe)) == [
        "inventory: livenessProbe is not a gRPC probe on 50054"
    ]

    def plain_url(ms: list[Manifest]) -> None:
        env = deployment(ms, "profile")["env"]
        item = next(e for e in env if e["name"] == "CONTINUUM_DATABASE_URL")
        item.pop("valueFrom")
        item["value"] = FAKE_SECRETS["continuum-secrets"]["profile-database-url"]

    leaks = check_no_secret_values(mutated(plain_url))
    assert any("rendered" in f for f in leaks)
    assert any("CONTINUUM_DATABASE_URL is a plain value" in f for f in leaks)

    def extra_caller(ms: list[Manifest]) -> None:
        policy = next(m for m in ms if m.kind == "NetworkPolicy" and m.name.endswith("-inventory"))
        rule = policy.obj["spec"]["ingress"][0]
        caller = copy.deepcopy(rule["from"][-1])
        caller["podSelector"]["matchLabels"]["app.kubernetes.io/component"] = "profile"
        rule["from"].append(caller)

    assert any(
        "('profile', 'inventory')" in f for f in check_network_policies(mutated(extra_caller))
    )

    def open_egress(ms: list[Manifest]) -> None:
        policy = next(m for m in ms if m.kind == "NetworkPolicy" and m.name.endswith("-cart"))
        policy.obj["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})

    assert any("every port" in f for f in check_network_policies(mutated(open_egress)))

    def post_hook(ms: list[Manifest]) -> None:
        job = next(m for m in ms if m.kind == "Job")
        job.obj["metadata"]["annotations"]["helm.sh/hook"] = "post-install"

    assert len(check_migrations(mutated(post_hook))) == 1

    def no_spread(ms: list[Manifest]) -> None:
        spec = next(m for m in ms if m.kind == "Deployment").obj["spec"]["template"]["spec"]
        del spec["topologySpreadConstraints"]

    assert len(check_topology_spread(mutated(no_spread))) == 1


@pytest.mark.parametrize("disabled", SERVICES)
def test_disabling_a_service_removes_everything_of_it(disabled: str) -> None:
    values = {"services": {disabled: {"enabled": False}}}
    r = render_values(values)
    enabled = [s for s in SERVICES if s != disabled]
    assert sorted(service_deployments(r)) == sorted(enabled)
    assert check_enabled_only(r) == []
    assert check_migrations(r) == []
    graph = policy_graph(r)
    assert graph.ingress == graph.egress == expected_calls(enabled)
    for caller in enabled:
        assert f"CONTINUUM_{disabled.upper()}_TARGET" not in env_of(r, caller)


def test_outbound_targets_follow_the_call_graph() -> None:
    default = rendered("default")
    for caller in SERVICES:
        targets = {
            name: value
            for name, value in env_of(default, caller).items()
            if name.endswith("_TARGET")
        }
        expected = {
            f"CONTINUUM_{callee.upper()}_TARGET": (
                f"dns:///{RELEASE}-continuum-{callee}.{NAMESPACE}.svc.cluster.local:{PORTS[callee]}"
            )
            for (c, callee) in CALLS
            if c == caller
        }
        assert targets == expected, caller
    # Headless Services: the targets resolve every pod, for client-side round robin.
    headless = rendered("everything-on")
    assert env_of(headless, "notification")["CONTINUUM_CART_TARGET"] == (
        f"dns:///{RELEASE}-continuum-cart-headless.{NAMESPACE}.svc.cluster.local:50053"
    )
    cart_headless = next(
        m for m in headless.of_kind("Service") if m.name == f"{RELEASE}-continuum-cart-headless"
    )
    assert cart_headless.obj["spec"]["clusterIP"] == "None"


def test_otlp_endpoint_reaches_every_service_and_job() -> None:
    r = rendered("everything-on")
    seen = [
        c.label
        for c in containers(r.manifests)
        if c.env_value("CONTINUUM_OTLP_ENDPOINT") == OTLP_ENDPOINT
    ]
    assert len(seen) == 2 * len(SERVICES)  # six servers and six migration Jobs
    assert "CONTINUUM_OTLP_ENDPOINT" not in env_of(rendered("default"), "cart")
    policy = next(m for m in r.of_kind("NetworkPolicy") if m.name.endswith("-cart"))
    assert any(p["port"] == 4317 for rule in policy.obj["spec"]["egress"] for p in rule["ports"])


def test_external_stores_come_from_the_platforms_secrets() -> None:
    r = rendered("external-stores")
    env = env_of(r, "cart")
    assert env["CONTINUUM_DATABASE_URL"] == FAKE_SECRETS["cart-db"]["url"]
    assert env["CONTINUUM_REDIS_URL"] == FAKE_SECRETS["platform-redis"]["url"]
    assert env["CONTINUUM_AUTH__TOKEN_KEY"] == FAKE_SECRETS["platform-auth"]["hs256"]
    assert env["CONTINUUM_REDIS_NAMESPACE"] == "retail-eu"
    assert (
        env_of(r, "notification")["CONTINUUM_VENDOR_API_KEY"]
        == (FAKE_SECRETS["notification-vendor"]["api-key"])
    )
    deployment = service_deployments(r)["cart"]
    image = deployment.obj["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/retail/continuum@sha256:" + "ab" * 32
    # Egress to the stores is limited to the configured peers.
    policy = next(m for m in r.of_kind("NetworkPolicy") if m.name.endswith("-cart"))
    peers = [rule.get("to") for rule in policy.obj["spec"]["egress"]]
    assert [{"ipBlock": {"cidr": "10.20.0.0/16"}}] in peers
    assert [{"ipBlock": {"cidr": "10.30.0.0/24"}}] in peers


def test_in_chart_stores_are_locked_down_and_migrate_after_install() -> None:
    r = rendered("everything-on")
    stores = {m.name: m for m in r.of_kind("StatefulSet")}
    assert sorted(stores) == [f"{RELEASE}-continuum-postgresql", f"{RELEASE}-continuum-redis"]
    for job in r.of_kind("Job"):
        assert job.annotations()["helm.sh/hook"] == "post-install,pre-upgrade"
    # Only the services and their migration Jobs reach the stores; the stores reach nothing.
    policy = next(m for m in r.of_kind("NetworkPolicy") if m.name.endswith("-postgresql"))
    assert policy.obj["spec"]["egress"] == []
    allowed = policy.obj["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
    assert sorted(allowed["values"]) == sorted([*SERVICES, *(f"{s}-migrate" for s in SERVICES)])
    # The URL carries the password only as a reference to a variable from the Secret.
    deployment = service_deployments(r)["inventory"]
    url = next(containers([deployment])).env_value("CONTINUUM_DATABASE_URL")
    assert url == (
        f"postgresql+asyncpg://postgres:$(POSTGRES_PASSWORD)@{RELEASE}-continuum-postgresql:5432/"
        "continuum_inventory"
    )


def test_per_service_overrides_win_over_the_defaults() -> None:
    r = rendered("everything-on")
    deployments = service_deployments(r)
    hpas = {
        m.obj["spec"]["scaleTargetRef"]["name"]: m for m in r.of_kind("HorizontalPodAutoscaler")
    }
    assert hpas[deployments["cart"].name].obj["spec"]["maxReplicas"] == 20
    assert hpas[deployments["identity"].name].obj["spec"]["maxReplicas"] == 10
    assert not any(m.name.endswith("-notification") for m in r.of_kind("PodDisruptionBudget"))
    assert env_of(r, "identity")["CONTINUUM_DEFAULT_PHONE_REGION"] == "GB"
    assert env_of(r, "cart")["CONTINUUM_DEFAULT_DEADLINE_S"] == "5"
    assert "CONTINUUM_DEFAULT_PHONE_REGION" not in env_of(r, "cart")
    minimal = rendered("minimal")
    assert all(d.obj["spec"]["replicas"] == 1 for d in service_deployments(minimal).values())
    turned_off = render_values(
        {
            "autoscaling": {"enabled": True},
            "services": {"cart": {"autoscaling": {"enabled": False}}},
        }
    )
    targets = {
        m.obj["spec"]["scaleTargetRef"]["name"]
        for m in turned_off.of_kind("HorizontalPodAutoscaler")
    }
    assert len(targets) == 5
    assert f"{RELEASE}-continuum-cart" not in targets


def test_long_release_names_give_valid_object_names() -> None:
    release = "a" * 53  # Helm's longest release name
    r = render_values({"service": {"headless": True}}, release=release)
    for m in r.manifests:
        assert len(m.name) <= 63, m.name
        if m.kind == "Service":
            assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", m.name), m.name
    assert len({(m.kind, m.name) for m in r.manifests}) == len(r.manifests)


def test_notes_list_the_services_and_the_secrets_but_no_secret_value() -> None:
    notes = rendered("default").notes
    for name in SERVICES:
        assert f"{RELEASE}-continuum-{name}.{NAMESPACE}.svc.cluster.local:{PORTS[name]}" in notes
    assert "continuum-secrets/token-key" in notes
    assert "continuum-secrets/identity-database-url" in notes
    assert "pre-install,pre-upgrade" in notes
    assert not any(s in notes for s in sentinel_values())
    assert "WARNING: the in-chart" in rendered("everything-on").notes
