{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "flexgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name if it already contains the chart name. */}}
{{- define "flexgate.fullname" -}}
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

{{- define "flexgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select this release's pods (immutable in a Deployment: do not change `track` on upgrade). */}}
{{- define "flexgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flexgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- with .Values.track }}
track: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "flexgate.labels" -}}
helm.sh/chart: {{ include "flexgate.chart" . }}
{{ include "flexgate.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | toString | trunc 63 | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: flexgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "flexgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flexgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "flexgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/* Name of the ConfigMap holding flexgate.yaml (ours unless existingConfigMap is set). */}}
{{- define "flexgate.configMapName" -}}
{{- default (printf "%s-config" (include "flexgate.fullname" .)) .Values.existingConfigMap }}
{{- end }}
