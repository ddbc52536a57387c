#!/usr/bin/env bash
# The self-signed alternative to the cert-manager overlay: after
# `kubectl apply -k deploy/base` (or another overlay), creates a CA and a
# serving certificate for the Service steward.steward-system.svc, stores
# them as the Secret steward-webhook-tls and puts the CA in both webhooks'
# caBundle. Run again to rotate (the pods reload the files).
#
# Needs openssl and kubectl (the current context is used; set KUBECONFIG or
# KUBECTL to choose). Usage: deploy/self-signed-tls.sh [days, default 365]
set -euo pipefail

DAYS="${1:-365}"
NS=steward-system
SERVICE=steward
KUBECTL="${KUBECTL:-kubectl}"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$DIR/ca.key" -out "$DIR/ca.crt" -days "$DAYS" \
  -subj "/CN=steward-webhook-ca" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$DIR/tls.key" -out "$DIR/tls.csr" -subj "/CN=$SERVICE.$NS.svc" 2>/dev/null
printf 'subjectAltName=DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
  "$SERVICE" "$NS" "$SERVICE" "$NS" > "$DIR/ext.cnf"
openssl x509 -req -in "$DIR/tls.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
  -CAcreateserial -out "$DIR/tls.crt" -days "$DAYS" -extfile "$DIR/ext.cnf" 2>/dev/null

"$KUBECTL" -n "$NS" create secret tls steward-webhook-tls \
  --cert="$DIR/tls.crt" --key="$DIR/tls.key" --dry-run=client -o yaml \
  | "$KUBECTL" apply -f -

CA_BUNDLE="$(base64 < "$DIR/ca.crt" | tr -d '\n')"
for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
  count="$("$KUBECTL" get "$kind" steward -o jsonpath='{range .webhooks[*]}x{end}')"
  patch="["
  for ((i = 0; i < ${#count}; i++)); do
    (( i > 0 )) && patch+=","
    patch+="{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$CA_BUNDLE\"}"
  done
  patch+="]"
  "$KUBECTL" patch "$kind" steward --type=json -p "$patch"
done
echo "steward-webhook-tls created; webhooks trust its CA (valid $DAYS days)" >&2
