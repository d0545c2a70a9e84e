{{/*
The synchronous gRPC call graph: caller -> the services it calls. Everything that depends
on who calls whom comes from this one table: the CONTINUUM_<CALLEE>_TARGET variables of
each caller, the callers' egress and the callees' ingress network policies.
*/}}
{{- define "continuum.callGraph" -}}
identity: []
profile: [identity]
cart: [inventory]
inventory: []
recommendation: [profile, inventory]
notification: [identity, profile, cart, inventory, recommendation]
{{- end }}

{{/* The six services in a fixed order. */}}
{{- define "continuum.serviceNames" -}}
[identity, profile, cart, inventory, recommendation, notification]
{{- end }}

{{- define "continuum.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "continuum.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 38 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 38 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 38 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "continuum.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. Call with the root context. */}}
{{- define "continuum.labels" -}}
helm.sh/chart: {{ include "continuum.chart" . }}
app.kubernetes.io/name: {{ include "continuum.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: continuum
{{- end }}

{{/* Selector labels of one component. Call with (dict "root" $ "component" NAME). */}}
{{- define "continuum.selectorLabels" -}}
app.kubernetes.io/name: {{ include "continuum.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Name of a component's objects: <fullname>-<component>. */}}
{{- define "continuum.componentName" -}}
{{- printf "%s-%s" (include "continuum.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "continuum.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}
{{- include "continuum.componentName" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{- define "continuum.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
A service's effective settings: the chart-wide defaults, with the keys the service sets
winning one level deep (so services.<name>.autoscaling.enabled=false does turn it off).
Call with (dict "root" $ "name" NAME); returns YAML.
*/}}
{{- define "continuum.serviceValues" -}}
{{- $root := .root }}
{{- $svc := index $root.Values.services .name }}
{{- $out := dict "name" .name }}
{{- range $key := list "replicas" "resources" "autoscaling" "podDisruptionBudget" "service" "nodeSelector" "tolerations" "affinity" "podAnnotations" "podLabels" }}
{{- $default := index $root.Values $key }}
{{- if hasKey $svc $key }}
{{- $own := index $svc $key }}
{{- if and (kindIs "map" $default) (kindIs "map" $own) }}
{{- $merged := deepCopy $default }}
{{- range $k, $v := $own }}
{{- $_ := set $merged $k $v }}
{{- end }}
{{- $_ := set $out $key $merged }}
{{- else }}
{{- $_ := set $out $key $own }}
{{- end }}
{{- else }}
{{- $_ := set $out $key $default }}
{{- end }}
{{- end }}
{{- range $key, $value := $svc }}
{{- if not (hasKey $out $key) }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* The enabled services, in order, as a YAML list. */}}
{{- define "continuum.enabledServices" -}}
{{- $enabled := list }}
{{- range $name := (include "continuum.serviceNames" . | fromYamlArray) }}
{{- if (index $.Values.services $name).enabled }}
{{- $enabled = append $enabled $name }}
{{- end }}
{{- end }}
{{- toYaml $enabled }}
{{- end }}

{{/* The gRPC service name of a Continuum service, e.g. continuum.cart.v1.CartService. */}}
{{- define "continuum.grpcServiceName" -}}
{{- printf "continuum.%s.v1.%sService" . (title .) }}
{{- end }}

{{/*
The address a caller dials for a callee: the headless Service (client-side round robin over
every pod) when headless is on for the callee, else its ClusterIP Service.
Call with (dict "root" $ "name" CALLEE).
*/}}
{{- define "continuum.target" -}}
{{- $callee := include "continuum.serviceValues" . | fromYaml }}
{{- $host := include "continuum.componentName" (dict "root" .root "component" .name) }}
{{- if $callee.service.headless }}
{{- $host = printf "%s-headless" $host }}
{{- end }}
{{- printf "dns:///%s.%s.svc.cluster.local:%v" $host .root.Release.Namespace $callee.port }}
{{- end }}

{{/* A {secretKeyRef} value as an EnvVar valueFrom. */}}
{{- define "continuum.secretRef" -}}
valueFrom:
  secretKeyRef:
    name: {{ .secretKeyRef.name | quote }}
    key: {{ .secretKeyRef.key | quote }}
{{- end }}

{{/*
Environment shared by a service's server and its migration Job: where it listens, its
stores (URLs only ever from Secrets), telemetry and logging.
Call with (dict "root" $ "svc" EFFECTIVE_VALUES).
*/}}
{{- define "continuum.storeEnv" -}}
{{- $root := .root }}
{{- $svc := .svc -}}
- name: CONTINUUM_ENVIRONMENT
  value: {{ $root.Values.environment | quote }}
- name: CONTINUUM_HOST
  value: "0.0.0.0"
- name: CONTINUUM_PORT
  value: {{ $svc.port | quote }}
- name: CONTINUUM_RUN_MIGRATIONS
  value: "false"
- name: CONTINUUM_DATA_DIR
  value: /tmp/continuum
- name: CONTINUUM_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
- name: CONTINUUM_LOG_JSON
  value: {{ $root.Values.logJson | quote }}
{{- if $root.Values.otlp.endpoint }}
- name: CONTINUUM_OTLP_ENDPOINT
  value: {{ $root.Values.otlp.endpoint | quote }}
{{- end }}
- name: CONTINUUM_REDIS_NAMESPACE
  value: {{ $root.Values.redis.namespace | quote }}
{{- if $root.Values.inChartPostgresql.enabled }}
- name: POSTGRES_PASSWORD
  {{- include "continuum.secretRef" $root.Values.inChartPostgresql.password | nindent 2 }}
- name: CONTINUUM_DATABASE_URL
  value: {{ printf "postgresql+asyncpg://postgres:$(POSTGRES_PASSWORD)@%s:5432/continuum_%s" (include "continuum.componentName" (dict "root" $root "component" "postgresql")) $svc.name | quote }}
{{- else }}
- name: CONTINUUM_DATABASE_URL
  {{- include "continuum.secretRef" $svc.database.url | nindent 2 }}
{{- end }}
{{- if $root.Values.inChartRedis.enabled }}
- name: REDIS_PASSWORD
  {{- include "continuum.secretRef" $root.Values.inChartRedis.password | nindent 2 }}
- name: CONTINUUM_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" (include "continuum.componentName" (dict "root" $root "component" "redis")) | quote }}
{{- else }}
- name: CONTINUUM_REDIS_URL
  {{- include "continuum.secretRef" $root.Values.redis.url | nindent 2 }}
{{- end }}
{{- end }}

{{/* Locked-down security context of every container. Call with the root context. */}}
{{- define "continuum.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
{{- if .runAsGroup }}
runAsGroup: {{ .runAsGroup }}
{{- end }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "continuum.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
{{- if .runAsGroup }}
runAsGroup: {{ .runAsGroup }}
{{- end }}
fsGroup: {{ .fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Pod selectors of the components allowed to reach a store: every enabled service and its
migration Job. Call with the root context.
*/}}
{{- define "continuum.storeClients" -}}
{{- $components := list }}
{{- range $name := (include "continuum.enabledServices" . | fromYamlArray) }}
{{- $components = append $components $name }}
{{- $components = append $components (printf "%s-migrate" $name) }}
{{- end }}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "continuum.name" . }}
      app.kubernetes.io/instance: {{ .Release.Name }}
    matchExpressions:
      - key: app.kubernetes.io/component
        operator: In
        values: {{ toJson $components }}
{{- end }}

{{/* The migration hook: after the install when the in-chart PostgreSQL must come up first. */}}
{{- define "continuum.migrationHook" -}}
{{- if .Values.inChartPostgresql.enabled -}}
post-install,pre-upgrade
{{- else -}}
pre-install,pre-upgrade
{{- end }}
{{- end }}

{{/*
Egress rules to DNS, the database, Redis (when .redis) and the trace collector (when an
endpoint is set). In-chart stores are reached by pod selector; external ones through the
configured peers, or on their port to any destination when no peer is configured.
Call with (dict "root" $ "redis" BOOL).
*/}}
{{- define "continuum.storeEgress" -}}
{{- $root := .root }}
{{- $np := $root.Values.networkPolicy -}}
- to:
    {{- toYaml $np.dns | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if $root.Values.inChartPostgresql.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "continuum.selectorLabels" (dict "root" $root "component" "postgresql") | nindent 10 }}
  ports:
    - port: 5432
      protocol: TCP
{{- else }}
- ports:
    {{- toYaml $np.database.ports | nindent 4 }}
  {{- with $np.database.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if .redis }}
{{- if $root.Values.inChartRedis.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "continuum.selectorLabels" (dict "root" $root "component" "redis") | nindent 10 }}
  ports:
    - port: 6379
      protocol: TCP
{{- else }}
- ports:
    {{- toYaml $np.redis.ports | nindent 4 }}
  {{- with $np.redis.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
{{- if $root.Values.otlp.endpoint }}
- ports:
    {{- toYaml $np.otlp.ports | nindent 4 }}
  {{- with $np.otlp.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}
