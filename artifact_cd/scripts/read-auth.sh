# shellcheck shell=bash
# read-auth.sh: read the `auth` section of the master server's config.json (R17, frontend dev).
#
#   read-auth.sh --config /home/ubuntu/unidesk/config.json
#
# Prints {"ok":true,"auth":{...},"authSha256":"sha256:<hex of the canonical JSON>"} on ONE line.
# The output carries secrets: the Pulumi Command marks stdout secret; nothing else is printed,
# and failures never quote the file's content. Read-only.
# Failures (exit 3): config-missing, config-unreadable, config-invalid (not JSON / not an
# object), auth-missing (no `auth` object).
# Needs: bash, python3.
set -euo pipefail

# shellcheck disable=SC2016 # Python program text
AUTH_PY='
import hashlib, json, sys
try:
    with open(sys.argv[1], "rb") as fh:
        raw = fh.read()
except FileNotFoundError:
    print("config-missing"); sys.exit(3)
except OSError as exc:
    print("config-unreadable " + type(exc).__name__); sys.exit(3)
try:
    doc = json.loads(raw)
except ValueError as exc:
    print("config-invalid not JSON (line %d)" % getattr(exc, "lineno", 0)); sys.exit(3)
if not isinstance(doc, dict):
    print("config-invalid the top level is not an object"); sys.exit(3)
auth = doc.get("auth")
if not isinstance(auth, dict):
    print("auth-missing " + ("no auth key" if auth is None else "auth is not an object")); sys.exit(3)
canonical = json.dumps(auth, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
digest = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
sys.stdout.write(json.dumps({"ok": True, "auth": auth, "authSha256": digest}, separators=(",", ":"), ensure_ascii=False) + "\n")
'

main() {
  exec </dev/null
  local config=""
  while (($#)); do
    case $1 in
      --config) arg_value $# "$1"; config=$2 ;;
      *) unknown_arg "$1" ;;
    esac
    shift 2
  done
  need abs_path --config "$config"
  require_tool python3
  local out rc=0 code why
  out=$(python3 -c "$AUTH_PY" "$config") || rc=$?
  if ((rc == 0)); then
    printf '%s\n' "$out"
    return 0
  fi
  code=${out%% *}
  why=${out#"$code"}
  case $code in
    config-missing) fail 3 config-missing "$config does not exist" false config "$(json_str "$config")" ;;
    config-unreadable | config-invalid | auth-missing)
      fail 3 "$code" "$config:${why:- failed}" false config "$(json_str "$config")" ;;
    *) fail 5 infra-blocked "python3 could not read $config (exit $rc)" false channel '"python3"' ;;
  esac
}

main "$@"
