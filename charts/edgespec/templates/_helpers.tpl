{{/* Chart name, truncated to a DNS label. */}}
{{- define "edgespec.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name of the operator's objects. */}}
{{- define "edgespec.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "edgespec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edgespec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "edgespec.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "edgespec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: edgespec
{{- end }}

{{- define "edgespec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "edgespec.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. Call with (list $ .Values.image). */}}
{{- define "edgespec.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{- define "edgespec.watchNamespaces" -}}
{{- if not .Values.rbac.clusterWide }}
{{- if not .Values.rbac.watchNamespaces }}
{{- fail "rbac.clusterWide=false needs rbac.watchNamespaces: the namespaces the operator may reconcile in" }}
{{- end }}
{{- join "," .Values.rbac.watchNamespaces }}
{{- end }}
{{- end }}

{{/*
Rules on namespaced objects: in the ClusterRole when rbac.clusterWide, else in a Role per watched
namespace. Every rule says what it is for.
*/}}
{{- define "edgespec.namespacedRules" -}}
# Watch SpeculativeDeployments and mark them handled (kopf patches its annotations and finalizer).
- apiGroups: [edgespec.dev]
  resources: [speculativedeployments]
  verbs: [get, list, watch, patch, update]
# Write what the operator found and chose (phase, conditions, selections) to the status subresource.
- apiGroups: [edgespec.dev]
  resources: [speculativedeployments/status]
  verbs: [get, patch, update]
# Owner references with blockOwnerDeletion: true need update on the owner's finalizers when the
# OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift and hardened clusters).
- apiGroups: [edgespec.dev]
  resources: [speculativedeployments/finalizers]
  verbs: [update]
# Tell users what happened, in `kubectl describe` (kopf posts core/v1 Events; newer code events.k8s.io).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Profiling Jobs, one per (device class, draft, quantisation); deleted to retry a failed one.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, update, delete]
# Draft servers (a DaemonSet per device class) and the verifier (a Deployment).
- apiGroups: [apps]
  resources: [daemonsets, deployments]
  verbs: [get, list, watch, create, patch, update, delete]
# The verifier's PodDisruptionBudget (more than one replica: a drain evicts one at a time).
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, update, delete]
# The verifier's Service, the drafts' node-local Services, and each class's K ConfigMap.
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, patch, update, delete]
# The verifier's bearer-token Secret: created once, read back on every reconcile so the token stays.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, update, delete]
# The profilers' ServiceAccount (one per deployment).
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, list, watch, create, patch, update, delete]
# Draft and verifier readiness per node, and why a pod cannot start (its init containers), for the
# status (read only).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
{{- end }}

{{/* Rules on cluster-scoped objects: always in a ClusterRole, whatever rbac.clusterWide says. */}}
{{- define "edgespec.clusterRules" -}}
# Find each device class's edge nodes and the GPU nodes by label (read only).
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
# Read the measured profiles ConfigSpec selects from. get/create/patch/update are also here because
# the operator grants exactly these to the profilers: RBAC lets it grant only what it holds itself
# (no escalate or bind verbs are given to it).
- apiGroups: [edgespec.dev]
  resources: [edgeprofiles]
  verbs: [get, list, watch, create, patch, update]
# kopf resolves the resources it serves from the CRDs at start-up (read only).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
# kopf lists namespaces to follow the ones it is told to watch (read only).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
# The profilers' shared ClusterRole "edgespec-profiler" (EdgeProfile writes only). Create cannot be
# narrowed by name; the API server still refuses a role granting more than the operator holds.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  resourceNames: [edgespec-profiler]
  verbs: [get, patch, update]
# One ClusterRoleBinding per deployment giving its profiler ServiceAccount that role (EdgeProfiles
# are cluster-scoped, so a RoleBinding cannot grant them); deleted with the deployment.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterrolebindings]
  verbs: [get, list, watch, create, patch, update, delete]
{{- end }}
