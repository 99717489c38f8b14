# shellcheck shell=bash
# history-probe.sh: one host's deploy record, for `history` and `rollback` (issue 13); read-only.
#
#   argv: artifact_cd.contract.HistoryProbeArgs (docs/contracts.md, generated argv table):
#   --host d601|master, --audit-log PATH, --tail-bytes N, [--compose SERVICE:CONTAINER:ENV_PREFIX]...,
#   [--k3s SERVICE:NAMESPACE:DEPLOYMENT]..., [--registry LOOPBACK_ENDPOINT [--repository REPO]...],
#   --max-tags N, [--elevate sudo|none] (hosts.<h>.elevate; default sudo).
#
# One SSH round trip per host. It writes, starts, pulls and restarts nothing. The facts (one python3
# launch, scripts/py/historyfacts.py, which reuses container.py and manifest.py):
#   - the newest --tail-bytes of the audit log (and of <log>.1 before it when the log is shorter);
#   - per Compose service: its container's revision label and <PREFIX>COMMIT (docker inspect);
#   - per k3s service: its Deployment's deploy stamp annotation (kubectl; a refused read is a fact).
#     Non-root (issue 11): k3s's kubeconfig is root-only; when the SSH user cannot read it and
#     --elevate is sudo, the read runs as `sudo -n <k3s> kubectl -n NS get deployment D -o json ...`
#     (k3s-verify.sh's sudoers rule `<k3s> kubectl -n NS get deployment *`, README "Non-root
#     hosts"); a sudo refusal is reported as unknown naming that sudoers line;
#   - D601: per repository its commit tags and per tag the manifest digest, the config's created time
#     and revision label, the size (config + layers).
# Output: one JSON line, exit 0 whenever facts were collected (a missing tool is a fact). Exit 2 on
# an invalid argument (nothing looked at), 5 when python3 is missing. Never a secret value.
# Needs: bash, python3; docker, kubectl/k3s where those facts are wanted.
set -euo pipefail

# docker_probe (DOCKER, DOCKER_STATE), shared with registry-probe.sh and live-probe.sh
# include: registry-facts.sh
# elevate_init, elevating (the k3s kubeconfig read)
# include: elevate.sh

HOST="" AUDIT_LOG="" TAIL_BYTES="" REGISTRY="" MAX_TAGS="" ELEVATE_ARG=""
ITEMS=()
K3S_KUBECONFIG=/etc/rancher/k3s/k3s.yaml
KUBECTL_WORDS=""

is_count() { [[ $1 =~ ^[1-9][0-9]{0,8}$ ]]; }

parse_args() {
  local value service rest
  while (($#)); do
    arg_value $# "$1"
    value=$2
    case $1 in
      --host) HOST=$value ;;
      --audit-log) AUDIT_LOG=$value ;;
      --tail-bytes) TAIL_BYTES=$value ;;
      --compose)
        service=${value%%:*} rest=${value#*:}
        if ! { is_name "$service" && [[ $rest == *:* ]] && is_name "${rest%%:*}" && is_env_prefix "${rest#*:}"; }; then
          fail "$EXIT_INVALID" invalid-argument "--compose is not SERVICE:CONTAINER:ENV_PREFIX_" false argument '"--compose"'
        fi
        ITEMS+=("compose=$value")
        ;;
      --k3s)
        [[ $value =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}:[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?:[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$ ]] ||
          fail "$EXIT_INVALID" invalid-argument "--k3s is not SERVICE:NAMESPACE:DEPLOYMENT" false argument '"--k3s"'
        ITEMS+=("k3s=$value")
        ;;
      --registry) REGISTRY=$value ;;
      --repository)
        need repository --repository "$value"
        ITEMS+=("repository=$value")
        ;;
      --max-tags) MAX_TAGS=$value ;;
      --elevate) ELEVATE_ARG=$value ;;
      *) unknown_arg "$1" ;;
    esac
    shift 2
  done
  need_one_of --host "$HOST" d601 master
  need abs_path --audit-log "$AUDIT_LOG"
  need count --tail-bytes "$TAIL_BYTES"
  need count --max-tags "$MAX_TAGS"
  [[ -z $REGISTRY ]] || need loopback_endpoint --registry "$REGISTRY"
  if [[ -z $REGISTRY && " ${ITEMS[*]} " == *" repository="* ]]; then
    fail "$EXIT_INVALID" invalid-argument "--repository needs --registry" false argument '"--repository"'
  fi
  elevate_init "${ELEVATE_ARG:-sudo}"
}

# kubectl_access: KUBECTL_WORDS = "sudo -n <k3s> kubectl" when k3s's kubectl is what reads the
# Deployments, the user cannot read its kubeconfig and elevation is allowed; else empty (the
# helper then runs `k3s kubectl` or `kubectl` as the user, and a refused read is a fact).
kubectl_access() {
  local k3s
  [[ " ${ITEMS[*]} " == *" k3s="* ]] || return 0
  k3s=$(command -v k3s 2>/dev/null) || return 0
  is_abs_path "$k3s" || return 0
  if ((EUID != 0)) && [[ -z ${KUBECONFIG-} && ! -r $K3S_KUBECONFIG ]] && elevating; then
    KUBECTL_WORDS="sudo -n $k3s kubectl"
  fi
}

main() {
  exec </dev/null
  local start=$EPOCHREALTIME media mode=none out rc=0
  parse_args "$@"
  require_tool python3
  kubectl_access
  docker_probe
  if [[ $DOCKER_STATE == reachable ]]; then
    mode=docker
    [[ ${DOCKER[0]} != sudo ]] || mode=sudo
  fi
  for media in "${MANIFEST_MEDIA_TYPES[@]}"; do ITEMS+=("accept=$media"); done
  out=$(HISTORYFACTS_CONTAINER=$CONTAINER_PY HISTORYFACTS_MANIFEST=$MANIFEST_PY HISTORYFACTS_KUBECTL=$KUBECTL_WORDS \
    python3 -c "$HISTORYFACTS_PY" \
    "$HOST" "$start" "$mode" "$DOCKER_STATE" "$REVISION_LABEL" "$COMMIT_PATTERN" "$DIGEST_PATTERN" \
    "$AUDIT_LOG" "$TAIL_BYTES" "$REGISTRY" "$MAX_TAGS" "$(host_arch)" "${ITEMS[@]}") || rc=$?
  if [[ $out == '{"ok":'* && $out != *$'\n'* ]]; then
    _JSON_PRINTED=1
    printf '%s\n' "$out"
    return "$rc"
  fi
  fail "$EXIT_INFRA_BLOCKED" infra-blocked "the history facts helper (python3) gave no result (exit $rc)" false \
    channel '"python3"'
}

main "$@"
