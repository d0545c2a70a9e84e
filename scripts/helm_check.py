"""Render the Helm chart, validate every manifest and check the properties that matter.

Usage: python scripts/helm_check.py   (or `make helm-check`)

Everything runs offline: Helm's own engine (helm-python-sdk) renders the chart at
deploy/helm/continuum for a set of value variants, kubernetes-validate's bundled schemas
check every rendered object for several Kubernetes versions, and the checks below assert
what a platform team relies on (locked-down containers, gRPC probes, no secret values,
network policies that allow exactly the call graph, migration hooks, ...). The last line
printed is one JSON object with the figures. tests/deploy imports this module, so the
command and the tests run the same renders and checks.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate.utils as kv_utils  # type: ignore[import-untyped]
import referencing
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "continuum"
RELEASE = "shop"
NAMESPACE = "retail"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), a common one, the newest.
KUBERNETES_VERSIONS = ("1.27", "1.30", "1.37")

SERVICES = ("identity", "profile", "cart", "inventory", "recommendation", "notification")
PORTS = {name: 50051 + i for i, name in enumerate(SERVICES)}
# The suite's synchronous gRPC calls: caller -> callees. The chart keeps its own copy in
# templates/_helpers.tpl; the network-policy check compares what it renders with this one.
CALL_GRAPH: dict[str, tuple[str, ...]] = {
    "identity": (),
    "profile": ("identity",),
    "cart": ("inventory",),
    "inventory": (),
    "recommendation": ("profile", "inventory"),
    "notification": ("identity", "profile", "cart", "inventory", "recommendation"),
}
OTLP_ENDPOINT = "http://otel-collector.observability.svc.cluster.local:4317"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}
SECRET_NAME = re.compile(r"(URL|KEY|TOKEN|PASSWORD|SECRET)", re.IGNORECASE)
HOOK = "helm.sh/hook"


def grpc_service_name(service: str) -> str:
    return f"continuum.{service}.v1.{service.title()}Service"


# --- the contents of the existing Secrets the variants refer to --------------------------
# Sentinel values: the chart never sees them, so none may appear in any rendered manifest;
# resolving the rendered env against them shows every value reaches the right variable.
def _sentinel(what: str) -> str:
    return f"SENTINEL-{what}-7f3a9c"


FAKE_SECRETS: dict[str, dict[str, str]] = {
    "continuum-secrets": {
        "token-key": _sentinel("token-key"),
        "redis-url": f"redis://:{_sentinel('redis-password')}@redis.example:6379/0",
        "postgres-password": _sentinel("postgres-password"),
        "redis-password": _sentinel("inchart-redis-password"),
        "identity-identifier-key": _sentinel("identifier-key"),
        **{
            f"{name}-database-url": (
                f"postgresql+asyncpg://{name}:{_sentinel(name + '-db')}@db.example:5432/{name}"
            )
            for name in SERVICES
        },
    },
    # The "external" variant: one Secret per service database, shared ones for the rest.
    **{
        f"{name}-db": {
            "url": f"postgresql+asyncpg://{name}:{_sentinel(name + '-ext-db')}@pg.internal/{name}"
        }
        for name in SERVICES
    },
    "platform-redis": {"url": f"rediss://:{_sentinel('ext-redis')}@redis.internal:6380/2"},
    "platform-auth": {"hs256": _sentinel("ext-token-key")},
    "identity-keys": {"hmac": _sentinel("ext-identifier-key")},
    "notification-vendor": {"api-key": _sentinel("ext-vendor-api-key")},
}


def sentinel_values() -> list[str]:
    return sorted({value for secret in FAKE_SECRETS.values() for value in secret.values()})


# --- variants ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    values: dict[str, Any]

    def enabled(self) -> list[str]:
        services = self.values.get("services", {})
        return [n for n in SERVICES if services.get(n, {}).get("enabled", True)]

    def setting(self, *path: str, default: Any = None) -> Any:
        """A value as the chart sees it: the variant's own, else the chart default."""
        node: Any = self.values
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return _chart_default(path, default)
            node = node[key]
        return node


def _chart_default(path: tuple[str, ...], default: Any) -> Any:
    node: Any = chart_defaults()
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


@functools.cache
def chart_defaults() -> dict[str, Any]:
    with (CHART / "values.yaml").open() as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


def _all_services(**values: Any) -> dict[str, Any]:
    return {name: dict(values) for name in SERVICES}


VARIANTS: tuple[Variant, ...] = (
    Variant("default", "the chart's own values", {}),
    Variant(
        "everything-on",
        "autoscaling, PDBs, network policies, headless Services, in-chart PostgreSQL and "
        "Redis with persistence, OTLP, per-service overrides",
        {
            "otlp": {"endpoint": OTLP_ENDPOINT},
            "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
            "podDisruptionBudget": {"enabled": True, "minAvailable": "50%"},
            "service": {"headless": True},
            "networkPolicy": {"enabled": True},
            "serviceAccount": {"annotations": {"iam.example.com/role": "continuum"}},
            "podAnnotations": {"example.com/scrape": "false"},
            "env": {"CONTINUUM_DEFAULT_DEADLINE_S": "5"},
            "inChartPostgresql": {"enabled": True, "persistence": {"enabled": True}},
            "inChartRedis": {"enabled": True},
            "services": {
                "identity": {"replicas": 3, "env": {"CONTINUUM_DEFAULT_PHONE_REGION": "GB"}},
                "cart": {"autoscaling": {"maxReplicas": 20}},
                "notification": {"podDisruptionBudget": {"enabled": False}},
            },
        },
    ),
    Variant(
        "external-stores",
        "managed PostgreSQL and Redis, every URL and key from existing Secrets of the "
        "platform's own naming, egress peers as ipBlocks, OTLP, image digest",
        {
            "environment": "staging",
            "image": {
                "repository": "registry.example.com/retail/continuum",
                "digest": "sha256:" + "ab" * 32,
            },
            "imagePullSecrets": [{"name": "registry-pull"}],
            "otlp": {"endpoint": OTLP_ENDPOINT},
            "auth": {"tokenKey": {"secretKeyRef": {"name": "platform-auth", "key": "hs256"}}},
            "redis": {
                "url": {"secretKeyRef": {"name": "platform-redis", "key": "url"}},
                "namespace": "retail-eu",
            },
            "networkPolicy": {
                "database": {
                    "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                    "ports": [{"port": 5432, "protocol": "TCP"}],
                },
                "redis": {
                    "to": [{"ipBlock": {"cidr": "10.30.0.0/24"}}],
                    "ports": [{"port": 6380, "protocol": "TCP"}],
                },
                "otlp": {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "observability"}
                            }
                        }
                    ],
                    "ports": [{"port": 4317, "protocol": "TCP"}],
                },
            },
            "services": {
                name: {
                    "database": {"url": {"secretKeyRef": {"name": f"{name}-db", "key": "url"}}},
                    **(
                        {
                            "secretEnv": {
                                "CONTINUUM_IDENTIFIER_KEY": {
                                    "secretKeyRef": {"name": "identity-keys", "key": "hmac"}
                                }
                            }
                        }
                        if name == "identity"
                        else {}
                    ),
                    **(
                        {
                            "secretEnv": {
                                "CONTINUUM_VENDOR_API_KEY": {
                                    "secretKeyRef": {
                                        "name": "notification-vendor",
                                        "key": "api-key",
                                    }
                                }
                            }
                        }
                        if name == "notification"
                        else {}
                    ),
                }
                for name in SERVICES
            },
        },
    ),
    Variant(
        "minimal",
        "three services, one replica each, no PDB, no network policies, no spread, no "
        "ServiceAccounts",
        {
            "replicas": 1,
            "podDisruptionBudget": {"enabled": False},
            "networkPolicy": {"enabled": False},
            "topologySpread": {"enabled": False},
            "serviceAccount": {"create": False},
            "services": {
                "cart": {"enabled": False},
                "recommendation": {"enabled": False},
                "notification": {"enabled": False},
            },
        },
    ),
)


def variant(name: str) -> Variant:
    return next(v for v in VARIANTS if v.name == name)


# Values that values.schema.json must refuse: (what, values, the path the error names).
BAD_VALUES: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("negative replicas", {"replicas": -1}, "/replicas"),
    ("negative service replicas", {"services": {"cart": {"replicas": -2}}}, "/services/cart"),
    ("unknown key in a service", {"services": {"cart": {"replica": 3}}}, "/services/cart"),
    ("unknown top-level key", {"replicaCount": 3}, "replicaCount"),
    ("port as a string", {"services": {"inventory": {"port": "50054"}}}, "/services/inventory"),
    (
        "plain database URL instead of a secretKeyRef",
        {"services": {"profile": {"database": {"url": "postgresql+asyncpg://u:p@db/profile"}}}},
        "/services/profile/database/url",
    ),
    ("plain token key", {"auth": {"tokenKey": "hunter2"}}, "/auth/tokenKey"),
    (
        "secret-looking plain env",
        {"env": {"CONTINUUM_AUTH__SERVICE_TOKEN": "abc"}},
        "CONTINUUM_AUTH__SERVICE_TOKEN",
    ),
    (
        "a variable the chart sets itself",
        {"services": {"cart": {"env": {"CONTINUUM_PORT": "8080"}}}},
        "CONTINUUM_PORT",
    ),
    ("root user", {"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
    ("bad pull policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    (
        "a value beside the secretKeyRef",
        {"redis": {"url": {"value": "redis://:pw@redis:6379/0"}}},
        "/redis/url",
    ),
    (
        "secretKeyRef with an empty Secret name",
        {"redis": {"url": {"secretKeyRef": {"name": "", "key": "url"}}}},
        "/redis/url/secretKeyRef/name",
    ),
)


# --- rendering --------------------------------------------------------------------------
class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (the API server would reject them)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


@dataclass(frozen=True)
class Manifest:
    source: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", ""))

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    def annotations(self) -> dict[str, str]:
        found: dict[str, str] = self.obj.get("metadata", {}).get("annotations") or {}
        return found


@dataclass
class Rendered:
    variant: Variant
    files: dict[str, str]
    manifests: list[Manifest]

    @property
    def text(self) -> str:
        return "\n".join(self.files.values())

    @property
    def notes(self) -> str:
        return next((t for p, t in self.files.items() if p.endswith("NOTES.txt")), "")

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m.kind == kind]


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: Mapping[str, Any], *, release: str = RELEASE) -> dict[str, str]:
    """Helm's engine on the chart: template path -> rendered text."""
    return chart().render(dict(values), name=release, namespace=NAMESPACE)


def parse(files: Mapping[str, str]) -> list[Manifest]:
    manifests: list[Manifest] = []
    for path, text in sorted(files.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.load_all(text, Loader=_StrictLoader):
            if doc:
                manifests.append(Manifest(path, doc))
    return manifests


def render_variant(v: Variant) -> Rendered:
    files = render(v.values)
    return Rendered(v, files, parse(files))


# --- Kubernetes schemas ------------------------------------------------------------------
@functools.cache
def _schema_file(path: str, version: str) -> Any:
    return kv_utils.schema_contents(path, version)


@functools.cache
def _validator(version: str, kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    """kubernetes-validate's strict schema for one kind, loaded once (the library reloads
    the schema files on every call; this is the same lookup, cached)."""
    available = [v for v in kv_utils.all_versions() if kv_utils.major_minor(v) <= version]
    if not available:
        raise ValueError(f"kubernetes-validate has no schemas for {version}")
    folder = f"v{available[-1]}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = f"kubernetes-json-schema/{folder}/{kind.lower()}-{api}.json"
    try:
        schema = _schema_file(path, version)
    except FileNotFoundError:
        raise LookupError(f"no schema for {kind} {api_version} in Kubernetes {version}") from None
    definitions = _schema_file(f"kubernetes-json-schema/{folder}/_definitions.json", version)
    registry: referencing.Registry[Any] = referencing.Registry()
    registry = referencing.Resource.from_contents(schema) @ registry
    registry = referencing.Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(manifest: Manifest, version: str) -> list[str]:
    """Schema errors of one object for one Kubernetes version (empty when valid)."""
    obj = manifest.obj
    if "apiVersion" not in obj or "kind" not in obj:
        return [f"{manifest.source}: object without apiVersion/kind"]
    try:
        validator = _validator(version, manifest.kind, str(obj["apiVersion"]))
    except LookupError as exc:
        return [f"{manifest.label}: {exc}"]
    return [
        f"{manifest.label} on {version}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: "
        f"{e.message}"
        for e in validator.iter_errors(obj)
    ]


def lint(values: Mapping[str, Any] | None = None) -> tuple[list[str], list[str]]:
    """helm lint --strict: (errors, warnings)."""
    report = helm.lint(
        CHART, dict(values or {}), strict=True, namespace=NAMESPACE, kube_version="v1.30.0"
    )
    messages = report.get("messages") or []
    errors = [str(e) for e in report.get("errors") or []]
    errors += [f"{m['path']}: {m['error']}" for m in messages if m["severity"] >= 3]
    warnings = [f"{m['path']}: {m['error']}" for m in messages if m["severity"] == 2]
    return errors, warnings


def schema_rejects(values: Mapping[str, Any]) -> str | None:
    """The schema's message when it refuses ``values``, None when it accepts them."""
    try:
        chart().validate_schema(chart().merge_values(dict(values)))
    except helm.HelmValuesError as exc:
        return str(exc)
    return None


# --- what is inside the rendered objects -------------------------------------------------
@dataclass(frozen=True)
class Container:
    owner: Manifest
    pod_spec: dict[str, Any]
    spec: dict[str, Any]
    init: bool = False

    @property
    def label(self) -> str:
        return f"{self.owner.label}/{self.spec.get('name')}"

    def env(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.spec.get("env") or []
        return found

    def env_value(self, name: str) -> str | None:
        for item in self.env():
            if item["name"] == name:
                return None if "value" not in item else str(item["value"])
        return None

    def env_names(self) -> list[str]:
        return [str(item["name"]) for item in self.env()]


def pod_spec(manifest: Manifest) -> dict[str, Any] | None:
    spec = manifest.obj.get("spec") or {}
    if manifest.kind == "Pod":
        found: dict[str, Any] = spec
        return found
    if manifest.kind == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template")
    return None if template is None else dict(template.get("spec") or {})


def containers(manifests: list[Manifest]) -> Iterator[Container]:
    for manifest in manifests:
        if manifest.kind not in WORKLOAD_KINDS:
            continue
        spec = pod_spec(manifest)
        if spec is None:
            continue
        for c in spec.get("initContainers") or []:
            yield Container(manifest, spec, c, init=True)
        for c in spec.get("containers") or []:
            yield Container(manifest, spec, c)
        for c in spec.get("ephemeralContainers") or []:
            yield Container(manifest, spec, c)


def component(manifest: Manifest) -> str:
    return str(
        manifest.obj.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", "")
    )


def service_deployments(rendered: Rendered) -> dict[str, Manifest]:
    return {component(m): m for m in rendered.of_kind("Deployment") if component(m) in SERVICES}


def resolve_env(container: Container, secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet would build it: secretKeyRef values from
    ``secrets``, then $(VAR) references to earlier variables expanded."""
    resolved: dict[str, str] = {}
    for item in container.env():
        name = str(item["name"])
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            resolved[name] = secrets[ref["name"]][ref["key"]]
        else:
            value = str(item.get("value", ""))
            resolved[name] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: resolved.get(m.group(1), m.group(0)),
                value,
            )
    return resolved


# --- property checks: each returns the failures it found ----------------------------------
def check_security(rendered: Rendered) -> list[str]:
    """Every container, init containers and Jobs included: non-root, read-only root
    filesystem, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp."""
    failures: list[str] = []
    for c in containers(rendered.manifests):
        pod = c.pod_spec.get("securityContext") or {}
        own = c.spec.get("securityContext") or {}
        effective = {**pod, **own}  # the container's own settings win

        problems = []
        if effective.get("runAsNonRoot") is not True:
            problems.append("runAsNonRoot is not true")
        if effective.get("runAsUser") in (None, 0):
            problems.append("no numeric non-root runAsUser")
        if own.get("readOnlyRootFilesystem") is not True:
            problems.append("root filesystem is writable")
        if own.get("allowPrivilegeEscalation") is not False:
            problems.append("allowPrivilegeEscalation is not false")
        if own.get("privileged"):
            problems.append("privileged")
        caps = own.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
            problems.append("capabilities not all dropped")
        if (effective.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append("seccomp profile is not RuntimeDefault")
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if c.pod_spec.get(host):
                problems.append(host)
        if c.pod_spec.get("automountServiceAccountToken") is not False:
            problems.append("service account token mounted")
        failures += [f"{c.label}: {p}" for p in problems]
    return failures


def check_probes(rendered: Rendered) -> list[str]:
    """Native gRPC startup, readiness and liveness probes on every service's port; readiness
    asks for the service's own health name."""
    failures: list[str] = []
    deployments = service_deployments(rendered)
    for name in rendered.variant.enabled():
        deployment = deployments.get(name)
        if deployment is None:
            failures.append(f"{name}: no Deployment")
            continue
        spec = pod_spec(deployment) or {}
        main = spec["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in main.get("ports", [])}
        if ports.get("grpc") != PORTS[name]:
            failures.append(f"{name}: gRPC port {ports.get('grpc')} != {PORTS[name]}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            grpc_probe = (main.get(probe) or {}).get("grpc")
            if not grpc_probe or grpc_probe.get("port") != PORTS[name]:
                failures.append(f"{name}: {probe} is not a gRPC probe on {PORTS[name]}")
        readiness = (main.get("readinessProbe") or {}).get("grpc") or {}
        if readiness.get("service") != grpc_service_name(name):
            failures.append(f"{name}: readiness does not ask for {grpc_service_name(name)}")
    return failures


def check_no_secret_values(rendered: Rendered) -> list[str]:
    """No secret value anywhere: no sentinel in the rendered text, no Secret object, and every
    secret-like variable comes from a secretKeyRef (or, for the in-chart stores, embeds the
    password only as a $(VAR) reference to one)."""
    text = rendered.text
    failures = [f"secret value {s!r} rendered" for s in sentinel_values() if s in text]
    failures += [f"{m.label}: the chart renders a Secret" for m in rendered.of_kind("Secret")]
    for c in containers(rendered.manifests):
        for item in c.env():
            name = str(item["name"])
            if not SECRET_NAME.search(name) or name.endswith("_TARGET"):
                continue
            if "valueFrom" in item:
                if "secretKeyRef" not in item["valueFrom"]:
                    failures.append(f"{c.label}: {name} is not from a Secret")
                continue
            value = str(item.get("value", ""))
            credentials = re.search(r"://([^@/]*)@", value)
            if credentials is None or not re.fullmatch(
                r"[^:]*:\$\([A-Z_]+\)", credentials.group(1)
            ):
                failures.append(f"{c.label}: {name} is a plain value")
    return failures


def check_secret_wiring(rendered: Rendered) -> list[str]:
    """Resolved against the Secrets, every service gets its own database, the Redis URL, the
    token key, and identity its identifier key."""
    failures: list[str] = []
    v = rendered.variant
    in_chart_pg = bool(v.setting("inChartPostgresql", "enabled"))
    in_chart_redis = bool(v.setting("inChartRedis", "enabled"))
    for name, deployment in service_deployments(rendered).items():
        env = resolve_env(next(containers([deployment])), FAKE_SECRETS)
        if in_chart_pg:
            pg = FAKE_SECRETS["continuum-secrets"]["postgres-password"]
            expected_db = (
                f"postgresql+asyncpg://postgres:{pg}@{RELEASE}-continuum-postgresql:5432/"
                f"continuum_{name}"
            )
        else:
            ref = v.setting("services", name, "database", "url", "secretKeyRef")
            expected_db = FAKE_SECRETS[ref["name"]][ref["key"]]
        if env.get("CONTINUUM_DATABASE_URL") != expected_db:
            failures.append(f"{name}: database URL {env.get('CONTINUUM_DATABASE_URL')!r}")
        if in_chart_redis:
            password = FAKE_SECRETS["continuum-secrets"]["redis-password"]
            expected_redis = f"redis://:{password}@{RELEASE}-continuum-redis:6379/0"
        else:
            ref = v.setting("redis", "url", "secretKeyRef")
            expected_redis = FAKE_SECRETS[ref["name"]][ref["key"]]
        if env.get("CONTINUUM_REDIS_URL") != expected_redis:
            failures.append(f"{name}: Redis URL {env.get('CONTINUUM_REDIS_URL')!r}")
        ref = v.setting("auth", "tokenKey", "secretKeyRef")
        if env.get("CONTINUUM_AUTH__TOKEN_KEY") != FAKE_SECRETS[ref["name"]][ref["key"]]:
            failures.append(f"{name}: token key not from {ref}")
        if name == "identity":
            ref = v.setting("services", "identity", "secretEnv", "CONTINUUM_IDENTIFIER_KEY")[
                "secretKeyRef"
            ]
            if env.get("CONTINUUM_IDENTIFIER_KEY") != FAKE_SECRETS[ref["name"]][ref["key"]]:
                failures.append("identity: identifier key not from its Secret")
    return failures


@dataclass
class PolicyGraph:
    """What the rendered NetworkPolicies allow between the services."""

    ingress: set[tuple[str, str]] = field(default_factory=set)  # (caller, callee)
    egress: set[tuple[str, str]] = field(default_factory=set)
    channel_ingress: set[str] = field(default_factory=set)  # services channel apps reach
    problems: list[str] = field(default_factory=list)


def _peer_service(peer: Mapping[str, Any]) -> str | None:
    """The Continuum service a NetworkPolicy peer selects, if it selects exactly one."""
    if "namespaceSelector" in peer or "ipBlock" in peer:
        return None
    labels = (peer.get("podSelector") or {}).get("matchLabels") or {}
    if labels.get("app.kubernetes.io/instance") != RELEASE:
        return None
    comp = labels.get("app.kubernetes.io/component")
    return comp if comp in SERVICES else None


def policy_graph(rendered: Rendered) -> PolicyGraph:
    graph = PolicyGraph()
    channel_apps = rendered.variant.setting("networkPolicy", "channelApps")
    dns = rendered.variant.setting("networkPolicy", "dns")
    store_ports = {5432, 6379, 4317}
    for which in ("database", "redis", "otlp"):
        for port in rendered.variant.setting("networkPolicy", which, "ports") or []:
            store_ports.add(int(port["port"]))
    for m in rendered.of_kind("NetworkPolicy"):
        spec = m.obj["spec"]
        selected = _peer_service({"podSelector": spec.get("podSelector") or {}})
        if selected is None:
            continue
        if set(spec.get("policyTypes") or []) != {"Ingress", "Egress"}:
            graph.problems.append(f"{m.label}: does not restrict both directions")
        for rule in spec.get("ingress") or []:
            if not rule.get("from"):
                graph.problems.append(f"{m.label}: an ingress rule allows every source")
            if [p.get("port") for p in rule.get("ports") or []] != [PORTS[selected]]:
                graph.problems.append(f"{m.label}: ingress not limited to its gRPC port")
            for peer in rule.get("from") or []:
                caller = _peer_service(peer)
                if caller is not None:
                    graph.ingress.add((caller, selected))
                elif peer in channel_apps:
                    graph.channel_ingress.add(selected)
                else:
                    graph.problems.append(f"{m.label}: unexpected ingress peer {peer}")
        for rule in spec.get("egress") or []:
            ports = {int(p["port"]) for p in rule.get("ports") or []}
            if not ports:
                graph.problems.append(f"{m.label}: an egress rule allows every port")
            peers = rule.get("to") or []
            callees = {_peer_service(p) for p in peers} - {None}
            for callee in callees:
                assert callee is not None
                graph.egress.add((selected, callee))
                if ports != {PORTS[callee]}:
                    graph.problems.append(f"{m.label}: egress to {callee} on {ports}")
            if callees:
                continue
            if peers == dns and ports == {53}:
                continue
            if not ports <= store_ports:
                graph.problems.append(f"{m.label}: egress to {peers or 'anywhere'} on {ports}")
    return graph


def expected_calls(enabled: list[str]) -> set[tuple[str, str]]:
    return {(c, s) for c in enabled for s in CALL_GRAPH[c] if s in enabled}


def check_network_policies(rendered: Rendered) -> list[str]:
    """The allowed (caller, callee) pairs, read back from the rendered policies, are exactly
    the call graph's, in both directions; channel apps reach every service."""
    enabled = rendered.variant.enabled()
    if not rendered.variant.setting("networkPolicy", "enabled"):
        found = rendered.of_kind("NetworkPolicy")
        return [f"{m.label}: rendered although network policies are off" for m in found]
    graph = policy_graph(rendered)
    failures = list(graph.problems)
    expected = expected_calls(enabled)
    if graph.ingress != expected:
        failures.append(
            f"ingress allows {sorted(graph.ingress - expected)} extra, "
            f"misses {sorted(expected - graph.ingress)}"
        )
    if graph.egress != expected:
        failures.append(
            f"egress allows {sorted(graph.egress - expected)} extra, "
            f"misses {sorted(expected - graph.egress)}"
        )
    if graph.channel_ingress != set(enabled):
        failures.append(f"channel apps reach {sorted(graph.channel_ingress)}, not every service")
    return failures


def migration_hook(rendered: Rendered) -> str:
    in_chart = rendered.variant.setting("inChartPostgresql", "enabled")
    return "post-install,pre-upgrade" if in_chart else "pre-install,pre-upgrade"


def check_migrations(rendered: Rendered) -> list[str]:
    """One hook Job per enabled service running its `migrate` command; servers never migrate."""
    failures: list[str] = []
    expected_hook = migration_hook(rendered)
    jobs: dict[str, Manifest] = {}
    for job in rendered.of_kind("Job"):
        command = (pod_spec(job) or {})["containers"][0]
        service = str(command["command"][0]).removeprefix("continuum-")
        if job.annotations().get(HOOK) != expected_hook:
            failures.append(f"{job.label}: hook {job.annotations().get(HOOK)!r}")
        if command.get("args") != ["migrate"]:
            failures.append(f"{job.label}: runs {command.get('args')} instead of migrate")
        if service in jobs:
            failures.append(f"{service}: two migration Jobs")
        jobs[service] = job
    if sorted(jobs) != sorted(rendered.variant.enabled()):
        failures.append(f"migration Jobs for {sorted(jobs)}, enabled {rendered.variant.enabled()}")
    # Whatever a hook Job needs must exist when the hook runs: its ServiceAccount is a hook.
    hook_accounts = {
        m.name for m in rendered.of_kind("ServiceAccount") if m.annotations().get(HOOK)
    }
    for job in jobs.values():
        account = (pod_spec(job) or {}).get("serviceAccountName")
        if account and account != "default" and account not in hook_accounts:
            failures.append(f"{job.label}: its ServiceAccount {account} is not a hook")
    for name, deployment in service_deployments(rendered).items():
        c = next(containers([deployment]))
        if c.env_value("CONTINUUM_RUN_MIGRATIONS") != "false" or c.spec.get("args") != ["serve"]:
            failures.append(f"{name}: the server may migrate at start-up")
    return failures


def check_enabled_only(rendered: Rendered) -> list[str]:
    """Nothing of a disabled service is rendered: no object, label, selector, target or
    Secret reference."""
    failures: list[str] = []
    objects = json.dumps([m.obj for m in rendered.manifests])
    for name in SERVICES:
        if name in rendered.variant.enabled():
            continue
        for word in (name, name.upper()):
            if re.search(rf"(?<![A-Za-z]){word}(?![a-z])", objects) or word in rendered.notes:
                failures.append(f"{name} is disabled but appears in the manifests")
                break
    return failures


def check_topology_spread(rendered: Rendered) -> list[str]:
    failures: list[str] = []
    if not rendered.variant.setting("topologySpread", "enabled"):
        return failures
    keys = set(rendered.variant.setting("topologySpread", "topologyKeys"))
    for name, deployment in service_deployments(rendered).items():
        spec = pod_spec(deployment) or {}
        pod_labels = deployment.obj["spec"]["template"]["metadata"]["labels"]
        constraints = spec.get("topologySpreadConstraints") or []
        if {c["topologyKey"] for c in constraints} != keys:
            failures.append(f"{name}: spread over {[c['topologyKey'] for c in constraints]}")
        for c in constraints:
            wanted = c["labelSelector"]["matchLabels"]
            if any(pod_labels.get(k) != v for k, v in wanted.items()):
                failures.append(f"{name}: spread selector does not select its own pods")
    return failures


def check_otlp(rendered: Rendered) -> list[str]:
    """The OTLP endpoint reaches every service container and migration Job, or none."""
    endpoint = rendered.variant.setting("otlp", "endpoint") or None
    failures: list[str] = []
    for c in containers(rendered.manifests):
        if component(c.owner) in ("postgresql", "redis"):
            continue
        if c.env_value("CONTINUUM_OTLP_ENDPOINT") != endpoint:
            failures.append(f"{c.label}: OTLP endpoint {c.env_value('CONTINUUM_OTLP_ENDPOINT')}")
    return failures


def check_scaling(rendered: Rendered) -> list[str]:
    """HPAs and PDBs exist exactly where enabled and point at their own Deployment."""
    failures: list[str] = []
    v = rendered.variant
    hpas = {
        m.obj["spec"]["scaleTargetRef"]["name"]: m
        for m in rendered.of_kind("HorizontalPodAutoscaler")
    }
    pdbs = {component(m): m for m in rendered.of_kind("PodDisruptionBudget")}
    for name, deployment in service_deployments(rendered).items():
        own = v.values.get("services", {}).get(name, {})
        autoscaling = {**v.setting("autoscaling"), **own.get("autoscaling", {})}
        pdb = {**v.setting("podDisruptionBudget"), **own.get("podDisruptionBudget", {})}
        if bool(autoscaling["enabled"]) != (deployment.name in hpas):
            failures.append(f"{name}: HPA present={deployment.name in hpas}")
        if autoscaling["enabled"] and "replicas" in deployment.obj["spec"]:
            failures.append(f"{name}: fixed replicas fight the HPA")
        if bool(pdb["enabled"]) != (name in pdbs):
            failures.append(f"{name}: PDB present={name in pdbs}")
    return failures


CHECKS = {
    "security": check_security,
    "probes": check_probes,
    "no-secret-values": check_no_secret_values,
    "secret-wiring": check_secret_wiring,
    "network-policies": check_network_policies,
    "migrations": check_migrations,
    "enabled-only": check_enabled_only,
    "topology-spread": check_topology_spread,
    "otlp": check_otlp,
    "scaling": check_scaling,
}


def property_failures(rendered: Rendered) -> dict[str, list[str]]:
    return {name: check(rendered) for name, check in CHECKS.items()}


# --- the command ---------------------------------------------------------------------------
def main() -> int:
    started = time.perf_counter()
    summary: dict[str, Any] = {
        "variants_rendered": 0,
        "manifests": 0,
        "manifests_invalid": 0,
        "kubernetes_versions": list(KUBERNETES_VERSIONS),
        "validations": 0,
        "lint_errors": 0,
        "lint_warnings": 0,
        "schema_rejections": 0,
        "schema_rejections_expected": len(BAD_VALUES),
        "property_failures": 0,
    }
    for what, values, _path in BAD_VALUES:
        message = schema_rejects(values)
        if message is None:
            print(f"schema ACCEPTED bad values: {what}")
        else:
            summary["schema_rejections"] += 1
    print(
        f"values.schema.json rejected {summary['schema_rejections']}/{len(BAD_VALUES)} bad inputs",
        flush=True,
    )
    errors, warnings = lint()
    print(f"helm lint --strict: {len(errors)} errors, {len(warnings)} warnings")
    for message in errors + warnings:
        print(f"  {message}")
    summary["lint_errors"] += len(errors)
    summary["lint_warnings"] += len(warnings)
    for v in VARIANTS:
        try:
            rendered = render_variant(v)
        except helm.HelmError as exc:
            print(f"{v.name}: render FAILED: {exc}")
            summary["property_failures"] += 1
            continue
        summary["variants_rendered"] += 1
        v_errors, _ = lint(v.values)
        summary["lint_errors"] += len(v_errors)
        invalid = 0
        for manifest in rendered.manifests:
            problems = [p for version in KUBERNETES_VERSIONS for p in validate(manifest, version)]
            summary["validations"] += len(KUBERNETES_VERSIONS)
            if problems:
                invalid += 1
                print("  INVALID " + "\n          ".join(problems))
        kinds: dict[str, int] = {}
        for manifest in rendered.manifests:
            kinds[manifest.kind] = kinds.get(manifest.kind, 0) + 1
        summary["manifests"] += len(rendered.manifests)
        summary["manifests_invalid"] += invalid
        failures = property_failures(rendered)
        failed = sum(len(f) for f in failures.values())
        summary["property_failures"] += failed
        print(
            f"{v.name}: {len(rendered.manifests)} objects "
            f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
            f"{invalid} invalid on {'/'.join(KUBERNETES_VERSIONS)}, "
            f"lint {len(v_errors)} errors, properties "
            f"{'ok' if not failed else f'{failed} FAILED'}"
        )
        for check, found in failures.items():
            for failure in found:
                print(f"  {check}: {failure}")
    summary["seconds"] = round(time.perf_counter() - started, 2)
    ok = (
        summary["variants_rendered"] == len(VARIANTS)
        and summary["manifests_invalid"] == 0
        and summary["lint_errors"] == 0
        and summary["property_failures"] == 0
        and summary["schema_rejections"] == len(BAD_VALUES)
    )
    summary["ok"] = ok
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
