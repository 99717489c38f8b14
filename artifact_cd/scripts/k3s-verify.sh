# shellcheck shell=bash
# k3s-verify.sh: prove a k3s consumer runs the commit (R13).
#
#   argv: artifact_cd.contract.K3sVerifyArgs (docs/contracts.md, generated argv table)
#
# Runs on D601 with `k3s kubectl` (or `kubectl`). For every Deployment: `rollout status
# --timeout=SECONDS` (rollout-failed, exit 6), then its pod template must carry the annotation
# unidesk.io/deploy-commit == SHA (the patch landed). Then GET
# /api/v1/namespaces/NS/services/SVC:P/proxy<PATH> through the Kubernetes API service proxy (no
# NodePort, hostPort or public port) until it answers JSON (again up to SECONDS): deploy.commit and
# deploy.requestedCommit must both equal SHA. A different commit is retried for a short grace
# (old pods leaving the Service), then fails commit-mismatch: an old healthy revision is rejected.
# Failures: infra-blocked (5: no kubectl / API unreachable), rollout-failed, commit-mismatch,
# unhealthy (6).
# Non-root (issue 11): k3s's kubeconfig (/etc/rancher/k3s/k3s.yaml) is root-only. When the SSH user
# cannot read it, `k3s kubectl` runs as `sudo -n <k3s> kubectl -n NS rollout status|get ...` and
# `sudo -n <k3s> kubectl get --raw /api/v1/namespaces/NS/services/...` (--elevate sudo, the
# default; read-only verbs only); a missing sudoers rule fails infra-blocked before the first call,
# naming the command and the line to add. A plain `kubectl` (no k3s) runs as the user.
# Audit (issue 13): with --audit-log, one started and one finished/failed line (step k3s-deploy,
# target d601-k3s: the rollout after the Deployment patch, verdict ok or failed; fromCommit null,
# the patch already replaced it).
# Output: {"ok":true,"namespace","deployments":[...],"service","health":{deployCommit,requestedCommit}}
# Needs: bash, k3s or kubectl, python3; sudo when elevating.
# include: elevate.sh
# include: kubectl.sh
# include: audit.sh
set -euo pipefail

NAMESPACE="" SERVICE="" PORT="" HEALTH_PATH="" COMMIT="" TIMEOUT=""
ELEVATE_ARG="" AUDIT_LOG_ARG="" STACK="" SERVICE_ID=""
DEPLOYMENTS=()
KUBECTL=()

# kubectl_rules: the sudoers rule and the exact command of every kubectl call (require_root's
# argument list), for the k3s binary in $1.
kubectl_rules() {
  local k3s=$1 dep
  for dep in "${DEPLOYMENTS[@]}"; do
    printf '%s\n' "$k3s kubectl -n $NAMESPACE rollout status *" "$k3s" kubectl -n "$NAMESPACE" rollout status "deployment/$dep" "--timeout=${TIMEOUT}s" @@ \
      "$k3s kubectl -n $NAMESPACE get deployment *" "$k3s" kubectl -n "$NAMESPACE" get deployment "$dep" \
      -o 'jsonpath={.spec.template.metadata.annotations.unidesk\.io/deploy-commit}' @@
  done
  printf '%s\n' "$k3s kubectl get --raw /api/v1/namespaces/$NAMESPACE/services/*" \
    "$k3s" kubectl get --raw "/api/v1/namespaces/$NAMESPACE/services/$SERVICE:$PORT/proxy$HEALTH_PATH" @@
}
MISMATCH_GRACE=5

k8s_name() { [[ $1 =~ ^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$ ]]; }

# api_down LOG: fail infra-blocked when LOG shows the API server itself is unreachable.
api_down() {
  if grep -qiE 'unable to connect to the server|connection refused|was refused|no such host|i/o timeout' "$1"; then
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "the Kubernetes API does not answer: $(tail -n 1 "$1" | head -c 300)" false channel '"kubernetes-api"'
  fi
}

main() {
  exec </dev/null
  local start=$EPOCHREALTIME
  while (($#)); do
    case $1 in
      --namespace) arg_value $# "$1"; NAMESPACE=$2 ;;
      --deployment) arg_value $# "$1"; k8s_name "$2" ||
        fail "$EXIT_INVALID" invalid-argument "--deployment is not a Kubernetes name" false argument '"--deployment"'
        DEPLOYMENTS+=("$2") ;;
      --service) arg_value $# "$1"; SERVICE=$2 ;;
      --port) arg_value $# "$1"; PORT=$2 ;;
      --health-path) arg_value $# "$1"; HEALTH_PATH=$2 ;;
      --commit) arg_value $# "$1"; COMMIT=$2 ;;
      --timeout) arg_value $# "$1"; TIMEOUT=$2 ;;
      --service-id) arg_value $# "$1"; SERVICE_ID=$2 ;;
      --elevate) arg_value $# "$1"; ELEVATE_ARG=$2 ;;
      --audit-log) arg_value $# "$1"; AUDIT_LOG_ARG=$2 ;;
      --stack) arg_value $# "$1"; STACK=$2 ;;
      *) unknown_arg "$1" ;;
    esac
    shift 2
  done
  k8s_name "$NAMESPACE" || fail "$EXIT_INVALID" invalid-argument "--namespace is not a Kubernetes name" false argument '"--namespace"'
  ((${#DEPLOYMENTS[@]})) || fail "$EXIT_INVALID" invalid-argument "at least one --deployment is required" false argument '"--deployment"'
  k8s_name "$SERVICE" || fail "$EXIT_INVALID" invalid-argument "--service is not a Kubernetes name" false argument '"--service"'
  need port --port "$PORT"
  need http_path --health-path "$HEALTH_PATH"
  need commit --commit "$COMMIT"
  [[ $TIMEOUT =~ ^[0-9]{1,5}$ && $TIMEOUT -ge 1 ]] ||
    fail "$EXIT_INVALID" invalid-argument "--timeout must be seconds" false argument '"--timeout"'
  [[ -z $SERVICE_ID ]] || need name --service-id "$SERVICE_ID"
  elevate_init "${ELEVATE_ARG:-sudo}"
  if [[ -n $AUDIT_LOG_ARG ]]; then
    need abs_path --audit-log "$AUDIT_LOG_ARG"
    need name --stack "$STACK"
    need name --service-id "$SERVICE_ID"
  fi

  choose_kubectl ""
  require_tool python3
  make_tmp
  if [[ -n $AUDIT_LOG_ARG ]]; then
    audit_init "$AUDIT_LOG_ARG" "$STACK" "$STACK" "$SERVICE_ID" d601-k3s k3s-deploy
    AUDIT_FIELDS+=(fromCommit null toCommit "$(json_str "$COMMIT")")
    audit_event started
  fi

  local dep annotation deployments=""
  for dep in "${DEPLOYMENTS[@]}"; do
    if ! "${KUBECTL[@]}" -n "$NAMESPACE" rollout status "deployment/$dep" --timeout="${TIMEOUT}s" >"$TMP/rollout" 2>&1; then
      api_down "$TMP/rollout"
      fail "$EXIT_VERIFY_FAILED" rollout-failed "Deployment $NAMESPACE/$dep did not finish its rollout within ${TIMEOUT}s: $(tail -n 1 "$TMP/rollout" | head -c 300)" \
        false deployment "$(json_str "$dep")"
    fi
    annotation=$("${KUBECTL[@]}" -n "$NAMESPACE" get deployment "$dep" \
      -o 'jsonpath={.spec.template.metadata.annotations.unidesk\.io/deploy-commit}' 2>"$TMP/get") || {
      api_down "$TMP/get"
      fail "$EXIT_VERIFY_FAILED" rollout-failed "could not read Deployment $NAMESPACE/$dep: $(tail -n 1 "$TMP/get" | head -c 300)" false
    }
    if [[ $annotation != "$COMMIT" ]]; then
      fail "$EXIT_VERIFY_FAILED" commit-mismatch "Deployment $NAMESPACE/$dep pod template is on commit '${annotation:-<none>}', not $COMMIT" \
        false deployment "$(json_str "$dep")"
    fi
    deployments+="${deployments:+,}$(json_obj name "$(json_str "$dep")" rolledOut true templateCommit "$(json_str "$annotation")")"
  done

  local path="/api/v1/namespaces/$NAMESPACE/services/$SERVICE:$PORT/proxy$HEALTH_PATH"
  local deadline mismatch_deadline="" kind="" live="" requested="" last=""
  deadline=$(($(date +%s) + TIMEOUT))
  while :; do
    if "${KUBECTL[@]}" get --raw "$path" >"$TMP/health" 2>"$TMP/health.err"; then
      IFS=$'\x1f' read -r kind live requested _ < <(health_fields "$TMP/health") || true
      if [[ $kind == json ]]; then
        [[ $live == "$COMMIT" && $requested == "$COMMIT" ]] && break
        last="health reports deploy.commit '${live:-<none>}' and requestedCommit '${requested:-<none>}', expected $COMMIT"
        [[ -n $mismatch_deadline ]] || mismatch_deadline=$(($(date +%s) + MISMATCH_GRACE))
        # the grace ends early when the overall timeout does: the last answer decides the error
        if (($(date +%s) >= mismatch_deadline || $(date +%s) >= deadline)); then
          fail "$EXIT_VERIFY_FAILED" commit-mismatch "$last (an old revision still answers)" false \
            health "$(json_obj deployCommit "$(json_str "$live")" requestedCommit "$(json_str "$requested")")"
        fi
      else
        last="$HEALTH_PATH did not answer a JSON object with a deploy section"
      fi
    else
      api_down "$TMP/health.err"
      last="service proxy: $(tail -n 1 "$TMP/health.err" | head -c 300)"
    fi
    if (($(date +%s) >= deadline)); then
      fail "$EXIT_VERIFY_FAILED" unhealthy "$SERVICE:$PORT$HEALTH_PATH via the Kubernetes API service proxy: $last" false
    fi
    sleep 1
  done

  audit_event finished verdict '"ok"' error null
  json_obj ok true namespace "$(json_str "$NAMESPACE")" deployments "[$deployments]" service "$(json_str "$SERVICE")" elevated "$KUBECTL_ELEVATED" \
    via "$(json_str "$path")" health "$(json_obj deployCommit "$(json_str "$live")" requestedCommit "$(json_str "$requested")")" \
    commit "$(json_str "$COMMIT")" seconds "$(elapsed_since "$start")"
}

main "$@"
