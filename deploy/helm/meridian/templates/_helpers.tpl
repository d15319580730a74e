{{/* Names and labels. */}}

{{- define "meridian.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-edge", or "<release>-meridian-edge" when the release name lacks the chart's. */}}
{{- define "meridian.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "meridian.name" . -}}
{{- $base := ternary .Release.Name (printf "%s-%s" .Release.Name $name) (contains $name .Release.Name) -}}
{{- printf "%s-edge" $base | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "meridian.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meridian.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: edge
{{- end -}}

{{- define "meridian.labels" -}}
{{ include "meridian.selectorLabels" . }}
app.kubernetes.io/part-of: meridian
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "meridian.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "meridian.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
TOML rendering of values (edge.toml is generated from .Values.config).
Strings are written as JSON strings, which are valid TOML basic strings. Helm reads numbers
from YAML as float64: whole ones are written as integers (so 1000000 does not become 1e+06,
which the edge's integer keys would reject), others as floats.
*/}}
{{- define "meridian.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "meridian.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (floor $v) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- $v -}}
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v -}}{{- if $i }}, {{ end -}}{{- include "meridian.toml.value" $e -}}{{- end -}}]
{{- else if kindIs "map" $v -}}
{ {{- range $i, $k := keys $v | sortAlpha -}}{{- if $i }},{{ end }} {{ include "meridian.toml.key" $k }} = {{ include "meridian.toml.value" (index $v $k) }}{{- end }} }
{{- else -}}
{{- fail (printf "config: cannot write %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/*
`key = value` lines of a map, sorted; null values are left out. An API key's `expires` is a
TOML offset date-time, not a string (YAML hands it over as a string either way).
*/}}
{{- define "meridian.toml.pairs" -}}
{{- range $k := keys . | sortAlpha }}
{{- $v := index $ $k }}
{{- if kindIs "invalid" $v }}
{{- else if and (eq $k "expires") (kindIs "string" $v) (regexMatch "^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2})$" $v) }}
{{ $k }} = {{ $v }}
{{- else }}
{{ include "meridian.toml.key" $k }} = {{ include "meridian.toml.value" $v }}
{{- end }}
{{- end }}
{{- end -}}

{{/* A [table] with the map's pairs; nothing for an empty or missing map. */}}
{{- define "meridian.toml.table" -}}
{{- $name := index . 0 -}}
{{- $m := index . 1 -}}
{{- if $m }}

[{{ $name }}]
{{- include "meridian.toml.pairs" $m }}
{{- end }}
{{- end -}}

{{/* The namespaces that kubernetes discovery sources (without their own kubeconfig) watch. */}}
{{- define "meridian.discoveryNamespaces" -}}
{{- $ns := list -}}
{{- range .Values.config.discovery -}}
{{- if and (eq (toString .kind) "kubernetes") (not .kubeconfig) -}}
{{- $ns = append $ns (required "config.discovery: a kubernetes source needs `namespace`" .namespace) -}}
{{- end -}}
{{- end -}}
{{- $ns | uniq | sortAlpha | toJson -}}
{{- end -}}
