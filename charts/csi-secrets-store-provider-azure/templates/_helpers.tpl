{{- define "akv.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "akv.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- include "akv.name" . -}}
{{- end -}}
{{- end -}}

{{- define "akv.labels" -}}
app.kubernetes.io/name: {{ include "akv.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* An image reference from {repository, tag, digest}: the digest, when set, pins the image. */}}
{{- define "akv.image" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end -}}

{{/*
The providers folder, set once: the driver dependency's linux.providersDir when this chart installs
the driver (the provider follows it), else linux.providersDir. Both set and different would leave
the driver unable to find the provider's socket, so that fails the render.
*/}}
{{- define "akv.providersDir" -}}
{{- $driver := index .Values "secrets-store-csi-driver" | default dict -}}
{{- $driverDir := (($driver.linux | default dict).providersDir) | default "" -}}
{{- $own := .Values.linux.providersDir | default "" -}}
{{- if and $driver.install $driverDir -}}
{{- if and $own (ne $own $driverDir) -}}
{{- fail (printf "linux.providersDir (%s) differs from secrets-store-csi-driver.linux.providersDir (%s): the driver would not find the provider's socket. Set only secrets-store-csi-driver.linux.providersDir; the provider follows it" $own $driverDir) -}}
{{- end -}}
{{- $driverDir -}}
{{- else -}}
{{- $own | default "/var/run/secrets-store-csi-providers" -}}
{{- end -}}
{{- end -}}

{{/* A list of strings as CEL string literals separated by commas: 'a', 'b'. */}}
{{- define "akv.celStrings" -}}
{{- $out := list -}}
{{- range . -}}{{- $out = append $out (printf "'%s'" .) -}}{{- end -}}
{{- join ", " $out -}}
{{- end -}}
