{{- define "gatehouse.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gatehouse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gatehouse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "gatehouse.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* More than one pod can run at once: fixed replicas above one, or autoscaling. */}}
{{- define "gatehouse.multiInstance" -}}
{{- if or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{/*
Several instances must share state in PostgreSQL: SQLite in each pod's /data would give each its own
keys, tokens and revocations (docs/operations.md, many instances).
*/}}
{{- define "gatehouse.checkStore" -}}
{{- if include "gatehouse.multiInstance" . -}}
{{- $store := .Values.config.store | default dict -}}
{{- if not $store.postgres -}}
{{- fail "replicaCount > 1 or autoscaling needs config.store.postgres (and store.redis is recommended): each pod would otherwise keep its own keys, tokens and revocations in SQLite" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Service's names in the cluster: ingress-nginx's auth-url and Traefik's ForwardAuth call Gatehouse by them. */}}
{{- define "gatehouse.serviceHosts" -}}
{{- $fullname := include "gatehouse.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $fullname (printf "%s.%s" $fullname $ns) (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s.svc.%s" $fullname $ns .Values.clusterDomain) | toJson -}}
{{- end -}}

{{/*
The config file: the user's config with the container's paths and listeners, and the Service's names
added to server.allowed_hosts (the data port answers 421 to a Host it does not know).
*/}}
{{- define "gatehouse.config" -}}
{{- $adminHost := ternary "0.0.0.0" "127.0.0.1" .Values.admin.listenOnPodIP -}}
{{- $config := deepCopy .Values.config -}}
{{- $server := $config.server | default dict -}}
{{- $hosts := concat (include "gatehouse.serviceHosts" . | fromJsonArray) ($server.allowed_hosts | default list) | uniq -}}
{{- $_ := set $server "allowed_hosts" $hosts -}}
{{- $fixed := dict "data_dir" "/data" "listen" (dict "host" "0.0.0.0" "port" (int .Values.ports.http)) "admin" (dict "host" $adminHost "port" (int .Values.ports.admin)) "server" $server -}}
{{- toYaml (merge $fixed $config) -}}
{{- end -}}
