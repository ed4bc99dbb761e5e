#!/usr/bin/env python3
"""Check the manifests of deploy/k8s (or the directory given) without a cluster.

Fails (exit 1), naming the file, the object and the field, when
- a pod or container violates the Pod Security Standard "restricted" (Kubernetes docs,
  "Pod Security Standards", baseline + restricted controls): hostNetwork/hostPID/hostIPC,
  privileged, hostPath and other non-allowed volume types, hostPort, capabilities (drop
  ALL, add at most NET_BIND_SERVICE), allowPrivilegeEscalation, runAsNonRoot, runAsUser,
  seccompProfile, SELinux, AppArmor, procMount, sysctls, hostProcess; plus this
  project's rule that every container's root filesystem is read-only;
- an image is not pinned (no tag, or `latest`), in a workload or in kustomization.yaml;
- a Namespace does not enforce the restricted standard (Pod Security Admission label);
- kustomization.yaml misses a manifest of the directory, or names a missing file;
- a workload is not scraped: no Service selects its pods with a ServiceMonitor on a port
  that exists.

Usage: check_restricted.py [DIR]   (PyYAML; tests/run.sh puts it on PYTHONPATH)
"""
import sys
from pathlib import Path

import yaml

# Where each workload kind keeps its pod spec.
POD_SPEC = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
ALLOWED_ADD_CAPABILITIES = {"NET_BIND_SERVICE"}
ALLOWED_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t",
                         "container_engine_t"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}


def get(obj, *path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def show(value):
    """A field's value as YAML writes it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def image_problem(image):
    """Why an image reference is not pinned, or None."""
    if not image:
        return "is empty"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image!r} has no tag (pin a release tag or a digest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"{image!r} uses the tag 'latest' (pin a release tag or a digest)"
    return None


def check_security_options(errors, field, sc):
    """SELinux, AppArmor and Windows options, allowed at pod and container level."""
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in ALLOWED_SELINUX_TYPES:
        errors.append(f"{field}.seLinuxOptions.type must be one of container_t, "
                      f"container_init_t, container_kvm_t, container_engine_t (is {selinux['type']!r})")
    for key in ("user", "role"):
        if selinux.get(key):
            errors.append(f"{field}.seLinuxOptions.{key} must be unset")
    if get(sc, "appArmorProfile", "type") == "Unconfined":
        errors.append(f"{field}.appArmorProfile.type must not be Unconfined")
    if get(sc, "windowsOptions", "hostProcess") is True:
        errors.append(f"{field}.windowsOptions.hostProcess must not be true")


def check_pod(spec, base):
    """Violations of the restricted profile in one pod spec; `base` is its field path."""
    errors = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            errors.append(f"{base}.{key} must be false (is true)")
    pod_sc = spec.get("securityContext") or {}
    check_security_options(errors, f"{base}.securityContext", pod_sc)
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            errors.append(f"{base}.securityContext.sysctls[{sysctl.get('name')}] is not a safe sysctl")
    if get(pod_sc, "seccompProfile", "type") == "Unconfined":
        errors.append(f"{base}.securityContext.seccompProfile.type must not be Unconfined")
    if pod_sc.get("runAsNonRoot") is False:
        errors.append(f"{base}.securityContext.runAsNonRoot must not be false")
    if pod_sc.get("runAsUser") == 0:
        errors.append(f"{base}.securityContext.runAsUser must not be 0")

    for volume in spec.get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        field = f"{base}.volumes[{volume.get('name')}]"
        for kind in kinds:
            if kind == "hostPath":
                errors.append(f"{field}.hostPath is forbidden")
            elif kind not in ALLOWED_VOLUMES:
                errors.append(f"{field}.{kind} is not an allowed volume type "
                              f"({', '.join(sorted(ALLOWED_VOLUMES))})")

    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(group) or []:
            field = f"{base}.{group}[{container.get('name')}]"
            sc = container.get("securityContext") or {}
            scf = f"{field}.securityContext"
            problem = image_problem(container.get("image"))
            if problem:
                errors.append(f"{field}.image {problem}")
            if sc.get("privileged") is True:
                errors.append(f"{scf}.privileged must not be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{scf}.allowPrivilegeEscalation must be false "
                              f"(is {show(sc.get('allowPrivilegeEscalation'))})")
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{scf}.readOnlyRootFilesystem must be true "
                              f"(is {show(sc.get('readOnlyRootFilesystem'))}); mount an "
                              "emptyDir where the process writes")
            drop = get(sc, "capabilities", "drop") or []
            if "ALL" not in drop:
                errors.append(f"{scf}.capabilities.drop must contain ALL (is {drop})")
            added = set(get(sc, "capabilities", "add") or []) - ALLOWED_ADD_CAPABILITIES
            if added:
                errors.append(f"{scf}.capabilities.add may only contain NET_BIND_SERVICE "
                              f"(has {sorted(added)})")
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            if non_root is not True:
                errors.append(f"{scf}.runAsNonRoot (or the pod's) must be true (is {show(non_root)})")
            user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if user is None or user == 0:
                errors.append(f"{scf}.runAsUser (or the pod's) must be a non-zero uid "
                              f"(is {show(user)})")
            seccomp = get(sc, "seccompProfile", "type") or get(pod_sc, "seccompProfile", "type")
            if seccomp not in SECCOMP_TYPES:
                errors.append(f"{scf}.seccompProfile.type (or the pod's) must be RuntimeDefault "
                              f"or Localhost (is {seccomp or 'unset'})")
            if sc.get("procMount", "Default") != "Default":
                errors.append(f"{scf}.procMount must be Default")
            check_security_options(errors, scf, sc)
            for port in container.get("ports") or []:
                if port.get("hostPort"):
                    errors.append(f"{field}.ports[{port.get('name', port.get('containerPort'))}]"
                                  ".hostPort must be unset")
    return errors


def selects(selector, labels):
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def main():
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    errors = []
    objects = []  # (file, object)
    manifests = sorted(p for p in root.glob("*.yaml") if p.name != "kustomization.yaml")
    for path in manifests:
        for obj in yaml.safe_load_all(path.read_text()):
            if obj:
                objects.append((path.name, obj))

    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    resources = kustomization.get("resources") or []
    for name in resources:
        if not (root / name).exists():
            errors.append(f"kustomization.yaml: resources names {name}, which does not exist")
    for path in manifests:
        if path.name not in resources:
            errors.append(f"kustomization.yaml: resources misses {path.name}")
    for i, image in enumerate(kustomization.get("images") or []):
        if not image.get("digest") and image.get("newTag") in (None, "", "latest"):
            errors.append(f"kustomization.yaml: images[{image.get('name', i)}].newTag must be "
                          f"a pinned release tag (is {show(image.get('newTag'))})")

    workloads, services, monitors = [], [], []
    for file, obj in objects:
        kind, name = obj.get("kind"), get(obj, "metadata", "name")
        where = f"{file}: {kind}/{name}"
        if kind in POD_SPEC:
            path = POD_SPEC[kind]
            spec = get(obj, *path) or {}
            errors += [f"{where}: {e}" for e in check_pod(spec, ".".join(path))]
            labels = get(obj, *path[:-1], "metadata", "labels") if kind != "Pod" \
                else get(obj, "metadata", "labels")
            ports = {p.get("name") for c in spec.get("containers") or [] for p in c.get("ports") or []}
            workloads.append((where, labels or {}, ports))
        elif kind == "Namespace":
            enforce = get(obj, "metadata", "labels", "pod-security.kubernetes.io/enforce")
            if enforce != "restricted":
                errors.append(f"{where}: metadata.labels[pod-security.kubernetes.io/enforce] "
                              f"must be restricted (is {enforce or 'unset'})")
        elif kind == "Service":
            services.append((where, obj))
        elif kind == "ServiceMonitor":
            monitors.append((where, obj))

    # Every workload is scraped: ServiceMonitor -> Service (port) -> pods (container port).
    scraped = set()
    for where, monitor in monitors:
        selector = get(monitor, "spec", "selector", "matchLabels")
        endpoints = {e.get("port") for e in get(monitor, "spec", "endpoints") or []}
        chosen = [(w, s) for w, s in services if selects(selector, get(s, "metadata", "labels"))]
        if not chosen:
            errors.append(f"{where}: spec.selector.matchLabels {selector} selects no Service")
        for service_where, service in chosen:
            ports = {p.get("name"): p for p in get(service, "spec", "ports") or []}
            for port in endpoints - set(ports):
                errors.append(f"{where}: spec.endpoints port {port!r} is not a port of {service_where}")
            for workload_where, labels, container_ports in workloads:
                if not selects(get(service, "spec", "selector"), labels):
                    continue
                for port in endpoints & set(ports):
                    target = ports[port].get("targetPort")
                    if isinstance(target, str) and target not in container_ports:
                        errors.append(f"{service_where}: spec.ports[{port}].targetPort "
                                      f"{target!r} is not a container port of {workload_where}")
                    else:
                        scraped.add(workload_where)
    for workload_where, _, _ in workloads:
        if workload_where not in scraped:
            errors.append(f"{workload_where}: no ServiceMonitor scrapes it (through a Service)")

    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"{len(errors)} problem(s) in {root}", file=sys.stderr)
        return 1
    print(f"{root}: {len(workloads)} workloads pass the restricted profile, pin their "
          f"images and are scraped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
