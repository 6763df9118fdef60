{{/* Chart name, truncated to a DNS label. */}}
{{- define "sesame.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "sesame.fullname" -}}
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

{{- define "sesame.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "sesame.labels" -}}
helm.sh/chart: {{ include "sesame.chart" . }}
{{ include "sesame.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sesame
{{- end }}

{{/* Selector labels. */}}
{{- define "sesame.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sesame.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: control-plane
{{- end }}

{{- define "sesame.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sesame.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sesame.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "sesame.proxyImage" -}}
{{- $p := .Values.injector.proxyImage }}
{{- printf "%s:%s" $p.repository (default .Chart.AppVersion $p.tag) }}
{{- end }}

{{/* Secret names. */}}
{{- define "sesame.kekSecret" -}}
{{- default (printf "%s-kek" (include "sesame.fullname" .)) .Values.kek.existingSecret }}
{{- end }}
{{- define "sesame.bootstrapSecret" -}}
{{- default (printf "%s-bootstrap" (include "sesame.fullname" .)) .Values.bootstrapApiKey.existingSecret }}
{{- end }}
{{- define "sesame.tlsSecret" -}}
{{- printf "%s-webhook-tls" (include "sesame.fullname" .) }}
{{- end }}

{{/* The Service's in-cluster DNS name (the webhook certificate's name). */}}
{{- define "sesame.serviceHost" -}}
{{- printf "%s.%s.svc" (include "sesame.fullname" .) .Release.Namespace }}
{{- end }}

{{- define "sesame.controlPlaneUrl" -}}
{{- default (printf "https://%s:%d" (include "sesame.serviceHost" .) (int .Values.service.port)) .Values.injector.controlPlaneUrl }}
{{- end }}
