# shellcheck shell=bash
# read-auth.sh: read the `auth` section of the master server's config.json (R17, frontend dev).
#
#   argv: artifact_cd.contract.ReadAuthArgs (docs/contracts.md, generated argv table)
#
# Prints {"ok":true,"auth":{...},"authSha256":"sha256:<hex of the canonical JSON>"} on ONE line.
# The output carries secrets: the Pulumi Command marks stdout secret; nothing else is printed,
# and failures never quote the file's content. Read-only.
# Failures (exit 3): config-missing, config-unreadable, config-invalid (not JSON / not an
# object), auth-missing (no `auth` object).
# Needs: bash, python3.
set -euo pipefail

# AUTH_PY (artifact_cd/scripts/py/auth.py) reads the file and prints the result or "<code> <why>".

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
    config-missing) fail "$EXIT_PRECONDITION" config-missing "$config does not exist" false config "$(json_str "$config")" ;;
    config-unreadable | config-invalid | auth-missing)
      fail "$EXIT_PRECONDITION" "$code" "$config:${why:- failed}" false config "$(json_str "$config")" ;;
    *) fail "$EXIT_INFRA_BLOCKED" infra-blocked "python3 could not read $config (exit $rc)" false channel '"python3"' ;;
  esac
}

main "$@"
