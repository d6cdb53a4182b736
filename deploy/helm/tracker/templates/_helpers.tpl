{{/*
Names, labels and the pieces every component template shares.
Component templates call these with a dict: root (the top context), component (its name)
and values (its block of values).
*/}}

{{- define "tracker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-wide name; truncated so "-<component>" suffixes still fit in 63 characters. */}}
{{- define "tracker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tracker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tracker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tracker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tracker.labels" -}}
helm.sh/chart: {{ include "tracker.chart" . }}
{{ include "tracker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tracker-services
{{- end }}

{{/* dict root component */}}
{{- define "tracker.componentSelectorLabels" -}}
{{ include "tracker.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* dict root component */}}
{{- define "tracker.componentLabels" -}}
{{ include "tracker.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* dict root component */}}
{{- define "tracker.componentFullname" -}}
{{- printf "%s-%s" (include "tracker.fullname" .root) .component }}
{{- end }}

{{- define "tracker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tracker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tracker.configMapName" -}}
{{- printf "%s-config" (include "tracker.fullname" .) }}
{{- end }}

{{- define "tracker.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "tracker.fullname" .) }}
{{- end }}
{{- end }}

{{/* dict root values: the component's image block is merged over the global one. */}}
{{- define "tracker.image" -}}
{{- $image := mergeOverwrite (deepCopy .root.Values.image) (.values.image | default dict) }}
{{- printf "%s:%s" $image.repository (toString ($image.tag | default .root.Chart.AppVersion)) }}
{{- end }}

{{- define "tracker.imagePullPolicy" -}}
{{- $image := mergeOverwrite (deepCopy .root.Values.image) (.values.image | default dict) }}
{{- $image.pullPolicy | default "IfNotPresent" }}
{{- end }}

{{/* A port from the config block, as a number: (list root "TRACKER_QUERY_PORT"). */}}
{{- define "tracker.configPort" -}}
{{- $root := index . 0 }}
{{- $key := index . 1 }}
{{- $value := index $root.Values.config $key | required (printf "config.%s is required" $key) }}
{{- toString $value | atoi }}
{{- end }}

{{/* Data of the ConfigMap; also hashed into checksum/config. */}}
{{- define "tracker.configData" -}}
{{- range $key, $value := .Values.config }}
{{ $key }}: {{ toString $value | quote }}
{{- end }}
{{- end }}

{{/* Data of the Secret: only the keys that are set. */}}
{{- define "tracker.secretData" -}}
{{- range $key, $value := .Values.secrets }}
{{- if $value }}
{{ $key }}: {{ toString $value | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Fails the render on values that would give a broken deployment. */}}
{{- define "tracker.validate" -}}
{{- $grace := add (int (.Values.config.TRACKER_SHUTDOWN_GRACE_S | default 10)) (int (.Values.config.TRACKER_SHUTDOWN_DRAIN_S | default 0)) }}
{{- range $component := list "collector" "query" "health" "fetcher" "worker" }}
{{- $values := index $.Values $component | default dict }}
{{- $termination := int ($values.terminationGracePeriodSeconds | default $.Values.terminationGracePeriodSeconds) }}
{{- if and $values.enabled (le $termination $grace) }}
{{- fail (printf "%s: terminationGracePeriodSeconds (%d) must exceed config.TRACKER_SHUTDOWN_DRAIN_S + TRACKER_SHUTDOWN_GRACE_S (%d)" $component $termination $grace) }}
{{- end }}
{{- end }}
{{- if and .Values.fetcher.enabled (not (or .Values.fetcher.existingSecret .Values.fetcher.accounts)) }}
{{- fail "fetcher.enabled needs Apple accounts: set fetcher.existingSecret (a Secret of findmy session files, keys ending in .json) or fetcher.accounts (the files themselves); see docs/deploy.md" }}
{{- end }}
{{- range $name, $_ := .Values.fetcher.accounts }}
{{- if not (hasSuffix ".json" $name) }}
{{- fail (printf "fetcher.accounts: key %q must end in .json (one findmy session file per Apple account)" $name) }}
{{- end }}
{{- end }}
{{- range $key := list "TRACKER_DATABASE_URL" "TRACKER_REDIS_URL" "TRACKER_JWT_SIGNING_KEY" "TRACKER_KEK_RING" "TRACKER_PAGE_TOKEN_KEYS" "DB_PASSWORD" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "%s is a secret: set it under secrets (or in existingSecret), not config" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A container's envFrom: dict configMap secret (their names). */}}
{{- define "tracker.envFrom" -}}
- configMapRef:
    name: {{ .configMap }}
- secretRef:
    name: {{ .secret }}
{{- end }}

{{/* Native gRPC probes on the health port: dict root values. */}}
{{- define "tracker.probes" -}}
{{- $probes := mergeOverwrite (deepCopy .root.Values.probes) (.values.probes | default dict) }}
{{- $port := include "tracker.configPort" (list .root "TRACKER_HEALTH_PORT") | int -}}
startupProbe:
  grpc:
    port: {{ $port }}
    service: liveness
  {{- toYaml $probes.startup | nindent 2 }}
readinessProbe:
  grpc:
    port: {{ $port }}
    service: ""
  {{- toYaml $probes.readiness | nindent 2 }}
livenessProbe:
  grpc:
    port: {{ $port }}
    service: liveness
  {{- toYaml $probes.liveness | nindent 2 }}
{{- end }}

{{/*
A server Deployment. dict with:
  root, component, values (the component's block),
  command (list), ports (list of dict name/port: the container ports).
*/}}
{{- define "tracker.deployment" -}}
{{- $root := .root }}
{{- $values := .values -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "tracker.componentFullname" . }}
  labels:
    {{- include "tracker.componentLabels" . | nindent 4 }}
spec:
  {{- if not ($values.autoscaling | default dict).enabled }}
  replicas: {{ $values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "tracker.componentSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tracker.componentSelectorLabels" . | nindent 8 }}
        {{- with $values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "tracker.configData" $root | sha256sum }}
        {{- if not $root.Values.existingSecret }}
        checksum/secret: {{ include "tracker.secretData" $root | sha256sum }}
        {{- end }}
        {{- $metricsPort := include "tracker.configPort" (list $root "TRACKER_METRICS_PORT") | atoi }}
        {{- if $metricsPort }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $metricsPort | quote }}
        prometheus.io/path: /metrics
        {{- end }}
        {{- with $values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "tracker.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds | default $root.Values.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .component }}
          image: {{ include "tracker.image" . | quote }}
          imagePullPolicy: {{ include "tracker.imagePullPolicy" . }}
          command:
            {{- toYaml .command | nindent 12 }}
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
            {{- $metricsPort := include "tracker.configPort" (list $root "TRACKER_METRICS_PORT") | atoi }}
            {{- if $metricsPort }}
            - name: metrics
              containerPort: {{ $metricsPort }}
              protocol: TCP
            {{- end }}
          envFrom:
            {{- include "tracker.envFrom" (dict "configMap" (include "tracker.configMapName" $root) "secret" (include "tracker.secretName" $root)) | nindent 12 }}
          {{- with .extraEnv }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- include "tracker.probes" . | nindent 10 }}
          resources:
            {{- toYaml ($values.resources | default dict) | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with .extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with .extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "tracker.topologySpread" . | nindent 6 }}
{{- end }}

{{/* topologySpreadConstraints of a component's pods: dict root component values. */}}
{{- define "tracker.topologySpread" -}}
{{- if .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .values.topologySpreadConstraints | nindent 2 }}
{{- else if .root.Values.topologySpread.enabled }}
{{- $spread := .root.Values.topologySpread }}
{{- $ctx := . }}
topologySpreadConstraints:
  {{- range $spread.topologyKeys }}
  - maxSkew: {{ $spread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "tracker.componentSelectorLabels" $ctx | nindent 8 }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the fetcher's Apple account sessions. */}}
{{- define "tracker.findmySecretName" -}}
{{- .Values.fetcher.existingSecret | default (printf "%s-findmy-accounts" (include "tracker.fullname" .)) }}
{{- end }}

{{/*
A server's Service: one port named grpc. dict with root, component, values, targetPort
(the container port name it forwards to).
*/}}
{{- define "tracker.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "tracker.componentFullname" . }}
  labels:
    {{- include "tracker.componentLabels" . | nindent 4 }}
  {{- with .values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .values.service.type | default "ClusterIP" }}
  selector:
    {{- include "tracker.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .values.service.port }}
      targetPort: {{ .targetPort }}
      protocol: TCP
{{- end }}
