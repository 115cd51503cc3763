{{- define "oomlens.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "oomlens.agent" -}}{{ include "oomlens.fullname" . | trunc 57 | trimSuffix "-" }}-agent{{- end -}}
{{- define "oomlens.collector" -}}{{ include "oomlens.fullname" . | trunc 53 | trimSuffix "-" }}-collector{{- end -}}

{{- define "oomlens.labels" -}}
app.kubernetes.io/part-of: oomlens
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "oomlens.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* With TLS and httpApi auto, the API and pages are served over HTTPS on
port 7463 (--web-listen); "on" keeps them in clear on the metrics port for a
TLS-terminating proxy. Non-empty means yes. */}}
{{- define "oomlens.httpsWeb" -}}
{{- if and .Values.tls.enabled (eq (toString .Values.collector.httpApi) "auto") -}}true{{- end -}}
{{- end -}}
