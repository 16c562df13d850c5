#!/usr/bin/env bash
# Checks the deployment kit offline, with no cluster and no container engine: lints the
# Dockerfile, renders the Helm chart (the example, a job without a token, no job, and values that
# must be refused), validates the rendered objects against Kubernetes' schemas, lints the YAML,
# checks and unit-tests the alert rules, and checks that the rules and the Grafana dashboard only
# use metrics dbmazz exposes. Tools: scripts/install-deps.sh. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

chart=deploy/helm/dbmazz
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
  echo "check-deploy: FAILED: $*" >&2
  exit 1
}
# Runs a command quietly; on failure shows its output and stops.
quiet() {
  local what=$1
  shift
  "$@" >"$tmp/out.log" 2>&1 || { cat "$tmp/out.log" >&2; fail "$what"; }
}

for tool in hadolint helm kubernetes-validate yamllint promtool python3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/install-deps.sh installs it)"
done

helm version --short | grep -q '^v4\.' || fail "helm 4 is needed, found $(helm version --short)"
echo "==> tools: hadolint $(hadolint --version | awk '{print $NF}'), helm $(helm version --short)," \
  "$(yamllint --version), kubernetes-validate $(kubernetes-validate --version)," \
  "promtool $(promtool --version 2>&1 | awk 'NR==1 {print $3}')"

echo "==> hadolint Dockerfile"
hadolint Dockerfile || fail "hadolint Dockerfile"

echo "==> helm lint and template ($chart)"
cmp -s deploy/prometheus/dbmazz-rules.yml "$chart/files/dbmazz-rules.yml" ||
  fail "$chart/files/dbmazz-rules.yml differs from deploy/prometheus/dbmazz-rules.yml: copy it over"
quiet "helm lint" helm lint --strict "$chart" -f "$chart/examples/three-databases.yaml"
helm template cdc "$chart" -f "$chart/examples/three-databases.yaml" >"$tmp/three.yaml" 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "helm template with examples/three-databases.yaml"; }
helm template one "$chart" --set 'jobs[0].name=orders,jobs[0].tables=public.orders' \
  --set 'jobs[0].databaseUrl.secret=pg,jobs[0].databaseUrl.key=url' >"$tmp/one.yaml" 2>"$tmp/err" ||
  { cat "$tmp/err" >&2; fail "helm template with one job"; }
quiet "helm install --dry-run=client (NOTES.txt)" helm install cdc "$chart" --dry-run=client \
  -f "$chart/examples/three-databases.yaml"
grep -q 'port-forward svc/cdc-events' "$tmp/out.log" || fail "NOTES.txt must show how to reach each job"
helm template none "$chart" >"$tmp/none.yaml" 2>"$tmp/err" || { cat "$tmp/err" >&2; fail "helm template with no job"; }

# What the rendering must say.
count() { grep -c -- "$1" "$2" || true; }
[ "$(count '^kind: Deployment' "$tmp/three.yaml")" = 3 ] || fail "three jobs must render three Deployments"
[ "$(count '^kind: Service$' "$tmp/three.yaml")" = 3 ] || fail "three jobs must render three Services"
[ "$(count '^  replicas: 1$' "$tmp/three.yaml")" = 3 ] || fail "every Deployment must have replicas: 1"
[ "$(count 'type: Recreate' "$tmp/three.yaml")" = 3 ] || fail "every Deployment must use strategy Recreate"
[ "$(count 'readOnlyRootFilesystem: true' "$tmp/three.yaml")" = 3 ] || fail "read-only root filesystem"
[ "$(count 'allowPrivilegeEscalation: false' "$tmp/three.yaml")" = 3 ] || fail "no privilege escalation"
[ "$(count 'runAsNonRoot: true' "$tmp/three.yaml")" = 3 ] || fail "non-root"
[ "$(count 'value: "dbmazz_billing"' "$tmp/three.yaml")" = 2 ] || fail "job billing: slot and publication dbmazz_billing"
[ "$(count 'command: \["dbmazz", "health"\]' "$tmp/three.yaml")" = 3 ] ||
  fail "with a token, readiness must run dbmazz health"
grep -q 'GRPC_TOKEN_FILE' "$tmp/three.yaml" || fail "the token must reach dbmazz as GRPC_TOKEN_FILE"
grep -q '^kind: ServiceMonitor' "$tmp/three.yaml" || fail "ServiceMonitor enabled in the example"
grep -q '^kind: PrometheusRule' "$tmp/three.yaml" || fail "PrometheusRule enabled in the example"
grep -q 'service: dbmazz.HealthService' "$tmp/one.yaml" || fail "without a token, readiness is a gRPC probe"
grep -q 'GRPC_TOKEN' "$tmp/one.yaml" && fail "no token configured, yet GRPC_TOKEN* is set"
grep -q '^kind:' "$tmp/none.yaml" && fail "no job must render nothing"

# Values that must be refused, with the reason: first by values.schema.json, then by the
# templates' own checks.
refused() {
  local why=$1
  shift
  if helm template bad "$chart" "$@" >/dev/null 2>"$tmp/err"; then
    fail "rendered although $why"
  fi
  grep -q "$why" "$tmp/err" || { cat "$tmp/err" >&2; fail "refused, but without saying: $why"; }
}
job0=(--set 'jobs[0].name=a,jobs[0].tables=t,jobs[0].databaseUrl.secret=s,jobs[0].databaseUrl.key=k')
# values.schema.json
refused "missing property 'databaseUrl'" --set 'jobs[0].name=a,jobs[0].tables=t'
refused "missing property 'tables'" --set 'jobs[0].name=a,jobs[0].databaseUrl.secret=s,jobs[0].databaseUrl.key=k'
refused "'A_b' does not match pattern" --set 'jobs[0].name=A_b,jobs[0].tables=t'
refused "additional properties 'job' not allowed" --set 'job[0].name=a'
refused "readinessMode': value must be one of" "${job0[@]}" --set 'probes.readinessMode=http'
# the templates' own checks (also with --skip-schema-validation)
refused "the name a appears twice" "${job0[@]}" \
  --set 'jobs[1].name=a,jobs[1].tables=t,jobs[1].databaseUrl.secret=s,jobs[1].databaseUrl.key=k'
refused "sets SLOT_NAME" "${job0[@]}" --set 'jobs[0].env.SLOT_NAME=x'
refused "databaseUrl needs secret and key" --skip-schema-validation --set 'jobs[0].name=a,jobs[0].tables=t'
refused "readinessMode must be auto, grpc or exec" --skip-schema-validation "${job0[@]}" \
  --set 'probes.readinessMode=http'

echo "==> kubernetes-validate --strict (rendered chart)"
# The prometheus-operator kinds have no schema there; they are checked below through promtool.
quiet "kubernetes-validate" kubernetes-validate --strict --quiet --no-warn "$tmp/three.yaml" "$tmp/one.yaml"

echo "==> PrometheusRule from the chart"
python3 - "$tmp/three.yaml" "$tmp/chart-rules.yml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rule = [d for d in docs if d.get("kind") == "PrometheusRule"]
if len(rule) != 1:
    sys.exit(f"expected one PrometheusRule, found {len(rule)}")
yaml.safe_dump(rule[0]["spec"], open(sys.argv[2], "w"))
EOF
quiet "promtool check rules (PrometheusRule spec)" promtool check rules "$tmp/chart-rules.yml"

echo "==> yamllint"
yamllint -s -c deploy/.yamllint.yml deploy/prometheus "$chart/Chart.yaml" "$chart/values.yaml" \
  "$chart/examples" "$chart/files" "$tmp/three.yaml" "$tmp/one.yaml" || fail "yamllint"

echo "==> promtool check rules / test rules"
quiet "promtool check rules" promtool check rules deploy/prometheus/dbmazz-rules.yml
quiet "promtool test rules" promtool test rules deploy/prometheus/dbmazz-rules.test.yml

echo "==> metric names and the Grafana dashboard"
python3 scripts/check-deploy-metrics.py "$tmp/dashboard-rules.yml" || fail "metric names or dashboard"
quiet "promtool check rules (dashboard queries)" promtool check rules "$tmp/dashboard-rules.yml"

echo "check-deploy: all deployment checks passed"
