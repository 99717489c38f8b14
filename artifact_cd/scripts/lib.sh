# shellcheck shell=bash
# lib.sh: prepended to every step script (artifact_cd/scripts/__init__.py:script_text).
# Functions and constants only; nothing here runs by itself. Every script still starts with
# its own `set -euo pipefail` so it is safe when read alone.
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
  s=$(printf '%s' "$s" | tr -d '\000-\010\013\014\016-\037')
  printf '"%s"' "$s"
}

# json_obj KEY VALUE [KEY VALUE ...]: print one JSON object. VALUEs are raw JSON
# (use json_str for strings, `true`/`false`/`null`/numbers as they are).
json_obj() {
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
fail() {
  local code=$1 error=$2 detail=$3 retryable=$4
  shift 4
  json_obj ok false error "$(json_str "$error")" detail "$(json_str "$detail")" \
    retryable "$retryable" "$@"
  printf 'error: %s: %s\n' "$error" "$detail" >&2
  exit "$code"
}

# ---------------------------------------------------------------------------- validation
# Every interpolated value is validated with one of these before it is used.

is_commit() { [[ $1 =~ ^[0-9a-f]{40}$ ]]; }
is_digest() { [[ $1 =~ ^sha256:[0-9a-f]{64}$ ]]; }
is_abs_path() { [[ $1 =~ ^/[A-Za-z0-9._+@/-]*$ && ! $1 =~ (^|/)\.\.?(/|$) ]]; }
is_name() { [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$ ]]; }
is_env_prefix() { [[ $1 =~ ^[A-Z][A-Z0-9_]{0,80}_$ ]]; }
is_env_key() { [[ $1 =~ ^[A-Z][A-Z0-9_]{0,127}$ ]]; }
is_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && (($1 >= 1 && $1 <= 65535)); }
is_repository() { [[ $1 =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]]; }
is_http_path() { [[ $1 =~ ^/[A-Za-z0-9._~/-]*$ ]]; }
is_loopback_endpoint() { [[ $1 =~ ^(127\.0\.0\.1|\[::1\]|localhost):[0-9]{1,5}$ ]]; }
is_ssh_target() { [[ $1 =~ ^([a-z_][a-z0-9_-]{0,31}@)?[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$ ]]; }
is_image_ref() { [[ $1 =~ ^[a-z0-9]+([._/:-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$ ]]; }

# need KIND NAME VALUE: exit 2 with a structured error unless `is_KIND VALUE` holds.
need() {
  local kind=$1 name=$2 value=${3-}
  if ! "is_$kind" "$value"; then
    fail 2 invalid-argument "$name is not a valid $kind" false argument "$(json_str "$name")"
  fi
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
      fail 2 invalid-argument "compose command is not an absolute path" false
    read -r -a COMPOSE <<<"$override"
  elif docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
  else
    fail 5 infra-blocked "neither docker compose (v2) nor docker-compose (v1) is installed" false \
      channel '"docker-compose"'
  fi
}

# require_tool NAME: structured infra-blocked failure when a command is missing.
require_tool() {
  command -v "$1" >/dev/null 2>&1 ||
    fail 5 infra-blocked "$1 is not installed on $(hostname)" false channel "$(json_str "$1")"
}

# shellcheck disable=SC2034 # used by the scripts lib.sh is prepended to
MANIFEST_ACCEPT=(
  -H "Accept: application/vnd.docker.distribution.manifest.v2+json"
  -H "Accept: application/vnd.docker.distribution.manifest.list.v2+json"
  -H "Accept: application/vnd.oci.image.manifest.v1+json"
  -H "Accept: application/vnd.oci.image.index.v1+json"
)
