// Validates the prometheus-operator resources of deploy/k8s (ServiceMonitor,
// PrometheusRule) against the CRDs' own OpenAPI schemas, as bundled by
// @kubernetes-models/prometheus-operator. kubernetes-validate has no schema for them.
//
//   node check.mjs ../servicemonitor.yaml ../prometheusrule.yaml
import { readFileSync } from 'node:fs';
import { loadAll } from 'js-yaml';
import {
  PrometheusRule,
  ServiceMonitor,
} from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';

const models = { PrometheusRule, ServiceMonitor };
let valid = 0;
let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of loadAll(readFileSync(file, 'utf8'))) {
    if (!doc) continue;
    const name = `${file}: ${doc.kind} ${doc.metadata?.name}`;
    const Model = models[doc.kind];
    if (!Model) {
      console.error(`${name}: no schema for this kind here`);
      failed++;
      continue;
    }
    try {
      new Model(doc).validate();
      valid++;
    } catch (e) {
      console.error(`${name}: ${e.message}`);
      failed++;
    }
  }
}
if (failed > 0 || valid === 0) {
  console.error(`${failed} invalid, ${valid} valid`);
  process.exit(1);
}
console.log(`${valid} ServiceMonitor/PrometheusRule resources match the prometheus-operator CRD schemas`);
