{{/* The name of every object: the release's, or steward-prefixed. */}}
{{- define "steward.fullname" -}}
{{- if contains "steward" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-steward" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* What selects the pods (also in deploy/base). */}}
{{- define "steward.selectorLabels" -}}
app.kubernetes.io/name: steward
{{- end -}}

{{- define "steward.labels" -}}
{{ include "steward.selectorLabels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The cluster's version, v1.MINOR.PATCH. */}}
{{- define "steward.kubeVersion" -}}
{{- regexFind "^v?[0-9]+\\.[0-9]+\\.[0-9]+" .Capabilities.KubeVersion.Version -}}
{{- end -}}

{{/* The webhook Service's DNS name. */}}
{{- define "steward.serviceHost" -}}
{{ include "steward.fullname" . }}.{{ .Release.Namespace }}.svc
{{- end -}}

{{- define "steward.tlsSecret" -}}
{{- if eq .Values.tls.mode "secret" -}}
{{- required "tls.existingSecret: the TLS Secret's name (tls.mode: secret)" .Values.tls.existingSecret -}}
{{- else -}}
{{- include "steward.fullname" . }}-webhook-tls
{{- end -}}
{{- end -}}

{{/*
The webhook serving certificate of tls.mode self-signed, as a dict with
ca, crt and key (PEM): the installed Secret's on upgrades (so the webhooks
keep trusting it), else a new CA and certificate.
*/}}
{{- define "steward.selfSignedTls" -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "steward.tlsSecret" .) -}}
{{- if and $secret (index $secret.data "ca.crt") -}}
{{- dict "ca" (index $secret.data "ca.crt" | b64dec) "crt" (index $secret.data "tls.crt" | b64dec) "key" (index $secret.data "tls.key" | b64dec) | toJson -}}
{{- else -}}
{{- $host := include "steward.serviceHost" . -}}
{{- $names := concat (list $host (printf "%s.cluster.local" $host)) .Values.tls.extraDNSNames -}}
{{- $ca := genCA "steward-webhook-ca" (int .Values.tls.validityDays) -}}
{{- $cert := genSignedCert $host nil $names (int .Values.tls.validityDays) $ca -}}
{{- dict "ca" $ca.Cert "crt" $cert.Cert "key" $cert.Key | toJson -}}
{{- end -}}
{{- end -}}
