# shellcheck shell=bash
# history-probe.sh: one host's deploy record, for `history` and `rollback` (issue 13); read-only.
#
#   argv: artifact_cd.contract.HistoryProbeArgs (docs/contracts.md, generated argv table):
#   --host d601|master, --audit-log PATH, --tail-bytes N, [--compose SERVICE:CONTAINER:ENV_PREFIX]...,
#   [--k3s SERVICE:NAMESPACE:DEPLOYMENT]..., [--registry LOOPBACK_ENDPOINT [--repository REPO]...],
#   --max-tags N.
#
# One SSH round trip per host. It writes, starts, pulls and restarts nothing. The facts (one python3
# launch, scripts/py/historyfacts.py, which reuses container.py and manifest.py):
#   - the newest --tail-bytes of the audit log (and of <log>.1 before it when the log is shorter);
#   - per Compose service: its container's revision label and <PREFIX>COMMIT (docker inspect);
#   - per k3s service: its Deployment's deploy stamp annotation (kubectl; a refused read is a fact);
#   - D601: per repository its commit tags and per tag the manifest digest, the config's created time
#     and revision label, the size (config + layers).
# Output: one JSON line, exit 0 whenever facts were collected (a missing tool is a fact). Exit 2 on
# an invalid argument (nothing looked at), 5 when python3 is missing. Never a secret value.
# Needs: bash, python3; docker, kubectl/k3s where those facts are wanted.
set -euo pipefail

# docker_probe (DOCKER, DOCKER_STATE), shared with registry-probe.sh and live-probe.sh
# include: registry-facts.sh

HOST="" AUDIT_LOG="" TAIL_BYTES="" REGISTRY="" MAX_TAGS=""
ITEMS=()

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
}

main() {
  exec </dev/null
  local start=$EPOCHREALTIME media mode=none out rc=0
  parse_args "$@"
  require_tool python3
  docker_probe
  if [[ $DOCKER_STATE == reachable ]]; then
    mode=docker
    [[ ${DOCKER[0]} != sudo ]] || mode=sudo
  fi
  for media in "${MANIFEST_MEDIA_TYPES[@]}"; do ITEMS+=("accept=$media"); done
  out=$(HISTORYFACTS_CONTAINER=$CONTAINER_PY HISTORYFACTS_MANIFEST=$MANIFEST_PY python3 -c "$HISTORYFACTS_PY" \
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
