# shellcheck shell=bash
# live-probe.sh: what runs on this host, for the live view (issue 10); read-only.
#
#   argv: artifact_cd.contract.LiveProbeArgs (docs/contracts.md, generated argv table):
#   --host d601|master, --spec-b64 (base64 JSON of contract.LiveProbeSpec: the Compose and k3s
#   services to report, the commit manifests to HEAD, the auth config to hash), and on D601 the
#   registry probe's values as --registry-* (all or none).
#
# One SSH round trip per host and run. It writes, starts, pulls and restarts nothing. The facts:
#   - per Compose service: docker inspect of its container (id, image, revision label, the
#     <PREFIX>COMMIT env only), /health read the way compose-deploy.sh verifies it (container IP,
#     127.0.0.1 under host networking; todo-note-synthetic and baidu-auth-gate alike), whether the
#     desired commit image is on the host, and the required secret keys of the env file as
#     present/length only;
#   - per k3s service (D601): its Deployments (image, UNIDESK_DEPLOY_COMMIT), /health through the
#     Kubernetes API service proxy (`k3s kubectl`, else `kubectl`, as k3s-verify.sh), and whether
#     the commit image is in k3s containerd (`k3s ctr`/`ctr` images ls); an API that does not
#     answer is a fact (the service's detail), not a failure;
#   - D601: the registry facts exactly as registry-probe.sh collects them (include/registry-facts.sh,
#     collected while the rest runs) and each commit manifest's digest (HEAD, the four media types);
#   - master: the sha256 of the canonical auth section of the frontend auth config (never a value).
# The per-service facts come from one python3 launch (scripts/py/livefacts.py, which reuses
# envfile.py, container.py, health.py and auth.py). Output: one JSON line, exit 0 whenever facts were
# collected (a missing tool or channel is a fact). Exit 2 on an invalid argument (nothing looked
# at), 5 when python3 is missing. Never a secret value.
# Needs: bash, python3; docker, kubectl/k3s, ctr, systemctl, curl where those facts are wanted.
set -euo pipefail

# include: registry-facts.sh

HOST="" SPEC_B64=""
REG_UNIT="" REG_UNIT_PATH="" REG_UNIT_SHA="" REG_PROJECT="" REG_CONTAINER="" REG_IMAGE="" REG_ENDPOINT=""
REG_STORAGE="" REG_CONFIG_PATH="" REG_CONFIG_SHA="" REG_COMPOSE_PATH="" REG_COMPOSE_SHA="" REG_SPEC=""
REG_GIVEN=0
SPEC_MAX=65536

parse_args() {
  while (($#)); do
    case $1 in
      --host) arg_value $# "$1"; HOST=$2 ;;
      --spec-b64) arg_value $# "$1"; SPEC_B64=$2 ;;
      --registry-unit) arg_value $# "$1"; REG_UNIT=$2 ;;
      --registry-unit-path) arg_value $# "$1"; REG_UNIT_PATH=$2 ;;
      --registry-unit-sha256) arg_value $# "$1"; REG_UNIT_SHA=$2 ;;
      --registry-project) arg_value $# "$1"; REG_PROJECT=$2 ;;
      --registry-container) arg_value $# "$1"; REG_CONTAINER=$2 ;;
      --registry-image) arg_value $# "$1"; REG_IMAGE=$2 ;;
      --registry-endpoint) arg_value $# "$1"; REG_ENDPOINT=$2 ;;
      --registry-storage) arg_value $# "$1"; REG_STORAGE=$2 ;;
      --registry-config-path) arg_value $# "$1"; REG_CONFIG_PATH=$2 ;;
      --registry-config-sha256) arg_value $# "$1"; REG_CONFIG_SHA=$2 ;;
      --registry-compose-path) arg_value $# "$1"; REG_COMPOSE_PATH=$2 ;;
      --registry-compose-sha256) arg_value $# "$1"; REG_COMPOSE_SHA=$2 ;;
      --registry-spec-sha256) arg_value $# "$1"; REG_SPEC=$2 ;;
      *) unknown_arg "$1" ;;
    esac
    [[ $1 != --registry-* ]] || REG_GIVEN=$((REG_GIVEN + 1))
    shift 2
  done
  need_one_of --host "$HOST" d601 master
  [[ ${#SPEC_B64} -le $SPEC_MAX && $SPEC_B64 =~ ^[A-Za-z0-9+/]+={0,2}$ ]] ||
    fail "$EXIT_INVALID" invalid-argument "--spec-b64 is not base64 (at most $SPEC_MAX characters)" false argument '"--spec-b64"'
  if ((REG_GIVEN)); then
    ((REG_GIVEN == 13)) ||
      fail "$EXIT_INVALID" invalid-argument "the --registry-* values are given all (13) or none" false argument '"--registry-unit"'
    registry_validate registry- "$REG_UNIT" "$REG_UNIT_PATH" "$REG_UNIT_SHA" "$REG_PROJECT" "$REG_CONTAINER" \
      "$REG_IMAGE" "$REG_ENDPOINT" "$REG_STORAGE" "$REG_CONFIG_PATH" "$REG_CONFIG_SHA" "$REG_COMPOSE_PATH" \
      "$REG_COMPOSE_SHA" 1 "$REG_SPEC"
  fi
}

# registry_part: the registry facts on stdout (D601 only; nothing elsewhere).
registry_part() {
  ((REG_GIVEN)) || return 0
  registry_facts "$REG_UNIT" "$REG_UNIT_PATH" "$REG_UNIT_SHA" "$REG_PROJECT" "$REG_CONTAINER" "$REG_IMAGE" \
    "$REG_ENDPOINT" "$REG_STORAGE" "$REG_CONFIG_PATH" "$REG_CONFIG_SHA" "$REG_COMPOSE_PATH" "$REG_COMPOSE_SHA" \
    "$REG_SPEC" || true
}

main() {
  exec </dev/null
  local start=$EPOCHREALTIME
  parse_args "$@"
  require_tool python3
  docker_probe
  local mode=none out rc=0
  if [[ $DOCKER_STATE == reachable ]]; then
    mode=docker
    [[ ${DOCKER[0]} != sudo ]] || mode=sudo
  fi
  # The registry facts are collected while the helper looks at the services; it embeds them.
  out=$(registry_part | LIVEFACTS_ENVFILE=$ENVFILE_PY LIVEFACTS_CONTAINER=$CONTAINER_PY \
    LIVEFACTS_HEALTH=$HEALTH_PY LIVEFACTS_AUTH=$AUTH_PY python3 -c "$LIVEFACTS_PY" "$SPEC_B64" "$HOST" \
    "$start" "$mode" "$DOCKER_STATE" "$REVISION_LABEL" "$COMMIT_PATTERN" "$DIGEST_PATTERN" \
    "${MANIFEST_MEDIA_TYPES[@]}") || rc=$?
  if [[ $out == '{"ok":'* && $out != *$'\n'* ]]; then
    _JSON_PRINTED=1
    printf '%s\n' "$out"
    return "$rc"
  fi
  fail "$EXIT_INFRA_BLOCKED" infra-blocked "the live facts helper (python3) gave no result (exit $rc)" false \
    channel '"python3"'
}

main "$@"
