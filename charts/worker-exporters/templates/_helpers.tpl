{{/* The labels every object carries, and the pods' selector. */}}
{{- define "worker-exporters.selector" -}}
app.kubernetes.io/name: worker-exporters
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The sources that are on, with their ports. */}}
{{- define "worker-exporters.ports" -}}
{{- range $name := list "cpu" "gpu" "ffmpeg" "docker" }}
{{- $port := int (get $.Values.ports $name) }}
{{- if $port }}
- {name: {{ $name }}, containerPort: {{ $port }}}
{{- end }}
{{- end }}
{{- end }}

{{- define "worker-exporters.secret" -}}
{{- .Values.ingestToken.existingSecret | default (printf "%s-ingest" .Release.Name) }}
{{- end }}
