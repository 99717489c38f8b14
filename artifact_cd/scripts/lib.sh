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

# ---------------------------------------------------------------------------- deploy helpers
# (added for the deploy scripts: manifest-check, move-image, compose-deploy, k3s-*, read-auth)

# arg_value COUNT NAME: inside an argument loop, fail unless option NAME has a value after it.
arg_value() {
  (($1 >= 2)) || fail 2 invalid-argument "$2 needs a value" false argument "$(json_str "$2")"
}

# unknown_arg ARG: structured failure for an argument the script does not take.
unknown_arg() {
  local shown=${1:0:40}
  [[ $shown =~ ^--[a-z0-9-]+$ ]] || shown="(a positional value)"
  fail 2 invalid-argument "unknown argument $shown" false argument "$(json_str "$shown")"
}

# at_exit FUNCTION: run FUNCTION (no arguments) when the script exits, the last registered
# first. The exit status of the script is kept.
_AT_EXIT=()
at_exit() {
  _AT_EXIT=("$1" "${_AT_EXIT[@]}")
  trap _run_at_exit EXIT
}
_run_at_exit() {
  local rc=$? f
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
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/unidesk-cd.XXXXXXXX")
  at_exit _remove_tmp
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

# manifest_parse MODE FILE [ARCH]: read a registry/containerd JSON document with python3 and
# print one line of fields separated by US (\x1f), so empty fields survive `read`:
#   manifest FILE ARCH -> index US <child digest> US <mediaType> US <platform>
#                       | manifest US <config digest> US <mediaType> US <config size> US <layer count> US <layer bytes>
#                       | error US <reason>
#   config FILE        -> config US <os> US <architecture> US <revision> US <source> US <service>
# An index entry is chosen for linux/ARCH, else linux/amd64. Values never reach a shell parser.
# shellcheck disable=SC2016 # the Python program is literal text
MANIFEST_PY='
import json, sys
US = "\x1f"
def out(*fields):
    print(US.join(str(f).replace(US, " ").replace("\n", " ") for f in fields))
def done(*fields):
    out(*fields)
    sys.exit(0)
mode, path = sys.argv[1], sys.argv[2]
try:
    with open(path, "rb") as fh:
        doc = json.load(fh)
except Exception as exc:
    done("error", "not a JSON document (" + type(exc).__name__ + ")")
if not isinstance(doc, dict):
    done("error", "not a JSON object")
if mode == "manifest":
    if doc.get("schemaVersion") != 2:
        done("error", "schemaVersion is not 2")
    media = doc.get("mediaType") or ""
    if isinstance(doc.get("manifests"), list):
        arch = sys.argv[3] if len(sys.argv) > 3 else "amd64"
        entries = [m for m in doc["manifests"] if isinstance(m, dict) and isinstance(m.get("platform"), dict)]
        def pick(a):
            for m in entries:
                if m["platform"].get("os") == "linux" and m["platform"].get("architecture") == a:
                    return m
            return None
        chosen = pick(arch) or pick("amd64")
        if chosen is None:
            done("error", "the index has no linux/" + arch + " or linux/amd64 entry")
        plat = chosen["platform"]
        name = "linux/" + str(plat.get("architecture", "")) + ("/" + str(plat["variant"]) if plat.get("variant") else "")
        done("index", chosen.get("digest", ""), media, name)
    if isinstance(doc.get("config"), dict):
        layers = [l for l in doc.get("layers") or [] if isinstance(l, dict)]
        total = sum(int(l.get("size", 0)) for l in layers)
        done("manifest", doc["config"].get("digest", ""), media, int(doc["config"].get("size", 0)), len(layers), total)
    done("error", "neither an image manifest nor an index")
if mode == "config":
    labels = (doc.get("config") or {}).get("Labels") or {}
    get = lambda k: labels.get(k) if isinstance(labels.get(k), str) else ""
    done("config", doc.get("os", ""), doc.get("architecture", ""), get("org.opencontainers.image.revision"),
         get("org.opencontainers.image.source"), get("io.unidesk.service"))
done("error", "unknown mode")
'
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
    fail 5 infra-blocked "the Docker daemon on $(hostname) does not answer" false channel '"docker"'
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
# deploy.commit, deploy.requestedCommit, status, then the five auth booleans as true/false/null.
# Only these fields, each reduced to a safe charset, ever leave the body. Needs python3.
# shellcheck disable=SC2016 # Python program text
_HEALTH_PY='
import json, re, sys
US = "\x1f"
try:
    doc = json.load(open(sys.argv[1], "rb"))
    assert isinstance(doc, dict)
except Exception:
    print("invalid")
    sys.exit(0)
def s(v):
    return v if isinstance(v, str) and re.fullmatch(r"[0-9A-Za-z._:-]{0,100}", v) else ("" if v is None else "<other>")
def b(v):
    return "true" if v is True else ("false" if v is False else "null")
deploy = doc.get("deploy") if isinstance(doc.get("deploy"), dict) else {}
auth = doc.get("auth") if isinstance(doc.get("auth"), dict) else {}
status = doc.get("status")
if status is None and doc.get("ok") is True:
    status = "ok"
fields = ["json", s(deploy.get("commit")), s(deploy.get("requestedCommit")), s(status)]
fields += [b(auth.get(k)) for k in ("configured", "clientIdConfigured", "clientSecretConfigured", "tokenKeyConfigured", "loggedIn")]
print(US.join(fields))
'
health_fields() { python3 -c "$_HEALTH_PY" "$1"; }
