# shellcheck shell=bash
# lib.sh: prepended to every step script (artifact_cd/scripts/__init__.py:script_text), after
# the contract's generated constants (artifact_cd/contract.py:shell_constants: the label names,
# MANIFEST_MEDIA_TYPES, VERIFY_KINDS, COMMIT_PATTERN, DIGEST_PATTERN and the EXIT_* codes) and
# the Python helpers the text runs (artifact_cd/scripts/py/<name>.py, read into <NAME>_PY).
# Functions only, and the arrays built from the constants; nothing here runs by itself. Every
# script still starts with its own `set -euo pipefail` so it is safe when read alone.
set -euo pipefail
umask 022

# ---------------------------------------------------------------------------- JSON output

# json_str VALUE: print VALUE as a JSON string literal.
json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  # other control characters are dropped; the fork only when one is left (most strings have none)
  if [[ $s == *[[:cntrl:]]* ]]; then s=$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037'); fi
  printf '"%s"' "$s"
}

# json_obj KEY VALUE [KEY VALUE ...]: print one JSON object. VALUEs are raw JSON
# (use json_str for strings, `true`/`false`/`null`/numbers as they are).
_JSON_PRINTED=""
json_obj() {
  _JSON_PRINTED=1 # in the main shell: a result line was printed (see _run_at_exit)
  local out="{" sep=""
  while (($# >= 2)); do
    out+="${sep}$(json_str "$1"):$2"
    sep=","
    shift 2
  done
  printf '%s}\n' "$out"
}

# json_bool CONDITION-EXIT-CODE: `json_bool $?` style helper; prints true for 0.
json_bool() { if [[ $1 == 0 ]]; then printf true; else printf false; fi; }

# fail EXIT ERROR DETAIL RETRYABLE [KEY VALUE ...]: one structured failure line on stdout, a
# human line on stderr, then exit. ERROR is a stable kebab-case code callers match on.
FAIL_ERROR="" # the error code of the last fail (read by exit handlers, e.g. include/audit.sh)
fail() {
  local code=$1 error=$2 detail=$3 retryable=$4
  shift 4
  # shellcheck disable=SC2034 # read by the exit handlers of some scripts (include/audit.sh)
  FAIL_ERROR=$error
  json_obj ok false error "$(json_str "$error")" detail "$(json_str "$detail")" \
    retryable "$retryable" "$@"
  printf 'error: %s: %s\n' "$error" "$detail" >&2
  exit "$code"
}

# ---------------------------------------------------------------------------- validation
# Every interpolated value is validated with one of these before it is used.

is_commit() { [[ $1 =~ $COMMIT_PATTERN ]]; }
is_digest() { [[ $1 =~ $DIGEST_PATTERN ]]; }
is_abs_path() { [[ $1 =~ ^/[A-Za-z0-9._+@/-]*$ && ! $1 =~ (^|/)\.\.?(/|$) ]]; }
is_name() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$ ]]; }
is_env_prefix() { [[ $1 =~ ^[A-Z][A-Z0-9_]{0,80}_$ ]]; }
is_env_key() { [[ $1 =~ ^[A-Z][A-Z0-9_]{0,127}$ ]]; }
is_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && (($1 >= 1 && $1 <= 65535)); }
is_repository() { [[ $1 =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]]; }
is_http_path() { [[ $1 =~ ^/[A-Za-z0-9._~/-]*$ ]]; }
is_loopback_endpoint() { [[ $1 =~ ^(127\.0\.0\.1|\[::1\]|localhost):[0-9]{1,5}$ ]]; }
is_ssh_target() { [[ $1 =~ ^([a-z_][a-z0-9_-]{0,31}@)?[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$ ]]; }
is_image_ref() { # name[:tag][@digest]
  local digest=${DIGEST_PATTERN#^}
  digest=${digest%\$}
  [[ $1 =~ ^[a-z0-9]+([._/:-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@$digest)?$ ]]
}

# need KIND NAME VALUE: exit 2 with a structured error unless `is_KIND VALUE` holds.
need() {
  local kind=$1 name=$2 value=${3-}
  if ! "is_$kind" "$value"; then
    fail "$EXIT_INVALID" invalid-argument "$name is not a valid $kind" false argument "$(json_str "$name")"
  fi
}

# need_one_of NAME VALUE CHOICE...: exit 2 with a structured error unless VALUE is one of CHOICEs.
need_one_of() {
  local name=$1 value=$2 choice listed=""
  shift 2
  for choice in "$@"; do [[ $value != "$choice" ]] || return 0; done
  while (($# > 1)); do
    listed+="${listed:+, }$1"
    shift
  done
  fail "$EXIT_INVALID" invalid-argument "$name must be ${listed:+$listed or }$1" false argument "$(json_str "$name")"
}

# ---------------------------------------------------------------------------- tools

# compose_cmd [OVERRIDE]: set the COMPOSE array to the Compose CLI: OVERRIDE when given
# ("/usr/bin/docker compose" or a docker-compose path), else v2 `docker compose` when
# present, else v1 `docker-compose`.
# shellcheck disable=SC2034 # COMPOSE is read by the scripts lib.sh is prepended to
COMPOSE=()
# shellcheck disable=SC2034
compose_cmd() {
  local override=${1-}
  if [[ -n $override ]]; then
    [[ $override =~ ^/[A-Za-z0-9._/-]+(\ compose)?$ ]] ||
      fail "$EXIT_INVALID" invalid-argument "compose command is not an absolute path" false
    read -r -a COMPOSE <<<"$override"
  elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "neither docker compose (v2) nor docker-compose (v1) is installed" false \
      channel '"docker-compose"'
  fi
}

# require_tool NAME: structured infra-blocked failure when a command is missing.
require_tool() {
  command -v "$1" >/dev/null 2>&1 ||
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "$1 is not installed on $(hostname)" false channel "$(json_str "$1")"
}

# MANIFEST_ACCEPT: the curl arguments that accept every manifest media type (without them the
# registry answers a schema1 manifest with another digest, or 404 for an OCI index).
MANIFEST_ACCEPT=()
for _media_type in "${MANIFEST_MEDIA_TYPES[@]}"; do MANIFEST_ACCEPT+=(-H "Accept: $_media_type"); done
unset _media_type

# ---------------------------------------------------------------------------- deploy helpers
# (added for the deploy scripts: manifest-check, move-image, compose-deploy, k3s-*, read-auth)

# arg_value COUNT NAME: inside an argument loop, fail unless option NAME has a value after it.
arg_value() {
  (($1 >= 2)) || fail "$EXIT_INVALID" invalid-argument "$2 needs a value" false argument "$(json_str "$2")"
}

# unknown_arg ARG: structured failure for an argument the script does not take.
unknown_arg() {
  local shown=${1:0:40}
  [[ $shown =~ ^--[a-z0-9-]+$ ]] || shown="(a positional value)"
  fail "$EXIT_INVALID" invalid-argument "unknown argument $shown" false argument "$(json_str "$shown")"
}

# at_exit FUNCTION: run FUNCTION (no arguments) when the script exits, the last registered
# first. The exit status of the script is kept.
_AT_EXIT=()
at_exit() {
  _AT_EXIT=("$1" "${_AT_EXIT[@]}")
  trap _run_at_exit EXIT
}
AT_EXIT_RC=0 # the script's exit status, for the exit handlers
_run_at_exit() {
  local rc=$? f
  # shellcheck disable=SC2034 # read by some exit handlers (include/audit.sh)
  AT_EXIT_RC=$rc
  for f in "${_AT_EXIT[@]}"; do "$f" >&2 || true; done
  # A command failed under `set -e` before any result line: still answer with one JSON line.
  if ((rc != 0)) && [[ -z $_JSON_PRINTED ]]; then
    json_obj ok false error '"unexpected-failure"' \
      detail "$(json_str "a command failed (exit $rc) before a result; see stderr")" retryable false
  fi
}

# make_tmp: set TMP to a fresh private directory removed when the script exits.
TMP=""
make_tmp() {
  sweep_stale_tmp
  TMP=$(mktemp -d "$(tmp_template)")
  at_exit _remove_tmp
}

# tmp_template: the mktemp template of this process's temp dir: unidesk-cd.<pid>.XXXXXXXX in TMPDIR.
tmp_template() { printf '%s/unidesk-cd.%s.XXXXXXXX' "${TMPDIR:-/tmp}" "$$"; }

# sweep_stale_tmp: remove the temp dirs (owned by this user) of step scripts whose process is gone:
# an exit handler cleans up on every exit it sees, but nothing runs after a SIGKILL or a power loss.
# A dir whose process still runs (another deploy right now) is never touched.
sweep_stale_tmp() {
  local dir pid
  for dir in "${TMPDIR:-/tmp}"/unidesk-cd.*.*; do
    [[ -d $dir && ! -L $dir && -O $dir ]] || continue
    pid=${dir##*/unidesk-cd.}
    pid=${pid%%.*}
    [[ $pid =~ ^[0-9]{1,10}$ ]] || continue
    ! kill -0 "$pid" 2>/dev/null || continue
    [[ ! -d /proc/$pid ]] || continue # alive, another user's process (kill -0 says EPERM)
    rm -rf -- "$dir"
  done
}
_remove_tmp() { [[ -z $TMP || ! -d $TMP ]] || rm -rf -- "$TMP"; }

# sha256_file FILE: print "sha256:<hex>" of FILE.
sha256_file() {
  local sum
  sum=$(sha256sum -- "$1") || return 1
  printf 'sha256:%s' "${sum%% *}"
}

# host_arch: the OCI architecture name of this host (amd64, arm64, ...).
host_arch() {
  case $(uname -m) in
    x86_64 | amd64) printf amd64 ;;
    aarch64 | arm64) printf arm64 ;;
    armv7* | armv6* | arm) printf arm ;;
    i386 | i686) printf 386 ;;
    ppc64le) printf ppc64le ;;
    s390x) printf s390x ;;
    riscv64) printf riscv64 ;;
    *) printf amd64 ;;
  esac
}

# manifest_parse MODE FILE [ARCH | LABEL...]: read a registry/containerd JSON document with
# python3 (artifact_cd/scripts/py/manifest.py) and print one line of fields separated by US (\x1f),
# so empty fields survive `read`:
#   manifest FILE ARCH -> index US <child digest> US <mediaType> US <platform>
#                       | manifest US <config digest> US <mediaType> US <config size> US <layer count> US <layer bytes>
#                       | error US <reason>
#   config FILE LABEL... -> config US <os> US <architecture> US <value of each LABEL>
# An index entry is chosen for linux/ARCH, else linux/amd64. Values never reach a shell parser.
manifest_parse() {
  python3 -c "$MANIFEST_PY" "$@"
}

# elapsed_since START: seconds (3 decimals) since START, a value of $EPOCHREALTIME.
elapsed_since() {
  local now=$EPOCHREALTIME
  awk -v a="$1" -v b="$now" 'BEGIN { printf "%.3f", b - a }'
}

# require_docker: docker CLI present and its daemon answering, else infra-blocked.
require_docker() {
  require_tool docker
  docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "the Docker daemon on $(hostname) does not answer" false channel '"docker"'
}

# image_id_of REF: print the local image ID of REF (nothing when absent).
image_id_of() {
  docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true
}

# image_is ID IMAGE_ID DIGEST: the local image ID proves the registry image: it equals the
# config digest (classic image store) or the manifest digest (containerd image store).
image_is() {
  [[ -n $1 && ($1 == "$2" || $1 == "$3") ]]
}

# ---------------------------------------------------------------------------- registry host helpers

is_sha256_hex() { [[ $1 =~ ^[0-9a-f]{64}$ ]]; }
is_unit_name() { [[ $1 =~ ^[A-Za-z0-9_.@-]{1,240}\.service$ ]]; }
is_managed_path() { is_abs_path "$1" && [[ $1 != / && $1 != */ ]]; }

# json_list VALUE...: a JSON array of strings.
json_list() {
  local out="[" sep="" v
  for v in "$@"; do
    out+="$sep$(json_str "$v")"
    sep=","
  done
  printf '%s]' "$out"
}

# ---------------------------------------------------------------------------- health payloads

# health_fields FILE: the health body -> one US-separated line: "json" (or "invalid"),
# deploy.commit, deploy.requestedCommit, status, then the five auth booleans as true/false/null
# (artifact_cd/scripts/py/health.py). Only these fields, each reduced to a safe charset, ever
# leave the body. Needs python3.
health_fields() { python3 -c "$HEALTH_PY" "$1"; }
