{{- define "dso.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dso.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "dso.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dso.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dso.labels" -}}
{{ include "dso.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: deepseek-operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "dso.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dso.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name the ServiceAccount to use when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dso.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
What the operator does in the namespaces it watches: the same rules in the ClusterRole (every
namespace) or in a Role per watched namespace. Each rule names the code that needs it; the
audit-log test (tests/integration/test_chart_rbac.py) fails on a rule the operator did not use
and on a request it was refused.
*/}}
{{- define "dso.namespacedRules" -}}
# kopf watches the resource. It writes nothing to it (no finalizer, no annotations: the loop
# keeps what it needs in status), so no patch: RBAC alone refuses a spec write, and the
# ValidatingAdmissionPolicy refuses one even where someone grants the operator more.
- apiGroups: [serving.deepseek.ai]
  resources: [deepseekdeployments]
  verbs: [list, watch]
# reconcile/write.py: status, conditional on the resourceVersion the decision was made on.
- apiGroups: [serving.deepseek.ai]
  resources: [deepseekdeployments/status]
  verbs: [patch]
# The children: watched by the loop's informers (kube/watch.py, label-selected) and written by
# server-side apply (create: the apply that makes an object is authorized as create too). The
# loop deletes only what reconcile/workloads.py removes: a stale revision's Deployment,
# LeaderWorkerSet and ConfigMap, an HPA whose spec.autoscaling is gone, and ControllerRevision
# records beyond the history (not reached in the audit test's scenario: it keeps the last few).
# Jobs, Services and PDBs go with their owner (garbage collection): no delete for them.
- apiGroups: [apps]
  resources: [deployments, controllerrevisions]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
# The model repository's ConfigMaps (owned), and the golden sets (rollout/analysis.py reads them
# by name at each analysis: get).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch, delete]
# Multi-node replicas (LeaderWorkerSet); watched only when that API is installed (the audit
# test's cluster has none: only its list, answered 404, is used there; the rest is needed by
# multi-node replicas).
- apiGroups: [leaderworkerset.x-k8s.io]
  resources: [leaderworkersets]
  verbs: [list, watch, create, patch, delete]
# The serving pods: watched (readiness, GPU use, the first blocker for status) and labelled
# (the traffic label that puts a pod behind the Service).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch, patch]
# The model PVC and the engine-cache PVC a spec names are looked up in a watch cache of PVCs
# (names and phase only; a claim created later wakes whoever waits for it), and read by name
# when the cache does not have one yet (reconcile/gather.py).
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch]
# The credentials Secret a spec names is read by name to say whether it is missing: get only,
# never list or watch (the operator holds no Secret's contents).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# kube/client.py post_event.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
