# shellcheck shell=bash
# audit.sh: the deploy audit log of a target host (issue 13). Included by every step that changes
# a host (`# include: audit.sh`). One JSON object per line, appended under a lock (no interleaving
# between concurrent deploys), rotated to <log>.1 past AUDIT_MAX_BYTES (bounded). Never a secret:
# only the fields below and the values a script adds with AUDIT_FIELDS / audit_event arguments.
# The reader is artifact_cd/audit.py (AuditRecord); keep the two in step.
#
#   audit_init LOG STACK ENV SERVICE TARGET STEP
#       once, after parse_args and before the first change: the log's directory is created when
#       missing; a log the user cannot append to fails infra-blocked naming the fix, before anything
#       is changed. Registers the exit handler below.
#   AUDIT_FIELDS+=(KEY RAWJSON ...)
#       facts every later line carries (toCommit, digest, imageId, fromCommit once known).
#   audit_event EVENT [KEY RAWJSON ...]
#       EVENT is started | finished | failed. `finished`/`failed` lines carry verdict (ok,
#       already-live, failed, restored ...), error (a code or null) and seconds; the caller passes
#       verdict/error, seconds is added here.
#   exit handler: a script that wrote `started` and exits without `finished`/`failed` (a fail, an
#       unexpected error, SIGTERM/SIGHUP/SIGINT) writes `failed` with error = the fail's code (or
#       `killed-or-crashed`) and exitCode. Only SIGKILL/power loss leave `started` alone: the
#       reader reports such a run as `interrupted`.
# Line fields: v time event runId stack env service target step host user pid [AUDIT_FIELDS] [args].
AUDIT_LOG="" AUDIT_RUN="" AUDIT_OPEN="" AUDIT_T0="" AUDIT_WRITE_ERROR=""
AUDIT_STACK="" AUDIT_ENV="" AUDIT_SERVICE="" AUDIT_TARGET="" AUDIT_STEP=""
AUDIT_FIELDS=()

audit_init() {
  AUDIT_LOG=$1 AUDIT_STACK=$2 AUDIT_ENV=$3 AUDIT_SERVICE=$4 AUDIT_TARGET=$5 AUDIT_STEP=$6
  local dir=${AUDIT_LOG%/*} user
  user=$(id -un 2>/dev/null || echo "uid-$(id -u)")
  if ! { [[ -d ${dir:-/} ]] || mkdir -p -- "$dir" 2>/dev/null; } || ! { : >>"$AUDIT_LOG"; } 2>/dev/null ||
    ! { : >>"$AUDIT_LOG.lock"; } 2>/dev/null; then
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "the deploy audit log $AUDIT_LOG on $(hostname) is not writable by $user; nothing was changed" false \
      channel '"audit-log"' path "$(json_str "$AUDIT_LOG")" \
      fix "$(json_str "sudo install -d -o $user -m 0755 ${dir:-/} (or set auditLog in the stack config to a path $user can write)")"
  fi
  AUDIT_RUN="$(hostname)-$$-${EPOCHREALTIME/./}"
  AUDIT_T0=$EPOCHREALTIME
  at_exit _audit_on_exit
}

audit_event() {
  [[ -n $AUDIT_LOG ]] || return 0
  local event=$1 line user
  shift
  user=$(id -un 2>/dev/null || echo "uid-$(id -u)")
  local extra=()
  [[ $event == started ]] || extra=(seconds "$(elapsed_since "$AUDIT_T0")")
  line=$(json_obj v "$AUDIT_FORMAT_VERSION" time "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")" \
    event "$(json_str "$event")" runId "$(json_str "$AUDIT_RUN")" stack "$(json_str "$AUDIT_STACK")" \
    env "$(json_str "$AUDIT_ENV")" service "$(json_str "$AUDIT_SERVICE")" target "$(json_str "$AUDIT_TARGET")" \
    step "$(json_str "$AUDIT_STEP")" host "$(json_str "$(hostname)")" user "$(json_str "$user")" pid "$$" \
    "${AUDIT_FIELDS[@]}" "$@" "${extra[@]}")
  _audit_append "$line"
  if [[ $event == started ]]; then AUDIT_OPEN=1; else AUDIT_OPEN=""; fi
}

# _audit_append LINE: under <log>.lock, rotate when the log passed AUDIT_MAX_BYTES, then append
# LINE with one write. A failed write (disk full) is kept in AUDIT_WRITE_ERROR and said on stderr;
# it never turns a deploy's verdict.
_audit_append() {
  local fd size
  if ! exec {fd}>>"$AUDIT_LOG.lock"; then
    AUDIT_WRITE_ERROR="cannot open $AUDIT_LOG.lock"
    return 0
  fi
  flock -w 30 "$fd" || true
  size=$(stat -c %s -- "$AUDIT_LOG" 2>/dev/null || echo 0)
  if ((size > AUDIT_MAX_BYTES)); then
    mv -f -- "$AUDIT_LOG" "$AUDIT_LOG.1" 2>/dev/null || true
  fi
  if ! printf '%s\n' "$1" >>"$AUDIT_LOG" 2>/dev/null; then
    AUDIT_WRITE_ERROR="could not append to $AUDIT_LOG"
    printf 'audit: %s\n' "$AUDIT_WRITE_ERROR" >&2
  fi
  exec {fd}>&-
}

_audit_on_exit() {
  [[ -n $AUDIT_OPEN ]] || return 0
  local error=${FAIL_ERROR:-killed-or-crashed}
  audit_event failed verdict '"failed"' error "$(json_str "$error")" exitCode "$AT_EXIT_RC"
}
