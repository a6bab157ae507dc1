{{/*
The node's container runtime: which init containers write its mirror
configuration (and, in the cleanup hook, remove it), and what they mount.

  runtime: containerd  configure-containerd, the host's containerd dirs at
                       their own paths (as always).
  runtime: crio        configure-crio, the host's registries.conf.d (and the
                       directory of registries.conf, read-only) at their own
                       paths; no containerd directory is mounted, so none is
                       created.
  runtime: auto        both, each with --only-if-present: it does nothing on a
                       node without its runtime. A hostPath that does not exist
                       is created by the kubelet or the runtime, so auto never
                       mounts a runtime's own directory: it mounts the host's
                       top-level directories holding the configured paths
                       (/etc by default; /run read-only, for the sockets) at
                       /host<dir>, and passes --host-root=/host.
*/}}

{{/* "true" when containerd's, or CRI-O's, configuration is written. */}}
{{- define "lifeboat.containerdOn" -}}
{{- if and .Values.containerd.configure (has .Values.runtime (list "containerd" "auto")) }}true{{ end }}
{{- end }}
{{- define "lifeboat.crioOn" -}}
{{- if and .Values.crio.configure (has .Values.runtime (list "crio" "auto")) }}true{{ end }}
{{- end }}

{{/* "true" when the pods need the host's PID namespace: SIGHUP to crio. */}}
{{- define "lifeboat.hostPID" -}}
{{- if and (include "lifeboat.crioOn" .) .Values.crio.reload }}true{{ end }}
{{- end }}

{{/* Host paths that show containerd is on a node (runtime auto). */}}
{{- define "lifeboat.containerdDetect" -}}
{{- $p := .Values.containerd.detect }}
{{- with .Values.containerd.configFile }}{{ $p = append $p . }}{{ end }}
{{- join "," ($p | uniq) }}
{{- end }}

{{/* runtime auto: the host's top-level directories to mount, as a JSON
     object dir -> "rw" (holds a directory written) or "ro". */}}
{{- define "lifeboat.hostDirs" -}}
{{- $written := list }}
{{- $read := list }}
{{- if include "lifeboat.containerdOn" . }}
{{- $written = append $written .Values.containerd.hostsDir }}
{{- $read = concat $read (compact (list .Values.containerd.configFile)) .Values.containerd.detect }}
{{- end }}
{{- if include "lifeboat.crioOn" . }}
{{- $written = append $written .Values.crio.confDir }}
{{- $read = concat $read (compact (list .Values.crio.registriesConf)) .Values.crio.detect }}
{{- end }}
{{- $dirs := dict }}
{{- range $read }}{{ $_ := set $dirs (regexFind "^/[^/]+" .) "ro" }}{{ end }}
{{- range $written }}{{ $_ := set $dirs (regexFind "^/[^/]+" .) "rw" }}{{ end }}
{{- toJson $dirs }}
{{- end }}

{{/* The volume name of a host top-level directory: host-etc. */}}
{{- define "lifeboat.hostDirVolume" -}}
{{- printf "host-%s" (regexReplaceAll "[^a-z0-9-]" (lower (trimPrefix "/" .)) "-") | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The init containers that write (or, with remove, take away) the
     runtime's configuration. Argument: dict "root" $ "remove" bool. */}}
{{- define "lifeboat.runtimeInitContainers" -}}
{{- $ := .root }}
{{- $remove := .remove }}
{{- $auto := eq $.Values.runtime "auto" }}
{{- $resources := ternary $.Values.cleanup.resources $.Values.initResources $remove }}
{{- if include "lifeboat.containerdOn" $ }}
{{- if $remove }}
- name: remove-containerd-config
{{- else }}
# One hosts.toml per registry, lifeboat first, the registry itself as
# containerd's fallback (containerd reads hosts.toml at each pull: no
# restart). The node's directories are mounted at the same paths (or under
# /host with runtime auto), so its check of containerd's config_path against
# --hosts-dir holds.
- name: configure-containerd
{{- end }}
  image: {{ include "lifeboat.image" $ | quote }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args:
    - configure-containerd
    {{- if $remove }}
    - --remove
    {{- end }}
    - --hosts-dir={{ $.Values.containerd.hostsDir }}
    - --mirror={{ include "lifeboat.mirrorURL" $ }}
    - --registries={{ include "lifeboat.registryList" $ }}
    {{- if not $remove }}
    - --dial-timeout={{ $.Values.containerd.dialTimeout }}
    - --containerd-config={{ $.Values.containerd.configFile }}
    {{- if $.Values.containerd.force }}
    - --force
    {{- end }}
    {{- end }}
    {{- if $auto }}
    - --host-root=/host
    {{- if not $remove }}
    - --only-if-present={{ include "lifeboat.containerdDetect" $ }}
    {{- end }}
    {{- end }}
  securityContext:
    {{- include "lifeboat.rootInitSecurityContext" list | nindent 4 }}
  {{- with $resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    {{- if $auto }}
    {{- include "lifeboat.hostDirMounts" $ | trim | nindent 4 }}
    {{- else }}
    {{- if and (not $remove) (include "lifeboat.containerdConfigDir" $) }}
    - name: containerd-config
      mountPath: {{ include "lifeboat.containerdConfigDir" $ }}
      readOnly: true
    {{- end }}
    - name: containerd-hosts
      mountPath: {{ $.Values.containerd.hostsDir }}
    {{- end }}
{{- end }}
{{- if include "lifeboat.crioOn" $ }}
{{- if $remove }}
- name: remove-crio-config
{{- else }}
# The drop-in 50-lifeboat.conf: lifeboat as every registry's first mirror,
# the registry itself after it; the team's entries for the same registries
# in registries.conf or earlier drop-ins merged. CRI-O reads it on SIGHUP
# (crio.reload, hostPID) or with auto_reload_registries.
- name: configure-crio
{{- end }}
  image: {{ include "lifeboat.image" $ | quote }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args:
    - configure-crio
    {{- if $remove }}
    - --remove
    {{- end }}
    - --conf-dir={{ $.Values.crio.confDir }}
    {{- if not $remove }}
    - --registries-conf={{ $.Values.crio.registriesConf }}
    - --mirror={{ include "lifeboat.mirrorURL" $ }}
    - --registries={{ include "lifeboat.registryList" $ }}
    {{- end }}
    - --reload={{ $.Values.crio.reload }}
    {{- if and $.Values.crio.force (not $remove) }}
    - --force
    {{- end }}
    {{- if $auto }}
    - --host-root=/host
    {{- if not $remove }}
    - --only-if-present={{ join "," $.Values.crio.detect }}
    {{- end }}
    {{- end }}
  securityContext:
    {{- include "lifeboat.rootInitSecurityContext" list | nindent 4 }}
  {{- with $resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    {{- if $auto }}
    {{- include "lifeboat.hostDirMounts" $ | trim | nindent 4 }}
    {{- else }}
    {{- if and (not $remove) (include "lifeboat.crioConfigDir" $) }}
    - name: crio-registries-conf
      mountPath: {{ include "lifeboat.crioConfigDir" $ }}
      readOnly: true
    {{- end }}
    - name: crio-conf-dir
      mountPath: {{ $.Values.crio.confDir }}
    {{- end }}
{{- end }}
{{- end }}

{{/* runtime auto: the host's top-level directories, under /host. */}}
{{- define "lifeboat.hostDirMounts" -}}
{{- range $dir, $mode := include "lifeboat.hostDirs" . | fromJson }}
- name: {{ include "lifeboat.hostDirVolume" $dir }}
  mountPath: /host{{ $dir }}
  {{- if eq $mode "ro" }}
  readOnly: true
  {{- end }}
{{- end }}
{{- end }}

{{/* The directory of registries.conf, mounted read-only for configure-crio;
     empty when not read or when it is the drop-in dir itself. */}}
{{- define "lifeboat.crioConfigDir" -}}
{{- with .Values.crio.registriesConf }}
{{- $dir := dir . }}
{{- if ne (clean $dir) (clean $.Values.crio.confDir) }}
{{- $dir }}
{{- end }}
{{- end }}
{{- end }}

{{/* The volumes those init containers mount. Argument: dict "root" $
     "remove" bool. */}}
{{- define "lifeboat.runtimeVolumes" -}}
{{- $ := .root }}
{{- if eq $.Values.runtime "auto" }}
{{- range $dir, $mode := include "lifeboat.hostDirs" $ | fromJson }}
# {{ $dir }} always exists: Directory, never created.
- name: {{ include "lifeboat.hostDirVolume" $dir }}
  hostPath:
    path: {{ $dir }}
    type: Directory
{{- end }}
{{- else }}
{{- if include "lifeboat.containerdOn" $ }}
{{- if not .remove }}
{{- with include "lifeboat.containerdConfigDir" $ }}
- name: containerd-config
  hostPath:
    path: {{ . }}
    type: DirectoryOrCreate
{{- end }}
{{- end }}
- name: containerd-hosts
  hostPath:
    path: {{ $.Values.containerd.hostsDir }}
    type: DirectoryOrCreate
{{- end }}
{{- if include "lifeboat.crioOn" $ }}
{{- if not .remove }}
{{- with include "lifeboat.crioConfigDir" $ }}
- name: crio-registries-conf
  hostPath:
    path: {{ . }}
    type: DirectoryOrCreate
{{- end }}
{{- end }}
- name: crio-conf-dir
  hostPath:
    path: {{ $.Values.crio.confDir }}
    type: DirectoryOrCreate
{{- end }}
{{- end }}
{{- end }}

{{/* What lifeboat itself checks of the runtime's configuration
     (lifeboat_node_config_ok, and lifeboat doctor run in the pod): the
     init containers' directories, read-only. */}}
{{- define "lifeboat.checkMounts" -}}
{{- if eq .Values.runtime "auto" }}
{{- range $dir, $mode := include "lifeboat.hostDirs" . | fromJson }}
- name: {{ include "lifeboat.hostDirVolume" $dir }}
  mountPath: /host{{ $dir }}
  readOnly: true
{{- end }}
{{- else }}
{{- if include "lifeboat.containerdOn" . }}
{{- with include "lifeboat.containerdConfigDir" . }}
- name: containerd-config
  mountPath: {{ . }}
  readOnly: true
{{- end }}
- name: containerd-hosts
  mountPath: {{ .Values.containerd.hostsDir }}
  readOnly: true
{{- end }}
{{- if include "lifeboat.crioOn" . }}
- name: crio-conf-dir
  mountPath: {{ .Values.crio.confDir }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* The nodeCheck keys of lifeboat.yaml: the same paths the init
     containers write. */}}
{{- define "lifeboat.nodeCheck" -}}
{{- if or (include "lifeboat.containerdOn" .) (include "lifeboat.crioOn" .) }}
nodeCheck:
  {{- if include "lifeboat.containerdOn" . }}
  containerdHostsDir: {{ .Values.containerd.hostsDir | quote }}
  containerdConfig: {{ .Values.containerd.configFile | quote }}
  {{- end }}
  {{- if include "lifeboat.crioOn" . }}
  crioConfDir: {{ .Values.crio.confDir | quote }}
  {{- end }}
  {{- if eq .Values.runtime "auto" }}
  hostRoot: /host
  onlyIfPresent: true
  {{- end }}
{{- end }}
{{- end }}
