{{/* Chart name, truncated to the 63 characters Kubernetes names allow. */}}
{{- define "vocstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name prefix: <release>-vocstream, or the release name if it says vocstream. */}}
{{- define "vocstream.fullname" -}}
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

{{- define "vocstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels shared by every object. */}}
{{- define "vocstream.labels" -}}
helm.sh/chart: {{ include "vocstream.chart" . }}
app.kubernetes.io/name: {{ include "vocstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vocstream
{{- end }}

{{/* Selector labels of one component (api, ingest, ..., lag-exporter): dict "root" . "component" name */}}
{{- define "vocstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vocstream.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "vocstream.componentName" -}}
{{- printf "%s-%s" (include "vocstream.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vocstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "vocstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vocstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vocstream.secretName" -}}
{{- if .Values.secrets.create }}
{{- printf "%s-secrets" (include "vocstream.fullname" .) }}
{{- else }}
{{- required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{/* Environment every vocstream container gets: the ConfigMap. Secrets are not loaded
whole: each component gets only its own keys (vocstream.secretEnv). */}}
{{- define "vocstream.envFrom" -}}
- configMapRef:
    name: {{ include "vocstream.fullname" . }}-config
{{- end }}

{{/*
The Secret keys one component needs, as env entries (secrets.keys.<component>): a pod never
receives a secret it does not use. Called with a dict: root, component.
*/}}
{{- define "vocstream.secretEnv" -}}
{{- $root := .root -}}
{{- $keys := required (printf "secrets.keys.%s is required" .component) (index $root.Values.secrets.keys .component) -}}
{{- $secret := include "vocstream.secretName" $root -}}
{{- $env := list -}}
{{- range $keys.required }}
{{- $env = append $env (dict "name" . "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" .))) }}
{{- end }}
{{- range $keys.optional }}
{{- $env = append $env (dict "name" . "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" . "optional" true))) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* Pod-level settings shared by every Deployment and the init Job. */}}
{{- define "vocstream.podSpecCommon" -}}
serviceAccountName: {{ include "vocstream.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The read-only root filesystem needs a writable /tmp. */}}
{{- define "vocstream.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}
{{- define "vocstream.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}
