// Validate custom resources against their CRD schemas, offline.
//   kubectl kustomize k8s/overlays/prod | <yaml to json list> | node k8s/crd-schemas/validate.mjs
// Reads a JSON list of objects on stdin; prints one line per custom resource; exits 1 if any is
// invalid and 2 if a kind has no schema here. Core objects are left to kubernetes-validate.
import { AnalysisTemplate } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/AnalysisTemplate";
import { Rollout } from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1/Rollout";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const MODELS = {
  "argoproj.io/v1alpha1/AnalysisTemplate": AnalysisTemplate,
  "argoproj.io/v1alpha1/Rollout": Rollout,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
let status = 0;
for (const object of JSON.parse(Buffer.concat(chunks).toString())) {
  if (!object.apiVersion.includes(".") || object.apiVersion.endsWith(".k8s.io/v1") || object.apiVersion.endsWith(".k8s.io/v2")) continue;
  const key = `${object.apiVersion}/${object.kind}`;
  const Model = MODELS[key];
  if (!Model) {
    console.log(`no schema: ${key} ${object.metadata.name}`);
    status = Math.max(status, 2);
    continue;
  }
  try {
    new Model(object).validate();
    console.log(`valid: ${key} ${object.metadata.name}`);
  } catch (error) {
    console.log(`invalid: ${key} ${object.metadata.name}: ${error.message}`);
    status = Math.max(status, 1);
  }
}
process.exit(status);
