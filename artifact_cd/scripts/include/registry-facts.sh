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
#
# Cost (status and health wait for it, issue 14): the slow reads (systemctl, docker, curl,
# sha256sum) start at once, each in its own process whose output comes back through a pipe
# (rf_start / rf_collect: no file is written), while the shell reads /proc itself; docker is asked
# three things in parallel (version, the container, the expected image with its repo digests) and a
# fourth time only when the container runs another image; the JSON is built in variables (rf_obj,
# rf_q: no subshell per value).

PROBE_VERSION=1
PROJECT_LABEL=com.docker.compose.project

# --------------------------------------------------------------------------- JSON in variables

# rf_q VAR VALUE: VAR = VALUE as a JSON string literal, escaped as lib.sh's json_str does (a test
# holds the two equal), without the subshell a $(json_str ...) costs.
rf_q() {
  local _rf_s=$2
  _rf_s=${_rf_s//\\/\\\\}
  _rf_s=${_rf_s//\"/\\\"}
  _rf_s=${_rf_s//$'\n'/\\n}
  _rf_s=${_rf_s//$'\r'/\\r}
  _rf_s=${_rf_s//$'\t'/\\t}
  if [[ $_rf_s == *[[:cntrl:]]* ]]; then _rf_s=$(printf '%s' "$_rf_s" | tr -d '\000-\010\013\014\016-\037'); fi
  printf -v "$1" '"%s"' "$_rf_s"
}

# rf_obj VAR KEY VALUE [KEY VALUE ...]: VAR = one JSON object. A plain KEY takes raw JSON (an
# object, true/false/null, a number); s:KEY a string (quoted here); n:KEY a string, null when empty.
rf_obj() {
  local _rf_name=$1 _rf_out="{" _rf_sep="" _rf_v
  shift
  while (($# >= 2)); do
    case $1 in
      s:*) rf_q _rf_v "$2" ;;
      n:*) if [[ -n $2 ]]; then rf_q _rf_v "$2"; else _rf_v=null; fi ;;
      *) _rf_v=$2 ;;
    esac
    _rf_out+="$_rf_sep\"${1#[sn]:}\":$_rf_v"
    _rf_sep=,
    shift 2
  done
  printf -v "$_rf_name" '%s}' "$_rf_out"
}

# rf_list VAR VALUE...: VAR = a JSON array of strings.
rf_list() {
  local _rf_name=$1 _rf_out="[" _rf_sep="" _rf_v _rf_q
  shift
  for _rf_v in "$@"; do
    rf_q _rf_q "$_rf_v"
    _rf_out+="$_rf_sep$_rf_q"
    _rf_sep=,
  done
  printf -v "$_rf_name" '%s]' "$_rf_out"
}

# rf_tf VAR A B: VAR = true when A equals B, else false (rf_ft: the opposite).
rf_tf() { if [[ $2 == "$3" ]]; then printf -v "$1" true; else printf -v "$1" false; fi; }
rf_ft() { if [[ $2 == "$3" ]]; then printf -v "$1" false; else printf -v "$1" true; fi; }

# --------------------------------------------------------------------------- reads in parallel

# rf_start VAR CMD [ARG...]: start CMD in the background; VAR = the file descriptor its output
# comes back on (a pipe: nothing is written anywhere). Redirect CMD's stderr inside CMD if needed.
rf_start() {
  local _rf_fd
  exec {_rf_fd}< <(
    rc=0
    "${@:2}" || rc=$?
    printf '\n%s' "$rc"
  )
  printf -v "$1" '%s' "$_rf_fd"
}

# rf_collect OUT_VAR RC_VAR FD: wait for the command started on FD; OUT_VAR = its stdout as $(...)
# gives it (trailing newlines removed), RC_VAR = its exit status. Closes FD.
rf_collect() {
  local _rf_all="" _rf_fd=$3 _rf_rc
  IFS= read -r -d '' -u "$_rf_fd" _rf_all || true
  exec {_rf_fd}<&-
  _rf_rc=${_rf_all##*$'\n'}
  [[ $_rf_rc =~ ^[0-9]{1,3}$ ]] || _rf_rc=1 # killed before it could say
  printf -v "$2" '%s' "$_rf_rc"
  _rf_all=${_rf_all%$'\n'*}
  while [[ $_rf_all == *$'\n' ]]; do _rf_all=${_rf_all%$'\n'}; done
  printf -v "$1" '%s' "$_rf_all"
}

# --------------------------------------------------------------------------- systemd

# unit_show UNIT: the unit's properties as systemctl shows them (systemd must be running).
unit_show() {
  timeout 15 systemctl show --no-pager -p LoadState,ActiveState,SubState,UnitFileState \
    -p NeedDaemonReload,FragmentPath -- "$1" 2>/dev/null
}

# unit_json VAR OUT RC: VAR = the unit's JSON facts from unit_show's output and exit status.
unit_json() {
  local line key value load="" active="" sub="" file_state="" need_reload="" fragment=""
  local exists is_active enabled reload
  if (($3 != 0)); then
    rf_obj "$1" queried false
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
  done <<<"$2"
  rf_tf exists "$load" loaded
  rf_tf is_active "$active" active
  rf_tf enabled "$file_state" enabled
  rf_tf reload "$need_reload" yes
  rf_obj "$1" queried true s:loadState "$load" exists "$exists" s:activeState "$active" s:subState "$sub" \
    active "$is_active" s:unitFileState "$file_state" enabled "$enabled" needDaemonReload "$reload" \
    n:fragmentPath "$fragment"
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
  out=$(docker_version) || rc=$?
  docker_state "$out" "$rc"
}

docker_version() { timeout 15 "${DOCKER[@]}" version --format '{{.Server.Version}}' 2>&1; }

# docker_state OUT RC: DOCKER_STATE (and DOCKER_VERSION) from docker_version's answer. When docker
# said permission denied and `sudo -n` works, DOCKER becomes `sudo -n docker` and it asks again.
docker_state() {
  local out=$1 rc=$2
  if ((rc != 0)) && [[ $out == *"permission denied"* ]] && ((EUID != 0)) &&
    sudo -n true >/dev/null 2>&1; then
    DOCKER=(sudo -n docker) # read-only use only: inspect, image inspect, version
    rc=0
    out=$(docker_version) || rc=$?
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

# container_inspect NAME: the container's fields, '|'-separated (see container_json).
container_inspect() {
  local tmpl="{{.Id}}|{{.State.Status}}|{{.State.Running}}|{{.State.StartedAt}}|{{.Config.Image}}|{{.Image}}"
  tmpl+="|{{index .Config.Labels \"$SPEC_LABEL\"}}|{{index .Config.Labels \"$PROJECT_LABEL\"}}"
  tmpl+="|{{.HostConfig.NetworkMode}}|{{range \$p, \$c := .HostConfig.PortBindings}}{{range \$c}}"
  tmpl+="{{\$p}}={{.HostIp}}={{.HostPort}} {{end}}{{end}}|{{.RestartCount}}"
  timeout 15 "${DOCKER[@]}" inspect --type container --format "$tmpl" -- "$1" 2>&1
}

# image_inspect REF: "<image ID>|<repo digests, space-separated>" of a local image.
image_inspect() {
  timeout 15 "${DOCKER[@]}" image inspect --format '{{.Id}}|{{range .RepoDigests}}{{.}} {{end}}' -- "$1" 2>/dev/null
}

# docker_reads NAME IMAGE: start the container's and the expected image's inspect (DOCKER_FDS).
DOCKER_FDS=()
docker_reads() {
  local container_fd image_fd
  rf_start container_fd container_inspect "$1"
  rf_start image_fd image_inspect "$2"
  DOCKER_FDS=("$container_fd" "$image_fd")
}

# container_json VAR OUT RC IMAGE_OUT IMAGE_RC: VAR = the container's JSON facts from
# container_inspect's answer; the repo digests of its image come from the expected image's answer
# (image_inspect) when that is the same image, else from one more image_inspect.
container_json() {
  local out=$2 rc=$3 image_out=$4 image_rc=$5 fields=()
  if ((rc != 0)); then
    if [[ $out == *"No such"* ]]; then
      rf_obj "$1" queried true exists false
    else
      rf_obj "$1" queried false exists null error '"inspect-failed"'
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
  local b port hostip hostport words=() binding bjson="[" sep=""
  read -r -a words <<<"$ports"
  for b in "${words[@]}"; do
    port=${b%%=*}
    b=${b#*=}
    hostip=${b%%=*}
    hostport=${b#*=}
    rf_obj binding s:containerPort "$port" s:hostIp "$hostip" s:hostPort "$hostport"
    bjson+="$sep$binding"
    sep=","
  done
  bjson+="]"
  local digests=() answer="" running_json digests_json
  if [[ -n $image_id ]]; then
    if ((image_rc == 0)) && [[ ${image_out%%|*} == "$image_id" ]]; then
      answer=$image_out
    else
      answer=$(image_inspect "$image_id") || answer=""
    fi
    [[ $answer == *"|"* ]] && read -r -a digests <<<"${answer#*|}"
  fi
  rf_tf running_json "$running" true
  rf_list digests_json "${digests[@]}"
  rf_obj "$1" queried true exists true s:id "$id" s:status "$status" running "$running_json" \
    s:startedAt "$started" s:image "$ref" s:imageId "$image_id" repoDigests "$digests_json" \
    n:specLabel "$spec" n:composeProject "$project" s:networkMode "$netmode" \
    portBindings "$bjson" restartCount "$restarts"
}

# expected_image_json VAR IMAGE OUT RC: VAR = whether the expected image is here (image_inspect's answer).
expected_image_json() {
  if (($4 == 0)); then
    rf_obj "$1" s:ref "$2" present true s:localImageId "${3%%|*}"
  else
    rf_obj "$1" s:ref "$2" present false localImageId null
  fi
}

# --------------------------------------------------------------------------- listeners

# hex_addr HEX: the text form of a /proc/net/tcp{,6} local address.
hex_addr() {
  local text
  rf_addr text "$1"
  printf '%s' "$text"
}

# rf_addr VAR HEX: VAR = hex_addr HEX.
rf_addr() {
  local h=$2 i w bytes=() groups=() g all
  if ((${#h} == 8)); then
    printf -v "$1" '%d.%d.%d.%d' "0x${h:6:2}" "0x${h:4:2}" "0x${h:2:2}" "0x${h:0:2}"
    return 0
  fi
  for ((i = 0; i < 32; i += 8)); do # four host-order (little-endian) 32-bit words
    w=${h:i:8}
    bytes+=("${w:6:2}" "${w:4:2}" "${w:2:2}" "${w:0:2}")
  done
  for ((i = 0; i < 16; i += 2)); do
    printf -v g '%x' "0x${bytes[i]}${bytes[i + 1]}"
    groups+=("$g")
  done
  all="${groups[*]}"
  if [[ $all == "0 0 0 0 0 0 0 0" ]]; then
    printf -v "$1" '::'
  elif [[ $all == "0 0 0 0 0 0 0 1" ]]; then
    printf -v "$1" '::1'
  elif [[ ${groups[*]:0:6} == "0 0 0 0 0 ffff" ]]; then
    printf -v "$1" '::ffff:%d.%d.%d.%d' "0x${bytes[12]}" "0x${bytes[13]}" "0x${bytes[14]}" "0x${bytes[15]}"
  else
    local IFS=:
    printf -v "$1" '%s' "${groups[*]}"
  fi
}

# listener_json VAR PORT: VAR = every address listening on TCP PORT in this network namespace.
listener_json() {
  local port=$2 hexport file line _sl local_addr _rem st addr readable=false addrs_json lines=()
  local -A seen=()
  local addrs=()
  printf -v hexport '%04X' "$port"
  for file in /proc/net/tcp /proc/net/tcp6; do
    [[ -r $file ]] || continue
    readable=true
    # mapfile reads the file in blocks: a `read` loop reads it a byte per call, and the kernel
    # walks its socket table again for each one (95 ms for 42 sockets, against 4 ms)
    mapfile -t -s 1 lines <"$file" || true
    for line in "${lines[@]}"; do
      [[ $line == *":$hexport "* ]] || continue # neither end on the port
      read -r _sl local_addr _rem st _ <<<"$line"
      [[ $st == 0A && ${local_addr##*:} == "$hexport" ]] || continue
      [[ ${local_addr%:*} =~ ^[0-9A-F]{8}$|^[0-9A-F]{32}$ ]] || continue
      rf_addr addr "${local_addr%:*}"
      [[ -n ${seen[$addr]-} ]] && continue
      seen[$addr]=1
      addrs+=("$addr")
    done
  done
  rf_list addrs_json "${addrs[@]}"
  rf_obj "$1" source '"/proc/net/tcp"' queried "$readable" port "$port" addresses "$addrs_json"
}

# --------------------------------------------------------------------------- HTTP

# http_code CLIENT ENDPOINT: the HTTP status of GET /v2/ (curl, else bash's /dev/tcp), or nothing.
http_code() {
  local host=${2%:*} port=${2##*:}
  if [[ $1 == curl ]]; then
    curl -g -s -o /dev/null -w '%{http_code}' --connect-timeout 3 --max-time 5 "http://$2/v2/" 2>/dev/null || true
    return 0
  fi
  host=${host#[}
  host=${host%]}
  # Values reach the inner bash as positional parameters, never as code.
  # shellcheck disable=SC2016 # the single quotes are the point
  timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "GET /v2/ HTTP/1.0\r\nHost: %s\r\n\r\n" "$0" >&3
    IFS=" " read -r _ status _ <&3 && printf "%s" "$status"' "$host" "$port" 2>/dev/null || true
}

# http_json VAR ENDPOINT CLIENT CODE: VAR = the HTTP facts.
http_json() {
  local code=$4
  [[ $code =~ ^[0-9]{3}$ ]] || code=000
  rf_obj "$1" s:url "http://$2/v2/" s:client "$3" code "$((10#$code))"
}

# --------------------------------------------------------------------------- files

# file_sums PATH...: sha256sum of each PATH that is a readable regular file ("<hex>  <path>" lines).
file_sums() {
  local path paths=()
  for path in "$@"; do [[ -f $path && -r $path ]] && paths+=("$path"); done
  ((${#paths[@]} == 0)) || sha256sum -- "${paths[@]}" 2>/dev/null
}

# file_json VAR PATH EXPECTED SUMS: VAR = the file's facts (SUMS: file_sums's answer).
file_json() {
  local path=$2 expected=$3 exists=false readable=false sha="" line matches
  if [[ -e $path || -L $path ]]; then
    exists=true
    while IFS= read -r line; do
      if [[ ${line#*  } == "$path" && ${line%%  *} =~ ^[0-9a-f]{64}$ ]]; then
        sha=${line%%  *}
        readable=true
        break
      fi
    done <<<"$4"
  fi
  rf_tf matches "$sha" "$expected"
  rf_obj "$1" s:path "$path" exists "$exists" readable "$readable" n:sha256 "$sha" \
    s:expectedSha256 "$expected" matches "$matches"
}

storage_json() {
  local path=$2 exists=false is_dir=false has_data=false
  if [[ -e $path || -L $path ]]; then exists=true; fi
  if [[ -d $path ]]; then is_dir=true; fi
  if [[ -d $path/docker/registry/v2 ]]; then has_data=true; fi
  rf_obj "$1" s:path "$path" exists "$exists" isDir "$is_dir" hasData "$has_data"
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

  # The slow reads start at once (each answers on its own pipe); the shell reads /proc meanwhile.
  local systemd_running=false systemctl_present=false unit_fd="" version_fd="" http_fd="" sums_fd=""
  local client=bash-dev-tcp
  command -v systemctl >/dev/null 2>&1 && systemctl_present=true
  [[ -d /run/systemd/system ]] && systemd_running=true
  if [[ $systemd_running == true && $systemctl_present == true ]]; then
    rf_start unit_fd unit_show "$unit"
  fi
  DOCKER_FDS=()
  if [[ -z $DOCKER_STATE ]]; then # not probed yet (registry-probe.sh): ask docker three things at once
    if command -v docker >/dev/null 2>&1; then
      rf_start version_fd docker_version
      docker_reads "$container" "$image"
    else
      DOCKER_STATE=not-installed
    fi
  elif [[ $DOCKER_STATE == reachable ]]; then
    docker_reads "$container" "$image"
  fi
  command -v curl >/dev/null 2>&1 && client=curl
  rf_start http_fd http_code "$client" "$endpoint"
  rf_start sums_fd file_sums "$config_path" "$compose_path" "$unit_path"

  local listeners_json storage_json host user='\u'
  listener_json listeners_json "$port"
  storage_json storage_json "$storage"
  read -r host 2>/dev/null </proc/sys/kernel/hostname || host=$(hostname 2>/dev/null || printf unknown)
  user=${user@P} # the prompt's \u: the user name bash looks up itself (as `id -un`, no process)
  [[ $user != "I have no name!" ]] || user=$(id -un 2>/dev/null || printf unknown)

  local out rc fd unit_json="" container_json expected_json answers=()
  if [[ -n $unit_fd ]]; then
    rf_collect out rc "$unit_fd"
    unit_json unit_json "$out" "$rc"
  else
    rf_obj unit_json queried false
  fi
  for fd in "${DOCKER_FDS[@]}"; do
    rf_collect out rc "$fd"
    answers+=("$out" "$rc")
  done
  if [[ -n $version_fd ]]; then
    rf_collect out rc "$version_fd"
    docker_state "$out" "$rc"
    if [[ $DOCKER_STATE == reachable && ${DOCKER[0]} == sudo ]]; then
      answers=() # asked as plain docker before docker_state chose `sudo -n docker`: ask again
      docker_reads "$container" "$image"
      for fd in "${DOCKER_FDS[@]}"; do
        rf_collect out rc "$fd"
        answers+=("$out" "$rc")
      done
    fi
  fi
  if [[ $DOCKER_STATE == reachable ]]; then
    container_json container_json "${answers[@]}"
    expected_image_json expected_json "$image" "${answers[2]}" "${answers[3]}"
  else
    rf_obj container_json queried false exists null
    rf_obj expected_json s:ref "$image" present null localImageId null
  fi
  local http_json sums files_json config_json compose_json unit_file_json
  rf_collect out rc "$http_fd"
  http_json http_json "$endpoint" "$client" "$out"
  rf_collect sums rc "$sums_fd"
  file_json config_json "$config_path" "$config_sha" "$sums"
  file_json compose_json "$compose_path" "$compose_sha" "$sums"
  file_json unit_file_json "$unit_path" "$unit_sha" "$sums"
  rf_obj files_json config "$config_json" compose "$compose_json" unit "$unit_file_json"

  local expected_obj systemd_obj docker_obj installed reachable doc
  rf_obj expected_obj s:unit "$unit" s:project "$project" s:container "$container" s:image "$image" \
    s:endpoint "$endpoint" n:specSha256 "$spec"
  rf_obj systemd_obj running "$systemd_running" systemctl "$systemctl_present"
  rf_ft installed "$DOCKER_STATE" not-installed
  rf_tf reachable "$DOCKER_STATE" reachable
  rf_obj docker_obj installed "$installed" reachable "$reachable" s:state "$DOCKER_STATE" \
    n:serverVersion "$DOCKER_VERSION"
  rf_obj doc ok true probe '"registry-probe"' version "$PROBE_VERSION" s:host "$host" s:user "$user" \
    expected "$expected_obj" systemd "$systemd_obj" unit "$unit_json" docker "$docker_obj" \
    container "$container_json" expectedImage "$expected_json" listeners "$listeners_json" \
    http "$http_json" storage "$storage_json" files "$files_json"
  _JSON_PRINTED=1 # a result line is printed (lib.sh's exit handler)
  printf '%s\n' "$doc"
}
