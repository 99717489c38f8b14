# shellcheck shell=bash
# compose-deploy.sh: retag, stamp, recreate and verify one Compose service (R14, R15, R16, R19;
# issue 12: safe order, restore, detached switch; issue 11: the project's own .env kept).
#
#   argv: artifact_cd.contract.ComposeDeployArgs (docs/contracts.md, generated argv table);
#   --lock-wait defaults to 180 s, --health-timeout to 45 s, --mode to deploy, --auto-restore to no,
#   --lock-dir to /run/lock (the plan never sets it; the project dir when it is missing or not writable).
#
# Runs on the host of the Compose project (master server or D601), after move-image.sh put
# E/R:SHA there. --mode deploy (the default), in this order; nothing live changes before step 7:
#   1. locks, keyed by what is mutated, always in this order (no deadlock): the service
#      (/run/lock/unidesk-deploy.<project>.<service>.lock; the project dir when /run/lock is
#      missing), the container name (unidesk-deploy.container.<name>.lock) and the retag
#      (unidesk-deploy.retag.<repo, / as _>.lock): dev and prod deploys that touch one container or
#      retag on one host are serialized. A busy lock is waited for up to --lock-wait seconds, then
#      lock-busy (exit 7, retryable).
#   2. audit (--audit-log, --stack, --target): audit_init; a refusal from here on leaves one
#      `failed` line; `started` is written by the detached switch (step 7), `finished`/`failed` at
#      the end. Then the result of an earlier run whose session was lost is picked up (previousRun)
#      and its run dir removed; TMPDIR is proven writable (else disk-full).
#   3. preflight, read-only: the image E/R:SHA is here with ID --image-id and revision label SHA; the
#      env file's directory exists (else env-dir-missing); required secret keys are present and
#      non-empty (present/length only; else secret-missing); every --compose-file exists (else
#      compose-file-missing); the Compose project loads WITH the new deploy values and knows the
#      service (compose config: started in the background when the preflight begins, so its Compose
#      start overlaps the checks above, and collected here, in this order).
#   4. the previous deploy: this target's own container (compose labels project/service; a
#      container of that name owned by anything else is container-conflict; this service running
#      under another container name is container-name-mismatch; a running container refusing
#      connections on --health-port is health-port-refused: all before any change), its
#      ID, image and commit. previousCommit is the commit that was serving: the container's, unless
#      it is missing, stopped or runs the unverified commit of an interrupted or failed deploy --
#      then the one kept in <lock>.state (written atomically; `unverified=` marks a switch whose
#      verification never passed). When the service already runs exactly this deploy (image
#      --image-id, revision label and <PREFIX>COMMIT = SHA, health with both commits = SHA in one
#      try, the env file's three deploy keys, RETAG and RETAG:SHA) nothing is changed: alreadyLive.
#   5. per-project lock (unidesk-compose.<project>.lock), SHARED when every network the project
#      declares (and `default`) already exists with its Compose labels (then no `compose up` creates
#      one, and deploys of other services of the project recreate at the same time), EXCLUSIVE
#      otherwise (two `compose up` creating one network duplicate it); and the env file lock
#      (unidesk-envfile.<hash>.lock, exclusive, held from the staging to the switch's rename only);
#      then the new env file is staged beside the env file (.<name>.unidesk-<project>.<service>.new.*,
#      mode and owner kept) with a backup of the current one (....backup.*, a hard link); ENOSPC is
#      disk-full (host, path, bytes needed and free), nothing half-written.
#   6. the state file records unverified=SHA; the detached switch (step 7) writes `started`.
#   7. the live switch runs DETACHED from the SSH session (setsid, its own output files under
#      <lock>.run/): a dropped session cannot stop it half-way; the foreground waits and prints its
#      result, and if the foreground is gone the next run picks the result up (step 1). The switch:
#      retag RETAG:SHA and RETAG, rename the staged file over the env file, then
#      <compose> --project-directory DIR -p P up -d --no-build --no-deps --force-recreate SVC
#      (v2 `docker compose` when present else v1 `docker-compose`), plus `-f FILE` per --compose-file
#      (services.<id>.names.composeFiles, in order; none: Compose's own discovery in DIR, COMPOSE_FILE
#      of its .env included) on every Compose call. Compose is given no --env-file:
#      the project's own .env still interpolates ${VAR} and sets COMPOSE_FILE/COMPOSE_PROFILES; the
#      three deploy values are in the Compose process environment (interpolation) and reach the
#      container through the service's env_file (the env file). Any failure before `up` starts --
#      or an `up` that failed leaving the old container in place -- restores what was changed: the
#      previous image ID on RETAG (RETAG:SHA untagged when it did not exist; no image is deleted)
#      and the previous env file (envfile.py restore, under the env file lock: the backup renamed
#      back when the file is still what this run wrote, else -- another deploy renamed its own file
#      since -- only this service's three keys back, every other byte kept): verdict `restored`.
#   8. verify: the container runs image --image-id; its revision label == SHA; health reached at
#      the container's IP on its network (127.0.0.1 under host networking), retried while it starts
#      (up to --health-timeout): deploy.commit and deploy.requestedCommit == SHA (standard,
#      baidu-auth-gate); /api/health ok + label + container env <PREFIX>COMMIT (todo-note-synthetic);
#      auth.configured, clientIdConfigured, clientSecretConfigured, tokenKeyConfigured, loggedIn all
#      true (baidu-auth-gate; a failure names the --required-secret keys to restore). Passed: the
#      state file says SHA serves. Failed, with --auto-restore yes and the previous commit's image
#      still here (RETAG:PREV or the previous container's image, label = PREV): the previous tag and
#      env values are put back, the service recreated and the previous commit verified; the verdict
#      says restore {attempted, ok, commit} (audit verdict restored / restore-failed). Without it,
#      the failure is reported as it stands (the state file keeps unverified=SHA).
# Temp files (TMPDIR, the staged env files, the run dir) are removed on every exit path, signals
# included (at_exit), by the process that owns them.
# --mode verify (the Pulumi Command's update: a new script text or connection re-verifies, never
# recreates): step 8's checks only, read-only -- no lock, no audit line, no retag, no env write,
# no recreate; required secrets are reported (present/length), not enforced. recreated=false.
# Output: one JSON verdict with mode, recreated (measured: the container ID after differs from the
# one before), alreadyLive, changed [retag-commit, retag, env-file, container], restored [...],
# previousCommit. A failure of step 8 says recreated, names the previous commit and how to roll
# back (unhealthy, commit-mismatch, auth-not-configured, digest-mismatch, recreate-failed: exit 6).
# Needs: bash, docker, docker compose v2 or docker-compose v1 (deploy), flock, setsid (deploy),
# curl, python3.
set -euo pipefail

SERVICE_ID="" COMPOSE_SERVICE="" CONTAINER="" COMMIT="" DIGEST="" IMAGE_ID="" IMAGE="" RETAG=""
PROJECT_DIR="" PROJECT_NAME="" ENV_FILE="" ENV_PREFIX="" VERIFY="" HEALTH_PATH="" HEALTH_PORT=""
COMPOSE_OVERRIDE="" LOCK_WAIT=180 HEALTH_TIMEOUT=45 MODE=deploy AUTO_RESTORE=no
AUDIT_LOG_PATH="" STACK="" TARGET=""
REQUIRED_SECRETS=()
LOCK_DIR_ARG=""
COMPOSE_FILES=() # --compose-file, in order: each a `-f` of every Compose call (none: Compose's discovery)
START="" LOCK_DIR="" LOCK_WAITED=0 RUN_DIR="" STATE_FILE="" PREVIOUS_RUN=null
PREV_ID="" PREV_COMMIT="" PREV_IMAGE="" PREV_SOURCE="" SECRETS_JSON="{}" ALREADY_LIVE=false
STATE_COMMIT="" STATE_UNVERIFIED=""
COMPOSE_ARGS=()
COMPOSE_ENV=() # KEY=VALUE for the Compose process: the deploy values (interpolation)
DEPLOY_ENV=()  # <PREFIX>COMMIT|IMAGE|DIGEST=<this deploy>
ENV_REAL="" ENV_TMP="" ENV_BACKUP="" ENV_CREATED=false ENV_CHANGED=false OWN_STAGED="" ENV_STAGED_SHA=""
STAGE_TAG=""
PREV_ENV_COMMIT="" PREV_ENV_IMAGE="" PREV_ENV_DIGEST=""
RETAG_BEFORE="" RETAG_COMMIT_BEFORE=""
CHANGED=() RESTORED=()
RESTORE_JSON=null
US=$'\x1f'

# The Python helpers (artifact_cd/scripts/py/, inlined by script_text): ENVFILE_PY reads the
# secret keys' presence, stages the new env file and (restore) rewrites the deploy keys; the
# health body is read by lib.sh's health_fields. Containers are read with `docker container
# inspect -f` (no secret env value is ever printed: only the one deploy key is matched).

log() { printf 'compose-deploy [%ss]: %s\n' "$(elapsed_since "$START")" "$*" >&2; }

compose() {
  (cd "$PROJECT_DIR" && env "${COMPOSE_ENV[@]}" "${COMPOSE[@]}" "${COMPOSE_ARGS[@]}" "$@")
}

json_array() { # NAME...: a JSON array of strings (json_list of lib.sh, empty-safe)
  if (($#)); then json_list "$@"; else printf '[]'; fi
}
changed_json() { json_array "${CHANGED[@]}"; }
restored_json() { json_array "${RESTORED[@]}"; }

# refuse EXIT ERROR DETAIL RETRYABLE [KEY VALUE ...]: fail, saying nothing was changed or restored.
refuse() { fail "$@" changed '[]' restored '[]'; }

# inspect_container: set C_* from `docker container inspect CONTAINER` (one template, no parser).
C_FOUND="" C_ID="" C_IMAGE="" C_STATUS="" C_EXIT="" C_REVISION="" C_NETMODE="" C_IP="" C_ENV_COMMIT=""
C_PROJECT="" C_CSERVICE=""
INSPECT_FORMAT=""
inspect_format() {
  local key="${ENV_PREFIX}COMMIT="
  INSPECT_FORMAT="{{.Id}}$US{{.Image}}$US{{.State.Status}}$US{{.State.ExitCode}}$US"
  INSPECT_FORMAT+="{{index .Config.Labels \"$REVISION_LABEL\"}}$US{{.HostConfig.NetworkMode}}$US"
  INSPECT_FORMAT+="{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}$US"
  INSPECT_FORMAT+="{{index .Config.Labels \"com.docker.compose.project\"}}$US"
  INSPECT_FORMAT+="{{index .Config.Labels \"com.docker.compose.service\"}}$US"
  INSPECT_FORMAT+="{{range .Config.Env}}{{if eq (truncate . ${#key}) \"$key\"}}{{.}} {{end}}{{end}}"
}
inspect_container() {
  local out ips envs
  C_FOUND=missing C_ID="" C_IMAGE="" C_STATUS="" C_EXIT="" C_REVISION="" C_NETMODE="" C_IP="" C_ENV_COMMIT=""
  C_PROJECT="" C_CSERVICE=""
  out=$(docker container inspect -f "$INSPECT_FORMAT" "$CONTAINER" 2>/dev/null) || return 0
  IFS=$US read -r C_ID C_IMAGE C_STATUS C_EXIT C_REVISION C_NETMODE ips C_PROJECT C_CSERVICE envs <<<"$out" || true
  C_FOUND=found
  C_IP=${ips%% *}
  envs=${envs% }
  envs=${envs##* }
  C_ENV_COMMIT=${envs#"${ENV_PREFIX}COMMIT="}
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
# prev_source_json: where previousCommit was read: "container" (this target's own) or "state"
# (<lock>.state: the container is missing, stopped or runs an unverified commit).
prev_source_json() { if [[ -n $PREV_SOURCE ]]; then json_str "$PREV_SOURCE"; else printf null; fi; }

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
    previousCommitFrom "$(prev_source_json)" previousContainerId "$(json_str "$PREV_ID")" containerId "$(json_str "$C_ID")" \
    rollback "$(rollback_hint)" secrets "$SECRETS_JSON" changed "$(changed_json)" restored "$(restored_json)" \
    restore "$RESTORE_JSON" "$@"
}

# is_compose_file PATH: a Compose file relative to --project-dir (no '.' or '..' segment, not
# starting with '-' or '.') or absolute (lib.sh is_abs_path), not ending with '/'.
is_compose_file() {
  [[ ${#1} -le 241 && $1 =~ ^[A-Za-z0-9_+@/] && $1 != */ ]] || return 1
  if [[ $1 == /* ]]; then is_abs_path "$1"; else is_abs_path "/$1"; fi
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
      --auto-restore) arg_value $# "$1"; AUTO_RESTORE=$2 ;;
      --audit-log) arg_value $# "$1"; AUDIT_LOG_PATH=$2 ;;
      --stack) arg_value $# "$1"; STACK=$2 ;;
      --target) arg_value $# "$1"; TARGET=$2 ;;
      --compose-file) arg_value $# "$1"; need compose_file --compose-file "$2"; COMPOSE_FILES+=("$2") ;;
      --lock-dir) arg_value $# "$1"; need abs_path --lock-dir "$2"; LOCK_DIR_ARG=$2 ;;
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
  need_one_of --auto-restore "$AUTO_RESTORE" yes no
  if [[ -n $AUDIT_LOG_PATH || -n $STACK || -n $TARGET ]]; then # the audit line needs all three
    need abs_path --audit-log "$AUDIT_LOG_PATH"
    need name --stack "$STACK"
    need_one_of --target "$TARGET" master-compose d601-compose
  fi
  [[ $LOCK_WAIT =~ ^[0-9]{1,4}$ ]] || fail "$EXIT_INVALID" invalid-argument "--lock-wait must be seconds" false argument '"--lock-wait"'
  [[ $HEALTH_TIMEOUT =~ ^[0-9]{1,4}$ && $HEALTH_TIMEOUT -ge 1 ]] ||
    fail "$EXIT_INVALID" invalid-argument "--health-timeout must be seconds" false argument '"--health-timeout"'
  DEPLOY_ENV=("${ENV_PREFIX}COMMIT=$COMMIT" "${ENV_PREFIX}IMAGE=$IMAGE" "${ENV_PREFIX}DIGEST=$DIGEST")
  STAGE_TAG=$PROJECT_NAME.$COMPOSE_SERVICE # the staged env files' tag: the service lock's key
  inspect_format
}

# ---------------------------------------------------------------------------- locks

# lock_on FD_VAR FILE WHAT: open FILE on a new fd (its number in FD_VAR) and flock it, waiting up to
# --lock-wait seconds (lock-busy naming WHAT and the holder); the holder line is written into it.
lock_on() {
  local fd_var=$1 lock_file=$2 what=$3 holder t0=$EPOCHREALTIME fd
  { exec {fd}>>"$lock_file"; } 2>/dev/null || lock_unusable "$lock_file"
  printf -v "$fd_var" '%s' "$fd"
  if ! flock -n "$fd"; then
    holder=$(head -c 200 "$lock_file" 2>/dev/null | tr -d '\n' || true)
    log "another deploy of $what holds $lock_file (${holder:-unknown}); waiting up to ${LOCK_WAIT}s"
    if ! flock -w "$LOCK_WAIT" "$fd"; then
      refuse "$EXIT_BUSY" lock-busy "another deploy of $what still holds the lock after ${LOCK_WAIT}s; nothing was changed" \
        true holder "$(json_str "$holder")" lock "$(json_str "$lock_file")"
    fi
    LOCK_WAITED=$(awk -v a="$LOCK_WAITED" -v b="$(elapsed_since "$t0")" 'BEGIN { printf "%.3f", a + b }')
  fi
  printf 'commit=%s pid=%s service=%s project=%s since=%s\n' "$COMMIT" "$$" "$SERVICE_ID" "$PROJECT_NAME" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$lock_file"
}

# lock_unusable FILE: a lock file this user cannot open (left by a deploy as another user).
lock_unusable() {
  refuse "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un 2>/dev/null || id -u) cannot open the lock file $1 on $(hostname) (left by a deploy as another user?); remove it (no deploy running) or deploy as one user; nothing was changed" false \
    channel '"lock"' path "$(json_str "$1")"
}

take_locks() {
  LOCK_DIR=${LOCK_DIR_ARG:-/run/lock}
  [[ -d $LOCK_DIR && -w $LOCK_DIR ]] || LOCK_DIR=$PROJECT_DIR
  local base="$LOCK_DIR/unidesk-deploy"
  RUN_DIR="$base.$PROJECT_NAME.$COMPOSE_SERVICE.run"
  STATE_FILE="$base.$PROJECT_NAME.$COMPOSE_SERVICE.state"
  lock_on LOCK_FD "$base.$PROJECT_NAME.$COMPOSE_SERVICE.lock" "$COMPOSE_SERVICE in project $PROJECT_NAME"
  lock_on CONTAINER_LOCK_FD "$base.container.$CONTAINER.lock" "the container $CONTAINER"
  lock_on RETAG_LOCK_FD "$base.retag.${RETAG//\//_}.lock" "the retag $RETAG"
}

# project_lock: the change + recreate of the services of one Compose project. Pulumi deploys
# independent services concurrently. Every `compose up` first ensures each network the project
# declares, and two of them creating one network race: Docker does not keep network names unique,
# and a second `<project>_default` makes every later start fail as "ambiguous". So the lock is
# exclusive while a network is missing, and shared (deploys of other services recreate at the same
# time) once every declared network and `default` exist with this project's Compose labels
# (networks_ready). Released once `up` returned.
PROJECT_LOCK_FD="" PROJECT_LOCK_MODE=""
project_lock() {
  local lock_file="$LOCK_DIR/unidesk-compose.$PROJECT_NAME.lock" t0=$EPOCHREALTIME
  [[ -n $PROJECT_LOCK_FD ]] || { exec {PROJECT_LOCK_FD}>>"$lock_file"; } 2>/dev/null || lock_unusable "$lock_file"
  PROJECT_LOCK_MODE=-x
  if networks_ready; then PROJECT_LOCK_MODE=-s; fi
  if ! flock -n "$PROJECT_LOCK_MODE" "$PROJECT_LOCK_FD"; then
    log "another deploy in Compose project $PROJECT_NAME is recreating; waiting up to ${LOCK_WAIT}s"
    flock -w "$LOCK_WAIT" "$PROJECT_LOCK_MODE" "$PROJECT_LOCK_FD" || return 1
    LOCK_WAITED=$(awk -v a="$LOCK_WAITED" -v b="$(elapsed_since "$t0")" 'BEGIN { printf "%.3f", a + b }')
  fi
}

# networks_ready: every network of the project's config (PROJECT_NETWORKS, from config_result; plus
# `default`) exists with this project's Compose labels. External networks carry no such label:
# a project that names one always takes the project lock exclusively.
networks_ready() {
  local have want
  have=$(docker network ls --filter "label=com.docker.compose.project=$PROJECT_NAME" \
    --format '{{.Label "com.docker.compose.network"}}' 2>/dev/null) || return 1
  for want in default "${PROJECT_NETWORKS[@]}"; do
    grep -qxF -- "$want" <<<"$have" || return 1
  done
}

# env_lock: the env file's own lock, the one envfile.py `set` and `restore` take (the same file
# name), held from the staging to the switch's rename: each deploy stages from the file as the last
# rename left it. A restore after the rename puts back only this service's keys when another deploy
# renamed its file since (envfile.py restore).
ENV_LOCK_FD=""
env_lock() {
  local real hash
  real=$(realpath -m -- "$ENV_FILE")
  hash=$(printf '%s' "$real" | sha256sum)
  { exec {ENV_LOCK_FD}>>"$LOCK_DIR/unidesk-envfile.${hash:0:16}.lock"; } 2>/dev/null ||
    lock_unusable "$LOCK_DIR/unidesk-envfile.${hash:0:16}.lock"
  flock -w "$LOCK_WAIT" "$ENV_LOCK_FD" ||
    refuse "$EXIT_BUSY" lock-busy "the env file $ENV_FILE stayed locked by another deploy for ${LOCK_WAIT}s; nothing was changed" true
}

unlock() { # FD...: release (the detached switch shares the open files with the foreground)
  local fd
  for fd in "$@"; do [[ -z $fd ]] || flock -u "$fd" || true; done
}

# pick_up_previous_run: a run dir left under the lock is from a run whose foreground was gone when
# its detached switch ended (a lost SSH session): its result is kept in the verdict (previousRun).
pick_up_previous_run() {
  [[ -d $RUN_DIR ]] || return 0
  local line=""
  [[ ! -s $RUN_DIR/result ]] || line=$(tail -n 1 -- "$RUN_DIR/result")
  if [[ $line == "{"*"}" ]]; then
    PREVIOUS_RUN=$line
    log "an earlier run of this deploy lost its session; its switch ended with: ${line:0:400}"
  else
    log "an earlier run of this deploy left $RUN_DIR without a result (killed); cleaning up"
  fi
  rm -rf -- "$RUN_DIR"
}

# ---------------------------------------------------------------------------- state, space

# read_state: <lock>.state: commit=<the commit that was serving> unverified=<a switched commit
# never verified>.
read_state() {
  STATE_COMMIT="" STATE_UNVERIFIED=""
  [[ -f $STATE_FILE ]] || return 0
  local line
  while IFS= read -r line || [[ -n $line ]]; do
    case $line in
      commit=*) STATE_COMMIT=${line#commit=} ;;
      unverified=*) STATE_UNVERIFIED=${line#unverified=} ;;
    esac
  done <"$STATE_FILE"
  is_commit "$STATE_COMMIT" || STATE_COMMIT=""
  is_commit "$STATE_UNVERIFIED" || STATE_UNVERIFIED=""
}

# write_state COMMIT UNVERIFIED: atomically (temp file + rename in the lock dir).
write_state() {
  local tmp="$STATE_FILE.tmp.$$"
  if ! printf 'commit=%s\nunverified=%s\n' "$1" "$2" >"$tmp" 2>/dev/null || ! mv -fT -- "$tmp" "$STATE_FILE"; then
    rm -f -- "$tmp"
    return 1
  fi
}

# state_unwritable: the state file could not be written before the switch: disk-full when its
# filesystem has no room, else infra-blocked (e.g. a file of another user); nothing was changed.
state_unwritable() {
  local free
  free=$(df -P -B1 -- "$LOCK_DIR" 2>/dev/null | awk 'NR == 2 { print $4 }') || true
  if [[ $free =~ ^[0-9]+$ ]] && ((free < 65536)); then
    disk_full "$LOCK_DIR" 4096 "the deploy state file $STATE_FILE"
  fi
  refuse "$EXIT_INFRA_BLOCKED" infra-blocked "could not write the deploy state file $STATE_FILE on $(hostname) (left by a deploy as another user?); remove it (no deploy running); nothing was changed" false \
    channel '"state-file"' path "$(json_str "$STATE_FILE")"
}

# disk_full PATH NEEDED WHAT: the structured, non-retryable disk-full failure (nothing changed).
disk_full() {
  local path=$1 needed=$2 what=$3 line fs="" free="" mount=""
  line=$(df -P -B1 -- "$path" 2>/dev/null | tail -n 1) || true
  read -r fs _ _ free _ mount <<<"$line" || true
  [[ $free =~ ^[0-9]+$ ]] || free=""
  [[ $needed =~ ^[0-9]+$ ]] || needed=""
  refuse "$EXIT_PRECONDITION" disk-full \
    "$(hostname): no space left on $path (filesystem ${fs:-?} on ${mount:-?}: ${free:-?} bytes free, ${needed:-?} needed) for $what; nothing was changed: free space there, then deploy again" false \
    host "$(json_str "$(hostname)")" path "$(json_str "$path")" filesystem "$(json_str "$fs")" \
    mountPoint "$(json_str "$mount")" bytesNeeded "${needed:-null}" bytesFree "${free:-null}"
}

# make_work_dir: TMP in TMPDIR, proven writable (64 KiB: health bodies, Compose logs); a full
# TMPDIR is disk-full before anything is changed, not a misleading later failure.
SPACE_PROBE=65536
make_work_dir() {
  local base=${TMPDIR:-/tmp}
  sweep_stale_tmp
  TMP=$(mktemp -d "$(tmp_template)" 2>/dev/null) || disk_full "$base" "$SPACE_PROBE" "the deploy's temp dir (TMPDIR)"
  at_exit _remove_tmp
  if ! head -c "$SPACE_PROBE" /dev/zero 2>/dev/null >"$TMP/space"; then
    rm -f -- "$TMP/space"
    disk_full "$base" "$SPACE_PROBE" "the deploy's temp dir (TMPDIR)"
  fi
  rm -f -- "$TMP/space"
}

# ---------------------------------------------------------------------------- preflight

# read_secrets: the required secret keys' presence/length in the env file (SECRETS_JSON) and
# the missing ones (SECRETS_MISSING); never a value.
SECRETS_MISSING=""
read_secrets() {
  ((${#REQUIRED_SECRETS[@]})) || return 0
  local out
  out=$(python3 -c "$ENVFILE_PY" secrets "$ENV_FILE" "${REQUIRED_SECRETS[@]}") ||
    refuse "$EXIT_INFRA_BLOCKED" infra-blocked "could not read $ENV_FILE" false channel '"env-file"'
  SECRETS_JSON=$(head -n 1 <<<"$out")
  SECRETS_MISSING=$(sed -n 2p <<<"$out")
}

# record_previous: this target's container (compose labels = this project and service), its ID,
# image and commit, and the commit that was serving (previousCommit) -- before anything changes.
CONFLICT=""
record_previous() {
  inspect_container
  local commit=""
  if [[ $C_FOUND == found ]]; then
    if [[ $C_PROJECT != "$PROJECT_NAME" || $C_CSERVICE != "$COMPOSE_SERVICE" ]]; then
      CONFLICT="project '${C_PROJECT:-<none>}' service '${C_CSERVICE:-<none>}'"
    else
      PREV_ID=$C_ID
      PREV_IMAGE=$C_IMAGE
      commit=$C_REVISION
      is_commit "$commit" || commit=$C_ENV_COMMIT
      is_commit "$commit" || commit=""
    fi
  fi
  if [[ -n $STATE_FILE ]]; then read_state; fi
  if [[ -n $STATE_COMMIT ]] && [[ -z $commit || $commit == "$STATE_UNVERIFIED" || $C_STATUS != running ]]; then
    PREV_COMMIT=$STATE_COMMIT PREV_SOURCE=state
  elif [[ -n $commit ]]; then
    PREV_COMMIT=$commit PREV_SOURCE=container
  fi
  [[ -z $CONFLICT ]] || C_FOUND=missing C_ID=""
}

IMAGE_LOCAL_ID="" # the local image ID of E/R:SHA, proven (image_is) by the preflight; reused by the switch
preflight() {
  [[ -d $PROJECT_DIR ]] || refuse "$EXIT_PRECONDITION" project-missing "the Compose project directory $PROJECT_DIR does not exist" false
  config_start # overlaps the checks below; its result is collected after them (config_result)
  local env_dir
  env_dir=$(realpath -m -- "$ENV_FILE")
  env_dir=${env_dir%/*}
  [[ -d ${env_dir:-/} ]] || refuse "$EXIT_PRECONDITION" env-dir-missing \
    "the directory $env_dir of the env file $ENV_FILE does not exist on $(hostname); create it (the Compose project's env_file lives there) or fix compose.<host>.envFile; nothing was changed" false \
    path "$(json_str "$env_dir")"
  # an env file this user cannot read (e.g. root's 0600 on a non-root host) is named as such, not
  # left to Compose's config error (compose-invalid)
  [[ ! -e $ENV_FILE || -r $ENV_FILE ]] || refuse "$EXIT_INFRA_BLOCKED" infra-blocked \
    "the env file $ENV_FILE on $(hostname) is not readable by $(id -un); nothing was changed" false \
    channel '"env-file"' path "$(json_str "$ENV_FILE")" \
    fix "$(json_str "sudo chown $(id -un) -- $ENV_FILE (README \"Non-root hosts\": the env file belongs to the SSH user)")"
  local id revision
  id=$(image_id_of "$IMAGE")
  image_is "$id" "$IMAGE_ID" "$DIGEST" ||
    refuse "$EXIT_PRECONDITION" image-missing "$IMAGE is not here with ID $IMAGE_ID (found ${id:-nothing}); run the transfer/pull step first" false
  IMAGE_LOCAL_ID=$id
  revision=$(docker image inspect --format "{{index .Config.Labels \"$REVISION_LABEL\"}}" "$IMAGE" 2>/dev/null || true)
  [[ $revision == "$COMMIT" ]] ||
    refuse "$EXIT_PRECONDITION" label-mismatch "$IMAGE carries revision label '${revision:-<none>}', not $COMMIT" false

  read_secrets
  if [[ -n $SECRETS_MISSING ]]; then
    local list="" k
    for k in $SECRETS_MISSING; do list+="${list:+,}$(json_str "$k")"; done
    refuse "$EXIT_PRECONDITION" secret-missing "required keys missing or empty in $ENV_FILE: $SECRETS_MISSING" false \
      service "$(json_str "$SERVICE_ID")" secrets "$SECRETS_JSON" missingSecretKeys "[$list]" requiredSecretsPresent false \
      recommendedAction "$(json_str "restore the missing keys in $ENV_FILE, recreate only $COMPOSE_SERVICE, then verify \`microservice health $SERVICE_ID\`; nothing was changed")"
  fi

  # the configured Compose files exist (a relative one in the project directory)
  local file path
  for file in "${COMPOSE_FILES[@]}"; do
    path=$file
    [[ $path == /* ]] || path=$PROJECT_DIR/$file
    [[ -f $path ]] || refuse "$EXIT_PRECONDITION" compose-file-missing \
      "the Compose file $path does not exist on $(hostname): fix services.$SERVICE_ID.names.composeFiles (relative to $PROJECT_DIR, or absolute); nothing was changed" false \
      file "$(json_str "$file")" path "$(json_str "$path")"
  done
  # the project loads with the new deploy values (and its own .env) and knows the service
  config_result

  record_previous
  [[ -z $CONFLICT ]] || refuse "$EXIT_PRECONDITION" container-conflict \
    "the container $CONTAINER on $(hostname) belongs to $CONFLICT, not to service $COMPOSE_SERVICE of Compose project $PROJECT_NAME; two targets cannot share one container name: give this service its own container name; nothing was changed" false \
    container "$(json_str "$CONTAINER")"
  names_exist
}

# config_start: the Compose preflight, `compose config` WITH the new deploy values, in the
# background (one Compose start, ~0.5 CPU-s with v1, overlapped with the image, env dir, secret and
# Compose file checks); read-only. Its output is the resolved project (values included): it stays
# in TMP (0700, removed on exit) and only the top-level service and network names are read from it
# (config_names; PROJECT_NETWORKS for the project lock). config_result collects it
# in the preflight's order; a refusal before that waits for it on exit (_config_wait): no process
# is left behind and TMP is removed after it ended. Compose is not started while a --compose-file
# is missing (that refusal comes first, with no Compose call); config_result then starts it itself.
CONFIG_PID=""
config_start() {
  local file path
  for file in "${COMPOSE_FILES[@]}"; do
    path=$file
    [[ $path == /* ]] || path=$PROJECT_DIR/$file
    [[ -f $path ]] || return 0
  done
  COMPOSE_ENV=("${DEPLOY_ENV[@]}")
  compose config >"$TMP/config.out" 2>"$TMP/config.err" &
  CONFIG_PID=$!
  at_exit _config_wait
}
_config_wait() {
  [[ -z $CONFIG_PID ]] || wait "$CONFIG_PID" 2>/dev/null || true
  CONFIG_PID=""
}
config_result() {
  local rc=0 pid=$CONFIG_PID
  [[ -n $pid ]] || config_start
  pid=$CONFIG_PID
  CONFIG_PID=""
  wait "$pid" || rc=$?
  ((rc == 0)) ||
    refuse "$EXIT_PRECONDITION" compose-invalid "the Compose project in $PROJECT_DIR does not load with the new deploy values: $(tail -n 2 "$TMP/config.err" | tr '\n' ' ' | head -c 300)" false
  config_names services <"$TMP/config.out" | grep -qxF -- "$COMPOSE_SERVICE" ||
    refuse "$EXIT_PRECONDITION" compose-service-missing "the Compose project in $PROJECT_DIR has no service $COMPOSE_SERVICE" false
  mapfile -t PROJECT_NETWORKS < <(config_names networks <"$TMP/config.out")
}

# config_names SECTION: the keys of a top-level SECTION (services, networks) of `compose config`
# output on stdin (YAML as Compose prints it: top-level keys at column 0, their keys indented by two
# spaces, quoted when YAML needs it).
PROJECT_NETWORKS=()
config_names() {
  awk -v want="$1:" -v q="'" '
    /^[^ #]/ { in_section = ($0 == want); next }
    in_section && /^  [^ #-]/ {
      name = substr($0, 3); sub(/:( .*)?$/, "", name); gsub(/"/, "", name); gsub(q, "", name); print name
    }'
}

# names_exist: the configured names hold on this host before anything is recreated (issue 11 item 3):
# a container of this project's service under another name (the container name is wrong), or the
# running container refusing connections on --health-port (the port is wrong) stops the deploy with
# the old container untouched. A service without a container is new: nothing to compare.
names_exist() {
  local names name
  if [[ $C_FOUND != found ]]; then
    names=$(docker ps -a --filter "label=com.docker.compose.project=$PROJECT_NAME" \
      --filter "label=com.docker.compose.service=$COMPOSE_SERVICE" --format '{{.Names}}' 2>/dev/null || true)
    for name in $names; do
      [[ $name != *"_$CONTAINER" ]] || continue # Compose v1's renamed container of an interrupted recreate
      refuse "$EXIT_PRECONDITION" container-name-mismatch \
        "service $COMPOSE_SERVICE of Compose project $PROJECT_NAME runs as container $name on $(hostname), not $CONTAINER: set services.$SERVICE_ID.names.containerName to $name (or the project's container_name); nothing was changed" false \
        container "$(json_str "$CONTAINER")" found "$(json_str "$name")"
    done
    return 0
  fi
  [[ $C_STATUS == running ]] || return 0
  local addr=$C_IP rc=0
  [[ $C_NETMODE != host ]] || addr=127.0.0.1
  [[ -n $addr ]] || return 0
  curl -s -o /dev/null --connect-timeout 2 --max-time 3 "http://$addr:$HEALTH_PORT$HEALTH_PATH" 2>/dev/null || rc=$?
  if ((rc == 7)); then
    refuse "$EXIT_PRECONDITION" health-port-refused \
      "the running $CONTAINER refuses connections on $addr:$HEALTH_PORT: set services.$SERVICE_ID.names.healthPort to the port it serves $HEALTH_PATH on (if the service is down, stop the container and deploy again); nothing was changed" false \
      container "$(json_str "$CONTAINER")" healthPort "$HEALTH_PORT"
  fi
}

# env_value KEY: the value of the env file's last line setting KEY (deploy keys: unquoted).
env_value() {
  local key=$1 line
  [[ -f $ENV_FILE ]] || return 0
  line=$(grep -E "^[[:space:]]*(export[[:space:]]+)?${key}[[:space:]]*=" -- "$ENV_FILE" 2>/dev/null | tail -n 1) || return 0
  line=${line%$'\r'}
  line=${line#*=}
  line=${line#"${line%%[![:space:]]*}"}
  printf '%s' "$line"
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

# already_live: read-only; succeeds when the service already runs exactly this deploy (step 4 of
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

# ---------------------------------------------------------------------------- staging (no live change)

# stage_env: under the project and env file locks, the new env file in a temp file beside the env
# file and a backup of the current one (envfile.py stage, tagged with this project.service, whose
# lock this run holds); nothing is renamed yet. ENV_STAGED_SHA: the staged content's SHA-256 (a
# restore renames the backup back only while the file still holds exactly that).
ENV_RESULT=""
stage_env() {
  project_lock ||
    refuse "$EXIT_BUSY" lock-busy "another deploy in Compose project $PROJECT_NAME held it for ${LOCK_WAIT}s; nothing was changed" \
      true lock "$(json_str "$LOCK_DIR/unidesk-compose.$PROJECT_NAME.lock")"
  env_lock
  PREV_ENV_COMMIT=$(env_value "${ENV_PREFIX}COMMIT")
  PREV_ENV_IMAGE=$(env_value "${ENV_PREFIX}IMAGE")
  PREV_ENV_DIGEST=$(env_value "${ENV_PREFIX}DIGEST")
  _remove_stale_staged
  local out rc=0
  OWN_STAGED=1
  out=$(python3 -c "$ENVFILE_PY" stage "$ENV_FILE" "--tag=$STAGE_TAG" "${DEPLOY_ENV[@]}") || rc=$?
  case $rc in
    0) ;;
    3) refuse "$EXIT_PRECONDITION" env-dir-missing "the directory of the env file $ENV_FILE does not exist on $(hostname); nothing was changed" false \
      path "$(json_str "$(json_field path "$out")")" ;;
    28) disk_full "$(json_field path "$out")" "$(json_number bytesNeeded "$out")" "the new env file beside $ENV_FILE" ;;
    *) refuse "$EXIT_INFRA_BLOCKED" infra-blocked "could not stage the new env file beside $ENV_FILE: $(json_field detail "$out") (exit $rc); nothing was changed" false \
      channel '"env-file"' path "$(json_str "$(json_field path "$out")")" ;;
  esac
  ENV_REAL=$(json_field real "$out")
  ENV_TMP=$(json_field tmp "$out")
  ENV_BACKUP=$(json_field backup "$out")
  ENV_STAGED_SHA=$(json_field sha256 "$out")
  [[ $out != *'"created":true'* ]] || ENV_CREATED=true
  [[ $out != *'"changed":true'* ]] || ENV_CHANGED=true
  ENV_RESULT=$(json_obj changed "$ENV_CHANGED" created "$ENV_CREATED")
}

# json_field KEY TEXT / json_number KEY TEXT: a string / number of envfile.py's compact one-line
# JSON (its strings are paths of validated characters, or an strerror).
json_field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$2"; }
json_number() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$2"; }

# _remove_stale_staged: staged/backup files of a killed run of this service (this run holds the
# service's lock, so files with its tag are nobody's), and untagged ones of older versions. Another
# service's files are its own next run's business: that run may be between its rename and its `up`.
_remove_stale_staged() {
  local real dir base f
  real=$(realpath -m -- "$ENV_FILE")
  dir=${real%/*} base=${real##*/}
  for f in "${dir:-}/.$base.unidesk-$STAGE_TAG."* "${dir:-}/.$base.unidesk-new."* "${dir:-}/.$base.unidesk-backup."*; do
    [[ -e $f ]] || continue
    case ${f##*/."$base".unidesk-} in
      "$STAGE_TAG".new.* | "$STAGE_TAG".backup.*) ;;     # this service's
      new.*.* | backup.*.*) continue ;;                  # another service's tag that starts so
    esac
    log "removing $f, left by a killed deploy"
    rm -f -- "$f"
  done
}

# _remove_staged: exit handler of the process that owns the staged files.
_remove_staged() {
  [[ -n $OWN_STAGED ]] || return 0
  [[ -z $ENV_TMP || ! -e $ENV_TMP ]] || rm -f -- "$ENV_TMP"
  [[ -z $ENV_BACKUP || ! -e $ENV_BACKUP ]] || rm -f -- "$ENV_BACKUP"
}

# ---------------------------------------------------------------------------- the detached switch

# Variables of bash itself, never carried into the detached switch.
_BASH_OWN=" BASH BASHOPTS BASHPID BASH_ALIASES BASH_ARGC BASH_ARGV BASH_ARGV0 BASH_CMDS BASH_COMMAND \
BASH_COMPAT BASH_ENV BASH_EXECUTION_STRING BASH_LINENO BASH_LOADABLES_PATH BASH_REMATCH BASH_SOURCE \
BASH_SUBSHELL BASH_VERSINFO BASH_VERSION BASH_XTRACEFD COLUMNS COMP_WORDBREAKS DIRSTACK EPOCHREALTIME \
EPOCHSECONDS EUID FUNCNAME GROUPS HISTCMD HOSTNAME HOSTTYPE IFS LINENO LINES MACHTYPE OPTARG OPTERR \
OPTIND OSTYPE PIPESTATUS PPID PS1 PS2 PS4 PWD OLDPWD RANDOM SECONDS SHELL SHELLOPTS SHLVL SRANDOM UID "

# write_switch_script FILE: this run's state (its variables: arguments, facts, the generated
# constants and the helpers' texts) and functions, then `switch_main`: what the detached bash runs.
write_switch_script() {
  local file=$1 name names=()
  local -
  set +u # ${!name@a} of an empty array is "unbound" under -u (bash 5.0); `local -` restores it
  for name in $(compgen -v); do # one declare -p for all of them (a $(declare -p) each forked ~200 times)
    [[ $name =~ ^[A-Z][A-Z0-9_]*$ && $_BASH_OWN != *" $name "* && ${!name@a} != *x* ]] || continue # exported: inherited
    names+=("$name")
  done
  {
    printf 'set -euo pipefail\n'
    declare -p "${names[@]}" 2>/dev/null || true
    declare -f
    printf 'switch_main\n'
  } >"$file"
}

# run_detached: the live switch + verify in its own session, with its own output files; the
# foreground waits, streams its log and prints its result. Only the run dir's owner removes it.
run_detached() {
  mkdir -p -- "$RUN_DIR"
  chmod 700 -- "$RUN_DIR"
  write_switch_script "$RUN_DIR/switch.sh" 2>/dev/null || disk_full "$RUN_DIR" "$SPACE_PROBE" "the deploy's run dir"
  local pid tail_pid rc=0 line
  setsid bash "$RUN_DIR/switch.sh" </dev/null >"$RUN_DIR/result" 2>"$RUN_DIR/log" &
  pid=$!
  # from here the detached switch owns the staged files and the audit run
  OWN_STAGED="" AUDIT_OPEN=""
  tail -s 0.2 -n +1 -f --pid="$pid" -- "$RUN_DIR/log" >&2 2>/dev/null &
  tail_pid=$!
  wait "$pid" || rc=$?
  wait "$tail_pid" 2>/dev/null || true
  line=$(tail -n 1 -- "$RUN_DIR/result" 2>/dev/null || true)
  if [[ $line == "{"*"}" ]]; then
    printf '%s\n' "$line" || exit "$rc"
    _JSON_PRINTED=1
    rm -rf -- "$RUN_DIR"
  else
    rm -rf -- "$RUN_DIR"
    fail "$EXIT_VERIFY_FAILED" unexpected-failure "the detached switch ended (exit $rc) without a result" false
  fi
  exit "$rc"
}

# switch_main: the detached process (its own session): temp dir, exit handlers, the switch.
switch_main() {
  exec </dev/null
  _AT_EXIT=() _JSON_PRINTED="" FAIL_ERROR="" TMP="" OWN_STAGED=1
  trap '' HUP # a lost session is not our end
  at_exit _remove_staged
  [[ -z $AUDIT_LOG ]] || at_exit _audit_on_exit
  make_work_dir
  at_exit _restore_on_exit
  audit_event started # by this process: its pid runs until the run's end line
  switch_and_verify
}

# _restore_on_exit: the switch stopped (a signal, an unexpected error) after its first change and
# before `up` started: put back what it changed, like any failure before `up`.
SWITCHING=""
_restore_on_exit() {
  [[ -n $SWITCHING ]] || return 0
  SWITCHING=""
  restore_before_live
  log "stopped before the recreate (exit $AT_EXIT_RC): restored ${RESTORED[*]:-nothing}"
}

# retag_to ID REF: point REF at image ID (docker tag); empty ID: untag REF (never deletes an
# image: E/R:SHA or RETAG keep it tagged).
retag_to() {
  if [[ -n $1 ]]; then
    docker tag "$1" "$2" >&2
  elif [[ $(image_id_of "$2") == "$(image_id_of "$IMAGE")" ]]; then # E/R:SHA keeps the image
    docker image rm --no-prune "$2" >/dev/null
  fi
}

# restore_before_live: put back what the switch changed (the container was not replaced).
restore_before_live() {
  local what
  for what in "${CHANGED[@]}"; do
    case $what in
      retag) retag_to "$RETAG_BEFORE" "$RETAG" && RESTORED+=(retag) ;;
      retag-commit) retag_to "$RETAG_COMMIT_BEFORE" "$RETAG:$COMMIT" && RESTORED+=(retag-commit) ;;
      env-file)
        if python3 -c "$ENVFILE_PY" restore "$ENV_FILE" "$LOCK_DIR" "${ENV_BACKUP:--}" "$ENV_CREATED" \
          "$ENV_STAGED_SHA" "${ENV_PREFIX}COMMIT" "${ENV_PREFIX}IMAGE" "${ENV_PREFIX}DIGEST" >&2; then
          ENV_BACKUP="" && RESTORED+=(env-file)
        fi
        ;;
    esac
  done
  write_state "$PREV_COMMIT" "" || log "could not rewrite $STATE_FILE"
}

# switch_failed ERROR DETAIL: a failure before the container was replaced: restore, then fail.
switch_failed() {
  local error=$1 detail=$2 rc=$EXIT_INFRA_BLOCKED
  SWITCHING=""
  restore_before_live || true
  inspect_container
  [[ $error != recreate-failed ]] || rc=$EXIT_VERIFY_FAILED
  fail "$rc" "$error" "$detail; the running container was not replaced; restored: ${RESTORED[*]:-nothing}" false \
    mode '"deploy"' recreated "$(recreated_json)" service "$(json_str "$SERVICE_ID")" commit "$(json_str "$COMMIT")" \
    previousCommit "$(prev_commit_json)" previousContainerId "$(json_str "$PREV_ID")" containerId "$(json_str "$C_ID")" \
    changed "$(changed_json)" restored "$(restored_json)" rollback "$(rollback_hint)"
}

switch_and_verify() {
  local new_id=$IMAGE_LOCAL_ID
  [[ -n $new_id ]] || new_id=$(image_id_of "$IMAGE")
  RETAG_BEFORE=$(image_id_of "$RETAG")
  RETAG_COMMIT_BEFORE=$(image_id_of "$RETAG:$COMMIT")
  log "retag $IMAGE -> $RETAG:$COMMIT, $RETAG"
  SWITCHING=1
  docker tag "$IMAGE" "$RETAG:$COMMIT" >&2 || switch_failed infra-blocked "docker could not tag $IMAGE as $RETAG:$COMMIT"
  [[ $RETAG_COMMIT_BEFORE == "$new_id" ]] || CHANGED+=(retag-commit)
  docker tag "$IMAGE" "$RETAG" >&2 || switch_failed infra-blocked "docker could not tag $IMAGE as $RETAG"
  [[ $RETAG_BEFORE == "$new_id" ]] || CHANGED+=(retag)
  if [[ -n $ENV_TMP ]]; then
    mv -fT -- "$ENV_TMP" "$ENV_REAL" || switch_failed infra-blocked "could not rename the staged env file over $ENV_REAL"
    ENV_TMP=""
    CHANGED+=(env-file)
  fi
  unlock "$ENV_LOCK_FD" # the next deploy stages from this file; a restore puts back only our keys
  log "${COMPOSE[*]} up -d --no-build --no-deps --force-recreate $COMPOSE_SERVICE"
  COMPOSE_ENV=("${DEPLOY_ENV[@]}")
  local up_ok=true
  SWITCHING=""
  compose up -d --no-build --no-deps --force-recreate "$COMPOSE_SERVICE" >"$TMP/up.log" 2>&1 || up_ok=false
  cat "$TMP/up.log" >&2
  inspect_container
  if [[ $up_ok == false && $C_ID == "$PREV_ID" && ($C_STATUS == running || -z $PREV_ID) ]]; then
    switch_failed recreate-failed "compose up of $COMPOSE_SERVICE failed: $(tail -n 2 "$TMP/up.log" | tr '\n' ' ' | head -c 300)"
  fi
  [[ $C_ID == "$PREV_ID" ]] || CHANGED+=(container)
  # the switch is done: the backup goes, the project is free for the next deploy
  [[ -z $ENV_BACKUP ]] || rm -f -- "$ENV_BACKUP"
  ENV_BACKUP=""
  unlock "$PROJECT_LOCK_FD"
  if [[ $up_ok == false ]]; then
    LIVE_ERROR=recreate-failed
    LIVE_DETAIL="compose up of $COMPOSE_SERVICE failed: $(tail -n 2 "$TMP/up.log" | tr '\n' ' ' | head -c 300)"
    LIVE_EXTRA=()
    after_switch_failed
  fi
  log "recreated; verifying"
  if ! check_live "$HEALTH_TIMEOUT"; then
    after_switch_failed
  fi
  write_state "$COMMIT" "" || log "could not record $COMMIT in $STATE_FILE"
  audit_event finished verdict '"ok"' error null
  print_verdict
}

# after_switch_failed: verification (or the recreate) failed after the live switch (LIVE_*).
after_switch_failed() {
  local error=$LIVE_ERROR detail=$LIVE_DETAIL extra=("${LIVE_EXTRA[@]}")
  if [[ $AUTO_RESTORE != yes ]]; then
    write_state "$PREV_COMMIT" "$COMMIT" || true
    after_change_fail "$error" "$detail" "${extra[@]}"
  fi
  auto_restore
  local verdict='"restore-failed"'
  [[ $RESTORE_OK != true ]] || verdict='"restored"'
  audit_event finished verdict "$verdict" error "$(json_str "$error")"
  inspect_container
  after_change_fail "$error" "$detail; auto-restore of ${PREV_COMMIT:-<none>}: $RESTORE_NOTE" "${extra[@]}"
}

# auto_restore: the previous commit back on RETAG, its env values back, recreate, verify it.
RESTORE_OK=false RESTORE_NOTE=""
auto_restore() {
  local image="" tried=false
  RESTORE_OK=false
  if [[ -z $PREV_COMMIT ]]; then
    RESTORE_NOTE="no previous commit is known"
  else
    local candidate
    for candidate in "$(image_id_of "$RETAG:$PREV_COMMIT")" "$PREV_IMAGE"; do
      [[ -n $candidate ]] || continue
      if [[ $(docker image inspect --format "{{index .Config.Labels \"$REVISION_LABEL\"}}" "$candidate" 2>/dev/null) == "$PREV_COMMIT" ]]; then
        image=$candidate
        break
      fi
    done
    [[ -n $image ]] || RESTORE_NOTE="no image of $PREV_COMMIT is left on $(hostname)"
  fi
  if [[ -n $image ]]; then
    tried=true
    restore_to "$image" || true
  fi
  RESTORE_JSON=$(json_obj attempted "$tried" ok "$RESTORE_OK" commit "$(prev_commit_json)" note "$(json_str "$RESTORE_NOTE")")
}

# restore_to IMAGE_ID: the previous commit's tag and env values, recreate, verify (sets RESTORE_*).
restore_to() {
  local image=$1 prev_image prev_digest
  log "auto-restore: $PREV_COMMIT ($image) back on $RETAG"
  prev_image=${IMAGE%:*}:$PREV_COMMIT
  prev_digest=$image
  if [[ $PREV_ENV_COMMIT == "$PREV_COMMIT" ]]; then
    [[ -z $PREV_ENV_IMAGE ]] || prev_image=$PREV_ENV_IMAGE
    [[ -z $PREV_ENV_DIGEST ]] || prev_digest=$PREV_ENV_DIGEST
  fi
  if ! docker tag "$image" "$RETAG" >&2 || ! docker tag "$image" "$RETAG:$PREV_COMMIT" >&2; then
    RESTORE_NOTE="docker could not tag $image as $RETAG"
    return 1
  fi
  RESTORED+=(retag)
  local env=("${ENV_PREFIX}COMMIT=$PREV_COMMIT" "${ENV_PREFIX}IMAGE=$prev_image" "${ENV_PREFIX}DIGEST=$prev_digest")
  if ! python3 -c "$ENVFILE_PY" set "$ENV_FILE" "$LOCK_DIR" "${env[@]}" >/dev/null; then
    RESTORE_NOTE="could not write the previous deploy values into $ENV_FILE"
    return 1
  fi
  RESTORED+=(env-file)
  if ! project_lock; then
    RESTORE_NOTE="the Compose project $PROJECT_NAME stayed locked"
    return 1
  fi
  COMPOSE_ENV=("${env[@]}")
  if ! compose up -d --no-build --no-deps --force-recreate "$COMPOSE_SERVICE" >"$TMP/restore.log" 2>&1; then
    cat "$TMP/restore.log" >&2
    unlock "$PROJECT_LOCK_FD"
    RESTORE_NOTE="compose up failed: $(tail -n 2 "$TMP/restore.log" | tr '\n' ' ' | head -c 200)"
    return 1
  fi
  unlock "$PROJECT_LOCK_FD"
  RESTORED+=(container)
  local commit=$COMMIT image_id=$IMAGE_ID digest=$DIGEST
  COMMIT=$PREV_COMMIT IMAGE_ID=$image DIGEST=$image
  if check_live "$HEALTH_TIMEOUT"; then
    RESTORE_OK=true RESTORE_NOTE="restored and verified"
    write_state "$PREV_COMMIT" "" || true
  else
    RESTORE_NOTE="the restored container failed verification: $LIVE_DETAIL"
    write_state "$PREV_COMMIT" "$PREV_COMMIT" || true
  fi
  COMMIT=$commit IMAGE_ID=$image_id DIGEST=$digest
  [[ $RESTORE_OK == true ]]
}

# ---------------------------------------------------------------------------- verification

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
  local fresh=1 # the first try uses the inspect above (one docker call less)
  deadline=$((EPOCHSECONDS + timeout))
  while :; do
    [[ -n $fresh ]] || inspect_container
    fresh=""
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
    if ((EPOCHSECONDS >= deadline)); then
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

# verify: prove the container runs the commit, read-only (verify mode); prints the verdict.
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
    previousCommit "$(prev_commit_json)" previousCommitFrom "$(prev_source_json)" previousContainerId "$(json_str "$PREV_ID")" \
    changed "$(changed_json)" restored "$(restored_json)" previousRun "$PREVIOUS_RUN" \
    lockWaitSeconds "$LOCK_WAITED" seconds "$(elapsed_since "$START")"
}

# ---------------------------------------------------------------------------- main

# include: audit.sh

main() {
  exec </dev/null
  START=$EPOCHREALTIME
  parse_args "$@"
  require_docker
  require_tool curl
  require_tool python3
  if [[ $MODE == verify ]]; then
    make_tmp
    log "verify only: nothing is locked, tagged, written or recreated"
    record_previous
    read_secrets
    verify
    return 0
  fi
  compose_cmd "$COMPOSE_OVERRIDE"
  require_tool flock
  require_tool setsid
  COMPOSE_ARGS=(--project-directory "$PROJECT_DIR" -p "$PROJECT_NAME")
  local file
  for file in "${COMPOSE_FILES[@]}"; do COMPOSE_ARGS+=(-f "$file"); done
  take_locks
  if [[ -n $AUDIT_LOG_PATH ]]; then
    audit_init "$AUDIT_LOG_PATH" "$STACK" "$STACK" "$SERVICE_ID" "$TARGET" compose-deploy
    AUDIT_FIELDS+=(toCommit "$(json_str "$COMMIT")" digest "$(json_str "$DIGEST")" imageId "$(json_str "$IMAGE_ID")")
    AUDIT_OPEN=1 # a refusal from here on leaves its `failed` line (exit handler)
  fi
  pick_up_previous_run
  make_work_dir
  log "locks taken; preflight"
  preflight
  AUDIT_FIELDS+=(fromCommit "$(prev_commit_json)")
  if already_live; then
    log "$CONTAINER already runs $COMMIT with this image, env and tags, and serves it: nothing to change"
    ALREADY_LIVE=true
    ENV_RESULT='{"changed":false,"created":false}'
    write_state "$COMMIT" "" || true
    audit_event finished verdict '"already-live"' error null
    print_verdict
    return 0
  fi
  at_exit _remove_staged
  stage_env
  write_state "$PREV_COMMIT" "$COMMIT" 2>/dev/null || state_unwritable
  run_detached
}

main "$@"
