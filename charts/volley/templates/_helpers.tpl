{{/* The chart name, overridable. */}}
{{- define "volley.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: RELEASE-volley unless the release name has it. */}}
{{- define "volley.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Common labels. */}}
{{- define "volley.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "volley.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of the operator pods. */}}
{{- define "volley.selectorLabels" -}}
app.kubernetes.io/name: volley-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "volley.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "volley.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Comma-separated names of image pull secrets given as `[{name: regcred}]`. */}}
{{- define "volley.secretNames" -}}
{{- $names := list }}
{{- range . }}
{{- $names = append $names .name }}
{{- end }}
{{- join "," $names }}
{{- end }}

{{/* The aggregator URL as runner pods reach it: this release's Service. */}}
{{- define "volley.aggregatorURL" -}}
{{- printf "http://%s.%s.svc:%v" (include "volley.fullname" .) .Release.Namespace .Values.service.aggregatorPort }}
{{- end }}

{{/* The operator's rules for LoadTests wherever they live (operator/src/rbac.rs's
`rules`; a cargo test checks the rendering in deploy/ matches). */}}
{{- define "volley.rules" -}}
- apiGroups: ["volley.dev"]
  resources: ["loadtests"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["volley.dev"]
  resources: ["loadtests/status"]
  verbs: ["patch"]
- apiGroups: ["volley.dev"]
  resources: ["loadtests/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "update"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* The operator's rules in its own namespace: its Lease and the leader label on its own pod
(operator/src/rbac.rs's `leader_rules`; a cargo test checks the rendering in deploy/ matches). */}}
{{- define "volley.leaderRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["patch"]
{{- end }}

{{/* The webhook's own rules (operator/src/rbac.rs's `webhook_rules`; a cargo test checks the
rendering in deploy/volley-operator-webhook.yaml matches): SubjectAccessReviews for the Secret
check, and, when the operator generates its certificate, the caBundle of its one
ValidatingWebhookConfiguration. */}}
{{- define "volley.webhookRules" -}}
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
{{- if not .Values.webhook.certManager.enabled }}
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingwebhookconfigurations"]
  resourceNames: [{{ include "volley.fullname" . | quote }}]
  verbs: ["get", "patch"]
{{- end }}
{{- end }}

{{/* The webhook's serving certificate Secret (cert-manager writes it). */}}
{{- define "volley.webhookCertSecret" -}}
{{ include "volley.fullname" . }}-webhook-tls
{{- end }}
