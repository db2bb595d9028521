{{/*
Names, labels and the few computed values every template shares. Templates call these rather
than repeating logic.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "backend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every object: fullnameOverride, else <release>-<name>, or just <release> when
the release name already contains the chart name. Truncated to 63 characters (DNS label).
*/}}
{{- define "backend.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "backend.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the pods. Never change them on a live release: selectors are immutable. */}}
{{- define "backend.selectorLabels" -}}
app.kubernetes.io/name: {{ include "backend.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
backend.releaseLabelKey: a label the chart owns, holding the release name. Unlike
app.kubernetes.io/instance, nothing rewrites it: Argo CD's label tracking (the default before
Argo CD 3.0) sets app.kubernetes.io/instance on every top-level object it applies to the
Application's name (`<name>-staging`), not the release name; see
https://argo-cd.readthedocs.io/en/release-2.9/user-guide/resource_tracking/ and
https://github.com/argoproj/argo-cd/issues/2871. It leaves pod templates alone (since v0.11,
SetAppInstanceLabel in argo-cd's util/kube/kube.go), so selectors on pods keep working.
*/}}
{{- define "backend.releaseLabelKey" -}}
{{- printf "%s/release" .Chart.Name }}
{{- end }}

{{/*
The labels the ServiceMonitor selects the Service by: the chart's name and release labels, never
app.kubernetes.io/instance (above). Not used to select pods, so adding it changed no immutable
Deployment selector.
*/}}
{{- define "backend.serviceSelectorLabels" -}}
app.kubernetes.io/name: {{ include "backend.name" . }}
{{ include "backend.releaseLabelKey" . }}: {{ .Release.Name }}
{{- end }}

{{/* The labels on every object. */}}
{{- define "backend.labels" -}}
helm.sh/chart: {{ include "backend.chart" . }}
{{ include "backend.selectorLabels" . }}
{{ include "backend.releaseLabelKey" . }}: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "backend.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the `helm test` pod. Deliberately not a superset of the selector labels, so the Service,
PDB and ServiceMonitor never pick the test pod up.
*/}}
{{- define "backend.testLabels" -}}
helm.sh/chart: {{ include "backend.chart" . }}
app.kubernetes.io/name: {{ include "backend.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "backend.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "backend.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image tag: image.tag or the chart's appVersion. `latest` is refused. */}}
{{- define "backend.imageTag" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must be an immutable tag (e.g. sha-1a2b3c4 or 0.1.0), not latest" }}
{{- end }}
{{- $tag }}
{{- end }}

{{/*
backend.imageRef: repository:tag, or repository:tag@digest when a digest is given.
Called with (list <image values> <tag>).
*/}}
{{- define "backend.imageRef" -}}
{{- $image := index . 0 }}
{{- $ref := printf "%s:%s" $image.repository (index . 1) }}
{{- with $image.digest }}
{{- $ref = printf "%s@%s" $ref . }}
{{- end }}
{{- $ref }}
{{- end }}

{{/* The app's image: image.repository, the checked tag, image.digest. */}}
{{- define "backend.image" -}}
{{- include "backend.imageRef" (list .Values.image (include "backend.imageTag" .)) }}
{{- end }}

{{/*
backend.fileObjectName: the name of an object rendered from a file under files/:
<fullname>-<infix><file name without extension, lower case, _ and . as ->, at most 63 characters.
Called with (list $ <infix> <path>).
*/}}
{{- define "backend.fileObjectName" -}}
{{- $path := index . 2 }}
{{- $stem := base $path | trimSuffix (ext $path) | replace "_" "-" | replace "." "-" | lower }}
{{- printf "%s-%s%s" (include "backend.fullname" (index . 0)) (index . 1) $stem | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Secret the pods load with envFrom, if any: the ExternalSecret's target, else existingSecret. */}}
{{- define "backend.secretName" -}}
{{- if .Values.externalSecret.enabled }}
{{- default (include "backend.fullname" .) .Values.externalSecret.targetName }}
{{- else if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- end }}
{{- end }}

{{/*
backend.durationMs: a duration of the form <int><unit> (ms, s, m, h) as milliseconds.
Called with (list <value> <default>); an empty value takes the default (the app's own).
*/}}
{{- define "backend.durationMs" -}}
{{- $raw := (index . 0) | default (index . 1) | toString }}
{{- if not (regexMatch "^[0-9]+(ms|s|m|h)$" $raw) }}
{{- fail (printf "cannot read duration %q: use <integer><ms|s|m|h>, e.g. 5s" $raw) }}
{{- end }}
{{- $n := regexFind "^[0-9]+" $raw | atoi }}
{{- $unit := regexFind "[a-z]+$" $raw }}
{{- $scale := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 }}
{{- mul $n (get $scale $unit) }}
{{- end }}

{{/*
backend.terminationGracePeriodSeconds: the configured grace period, after checking that it
exceeds the app's drain delay plus shutdown timeout plus the 3 s bound on flushing traces
(docs/contract.md, "Lifecycle"). A grace period that is too short would SIGKILL requests the app
is still finishing.
*/}}
{{- define "backend.terminationGracePeriodSeconds" -}}
{{- $grace := int .Values.deployment.terminationGracePeriodSeconds }}
{{- $drain := include "backend.durationMs" (list (get .Values.config "APP__SHUTDOWN__DRAIN_DELAY") "5s") | int }}
{{- $timeout := include "backend.durationMs" (list (get .Values.config "APP__SHUTDOWN__TIMEOUT") "15s") | int }}
{{- $needed := add $drain $timeout 3000 }}
{{- if le (mul $grace 1000) $needed }}
{{- fail (printf "deployment.terminationGracePeriodSeconds (%ds) must exceed APP__SHUTDOWN__DRAIN_DELAY + APP__SHUTDOWN__TIMEOUT + 3s trace flush (%dms)" $grace $needed) }}
{{- end }}
{{- $grace }}
{{- end }}

{{/*
backend.scaledIntOrPercent: an integer, or a percentage of a pod count rounded up, as the
disruption controller reads a PodDisruptionBudget's minAvailable and maxUnavailable.
Called with (list <int or "N%"> <pods>).
*/}}
{{- define "backend.scaledIntOrPercent" -}}
{{- $value := index . 0 | toString }}
{{- $pods := index . 1 | int }}
{{- if hasSuffix "%" $value }}
{{- div (add (mul (trimSuffix "%" $value | int) $pods) 99) 100 }}
{{- else }}
{{- $value | int }}
{{- end }}
{{- end }}
