{{/* Chart name, truncated to a DNS label. */}}
{{- define "lifeboat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; leaves room for the "-cleanup-wait" suffix. */}}
{{- define "lifeboat.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lifeboat.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lifeboat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lifeboat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The cleanup hook's pods: a different name, so that no selector of
     lifeboat's own (DaemonSet, metrics Service) matches them. */}}
{{- define "lifeboat.cleanupSelectorLabels" -}}
app.kubernetes.io/name: {{ include "lifeboat.name" . }}-cleanup
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lifeboat.labels" -}}
helm.sh/chart: {{ include "lifeboat.chart" . }}
{{ include "lifeboat.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lifeboat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lifeboat.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest of {repository, tag, digest}; tag defaults to $default. */}}
{{- define "lifeboat.imageRef" -}}
{{- $img := index . 0 }}{{- $default := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $default $img.tag | toString) }}
{{- end }}
{{- end }}

{{- define "lifeboat.image" -}}
{{- include "lifeboat.imageRef" (list .Values.image .Chart.AppVersion) }}
{{- end }}

{{/* Every mirrored registry: registries then extraUpstreams, checked. */}}
{{- define "lifeboat.upstreams" -}}
{{- $all := concat .Values.registries .Values.extraUpstreams }}
{{- if not $all }}
{{- fail "registries and extraUpstreams are both empty: lifeboat needs at least one registry to mirror" }}
{{- end }}
{{- $seen := dict }}
{{- range $all }}
{{- if hasKey $seen .name }}
{{- fail (printf "registry %s is listed twice in registries/extraUpstreams" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- end }}
{{- if not (hasKey $seen .Values.config.defaultRegistry) }}
{{- fail (printf "config.defaultRegistry %q is not among registries/extraUpstreams" .Values.config.defaultRegistry) }}
{{- end }}
{{- toJson $all }}
{{- end }}

{{/* NAME=SERVER_URL for every registry, comma-separated, for
     configure-containerd --registries: the url is containerd's fallback. */}}
{{- define "lifeboat.registryList" -}}
{{- $items := list }}
{{- range (include "lifeboat.upstreams" . | fromJsonArray) }}
{{- $items = append $items (printf "%s=%s" .name .url) }}
{{- end }}
{{- join "," $items }}
{{- end }}

{{/* lifeboat's three ports, checked: they share the node's port space
     (hostNetwork), so two equal ones would have one listener fail to bind
     (lifeboat refuses them too). JSON Schema cannot compare two values, so
     the check is here, at render, before anything reaches the cluster. */}}
{{- define "lifeboat.checkPorts" -}}
{{- $seen := dict }}
{{- $ports := dict "registryPort" .Values.registryPort "metrics.port" .Values.metrics.port "adminPort" .Values.adminPort }}
{{- if .Values.peers.enabled }}{{ $_ := set $ports "peers.port" .Values.peers.port }}{{ end }}
{{- range $key, $port := $ports }}
{{- $p := toString (int $port) }}
{{- if hasKey $seen $p }}
{{- fail (printf "%s and %s are both %s: lifeboat's listeners need a port each" (get $seen $p) $key $p) }}
{{- end }}
{{- $_ := set $seen $p $key }}
{{- end }}
{{- end }}

{{/* host:port, with brackets for an IPv6 host. */}}
{{- define "lifeboat.hostPort" -}}
{{- $host := index . 0 }}{{- $port := index . 1 }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int $port) }}
{{- else }}
{{- printf "%s:%d" $host (int $port) }}
{{- end }}
{{- end }}

{{- define "lifeboat.mirrorURL" -}}
{{- printf "http://127.0.0.1:%d" (int .Values.registryPort) }}
{{- end }}

{{/* The directory of containerd's config file, mounted read-only for
     configure-containerd's config_path check; empty when there is no check
     or when it is the hosts dir itself. */}}
{{- define "lifeboat.containerdConfigDir" -}}
{{- with .Values.containerd.configFile }}
{{- $dir := dir . }}
{{- if ne (clean $dir) (clean $.Values.containerd.hostsDir) }}
{{- $dir }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lifeboat.metricsServiceName" -}}
{{- printf "%s-metrics" (include "lifeboat.fullname" .) }}
{{- end }}

{{/* Per-upstream and top-level timeouts: only the keys set, durations quoted. */}}
{{- define "lifeboat.timeouts" -}}
{{- range $k := list "dial" "tlsHandshake" "responseHeader" "revalidate" "request" "bodyStall" }}
{{- with (get $ $k) }}
{{ $k }}: {{ . | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lifeboat.breaker" -}}
{{- with .failures }}
failures: {{ . | int }}
{{- end }}
{{- range $k := list "backoff" "maxBackoff" }}
{{- with (get $ $k) }}
{{ $k }}: {{ . | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The init containers' security context: root (the host dir is root's),
     no capabilities beyond the listed ones, read-only root filesystem. */}}
{{- define "lifeboat.rootInitSecurityContext" -}}
runAsUser: 0
runAsGroup: 0
runAsNonRoot: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
  {{- with . }}
  add:
    {{- toYaml . | nindent 4 }}
  {{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The cluster tier's settings: this pod's IP (the node's, hostNetwork)
     and node name from the downward API. */}}
{{- define "lifeboat.peerEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: LIFEBOAT_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: LIFEBOAT_PEER_LISTEN
  value: "$(POD_IP):{{ int .Values.peers.port }}"
- name: LIFEBOAT_PEER_SERVICE
  value: "{{ .Release.Namespace }}/{{ include "lifeboat.fullname" . }}-peers"
- name: LIFEBOAT_PEER_REPLICAS
  value: {{ .Values.peers.replicas | int | quote }}
- name: LIFEBOAT_PEER_TOKEN_FILE
  value: /etc/lifeboat/peer/token
{{- end }}
