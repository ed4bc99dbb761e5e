#!/usr/bin/env python3
"""Keep the alert rules, their Kubernetes copy, their runbooks and their tests together.

Fails (exit 1, naming what differs) when
- deploy/k8s/prometheusrule.yaml's spec.groups differ from alerts.yaml's groups;
- an alert has no runbook_url, or it does not point at a `## <AlertName>` section of
  docs/runbooks.md (as RUNBOOKS#<alertname in lower case>);
- an alert is never expected to fire in alerts.test.yaml (or a test names an alert
  that does not exist).

`check_rules.py --write` rewrites prometheusrule.yaml from alerts.yaml.
Needs PyYAML (tests/run.sh puts kubernetes-validate's copy on PYTHONPATH).
"""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/observability/alerts.yaml"
TESTS = ROOT / "deploy/observability/alerts.test.yaml"
RULE = ROOT / "deploy/k8s/prometheusrule.yaml"
RUNBOOKS = ROOT / "docs/runbooks.md"
RUNBOOKS_URL = "https://github.com/graphcdc/graphcdc/blob/main/docs/runbooks.md"

HEADER = """\
# The alert rules of deploy/observability/alerts.yaml for the Prometheus Operator.
# Generated: edit alerts.yaml, then `python3 deploy/observability/check_rules.py --write`;
# tests/run.sh fails when the two differ. (CRD: YAML-parsed only, no bundled schema.)
# The Prometheus must select it: ruleNamespaceSelector and ruleSelector (add the label
# your Prometheus selects on, e.g. `release: …`, with a kustomize patch).
"""


class IndentedDumper(yaml.SafeDumper):
    """Block lists indented under their key, as in alerts.yaml."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def prometheus_rule(groups):
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "graphcdc",
            "labels": {"app.kubernetes.io/name": "graphcdc"},
        },
        "spec": {"groups": groups},
    }


def github_anchor(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped."""
    anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return anchor.replace(" ", "-")


def first_difference(path, a, b):
    """Where two loaded YAML values first differ, as a readable path."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}.{key}: only in {'alerts.yaml' if key in a else 'prometheusrule.yaml'}"
            found = first_difference(f"{path}.{key}", a[key], b[key])
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            name = x.get("name") or x.get("alert") if isinstance(x, dict) else None
            found = first_difference(f"{path}[{name or i}]", x, y)
            if found:
                return found
        if len(a) != len(b):
            return f"{path}: {len(a)} entries in alerts.yaml, {len(b)} in prometheusrule.yaml"
        return None
    if a != b:
        return f"{path}: {a!r} in alerts.yaml, {b!r} in prometheusrule.yaml"
    return None


def main():
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    if sys.argv[1:] == ["--write"]:
        body = yaml.dump(prometheus_rule(groups), Dumper=IndentedDumper, sort_keys=False, width=1000)
        RULE.write_text(HEADER + body)
        print(f"wrote {RULE.relative_to(ROOT)}")
        return 0

    errors = []
    docs = [d for d in yaml.safe_load_all(RULE.read_text()) if d]
    rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        errors.append(f"{RULE.relative_to(ROOT)}: expected one PrometheusRule, found {len(rules)}")
    else:
        found = first_difference("spec.groups", groups, rules[0].get("spec", {}).get("groups"))
        if found:
            errors.append(f"prometheusrule.yaml differs from alerts.yaml at {found} "
                          "(run deploy/observability/check_rules.py --write)")

    headings = {
        github_anchor(line[3:])
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    names = {r["alert"] for r in alerts}
    for rule in alerts:
        name = rule["alert"]
        url = rule.get("annotations", {}).get("runbook_url")
        expected = f"{RUNBOOKS_URL}#{name.lower()}"
        if url != expected:
            errors.append(f"alerts.yaml: {name}: annotations.runbook_url is {url!r}, expected {expected!r}")
        if name.lower() not in headings:
            errors.append(f"docs/runbooks.md: no section '## {name}' for alert {name}")

    fired, tested = set(), set()
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            tested.add(case["alertname"])
            if case.get("exp_alerts"):
                fired.add(case["alertname"])
    for name in sorted(names - fired):
        errors.append(f"alerts.test.yaml: no test expects {name} to fire")
    for name in sorted(tested - names):
        errors.append(f"alerts.test.yaml: tests {name}, which alerts.yaml does not define")

    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return 1
    print(f"{len(alerts)} alerts: PrometheusRule in sync, runbooks and firing tests present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
