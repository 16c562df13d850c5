{{/* The chart's name, cut to Kubernetes' 63 characters. */}}
{{- define "dbmazz.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A job's object name: <release>-<job>, or <job> when the release is named like the chart. */}}
{{- define "dbmazz.jobFullname" -}}
{{- $root := index . 0 -}}
{{- $job := index . 1 -}}
{{- if eq $root.Release.Name $root.Chart.Name -}}
{{- printf "%s-%s" $root.Chart.Name $job.name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" $root.Release.Name $job.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select one job's pods. */}}
{{- define "dbmazz.selectorLabels" -}}
{{- $root := index . 0 -}}
{{- $job := index . 1 -}}
app.kubernetes.io/name: {{ include "dbmazz.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
dbmazz.io/job: {{ $job.name | quote }}
{{- end -}}

{{/* Labels of every object of one job. */}}
{{- define "dbmazz.labels" -}}
{{ include "dbmazz.selectorLabels" . }}
{{- $root := index . 0 }}
app.kubernetes.io/component: cdc
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels of the release-wide objects (ServiceMonitor, PrometheusRule). */}}
{{- define "dbmazz.releaseLabels" -}}
app.kubernetes.io/name: {{ include "dbmazz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* A job's default slot (and publication) name: dbmazz_<job>, - replaced by _. */}}
{{- define "dbmazz.slotName" -}}
{{- printf "dbmazz_%s" (.name | replace "-" "_") -}}
{{- end -}}

{{/* The jobs to render: those not switched off, each checked. */}}
{{- define "dbmazz.checkJob" -}}
{{- if not .name -}}
{{- fail "every entry of jobs needs a name" -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$" .name) -}}
{{- fail (printf "jobs[].name %q: use lower-case letters, digits and '-', at most 42 characters" .name) -}}
{{- end -}}
{{- if not .tables -}}
{{- fail (printf "job %s: tables (TABLES) is required" .name) -}}
{{- end -}}
{{- if not (and .databaseUrl .databaseUrl.secret .databaseUrl.key) -}}
{{- fail (printf "job %s: databaseUrl needs secret and key (DATABASE_URL holds the password, so it comes from a Secret)" .name) -}}
{{- end -}}
{{- end -}}

{{/* Variables the chart sets itself, from the job's fields or the chart's settings. */}}
{{- define "dbmazz.checkEnv" -}}
{{- $where := index . 0 -}}
{{- $env := index . 1 -}}
{{- $owned := dict "DATABASE_URL" "jobs[].databaseUrl" "TABLES" "jobs[].tables" "SLOT_NAME" "jobs[].slotName" "PUBLICATION_NAME" "jobs[].publicationName" "GRPC_BIND" "(fixed: 0.0.0.0)" "GRPC_PORT" "grpc.port" "GRPC_TOKEN" "grpc.tokenSecret" "GRPC_TOKEN_FILE" "grpc.tokenSecret" "METRICS_BIND" "(fixed: 0.0.0.0)" "METRICS_PORT" "metrics.port" -}}
{{- range $name, $_ := $env -}}
{{- if hasKey $owned $name -}}
{{- fail (printf "%s sets %s: the chart sets it from %s" $where $name (get $owned $name)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
