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

{{/* The Service's fully qualified DNS name: <svc>.<ns>.svc.<clusterDomain>. */}}
{{- define "sesame.serviceFqdn" -}}
{{- printf "%s.%s" (include "sesame.serviceHost" .) (trimSuffix "." .Values.clusterDomain) }}
{{- end }}

{{/* Every DNS name of the Service: the serving certificate's SANs. */}}
{{- define "sesame.serviceDnsNames" -}}
{{- $fullname := include "sesame.fullname" . }}
{{- list $fullname (printf "%s.%s" $fullname .Release.Namespace) (include "sesame.serviceHost" .) (include "sesame.serviceFqdn" .) | toJson }}
{{- end }}

{{- define "sesame.postgres" -}}
{{- eq .Values.database.type "postgresql" }}
{{- end }}

{{/* Value combinations the schema cannot express: fail the render with a clear message. */}}
{{- define "sesame.validate" -}}
{{- $db := .Values.database }}
{{- if and (eq $db.type "sqlite") (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount=%d needs database.type=postgresql: SQLite lives on one volume and serves exactly one control plane replica (set replicaCount=1, or configure database.postgresql)" (int .Values.replicaCount)) }}
{{- end }}
{{- if eq $db.type "postgresql" }}
{{- $pg := $db.postgresql }}
{{- if not $pg.dsnSecret.name }}
{{- if or (not $pg.host) (not $pg.passwordSecret.name) }}
{{- fail "database.type=postgresql needs database.postgresql.dsnSecret.name (a Secret holding the DSN) or database.postgresql.host and database.postgresql.passwordSecret.name" }}
{{- end }}
{{- if and (hasPrefix "verify-" $pg.sslMode) (not $pg.caSecret.name) }}
{{- fail (printf "database.postgresql.sslMode=%s verifies the server against a CA: set database.postgresql.caSecret.name (or sslMode=require)" $pg.sslMode) }}
{{- end }}
{{- end }}
{{- end }}
{{- if lt (int .Values.webhook.certValidityDays) (mul 3 (int .Values.webhook.leafValidityDays)) }}
{{- fail (printf "webhook.certValidityDays=%d must be at least 3 x webhook.leafValidityDays=%d: the CA outlives its leaves" (int .Values.webhook.certValidityDays) (int .Values.webhook.leafValidityDays)) }}
{{- end }}
{{- if eq (int .Values.injector.proxyPort) (int .Values.injector.adminPort) }}
{{- fail (printf "injector.proxyPort and injector.adminPort are both %d: the proxy needs two ports" (int .Values.injector.proxyPort)) }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.webhook.enabled (not .Values.networkPolicy.apiServerCIDRs) }}
{{- fail "networkPolicy.enabled=true blocks the API server's webhook calls unless networkPolicy.apiServerCIDRs lists their source addresses (your control-plane node or endpoint CIDRs; 0.0.0.0/0 admits any source on the webhook port)" }}
{{- end }}
{{- end }}

{{/* Secrets the bootstrap Job creates and keeps current (JSON list; existing Secrets are left out). */}}
{{- define "sesame.bootstrapSecrets" -}}
{{- $names := list }}
{{- if not .Values.kek.existingSecret }}{{- $names = append $names (include "sesame.kekSecret" .) }}{{- end }}
{{- if not .Values.bootstrapApiKey.existingSecret }}{{- $names = append $names (include "sesame.bootstrapSecret" .) }}{{- end }}
{{- if not .Values.webhook.certManager.enabled }}
{{- $names = append $names (include "sesame.tlsSecret" .) }}
{{- $names = append $names (printf "%s-ca" (include "sesame.tlsSecret" .)) }}
{{- end }}
{{- $names | toJson }}
{{- end }}

{{/* sesame-k8s-bootstrap's arguments (dict "root" . "phase" "pre"|"post"). */}}
{{- define "sesame.bootstrapArgs" -}}
{{- $ := .root }}
- --namespace={{ $.Release.Namespace }}
{{- if not $.Values.kek.existingSecret }}
- --kek-secret={{ include "sesame.kekSecret" $ }}
{{- end }}
{{- if not $.Values.bootstrapApiKey.existingSecret }}
- --bootstrap-secret={{ include "sesame.bootstrapSecret" $ }}
{{- end }}
{{- if not $.Values.webhook.certManager.enabled }}
- --tls-secret={{ include "sesame.tlsSecret" $ }}
- --dns-names={{ include "sesame.serviceDnsNames" $ | fromJsonArray | join "," }}
- --ca-days={{ int $.Values.webhook.certValidityDays }}
- --leaf-days={{ int $.Values.webhook.leafValidityDays }}
{{- if and $.Values.webhook.enabled (eq .phase "post") }}
- --webhook={{ include "sesame.fullname" $ }}
{{- end }}
{{- end }}
- --labels=app.kubernetes.io/name={{ include "sesame.name" $ }},app.kubernetes.io/instance={{ $.Release.Name }},app.kubernetes.io/part-of=sesame
{{- end }}
