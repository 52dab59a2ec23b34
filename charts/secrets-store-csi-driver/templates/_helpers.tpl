{{- define "sscsi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sscsi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "sscsi.name" . -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object: the chart's own, then commonLabels. */}}
{{- define "sscsi.labels" -}}
app.kubernetes.io/name: {{ include "sscsi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* An image reference from {repository, tag, digest}: the digest, when set, pins the image. */}}
{{- define "sscsi.image" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end -}}

{{/*
Pod labels: the chart's labels and commonLabels, then the given extra labels (later wins), then
`app`, which selectors use and nothing may override.
*/}}
{{- define "sscsi.podLabels" -}}
{{- $labels := mustMergeOverwrite (fromYaml (include "sscsi.labels" .root)) (.extra | default dict) -}}
{{- $_ := set $labels "app" .app -}}
{{- toYaml $labels -}}
{{- end -}}
