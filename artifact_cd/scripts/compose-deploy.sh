# shellcheck shell=bash
# compose-deploy.sh: retag, stamp, recreate and verify one Compose service (R14, R15, R16, R19).
#
#   argv: artifact_cd.contract.ComposeDeployArgs (docs/contracts.md, generated argv table);
#   --lock-wait defaults to 180 s, --health-timeout to 45 s, --mode to deploy.
#
# Runs on the host of the Compose project (master server or D601), after move-image.sh put
# E/R:SHA there. --mode deploy (the default), in this order (nothing is changed before step 4):
#   1. per-service lock: flock on /run/lock/unidesk-deploy.<project>.<service>.lock (project dir
#      when /run/lock is missing). A second deploy of the same service WAITS up to --lock-wait
#      seconds for the first to finish, then fails lock-busy (exit 7, retryable). Steps 4-5 also
#      hold a per-project lock (unidesk-compose.<project>.lock): two services of one project are
#      never recreated at the same time (concurrent `compose up` duplicates the project network).
#   2. preflight: the image E/R:SHA is here with ID --image-id and revision label SHA; the Compose
#      project knows the service; required secret keys are present and non-empty in the env file
#      (reported as present/length only; missing -> secret-missing, exit 3, nothing touched).
#   3. the previous container, its commit and ID are recorded (for the rollback hint). When the
#      service already runs exactly this deploy -- the container runs image --image-id with
#      revision label and <PREFIX>COMMIT = SHA and answers health with both commits = SHA (one
#      try), the env file holds the three deploy keys with these values, and RETAG and RETAG:SHA
#      name the image -- nothing is changed: the verdict says alreadyLive=true, recreated=false.
#   4. retag to RETAG and RETAG:SHA; write <PREFIX>COMMIT|IMAGE|DIGEST into the env file atomically
#      (temp file in the same directory + rename, under a per-env-file lock; every other line
#      byte for byte; mode and owner kept; values are never printed).
#   5. <compose> --project-directory DIR -p P --env-file FILE up -d --no-build --no-deps
#      --force-recreate SVC, with v2 `docker compose` when present else v1 `docker-compose`.
#   6. verify: the container runs image --image-id; its revision label == SHA; health reached at
#      the container's IP on its network (127.0.0.1 under host networking), retried while it starts
#      (up to --health-timeout): deploy.commit and deploy.requestedCommit == SHA (standard,
#      baidu-auth-gate); /api/health ok + label + container env <PREFIX>COMMIT (todo-note-synthetic);
#      auth.configured, clientIdConfigured, clientSecretConfigured, tokenKeyConfigured, loggedIn all
#      true (baidu-auth-gate; a failure names the --required-secret keys to restore).
# --mode verify (the Pulumi Command's update: a new script text or connection re-verifies, never
# recreates): step 6 only, read-only -- no lock, no retag, no env write, no recreate; required
# secrets are reported (present/length), not enforced. The same verdict, with recreated=false.
# Output: one JSON verdict with mode, recreated (measured: the container ID after differs from the
# one before) and alreadyLive. A failure of step 6 says recreated, names the previous commit and
# how to roll back (unhealthy, commit-mismatch, auth-not-configured, digest-mismatch,
# recreate-failed: exit 6).
# Needs: bash, docker, docker compose v2 or docker-compose v1 (deploy), flock (deploy), curl, python3.
set -euo pipefail

SERVICE_ID="" COMPOSE_SERVICE="" CONTAINER="" COMMIT="" DIGEST="" IMAGE_ID="" IMAGE="" RETAG=""
PROJECT_DIR="" PROJECT_NAME="" ENV_FILE="" ENV_PREFIX="" VERIFY="" HEALTH_PATH="" HEALTH_PORT=""
COMPOSE_OVERRIDE="" LOCK_WAIT=180 HEALTH_TIMEOUT=45 MODE=deploy
REQUIRED_SECRETS=()
START="" LOCK_DIR="" LOCK_WAITED=0
PREV_ID="" PREV_COMMIT="" SECRETS_JSON="{}" ALREADY_LIVE=false
COMPOSE_ARGS=()

# The Python helpers (artifact_cd/scripts/py/, inlined by script_text): ENVFILE_PY reads the
# secret keys' presence and rewrites the env file atomically; CONTAINER_PY reads `docker inspect`
# (no secret env value is ever printed: only the one deploy key is read from the container env).

log() { printf 'compose-deploy [%ss]: %s\n' "$(elapsed_since "$START")" "$*" >&2; }

compose() {
  (cd "$PROJECT_DIR" && "${COMPOSE[@]}" "${COMPOSE_ARGS[@]}" "$@")
}

# inspect_container: set C_* from `docker inspect CONTAINER`.
C_FOUND="" C_ID="" C_IMAGE="" C_STATUS="" C_EXIT="" C_REVISION="" C_NETMODE="" C_IP="" C_ENV_COMMIT=""
inspect_container() {
  IFS=$'\x1f' read -r C_FOUND C_ID C_IMAGE C_STATUS C_EXIT C_REVISION C_NETMODE C_IP C_ENV_COMMIT \
    < <(docker inspect "$CONTAINER" 2>/dev/null |
      python3 -c "$CONTAINER_PY" "${ENV_PREFIX}COMMIT" "$REVISION_LABEL") || true
}

rollback_hint() {
  if [[ -n $PREV_COMMIT ]]; then
    json_obj previousCommit "$(json_str "$PREV_COMMIT")" \
      how "$(json_str "redeploy the previous commit: pulumi config set --path 'services.$SERVICE_ID.commit' $PREV_COMMIT && pulumi up")"
  else
    json_obj previousCommit null how "$(json_str "no previous $CONTAINER container was running; fix the cause and redeploy $SERVICE_ID")"
  fi
}

prev_commit_json() { if [[ -n $PREV_COMMIT ]]; then json_str "$PREV_COMMIT"; else printf null; fi; }

# recreated_json: whether the service's container is another one than when this run began
# (measured from the container IDs, never assumed).
recreated_json() { if [[ $C_ID != "$PREV_ID" ]]; then printf true; else printf false; fi; }

# after_change_fail ERROR DETAIL [KEY VALUE ...]: a failed verification (exit 6); after a
# recreate in deploy mode, or of the untouched live service in verify mode.
after_change_fail() {
  local error=$1 detail=$2 hint
  shift 2
  if [[ $MODE == verify ]]; then
    hint="verify only: nothing was changed; live commit ${PREV_COMMIT:-<none>}"
  else
    hint="previous commit ${PREV_COMMIT:-<none>}"
    [[ -z $PREV_COMMIT ]] || hint+="; roll back: pulumi config set --path 'services.$SERVICE_ID.commit' $PREV_COMMIT && pulumi up"
  fi
  if [[ $VERIFY == baidu-auth-gate && $error == auth-not-configured ]]; then
    local secrets="its auth secrets"
    ((${#REQUIRED_SECRETS[@]} == 0)) || secrets="the secrets ${REQUIRED_SECRETS[*]}"
    hint+="; restore $secrets in the env file, recreate only $COMPOSE_SERVICE, then verify \`microservice health $SERVICE_ID\`"
  fi
  fail "$EXIT_VERIFY_FAILED" "$error" "$detail ($hint)" false mode "$(json_str "$MODE")" recreated "$(recreated_json)" \
    service "$(json_str "$SERVICE_ID")" commit "$(json_str "$COMMIT")" previousCommit "$(prev_commit_json)" \
    previousContainerId "$(json_str "$PREV_ID")" containerId "$(json_str "$C_ID")" \
    rollback "$(rollback_hint)" secrets "$SECRETS_JSON" "$@"
}

parse_args() {
  while (($#)); do
    case $1 in
      --service-id) arg_value $# "$1"; SERVICE_ID=$2 ;;
      --compose-service) arg_value $# "$1"; COMPOSE_SERVICE=$2 ;;
      --container) arg_value $# "$1"; CONTAINER=$2 ;;
      --commit) arg_value $# "$1"; COMMIT=$2 ;;
      --digest) arg_value $# "$1"; DIGEST=$2 ;;
      --image-id) arg_value $# "$1"; IMAGE_ID=$2 ;;
      --image) arg_value $# "$1"; IMAGE=$2 ;;
      --retag) arg_value $# "$1"; RETAG=$2 ;;
      --project-dir) arg_value $# "$1"; PROJECT_DIR=$2 ;;
      --project-name) arg_value $# "$1"; PROJECT_NAME=$2 ;;
      --env-file) arg_value $# "$1"; ENV_FILE=$2 ;;
      --env-prefix) arg_value $# "$1"; ENV_PREFIX=$2 ;;
      --verify) arg_value $# "$1"; VERIFY=$2 ;;
      --health-path) arg_value $# "$1"; HEALTH_PATH=$2 ;;
      --health-port) arg_value $# "$1"; HEALTH_PORT=$2 ;;
      --compose-command) arg_value $# "$1"; COMPOSE_OVERRIDE=$2 ;;
      --required-secret) arg_value $# "$1"; need env_key --required-secret "$2"; REQUIRED_SECRETS+=("$2") ;;
      --lock-wait) arg_value $# "$1"; LOCK_WAIT=$2 ;;
      --health-timeout) arg_value $# "$1"; HEALTH_TIMEOUT=$2 ;;
      --mode) arg_value $# "$1"; MODE=$2 ;;
      *) unknown_arg "$1" ;;
    esac
    shift 2
  done
  need name --service-id "$SERVICE_ID"
  need name --compose-service "$COMPOSE_SERVICE"
  need name --container "$CONTAINER"
  need commit --commit "$COMMIT"
  need digest --digest "$DIGEST"
  need digest --image-id "$IMAGE_ID"
  need image_ref --image "$IMAGE"
  [[ $IMAGE == *":$COMMIT" ]] || fail "$EXIT_INVALID" invalid-argument "--image must be the commit tag <registry>/<repo>:$COMMIT" false \
    argument '"--image"'
  need repository --retag "$RETAG"
  need abs_path --project-dir "$PROJECT_DIR"
  need name --project-name "$PROJECT_NAME"
  need abs_path --env-file "$ENV_FILE"
  need env_prefix --env-prefix "$ENV_PREFIX"
  need_one_of --verify "$VERIFY" "${VERIFY_KINDS[@]}"
  need http_path --health-path "$HEALTH_PATH"
  need port --health-port "$HEALTH_PORT"
  need_one_of --mode "$MODE" deploy verify
  [[ $LOCK_WAIT =~ ^[0-9]{1,4}$ ]] || fail "$EXIT_INVALID" invalid-argument "--lock-wait must be seconds" false argument '"--lock-wait"'
  [[ $HEALTH_TIMEOUT =~ ^[0-9]{1,4}$ && $HEALTH_TIMEOUT -ge 1 ]] ||
    fail "$EXIT_INVALID" invalid-argument "--health-timeout must be seconds" false argument '"--health-timeout"'
}

take_lock() {
  LOCK_DIR=/run/lock
  [[ -d $LOCK_DIR && -w $LOCK_DIR ]] || LOCK_DIR=$PROJECT_DIR
  local lock_file="$LOCK_DIR/unidesk-deploy.$PROJECT_NAME.$COMPOSE_SERVICE.lock" holder t0=$EPOCHREALTIME
  exec {LOCK_FD}>>"$lock_file"
  if ! flock -n "$LOCK_FD"; then
    holder=$(head -c 200 "$lock_file" 2>/dev/null | tr -d '\n' || true)
    log "another deploy of $COMPOSE_SERVICE holds $lock_file (${holder:-unknown}); waiting up to ${LOCK_WAIT}s"
    if ! flock -w "$LOCK_WAIT" "$LOCK_FD"; then
      fail "$EXIT_BUSY" lock-busy "another deploy of $COMPOSE_SERVICE in project $PROJECT_NAME still holds the lock after ${LOCK_WAIT}s" \
        true holder "$(json_str "$holder")" lock "$(json_str "$lock_file")"
    fi
    LOCK_WAITED=$(elapsed_since "$t0")
  fi
  printf 'commit=%s pid=%s since=%s\n' "$COMMIT" "$$" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$lock_file"
}

# read_secrets: the required secret keys' presence/length in the env file (SECRETS_JSON) and
# the missing ones (SECRETS_MISSING); never a value.
SECRETS_MISSING=""
read_secrets() {
  ((${#REQUIRED_SECRETS[@]})) || return 0
  local out
  out=$(python3 -c "$ENVFILE_PY" secrets "$ENV_FILE" "${REQUIRED_SECRETS[@]}") ||
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "could not read $ENV_FILE" false channel '"env-file"'
  SECRETS_JSON=$(head -n 1 <<<"$out")
  SECRETS_MISSING=$(sed -n 2p <<<"$out")
}

# record_previous: the running container, its ID and commit, before anything (rollback hint,
# previousCommit, and the measured `recreated`).
record_previous() {
  inspect_container
  if [[ $C_FOUND == found ]]; then
    PREV_ID=$C_ID
    PREV_COMMIT=$C_REVISION
    is_commit "$PREV_COMMIT" || PREV_COMMIT=$C_ENV_COMMIT
    is_commit "$PREV_COMMIT" || PREV_COMMIT=""
  fi
}

preflight() {
  [[ -d $PROJECT_DIR ]] || fail "$EXIT_PRECONDITION" project-missing "the Compose project directory $PROJECT_DIR does not exist" false
  local id revision
  id=$(image_id_of "$IMAGE")
  image_is "$id" "$IMAGE_ID" "$DIGEST" ||
    fail "$EXIT_PRECONDITION" image-missing "$IMAGE is not here with ID $IMAGE_ID (found ${id:-nothing}); run the transfer/pull step first" false
  revision=$(docker image inspect --format "{{index .Config.Labels \"$REVISION_LABEL\"}}" "$IMAGE" 2>/dev/null || true)
  [[ $revision == "$COMMIT" ]] ||
    fail "$EXIT_PRECONDITION" label-mismatch "$IMAGE carries revision label '${revision:-<none>}', not $COMMIT" false

  read_secrets
  if [[ -n $SECRETS_MISSING ]]; then
    local list="" k
    for k in $SECRETS_MISSING; do list+="${list:+,}$(json_str "$k")"; done
    fail "$EXIT_PRECONDITION" secret-missing "required keys missing or empty in $ENV_FILE: $SECRETS_MISSING" false \
      service "$(json_str "$SERVICE_ID")" secrets "$SECRETS_JSON" missingSecretKeys "[$list]" requiredSecretsPresent false \
      recommendedAction "$(json_str "restore the missing keys in $ENV_FILE, recreate only $COMPOSE_SERVICE, then verify \`microservice health $SERVICE_ID\`; nothing was changed")"
  fi

  local services
  [[ ! -f $ENV_FILE ]] || COMPOSE_ARGS+=(--env-file "$ENV_FILE")
  services=$(compose config --services 2>"$TMP/config.err") ||
    fail "$EXIT_PRECONDITION" compose-invalid "the Compose project in $PROJECT_DIR does not load: $(tail -n 2 "$TMP/config.err" | tr '\n' ' ' | head -c 300)" false
  grep -qxF -- "$COMPOSE_SERVICE" <<<"$services" ||
    fail "$EXIT_PRECONDITION" compose-service-missing "the Compose project in $PROJECT_DIR has no service $COMPOSE_SERVICE" false

  record_previous
}

# env_line_is KEY VALUE: the env file's last line setting KEY is exactly KEY=VALUE (the way
# envfile.py writes it). Read-only; no value is printed. KEY is <PREFIX>COMMIT|IMAGE|DIGEST
# (validated), so it is safe inside the pattern.
env_line_is() {
  local key=$1 value=$2 line
  [[ -f $ENV_FILE ]] || return 1
  line=$(grep -E "^[[:space:]]*(export[[:space:]]+)?${key}[[:space:]]*=" -- "$ENV_FILE" 2>/dev/null | tail -n 1) ||
    return 1
  line=${line%$'\r'}
  [[ $line == "$key=$value" ]]
}

# already_live: read-only; succeeds when the service already runs exactly this deploy (step 3 of
# the header), so a deploy on a fresh or imported Pulumi state changes nothing that is live.
already_live() {
  [[ $C_FOUND == found && $C_STATUS == running ]] || return 1
  image_is "$C_IMAGE" "$IMAGE_ID" "$DIGEST" || return 1
  [[ $C_REVISION == "$COMMIT" && $C_ENV_COMMIT == "$COMMIT" ]] || return 1
  local id tag
  id=$(image_id_of "$IMAGE")
  for tag in "$RETAG" "$RETAG:$COMMIT"; do
    [[ -n $id && $(image_id_of "$tag") == "$id" ]] || return 1
  done
  env_line_is "${ENV_PREFIX}COMMIT" "$COMMIT" || return 1
  env_line_is "${ENV_PREFIX}IMAGE" "$IMAGE" || return 1
  env_line_is "${ENV_PREFIX}DIGEST" "$DIGEST" || return 1
  check_live 0
}

# project_lock: serialize the change + recreate of every service of one Compose project. Pulumi
# deploys independent services concurrently, and two `compose up` runs in one project race on
# creating its default network: Docker does not keep network names unique, and a second
# `<project>_default` makes every later start fail as "ambiguous". Released once `up` returned.
project_lock() {
  local lock_file="$LOCK_DIR/unidesk-compose.$PROJECT_NAME.lock" t0=$EPOCHREALTIME
  exec {PROJECT_LOCK_FD}>>"$lock_file"
  if ! flock -n "$PROJECT_LOCK_FD"; then
    log "another deploy in Compose project $PROJECT_NAME is recreating; waiting up to ${LOCK_WAIT}s"
    flock -w "$LOCK_WAIT" "$PROJECT_LOCK_FD" ||
      fail "$EXIT_BUSY" lock-busy "another deploy in Compose project $PROJECT_NAME held it for ${LOCK_WAIT}s; nothing was changed" \
        true lock "$(json_str "$lock_file")"
    LOCK_WAITED=$(elapsed_since "$t0")
  fi
}

change() {
  project_lock
  log "retag $IMAGE -> $RETAG, $RETAG:$COMMIT"
  if ! docker tag "$IMAGE" "$RETAG:$COMMIT" >&2 || ! docker tag "$IMAGE" "$RETAG" >&2; then
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "docker could not tag $IMAGE as $RETAG (the running container is untouched)" false \
      channel '"docker"'
  fi
  local out rc=0
  out=$(python3 -c "$ENVFILE_PY" set "$ENV_FILE" "$LOCK_DIR" "${ENV_PREFIX}COMMIT=$COMMIT" "${ENV_PREFIX}IMAGE=$IMAGE" \
    "${ENV_PREFIX}DIGEST=$DIGEST") || rc=$?
  if ((rc != 0)); then
    [[ $rc == "$EXIT_BUSY" ]] && fail "$EXIT_BUSY" lock-busy "the env file $ENV_FILE stayed locked by another deploy for 60 s" true
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "could not write $ENV_FILE atomically (exit $rc)" false channel '"env-file"'
  fi
  ENV_RESULT=$out
  [[ " ${COMPOSE_ARGS[*]} " == *" --env-file "* ]] || COMPOSE_ARGS+=(--env-file "$ENV_FILE")
  log "${COMPOSE[*]} up -d --no-build --no-deps --force-recreate $COMPOSE_SERVICE"
  if ! compose up -d --no-build --no-deps --force-recreate "$COMPOSE_SERVICE" >"$TMP/up.log" 2>&1; then
    cat "$TMP/up.log" >&2
    inspect_container
    after_change_fail recreate-failed "compose up of $COMPOSE_SERVICE failed: $(tail -n 2 "$TMP/up.log" | tr '\n' ' ' | head -c 300)"
  fi
  flock -u "$PROJECT_LOCK_FD"
  cat "$TMP/up.log" >&2
}

# check_live TIMEOUT: read-only; succeeds when CONTAINER serves COMMIT: it runs image --image-id
# with revision label COMMIT, and its health (retried while it starts, up to TIMEOUT seconds; 0:
# one try) says deploy.commit and deploy.requestedCommit = COMMIT (plus the verify kind's checks).
# Sets HEALTH_JSON and AUTH_JSON; on failure LIVE_ERROR, LIVE_DETAIL and LIVE_EXTRA (KEY VALUE...).
LIVE_ERROR="" LIVE_DETAIL="" HEALTH_JSON="" AUTH_JSON=null
LIVE_EXTRA=()
live_fails() { LIVE_ERROR=$1 LIVE_DETAIL=$2; }
check_live() {
  local timeout=$1
  LIVE_EXTRA=()
  inspect_container
  if [[ $C_FOUND != found ]]; then
    live_fails unhealthy "no container $CONTAINER"
    return 1
  fi
  if ! image_is "$C_IMAGE" "$IMAGE_ID" "$DIGEST"; then
    live_fails digest-mismatch "$CONTAINER runs image $C_IMAGE, not $IMAGE_ID (is the Compose image $RETAG?)"
    return 1
  fi
  if [[ $C_REVISION != "$COMMIT" ]]; then
    live_fails commit-mismatch "$CONTAINER image label revision is '${C_REVISION:-<none>}', not $COMMIT"
    return 1
  fi

  local deadline addr code="" kind="" deploy_commit="" requested="" status="" a1="" a2="" a3="" a4="" a5="" last=""
  deadline=$(($(date +%s) + timeout))
  while :; do
    inspect_container
    if [[ $C_FOUND != found ]]; then
      live_fails unhealthy "$CONTAINER disappeared while starting"
      return 1
    fi
    if [[ $C_STATUS == exited || $C_STATUS == dead ]]; then
      live_fails unhealthy "$CONTAINER stopped (status $C_STATUS, exit code $C_EXIT) instead of serving $HEALTH_PATH"
      return 1
    fi
    addr=$C_IP
    [[ $C_NETMODE != host ]] || addr=127.0.0.1
    if [[ -n $addr && $C_STATUS == running ]]; then
      code=$(curl -s -o "$TMP/health" --connect-timeout 2 --max-time 5 -w '%{http_code}' \
        "http://$addr:$HEALTH_PORT$HEALTH_PATH" 2>/dev/null || true)
      if [[ $code == 200 ]]; then
        IFS=$'\x1f' read -r kind deploy_commit requested status a1 a2 a3 a4 a5 \
          < <(health_fields "$TMP/health") || true
        [[ $kind == json ]] && break
        last="HTTP 200 but the body is not a JSON object"
      else
        last="HTTP ${code:-no answer} from $addr:$HEALTH_PORT$HEALTH_PATH"
      fi
    else
      last="$CONTAINER is ${C_STATUS:-unknown} without a reachable address"
    fi
    if (($(date +%s) >= deadline)); then
      live_fails unhealthy "$CONTAINER did not answer $HEALTH_PATH healthy within ${timeout}s: $last"
      LIVE_EXTRA=(health "$(json_obj httpStatus "$(json_str "$code")")")
      return 1
    fi
    sleep 0.5
  done
  log "health answered: $HEALTH_PATH on $addr:$HEALTH_PORT"

  if [[ $VERIFY == todo-note-synthetic ]]; then
    if [[ $status != ok ]]; then
      live_fails unhealthy "$HEALTH_PATH answered status '${status:-<none>}', not ok"
      return 1
    fi
    deploy_commit=$C_REVISION
    requested=$C_ENV_COMMIT
  fi
  HEALTH_JSON=$(json_obj deployCommit "$(json_str "$deploy_commit")" requestedCommit "$(json_str "$requested")" \
    status "$(json_str "$status")" url "$(json_str "http://$addr:$HEALTH_PORT$HEALTH_PATH")" \
    synthetic "$([[ $VERIFY == todo-note-synthetic ]] && echo true || echo false)")
  if [[ $deploy_commit != "$COMMIT" || $requested != "$COMMIT" ]]; then
    live_fails commit-mismatch "health reports deploy.commit '${deploy_commit:-<none>}' and requestedCommit '${requested:-<none>}', expected $COMMIT"
    LIVE_EXTRA=(health "$HEALTH_JSON")
    return 1
  fi
  AUTH_JSON=null
  if [[ $VERIFY == baidu-auth-gate ]]; then
    AUTH_JSON=$(json_obj configured "$a1" clientIdConfigured "$a2" clientSecretConfigured "$a3" tokenKeyConfigured "$a4" loggedIn "$a5")
    if [[ "$a1$a2$a3$a4$a5" != truetruetruetruetrue ]]; then
      live_fails auth-not-configured "health auth booleans are not all true: $AUTH_JSON"
      LIVE_EXTRA=(health "$HEALTH_JSON" auth "$AUTH_JSON")
      return 1
    fi
  fi
  return 0
}

# verify: prove the container runs the commit (after the recreate, or read-only in verify mode);
# prints the verdict.
verify() {
  check_live "$HEALTH_TIMEOUT" || after_change_fail "$LIVE_ERROR" "$LIVE_DETAIL" "${LIVE_EXTRA[@]}"
  print_verdict
}

print_verdict() {
  local env_file
  env_file=$(json_obj path "$(json_str "$ENV_FILE")" keys "[$(json_str "${ENV_PREFIX}COMMIT"),$(json_str "${ENV_PREFIX}IMAGE"),$(json_str "${ENV_PREFIX}DIGEST")]" result "${ENV_RESULT:-null}")
  json_obj ok true mode "$(json_str "$MODE")" service "$(json_str "$SERVICE_ID")" commit "$(json_str "$COMMIT")" \
    composeService "$(json_str "$COMPOSE_SERVICE")" container "$(json_str "$CONTAINER")" \
    containerId "$(json_str "$C_ID")" registryDigest "$(json_str "$DIGEST")" imageId "$(json_str "$IMAGE_ID")" \
    containerImageId "$(json_str "$C_IMAGE")" imageMatches true revisionLabel "$(json_str "$C_REVISION")" \
    health "$HEALTH_JSON" secrets "$SECRETS_JSON" auth "$AUTH_JSON" composeCommand "$(json_str "${COMPOSE[*]}")" \
    images "[$(json_str "$RETAG"),$(json_str "$RETAG:$COMMIT")]" envFile "$env_file" \
    recreated "$(recreated_json)" alreadyLive "$ALREADY_LIVE" \
    previousCommit "$(prev_commit_json)" previousContainerId "$(json_str "$PREV_ID")" \
    lockWaitSeconds "$LOCK_WAITED" seconds "$(elapsed_since "$START")"
}

ENV_RESULT=""
main() {
  exec </dev/null
  START=$EPOCHREALTIME
  parse_args "$@"
  require_docker
  require_tool curl
  require_tool python3
  make_tmp
  if [[ $MODE == verify ]]; then
    log "verify only: nothing is locked, tagged, written or recreated"
    record_previous
    read_secrets
    verify
    return 0
  fi
  compose_cmd "$COMPOSE_OVERRIDE"
  require_tool flock
  COMPOSE_ARGS=(--project-directory "$PROJECT_DIR" -p "$PROJECT_NAME")
  take_lock
  log "lock taken; preflight"
  preflight
  if already_live; then
    log "$CONTAINER already runs $COMMIT with this image, env and tags, and serves it: nothing to change"
    ALREADY_LIVE=true
    ENV_RESULT='{"changed":false,"created":false}'
    print_verdict
    return 0
  fi
  change
  log "recreated; verifying"
  verify
}

main "$@"
