# registry-probe.sh: read-only facts about the D601 artifact registry host (R21-R24).
#
#   argv: artifact_cd.contract.RegistryProbeArgs (docs/contracts.md, generated argv table);
#   --spec-sha256 is optional here (without it the spec is not compared)
#
# One SSH round trip; it writes nothing, starts nothing and restarts nothing. It only collects
# facts (one JSON line); the decision is artifact_cd.health.decide (pure, on the caller's side).
# A missing channel (systemd, Docker) is a fact too: the probe still exits 0 with what it saw.
# Exit 2 only for an invalid argument. Tool errors never reach the output: they become codes.
set -euo pipefail

# The collection itself (shared with live-probe.sh): registry_validate, registry_facts.
# include: registry-facts.sh

# --------------------------------------------------------------------------- main

main() {
  exec </dev/null
  local unit="" unit_path="" unit_sha="" project="" container="" image="" endpoint="" storage=""
  local config_path="" config_sha="" compose_path="" compose_sha="" spec=""
  local -A given=()
  while (($#)); do
    case $1 in
      --unit | --unit-path | --unit-sha256 | --project | --container | --image | --endpoint | --storage | \
        --config-path | --config-sha256 | --compose-path | --compose-sha256 | --spec-sha256) ;;
      *) fail "$EXIT_INVALID" invalid-argument "unknown argument" false argument "$(json_str "$1")" ;;
    esac
    [[ -z ${given[$1]-} ]] || fail "$EXIT_INVALID" invalid-argument "$1 given twice" false argument "$(json_str "$1")"
    given[$1]=1
    arg_value $# "$1"
    case $1 in
      --unit) unit=$2 ;;
      --unit-path) unit_path=$2 ;;
      --unit-sha256) unit_sha=$2 ;;
      --project) project=$2 ;;
      --container) container=$2 ;;
      --image) image=$2 ;;
      --endpoint) endpoint=$2 ;;
      --storage) storage=$2 ;;
      --config-path) config_path=$2 ;;
      --config-sha256) config_sha=$2 ;;
      --compose-path) compose_path=$2 ;;
      --compose-sha256) compose_sha=$2 ;;
      --spec-sha256) spec=$2 ;;
    esac
    shift 2
  done
  registry_validate "" "$unit" "$unit_path" "$unit_sha" "$project" "$container" "$image" "$endpoint" \
    "$storage" "$config_path" "$config_sha" "$compose_path" "$compose_sha" "${given[--spec-sha256]-}" "$spec"
  registry_facts "$unit" "$unit_path" "$unit_sha" "$project" "$container" "$image" "$endpoint" \
    "$storage" "$config_path" "$config_sha" "$compose_path" "$compose_sha" "$spec"
}

main "$@"
