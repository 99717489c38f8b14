# shellcheck shell=bash
# include/registry-facts.sh: the read-only facts about the D601 artifact registry host (R21-R24),
# shared by registry-probe.sh (status, health, the install's acceptance) and live-probe.sh (the
# live view's D601 probe). artifact_cd/scripts/__init__.py:script_text puts this file after lib.sh
# into the text of every script that names it with a `# include: registry-facts.sh` line.
#
#   registry_validate FLAG_PREFIX UNIT UNIT_PATH UNIT_SHA256 PROJECT CONTAINER IMAGE ENDPOINT STORAGE
#                     CONFIG_PATH CONFIG_SHA256 COMPOSE_PATH COMPOSE_SHA256 SPEC_GIVEN SPEC_SHA256
#       exit 2 (structured) unless every value is valid; FLAG_PREFIX names the flags in the error
#       ("" -> --unit ..., "registry-" -> --registry-unit ...)
#   registry_facts UNIT UNIT_PATH UNIT_SHA256 PROJECT CONTAINER IMAGE ENDPOINT STORAGE
#                  CONFIG_PATH CONFIG_SHA256 COMPOSE_PATH COMPOSE_SHA256 SPEC_SHA256
#       print the facts object (one JSON line; artifact_cd.health.decide reads it); validated values
#       only. It writes, starts and restarts nothing. A missing channel (systemd, Docker) is a fact.
#   docker_probe
#       set DOCKER (docker, or `sudo -n docker` for read-only use) and DOCKER_STATE
#       (reachable | not-installed | permission-denied | daemon-unreachable | timeout)
# Functions only; nothing here runs by itself.

PROBE_VERSION=1
PROJECT_LABEL=com.docker.compose.project

# tf A B: true when A equals B, else false (JSON booleans).
tf() { if [[ $1 == "$2" ]]; then printf true; else printf false; fi; }
ft() { if [[ $1 == "$2" ]]; then printf false; else printf true; fi; }

json_str_or_null() { if [[ -n $1 ]]; then json_str "$1"; else printf null; fi; }

# --------------------------------------------------------------------------- systemd

# unit_facts UNIT: JSON facts of the unit (systemd must be running).
unit_facts() {
  local unit=$1 line key value load="" active="" sub="" file_state="" need_reload="" fragment=""
  local out
  if ! out=$(timeout 15 systemctl show --no-pager -p LoadState,ActiveState,SubState,UnitFileState \
    -p NeedDaemonReload,FragmentPath -- "$unit" 2>/dev/null); then
    json_obj queried false
    return 0
  fi
  while IFS= read -r line; do
    key=${line%%=*}
    value=${line#*=}
    case $key in
      LoadState) load=$value ;;
      ActiveState) active=$value ;;
      SubState) sub=$value ;;
      UnitFileState) file_state=$value ;;
      NeedDaemonReload) need_reload=$value ;;
      FragmentPath) fragment=$value ;;
    esac
  done <<<"$out"
  json_obj queried true loadState "$(json_str "$load")" \
    exists "$(tf "$load" loaded)" \
    activeState "$(json_str "$active")" subState "$(json_str "$sub")" \
    active "$(tf "$active" active)" \
    unitFileState "$(json_str "$file_state")" \
    enabled "$(tf "$file_state" enabled)" \
    needDaemonReload "$(tf "$need_reload" yes)" \
    fragmentPath "$(json_str_or_null "$fragment")"
}

# --------------------------------------------------------------------------- docker

DOCKER=(docker)
DOCKER_STATE=""   # reachable | not-installed | permission-denied | daemon-unreachable | timeout
DOCKER_VERSION=""

docker_probe() {
  local out rc=0
  if ! command -v docker >/dev/null 2>&1; then
    DOCKER_STATE=not-installed
    return 0
  fi
  out=$(timeout 15 docker version --format '{{.Server.Version}}' 2>&1) || rc=$?
  if ((rc != 0)) && [[ $out == *"permission denied"* ]] && ((EUID != 0)) &&
    sudo -n true >/dev/null 2>&1; then
    DOCKER=(sudo -n docker) # read-only use only: inspect, image inspect, version
    rc=0
    out=$(timeout 15 "${DOCKER[@]}" version --format '{{.Server.Version}}' 2>&1) || rc=$?
  fi
  if ((rc == 0)); then
    DOCKER_STATE=reachable
    [[ $out =~ ^[0-9A-Za-z.+~-]{1,64}$ ]] && DOCKER_VERSION=$out
  elif ((rc == 124)); then
    DOCKER_STATE=timeout
  elif [[ $out == *"permission denied"* ]]; then
    DOCKER_STATE=permission-denied
  else
    DOCKER_STATE=daemon-unreachable
  fi
}

# container_facts NAME EXPECTED_IMAGE: JSON facts of the container and the expected image.
container_facts() {
  local name=$1 image=$2 out rc=0 fields=()
  local tmpl="{{.Id}}|{{.State.Status}}|{{.State.Running}}|{{.State.StartedAt}}|{{.Config.Image}}|{{.Image}}"
  tmpl+="|{{index .Config.Labels \"$SPEC_LABEL\"}}|{{index .Config.Labels \"$PROJECT_LABEL\"}}"
  tmpl+="|{{.HostConfig.NetworkMode}}|{{range \$p, \$c := .HostConfig.PortBindings}}{{range \$c}}"
  tmpl+="{{\$p}}={{.HostIp}}={{.HostPort}} {{end}}{{end}}|{{.RestartCount}}"
  out=$(timeout 15 "${DOCKER[@]}" inspect --type container --format "$tmpl" -- "$name" 2>&1) || rc=$?
  if ((rc != 0)); then
    if [[ $out == *"No such"* ]]; then
      json_obj queried true exists false
    else
      json_obj queried false exists null error '"inspect-failed"'
    fi
    return 0
  fi
  IFS='|' read -r -a fields <<<"$out"
  local id=${fields[0]-} status=${fields[1]-} running=${fields[2]-} started=${fields[3]-}
  local ref=${fields[4]-} image_id=${fields[5]-} spec=${fields[6]-} project=${fields[7]-}
  local netmode=${fields[8]-} ports=${fields[9]-} restarts=${fields[10]-}
  [[ $spec == "<no value>" ]] && spec=""
  [[ $project == "<no value>" ]] && project=""
  [[ $restarts =~ ^[0-9]{1,9}$ ]] || restarts=0
  local bindings=() b port hostip hostport words=()
  read -r -a words <<<"$ports"
  for b in "${words[@]}"; do
    port=${b%%=*}
    b=${b#*=}
    hostip=${b%%=*}
    hostport=${b#*=}
    bindings+=("$(json_obj containerPort "$(json_str "$port")" hostIp "$(json_str "$hostip")" \
      hostPort "$(json_str "$hostport")")")
  done
  local bjson="[" sep=""
  for b in "${bindings[@]}"; do
    bjson+="$sep$b"
    sep=","
  done
  bjson+="]"
  local digests=()
  if [[ -n $image_id ]]; then
    mapfile -t digests < <(timeout 15 "${DOCKER[@]}" image inspect \
      --format '{{range .RepoDigests}}{{.}}{{"\n"}}{{end}}' -- "$image_id" 2>/dev/null | grep -v '^$' || true)
  fi
  json_obj queried true exists true id "$(json_str "$id")" status "$(json_str "$status")" \
    running "$(tf "$running" true)" startedAt "$(json_str "$started")" \
    image "$(json_str "$ref")" imageId "$(json_str "$image_id")" \
    repoDigests "$(json_list "${digests[@]}")" specLabel "$(json_str_or_null "$spec")" \
    composeProject "$(json_str_or_null "$project")" networkMode "$(json_str "$netmode")" \
    portBindings "$bjson" restartCount "$restarts"
}

expected_image_facts() {
  local image=$1 id
  if id=$(timeout 15 "${DOCKER[@]}" image inspect --format '{{.Id}}' -- "$image" 2>/dev/null); then
    json_obj ref "$(json_str "$image")" present true localImageId "$(json_str "$id")"
  else
    json_obj ref "$(json_str "$image")" present false localImageId null
  fi
}

# --------------------------------------------------------------------------- listeners

# hex_addr HEX: the text form of a /proc/net/tcp{,6} local address.
hex_addr() {
  local h=$1 i w bytes=() groups=() g all
  if ((${#h} == 8)); then
    printf '%d.%d.%d.%d' "0x${h:6:2}" "0x${h:4:2}" "0x${h:2:2}" "0x${h:0:2}"
    return 0
  fi
  for ((i = 0; i < 32; i += 8)); do # four host-order (little-endian) 32-bit words
    w=${h:i:8}
    bytes+=("${w:6:2}" "${w:4:2}" "${w:2:2}" "${w:0:2}")
  done
  for ((i = 0; i < 16; i += 2)); do
    g="${bytes[i]}${bytes[i + 1]}"
    groups+=("$(printf '%x' "0x$g")")
  done
  all="${groups[*]}"
  if [[ $all == "0 0 0 0 0 0 0 0" ]]; then
    printf '::'
  elif [[ $all == "0 0 0 0 0 0 0 1" ]]; then
    printf '::1'
  elif [[ ${groups[*]:0:6} == "0 0 0 0 0 ffff" ]]; then
    printf '::ffff:%d.%d.%d.%d' "0x${bytes[12]}" "0x${bytes[13]}" "0x${bytes[14]}" "0x${bytes[15]}"
  else
    local IFS=:
    printf '%s' "${groups[*]}"
  fi
}

# listener_facts PORT: every address listening on TCP PORT in this network namespace.
listener_facts() {
  local port=$1 hexport file _sl local_addr _rem st addr readable=false
  local -A seen=()
  local addrs=()
  hexport=$(printf '%04X' "$port")
  for file in /proc/net/tcp /proc/net/tcp6; do
    [[ -r $file ]] || continue
    readable=true
    while read -r _sl local_addr _rem st _; do
      [[ $st == 0A && ${local_addr##*:} == "$hexport" ]] || continue
      [[ ${local_addr%:*} =~ ^[0-9A-F]{8}$|^[0-9A-F]{32}$ ]] || continue
      addr=$(hex_addr "${local_addr%:*}")
      [[ -n ${seen[$addr]-} ]] && continue
      seen[$addr]=1
      addrs+=("$addr")
    done < <(tail -n +2 "$file")
  done
  json_obj source '"/proc/net/tcp"' queried "$readable" port "$port" addresses "$(json_list "${addrs[@]}")"
}

# --------------------------------------------------------------------------- HTTP

http_facts() {
  local endpoint=$1 host port code="" client
  host=${endpoint%:*}
  port=${endpoint##*:}
  if command -v curl >/dev/null 2>&1; then
    client=curl
    code=$(curl -g -s -o /dev/null -w '%{http_code}' --connect-timeout 3 --max-time 5 \
      "http://$endpoint/v2/" 2>/dev/null || true)
  else
    client=bash-dev-tcp
    host=${host#[}
    host=${host%]}
    # Values reach the inner bash as positional parameters, never as code.
    # shellcheck disable=SC2016 # the single quotes are the point
    code=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "GET /v2/ HTTP/1.0\r\nHost: %s\r\n\r\n" "$0" >&3
      IFS=" " read -r _ status _ <&3 && printf "%s" "$status"' "$host" "$port" 2>/dev/null || true)
  fi
  [[ $code =~ ^[0-9]{3}$ ]] || code=000
  json_obj url "$(json_str "http://$endpoint/v2/")" client "$(json_str "$client")" code "$((10#$code))"
}

# --------------------------------------------------------------------------- files

file_facts() {
  local path=$1 expected=$2 exists=false readable=false sha=""
  if [[ -e $path || -L $path ]]; then
    exists=true
    if [[ -f $path && -r $path ]]; then
      sha=$(sha256sum -- "$path" 2>/dev/null) && readable=true
      sha=${sha%% *}
    fi
  fi
  json_obj path "$(json_str "$path")" exists "$exists" readable "$readable" \
    sha256 "$(json_str_or_null "$sha")" expectedSha256 "$(json_str "$expected")" \
    matches "$(tf "$sha" "$expected")"
}

storage_facts() {
  local path=$1 exists=false is_dir=false has_data=false
  if [[ -e $path || -L $path ]]; then exists=true; fi
  if [[ -d $path ]]; then is_dir=true; fi
  if [[ -d $path/docker/registry/v2 ]]; then has_data=true; fi
  json_obj path "$(json_str "$path")" exists "$exists" isDir "$is_dir" hasData "$has_data"
}

# --------------------------------------------------------------------------- the facts

# registry_validate FLAG_PREFIX VALUE... (see the header): the checks of every registry argument.
registry_validate() {
  local p=$1
  need unit_name "--${p}unit" "$2"
  need managed_path "--${p}unit-path" "$3"
  need sha256_hex "--${p}unit-sha256" "$4"
  need name "--${p}project" "$5"
  need name "--${p}container" "$6"
  need image_ref "--${p}image" "$7"
  need loopback_endpoint "--${p}endpoint" "$8"
  need managed_path "--${p}storage" "$9"
  need managed_path "--${p}config-path" "${10}"
  need sha256_hex "--${p}config-sha256" "${11}"
  need managed_path "--${p}compose-path" "${12}"
  need sha256_hex "--${p}compose-sha256" "${13}"
  [[ -z ${14} ]] || need sha256_hex "--${p}spec-sha256" "${15}"
  is_port "${8##*:}" ||
    fail "$EXIT_INVALID" invalid-argument "--${p}endpoint has no valid port" false argument "$(json_str "--${p}endpoint")"
}

# registry_facts VALUE... (see the header): print the facts object.
registry_facts() {
  local unit=$1 unit_path=$2 unit_sha=$3 project=$4 container=$5 image=$6 endpoint=$7 storage=$8
  local config_path=$9 config_sha=${10} compose_path=${11} compose_sha=${12} spec=${13}
  local port=${endpoint##*:}

  local systemd_running=false systemctl_present=false unit_json
  command -v systemctl >/dev/null 2>&1 && systemctl_present=true
  [[ -d /run/systemd/system ]] && systemd_running=true
  if [[ $systemd_running == true && $systemctl_present == true ]]; then
    unit_json=$(unit_facts "$unit")
  else
    unit_json=$(json_obj queried false)
  fi

  local container_json expected_json
  [[ -n $DOCKER_STATE ]] || docker_probe
  if [[ $DOCKER_STATE == reachable ]]; then
    container_json=$(container_facts "$container" "$image")
    expected_json=$(expected_image_facts "$image")
  else
    container_json=$(json_obj queried false exists null)
    expected_json=$(json_obj ref "$(json_str "$image")" present null localImageId null)
  fi

  local host
  host=$(hostname 2>/dev/null || printf unknown)
  json_obj ok true probe '"registry-probe"' version "$PROBE_VERSION" host "$(json_str "$host")" \
    user "$(json_str "$(id -un 2>/dev/null || printf unknown)")" \
    expected "$(json_obj unit "$(json_str "$unit")" project "$(json_str "$project")" \
      container "$(json_str "$container")" image "$(json_str "$image")" \
      endpoint "$(json_str "$endpoint")" specSha256 "$(json_str_or_null "$spec")")" \
    systemd "$(json_obj running "$systemd_running" systemctl "$systemctl_present")" \
    unit "$unit_json" \
    docker "$(json_obj installed "$(ft "$DOCKER_STATE" not-installed)" \
      reachable "$(tf "$DOCKER_STATE" reachable)" \
      state "$(json_str "$DOCKER_STATE")" serverVersion "$(json_str_or_null "$DOCKER_VERSION")")" \
    container "$container_json" \
    expectedImage "$expected_json" \
    listeners "$(listener_facts "$port")" \
    http "$(http_facts "$endpoint")" \
    storage "$(storage_facts "$storage")" \
    files "$(json_obj \
      config "$(file_facts "$config_path" "$config_sha")" \
      compose "$(file_facts "$compose_path" "$compose_sha")" \
      unit "$(file_facts "$unit_path" "$unit_sha")")"
}
