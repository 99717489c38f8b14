# registry-install.sh: idempotent install of the D601 artifact registry host (R1, R2, R7).
#
#   argv: dirs | write | activate, then artifact_cd.contract.RegistryDirsArgs, RegistryWriteArgs,
#   RegistryActivateArgs (docs/contracts.md, generated argv table)
#
# Sent as `bash -s -- <args>` with lib.sh prepended (artifact_cd/scripts/__init__.py).
# `dirs` creates missing directories and never touches what is inside them (storage included);
# `write` replaces a file only when its SHA-256 differs from H (temp file + rename, verified);
# `activate` runs `daemon-reload` only when systemd says the unit needs it (new or changed on
# disk), enables the unit, starts it when inactive, and restarts it only when
#   - the unit was reloaded while running, or the running container's spec label differs from H
#     (then the outdated container is removed first, so Compose recreates it; never its volumes), or
#   - a bind-mounted file (the registry config) was rewritten after the container started (the
#     container still reads the old inode, e.g. after a drift fix), or
#   - the unit is active but no current container shows up within 20 s.
# It then waits until the unit is active and the container runs the spec H (and /v2/ answers).
# A second activate with the same inputs changes nothing. Nothing here ever deletes storage.
# A non-root SSH user needs passwordless sudo (infra-blocked channel "sudo" otherwise).
# Output: one JSON line. Exit codes as docs/contracts.md.
set -euo pipefail

READY_TIMEOUT=90 # seconds for the unit to run the current container after a start/restart

is_file_mode() { [[ $1 =~ ^0[0-7]{3}$ ]]; }
is_base64() { [[ $1 =~ ^[A-Za-z0-9+/]*={0,2}$ ]] && ((${#1} % 4 == 0)); }

# run_root CMD...: run CMD as root (directly, or with non-interactive sudo for a non-root user).
SUDO=()
run_root() { "${SUDO[@]}" "$@"; }
need_root() {
  if ((EUID != 0)); then
    sudo -n true >/dev/null 2>&1 ||
      fail "$EXIT_INFRA_BLOCKED" infra-blocked "the install needs root: $(id -un) is not root and has no passwordless sudo" false \
        channel '"sudo"'
    SUDO=(sudo -n)
  fi
}

# value_of FLAG ARGC: the usage check for a flag that takes one value.

once() {
  [[ -z $2 ]] || fail "$EXIT_INVALID" invalid-argument "$1 given twice" false argument "$(json_str "$1")"
}

file_sha256() {
  local out
  out=$(run_root sha256sum -- "$1") || return 1
  printf '%s' "${out%% *}"
}

# --------------------------------------------------------------------------- dirs

do_dirs() {
  local dirs=() storage="" d
  while (($#)); do
    case $1 in
      --dir) arg_value $# "$1"; dirs+=("$2"); shift 2 ;;
      --storage) arg_value $# "$1"; once "$1" "$storage"; storage=$2; shift 2 ;;
      *) fail "$EXIT_INVALID" invalid-argument "unknown argument for dirs" false argument "$(json_str "$1")" ;;
    esac
  done
  ((${#dirs[@]} > 0)) || fail "$EXIT_INVALID" invalid-argument "dirs needs at least one --dir" false argument '"--dir"'
  [[ -n $storage ]] || fail "$EXIT_INVALID" invalid-argument "dirs needs --storage" false argument '"--storage"'
  for d in "${dirs[@]}"; do need managed_path --dir "$d"; done
  need managed_path --storage "$storage"
  need_root

  local created=() storage_existed=true
  for d in "${dirs[@]}" "$storage"; do
    if run_root test -L "$d"; then
      fail "$EXIT_PRECONDITION" precondition-failed "$d is a symlink; refusing to manage it" false path "$(json_str "$d")"
    elif run_root test -d "$d"; then
      continue # existing directories (and everything inside them) are left exactly as they are
    elif run_root test -e "$d"; then
      fail "$EXIT_PRECONDITION" precondition-failed "$d exists and is not a directory" false path "$(json_str "$d")"
    fi
    [[ $d == "$storage" ]] && storage_existed=false
    run_root mkdir -p -- "$d"
    created+=("$d")
  done
  json_obj ok true action '"dirs"' created "$(json_list "${created[@]}")" \
    storage "$(json_obj path "$(json_str "$storage")" existed "$storage_existed")"
}

# --------------------------------------------------------------------------- write

TMP_FILE=""
cleanup_tmp() { [[ -z $TMP_FILE ]] || run_root rm -f -- "$TMP_FILE" || true; }

do_write() {
  local path="" mode="" sha="" b64="" have_b64=""
  while (($#)); do
    case $1 in
      --path) arg_value $# "$1"; once "$1" "$path"; path=$2; shift 2 ;;
      --mode) arg_value $# "$1"; once "$1" "$mode"; mode=$2; shift 2 ;;
      --sha256) arg_value $# "$1"; once "$1" "$sha"; sha=$2; shift 2 ;;
      --content-b64) arg_value $# "$1"; once "$1" "$have_b64"; b64=$2; have_b64=1; shift 2 ;;
      *) fail "$EXIT_INVALID" invalid-argument "unknown argument for write" false argument "$(json_str "$1")" ;;
    esac
  done
  need managed_path --path "$path"
  need file_mode --mode "$mode"
  need sha256_hex --sha256 "$sha"
  [[ -n $have_b64 ]] || fail "$EXIT_INVALID" invalid-argument "write needs --content-b64" false argument '"--content-b64"'
  need base64 --content-b64 "$b64"
  local given
  given=$(printf '%s' "$b64" | base64 -d | sha256sum)
  [[ ${given%% *} == "$sha" ]] ||
    fail "$EXIT_INVALID" invalid-argument "the content does not hash to --sha256" false argument '"--content-b64"'
  need_root

  local dir=${path%/*} base=${path##*/}
  [[ -n $dir ]] || dir=/
  run_root test -d "$dir" ||
    fail "$EXIT_PRECONDITION" precondition-failed "directory $dir does not exist (the dirs step creates it)" false path "$(json_str "$path")"
  if run_root test -L "$path"; then
    fail "$EXIT_PRECONDITION" precondition-failed "$path is a symlink; refusing to write through it" false path "$(json_str "$path")"
  fi
  if run_root test -e "$path" && ! run_root test -f "$path"; then
    fail "$EXIT_PRECONDITION" precondition-failed "$path exists and is not a regular file" false path "$(json_str "$path")"
  fi

  local previous="" result mode_fixed=false
  if run_root test -f "$path"; then
    previous=$(file_sha256 "$path") ||
      fail "$EXIT_INFRA_BLOCKED" infra-blocked "cannot read $path" false channel '"filesystem"' path "$(json_str "$path")"
  fi
  if [[ $previous == "$sha" ]]; then
    result=unchanged
    if [[ $(run_root stat -c %a -- "$path") != "${mode#0}" ]]; then
      run_root chmod "$mode" -- "$path"
      mode_fixed=true
    fi
  else
    trap cleanup_tmp EXIT
    TMP_FILE=$(run_root mktemp -- "$dir/.$base.XXXXXXXX")
    printf '%s' "$b64" | base64 -d | run_root tee -- "$TMP_FILE" >/dev/null
    run_root chmod "$mode" -- "$TMP_FILE"
    [[ $(file_sha256 "$TMP_FILE") == "$sha" ]] ||
      fail "$EXIT_VERIFY_FAILED" write-failed "the temporary copy of $path does not hash to the expected SHA-256" true \
        path "$(json_str "$path")"
    run_root mv -f -T -- "$TMP_FILE" "$path"
    TMP_FILE=""
    [[ $(file_sha256 "$path") == "$sha" ]] ||
      fail "$EXIT_VERIFY_FAILED" write-failed "$path does not hash to the expected SHA-256 after the write" true \
        path "$(json_str "$path")"
    result=written
  fi
  json_obj ok true action '"write"' path "$(json_str "$path")" result "$(json_str "$result")" \
    sha256 "$(json_str "$sha")" \
    previousSha256 "$(if [[ -n $previous ]]; then json_str "$previous"; else printf null; fi)" \
    mode "$(json_str "$mode")" modeFixed "$mode_fixed"
}

# --------------------------------------------------------------------------- activate

unit_prop() { run_root systemctl show -p "$2" --value -- "$1" 2>/dev/null || true; }

# container_state NAME: "<running>|<spec label>|<id>|<started at>" ("absent" when there is no such
# container).
container_state() {
  local out
  if out=$(run_root timeout 20 docker inspect --type container \
    --format "{{.State.Running}}|{{index .Config.Labels \"$SPEC_LABEL\"}}|{{.Id}}|{{.State.StartedAt}}" -- "$1" 2>/dev/null); then
    printf '%s' "$out"
  else
    printf absent
  fi
}

current() { # current NAME SPEC [OLD_START]: the container runs, carries the expected spec label and,
  # when OLD_START is given, was (re)started since then (a restart asked with --no-block happened)
  local running label _id started
  IFS='|' read -r running label _id started <<<"$(container_state "$1")"
  [[ $running == true && $label == "$2" && (-z ${3-} || $started != "$3") ]]
}

# rewritten_mounts NAME: the bind-mounted regular files (the registry config) rewritten after the
# container started: the running registry still reads the old inode, so a restart is due.
rewritten_mounts() {
  local started started_s src mtime sources=()
  started=$(run_root timeout 20 docker inspect --type container --format '{{.State.StartedAt}}' -- "$1" \
    2>/dev/null) || return 0
  started_s=$(date -u -d "$started" +%s.%N 2>/dev/null) || return 0
  mapfile -t sources < <(run_root timeout 20 docker inspect --type container \
    --format '{{range .Mounts}}{{if eq .Type "bind"}}{{.Source}}{{"\n"}}{{end}}{{end}}' -- "$1" 2>/dev/null || true)
  for src in "${sources[@]}"; do
    is_abs_path "$src" || continue
    run_root test -f "$src" || continue
    mtime=$(run_root stat -c %.9Y -- "$src") || continue
    if awk -v m="$mtime" -v s="$started_s" 'BEGIN { exit !(m > s) }'; then
      printf '%s\n' "$src"
    fi
  done
}

# remove_container NAME: remove the container (never its volumes: no -v). The registry data is a
# bind mount of the storage directory, which no step ever deletes.
remove_container() {
  run_root timeout 60 docker rm -f -- "$1" >/dev/null 2>&1 ||
    fail "$EXIT_VERIFY_FAILED" unhealthy "cannot remove the outdated container $1" true container "$(json_str "$1")"
}

# wait_current UNIT NAME SPEC SECONDS [OLD_START]: until the unit is active and the container is
# current (and, with OLD_START, restarted since).
wait_current() {
  local deadline=$((SECONDS + $4)) state
  while ((SECONDS < deadline)); do
    state=$(unit_prop "$1" ActiveState)
    if [[ $state == failed ]]; then
      return 2
    fi
    if [[ $state == active ]] && current "$2" "$3" "${5-}"; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

# api_ready NAME SECONDS: GET /v2/ on the container's loopback bindings answers 200
# ("true"), never does ("false"), or cannot be checked here ("null").
api_ready() {
  local name=$1 deadline=$((SECONDS + $2)) bindings=() b host port code
  command -v curl >/dev/null 2>&1 || { printf null; return 0; }
  mapfile -t bindings < <(run_root timeout 20 docker port "$name" 2>/dev/null || true)
  local urls=()
  for b in "${bindings[@]}"; do
    b=${b##* }
    host=${b%:*}
    port=${b##*:}
    is_port "$port" || continue
    case $host in
      127.0.0.1) urls+=("http://127.0.0.1:$port/v2/") ;;
      "[::1]") urls+=("http://[::1]:$port/v2/") ;;
    esac
  done
  ((${#urls[@]} > 0)) || { printf null; return 0; }
  while ((SECONDS < deadline)); do
    code=$(curl -g -s -o /dev/null -w '%{http_code}' --max-time 3 "${urls[0]}" || true)
    if [[ $code == 200 ]]; then
      printf true
      return 0
    fi
    sleep 0.5
  done
  printf false
}

do_activate() {
  local unit="" container="" spec=""
  while (($#)); do
    case $1 in
      --unit) arg_value $# "$1"; once "$1" "$unit"; unit=$2; shift 2 ;;
      --container) arg_value $# "$1"; once "$1" "$container"; container=$2; shift 2 ;;
      --spec-sha256) arg_value $# "$1"; once "$1" "$spec"; spec=$2; shift 2 ;;
      *) fail "$EXIT_INVALID" invalid-argument "unknown argument for activate" false argument "$(json_str "$1")" ;;
    esac
  done
  need unit_name --unit "$unit"
  need name --container "$container"
  need sha256_hex --spec-sha256 "$spec"
  need_root
  require_tool systemctl
  [[ -d /run/systemd/system ]] ||
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "systemd is not running as the init system on $(hostname)" false channel '"systemd"'
  require_tool docker
  run_root timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "the Docker daemon on $(hostname) does not answer" true channel '"docker"'

  # One activation at a time on this host.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"/run/lock/${unit%.service}.activate.lock"
    flock -w 60 9 || fail "$EXIT_BUSY" lock-busy "another install is activating $unit" true
  fi

  local load need_reload was_active=false reloaded=false enabled=false started=false restarted=false
  load=$(unit_prop "$unit" LoadState)
  need_reload=$(unit_prop "$unit" NeedDaemonReload)
  [[ $(unit_prop "$unit" ActiveState) == active ]] && was_active=true
  if [[ $load != loaded || $need_reload == yes ]]; then
    run_root systemctl daemon-reload
    reloaded=true
    load=$(unit_prop "$unit" LoadState)
  fi
  [[ $load == loaded ]] ||
    fail "$EXIT_PRECONDITION" precondition-failed "systemd cannot load $unit (LoadState=$load); the write step installs it" false \
      unit "$(json_str "$unit")"

  if [[ $(run_root systemctl is-enabled -- "$unit" 2>/dev/null || true) != enabled ]]; then
    run_root systemctl enable --quiet -- "$unit"
    enabled=true
  fi

  local state running label _id started_at reason="" replaced=false old_start=""
  state=$(unit_prop "$unit" ActiveState)
  IFS='|' read -r running label _id started_at <<<"$(container_state "$container")"
  if [[ $state != active && $state != activating && $state != reloading ]]; then
    if [[ $running != absent && $label != "$spec" ]]; then
      remove_container "$container" # outdated or foreign; storage is a bind mount and stays
      replaced=true
    fi
    [[ $state == failed ]] && run_root systemctl reset-failed -- "$unit"
    run_root systemctl start --no-block -- "$unit"
    started=true
    reason="inactive"
  elif [[ ($reloaded == true && $was_active == true) || ($running == true && $label != "$spec") ]]; then
    # The unit or the spec changed: stop with the definition in force, drop the outdated
    # container (so a renamed Compose project cannot collide with it), start the new one.
    run_root systemctl stop -- "$unit"
    if [[ $running != absent && $label != "$spec" ]]; then
      remove_container "$container"
      replaced=true
    fi
    run_root systemctl reset-failed -- "$unit" 2>/dev/null || true
    run_root systemctl start --no-block -- "$unit"
    restarted=true
    if [[ $reloaded == true ]]; then reason="unit-reloaded"; else reason="spec-changed"; fi
  elif [[ $running == true && -n $(rewritten_mounts "$container") ]]; then
    run_root systemctl restart --no-block -- "$unit" # a mounted file was rewritten (e.g. drift fixed)
    old_start=$started_at # until the restart happened, the running container still looks current
    restarted=true
    reason="mounted-file-rewritten"
  elif [[ $running != true ]] && ! wait_current "$unit" "$container" "$spec" 20; then
    run_root systemctl restart --no-block -- "$unit" # active unit, but no current container
    restarted=true
    reason="container-not-running"
  fi

  local rc=0
  wait_current "$unit" "$container" "$spec" "$READY_TIMEOUT" "$old_start" || rc=$?
  if ((rc == 2)); then
    fail "$EXIT_VERIFY_FAILED" unhealthy "$unit failed while starting; see: journalctl -u $unit" false \
      unit "$(json_str "$unit")" reloaded "$reloaded" started "$started" restarted "$restarted"
  elif ((rc != 0)); then
    fail "$EXIT_VERIFY_FAILED" unhealthy "$container is not running the rendered spec ${spec:0:12} after ${READY_TIMEOUT}s; see: journalctl -u $unit" \
      true unit "$(json_str "$unit")" reloaded "$reloaded" started "$started" restarted "$restarted"
  fi
  IFS='|' read -r running label _id started_at <<<"$(container_state "$container")"
  json_obj ok true action '"activate"' unit "$(json_str "$unit")" reloaded "$reloaded" enabled "$enabled" \
    started "$started" restarted "$restarted" replacedContainer "$replaced" \
    reason "$(if [[ -n $reason ]]; then json_str "$reason"; else printf null; fi)" containerId "$(json_str "$_id")" \
    specSha256 "$(json_str "$spec")" apiReady "$(api_ready "$container" 30)"
}

main() {
  exec </dev/null
  (($# > 0)) || fail "$EXIT_INVALID" invalid-argument "usage: registry-install.sh dirs|write|activate ..." false
  local verb=$1
  shift
  case $verb in
    dirs) do_dirs "$@" ;;
    write) do_write "$@" ;;
    activate) do_activate "$@" ;;
    *) fail "$EXIT_INVALID" invalid-argument "unknown action (dirs, write, activate)" false argument "$(json_str "$verb")" ;;
  esac
}

main "$@"
