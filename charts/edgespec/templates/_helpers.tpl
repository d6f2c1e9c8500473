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

{{/* repository@digest when a digest is set, else repository:tag with the tag defaulting to the
chart's appVersion. Call with (list $ .Values.image). */}}
{{- define "edgespec.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
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
namespace. Every rule says what it is for. What Kubernetes RBAC cannot express, and so is not here:
- "only objects it created": a rule names resources, verbs and at most fixed resourceNames. create
  cannot be narrowed by name at all (the name is not known when the request is authorised), and the
  operator's child names are hashes of the deployment, so no fixed list exists for the other verbs
  either. Label selectors are not part of RBAC. What limits it is the namespace (watchNamespaces
  mode) and the operator's own code (it only touches objects labelled
  app.kubernetes.io/managed-by=edgespec and owned by one of its SpeculativeDeployments).
- "read only its own Secrets": get/list/watch on secrets in a namespace reads every Secret there.
  The operator asks with a server-side label selector, so it never receives another Secret, but the
  right itself is namespace-wide; in watchNamespaces mode that is the tenant namespaces only.
Nothing here reaches ClusterRoles, ClusterRoleBindings, Roles or RoleBindings: the operator makes no
cluster-scoped child and grants nothing to anyone (profilers run with no API rights).
*/}}
{{- define "edgespec.namespacedRules" -}}
# Read SpeculativeDeployments (kopf watches them; the operator keeps no state in their annotations).
- apiGroups: [edgespec.dev]
  resources: [speculativedeployments]
  verbs: [get, list, watch]
# Write what the operator found and chose (phase, conditions, selections) to the status subresource
# by server-side apply (a PATCH).
- apiGroups: [edgespec.dev]
  resources: [speculativedeployments/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion: true need update on the owner's finalizers when the
# OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift and hardened clusters).
- apiGroups: [edgespec.dev]
  resources: [speculativedeployments/finalizers]
  verbs: [update]
# Tell users what happened, in `kubectl describe` (core/v1 Events on the deployment; created only).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# Children, by server-side apply (create and patch), watched to restore what is deleted by hand and
# deleted when no longer desired (a removed device class, a profile key no longer in the spec):
# profiling Jobs, the verifier Deployment, each class's draft DaemonSet, the verifier and draft
# Services, each class's K ConfigMap, and the verifier's bearer-token Secret (created once, read back
# after a restart so the token stays). No update: apply is a patch.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [daemonsets, deployments]
  verbs: [get, list, watch, create, patch, delete]
# The verifier's PodDisruptionBudget (more than one replica: a drain evicts one at a time).
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services, configmaps, secrets]
  verbs: [get, list, watch, create, patch, delete]
# A profiling Job's result is its pod's termination message; pods that cannot start (an init
# container failing to fetch a model) are named in the Ready condition; a telemetry token's pod is
# read to check it is a draft server of the class it reports for. Read only.
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
# Read the measured profiles ConfigSpec selects from, and publish a profiler's report once the
# operator has validated it (server-side apply: create and patch). No delete: profiles are shared
# by every tenant and outlive any one deployment.
- apiGroups: [edgespec.dev]
  resources: [edgeprofiles]
  verbs: [get, list, watch, create, patch]
# Check a draft pod's projected telemetry token (POST /v1/telemetry): TokenReview says which pod
# and node it was issued for. Grants nothing; it only asks the API server who a token is.
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
# kopf resolves the resources it serves from the CRDs at start-up (read only).
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
# kopf lists namespaces to follow the ones it is told to watch (read only).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
{{- end }}
