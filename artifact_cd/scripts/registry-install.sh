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
# Non-root hosts (issue 11): everything runs as the SSH user (Docker through the docker group;
# the managed files under the user's home), except what needs root, which runs as `sudo -n` with
# --elevate sudo (the default): a file in a directory the user cannot write (the unit under
# /etc/systemd/system: `tee <dir>/.<name>.new`, then `mv -f -T <dir>/.<name>.new <path>`), a
# directory the user cannot create (`mkdir -p -- <dir>`), and the six systemctl calls of
# `activate`. Each step checks its sudoers rules (`sudo -n -l`) before it changes anything; a
# missing rule fails infra-blocked naming the command and the line to add (include/elevate.sh).
# Audit (issue 13): with --audit-log, `dirs` and `write` log when they change something, `activate`
# always (target registry-host, step registry-install, service artifact-registry).
# Output: one JSON line. Exit codes as docs/contracts.md.
# include: elevate.sh
# include: audit.sh
set -euo pipefail

READY_TIMEOUT=90 # seconds for the unit to run the current container after a start/restart

is_file_mode() { [[ $1 =~ ^0[0-7]{3}$ ]]; }
is_base64() { [[ $1 =~ ^[A-Za-z0-9+/]*={0,2}$ ]] && ((${#1} % 4 == 0)); }

AUDIT_SERVICE_ID=artifact-registry
ELEVATE_ARG="" AUDIT_LOG_ARG="" STACK=""

once() {
  [[ -z $2 ]] || fail "$EXIT_INVALID" invalid-argument "$1 given twice" false argument "$(json_str "$1")"
}

# host_args: validate the host arguments every action takes (--elevate, --audit-log, --stack).
host_args() {
  elevate_init "${ELEVATE_ARG:-sudo}"
  if [[ -n $AUDIT_LOG_ARG ]]; then
    need abs_path --audit-log "$AUDIT_LOG_ARG"
    need name --stack "$STACK"
  fi
}

# audit_start ACTION [KEY RAWJSON...]: the started line (with --audit-log), before the first change.
audit_start() {
  [[ -n $AUDIT_LOG_ARG ]] || return 0
  audit_init "$AUDIT_LOG_ARG" "$STACK" "$STACK" "$AUDIT_SERVICE_ID" registry-host registry-install
  AUDIT_FIELDS+=(action "$(json_str "$1")" "${@:2}")
  audit_event started
}

# abs_tool NAME: the absolute path of a tool (what a sudoers rule names).
abs_tool() { command -v "$1" || printf '/usr/bin/%s' "$1"; }

# writable_dir DIR: the user can create entries in DIR (root always can).
writable_dir() { ((EUID == 0)) || [[ -w $1 && -x $1 ]]; }

file_sha256() {
  local out
  out=$(sha256sum -- "$1") || return 1
  printf '%s' "${out%% *}"
}

# --------------------------------------------------------------------------- dirs

do_dirs() {
  local dirs=() storage="" d
  while (($#)); do
    case $1 in
      --dir) arg_value $# "$1"; dirs+=("$2"); shift 2 ;;
      --storage) arg_value $# "$1"; once "$1" "$storage"; storage=$2; shift 2 ;;
      --elevate) arg_value $# "$1"; ELEVATE_ARG=$2; shift 2 ;;
      --audit-log) arg_value $# "$1"; AUDIT_LOG_ARG=$2; shift 2 ;;
      --stack) arg_value $# "$1"; STACK=$2; shift 2 ;;
      *) fail "$EXIT_INVALID" invalid-argument "unknown argument for dirs" false argument "$(json_str "$1")" ;;
    esac
  done
  ((${#dirs[@]} > 0)) || fail "$EXIT_INVALID" invalid-argument "dirs needs at least one --dir" false argument '"--dir"'
  [[ -n $storage ]] || fail "$EXIT_INVALID" invalid-argument "dirs needs --storage" false argument '"--storage"'
  for d in "${dirs[@]}"; do need managed_path --dir "$d"; done
  need managed_path --storage "$storage"
  host_args

  # First decide (nothing changes): which directories are missing, and which of them the user
  # cannot create (the nearest existing parent is not writable): those need `sudo -n mkdir -p`.
  local missing=() rules=() d up mkdir
  mkdir=$(abs_tool mkdir)
  for d in "${dirs[@]}" "$storage"; do
    if [[ -L $d ]]; then
      fail "$EXIT_PRECONDITION" precondition-failed "$d is a symlink; refusing to manage it" false path "$(json_str "$d")"
    elif [[ -d $d ]]; then
      continue # existing directories (and everything inside them) are left exactly as they are
    elif [[ -e $d ]]; then
      fail "$EXIT_PRECONDITION" precondition-failed "$d exists and is not a directory" false path "$(json_str "$d")"
    fi
    [[ " ${missing[*]} " != *" $d "* ]] || continue # named twice (paths have no spaces)
    missing+=("$d")
    up=${d%/*}
    while [[ -n $up && ! -e $up ]]; do up=${up%/*}; done
    if ! writable_dir "${up:-/}"; then
      elevating || fail "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un) cannot create $d and --elevate is none; nothing was changed" false \
        channel '"filesystem"' path "$(json_str "$d")" fix "$(json_str "create it for $(id -un), or set hosts.d601.elevate sudo")"
      rules+=("$mkdir -p -- $d" "$mkdir" -p -- "$d" @@)
    fi
  done
  ((${#rules[@]} == 0)) || require_root filesystem "${rules[@]}"

  local created=() storage_existed=true
  ((${#missing[@]} == 0)) || audit_start dirs created "$(json_list "${missing[@]}")"
  for d in "${missing[@]}"; do
    [[ $d == "$storage" ]] && storage_existed=false
    up=${d%/*}
    while [[ -n $up && ! -e $up ]]; do up=${up%/*}; done
    if writable_dir "${up:-/}"; then
      mkdir -p -- "$d"
    else
      as_root "$mkdir" -p -- "$d"
    fi
    created+=("$d")
  done
  ((${#missing[@]} == 0)) || audit_event finished verdict '"ok"' error null
  json_obj ok true action '"dirs"' created "$(json_list "${created[@]}")" \
    storage "$(json_obj path "$(json_str "$storage")" existed "$storage_existed")"
}

# --------------------------------------------------------------------------- write

TMP_FILE=""
cleanup_tmp() { [[ -z $TMP_FILE ]] || rm -f -- "$TMP_FILE" 2>/dev/null || true; }

do_write() {
  local path="" mode="" sha="" b64="" have_b64=""
  while (($#)); do
    case $1 in
      --path) arg_value $# "$1"; once "$1" "$path"; path=$2; shift 2 ;;
      --mode) arg_value $# "$1"; once "$1" "$mode"; mode=$2; shift 2 ;;
      --sha256) arg_value $# "$1"; once "$1" "$sha"; sha=$2; shift 2 ;;
      --content-b64) arg_value $# "$1"; once "$1" "$have_b64"; b64=$2; have_b64=1; shift 2 ;;
      --elevate) arg_value $# "$1"; ELEVATE_ARG=$2; shift 2 ;;
      --audit-log) arg_value $# "$1"; AUDIT_LOG_ARG=$2; shift 2 ;;
      --stack) arg_value $# "$1"; STACK=$2; shift 2 ;;
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
  host_args

  local dir=${path%/*} base=${path##*/}
  [[ -n $dir ]] || dir=/
  [[ -d $dir ]] ||
    fail "$EXIT_PRECONDITION" precondition-failed "directory $dir does not exist (the dirs step creates it)" false path "$(json_str "$path")"
  if [[ -L $path ]]; then
    fail "$EXIT_PRECONDITION" precondition-failed "$path is a symlink; refusing to write through it" false path "$(json_str "$path")"
  fi
  if [[ -e $path && ! -f $path ]]; then
    fail "$EXIT_PRECONDITION" precondition-failed "$path exists and is not a regular file" false path "$(json_str "$path")"
  fi

  local previous="" result mode_fixed=false
  if [[ -f $path ]]; then
    previous=$(file_sha256 "$path") ||
      fail "$EXIT_INFRA_BLOCKED" infra-blocked "cannot read $path" false channel '"filesystem"' path "$(json_str "$path")"
  fi
  # A directory the user cannot write (the unit's /etc/systemd/system): a root-owned temp file of a
  # fixed name next to the target (sudo -n tee), then an atomic rename (sudo -n mv -f -T); sudo
  # creates it 0644 (umask 022), the only mode the rendered files have.
  local as_user=true tee mv staged="$dir/.$base.new"
  writable_dir "$dir" || as_user=false
  tee=$(abs_tool tee)
  mv=$(abs_tool mv)
  if [[ $previous == "$sha" ]]; then
    result=unchanged
    if [[ $(stat -c %a -- "$path") != "${mode#0}" ]]; then
      [[ $as_user == true ]] ||
        fail "$EXIT_INFRA_BLOCKED" infra-blocked "$path has mode $(stat -c %a -- "$path"), not $mode, and $(id -un) cannot change it" false \
          channel '"filesystem"' path "$(json_str "$path")" fix "$(json_str "sudo chmod $mode $path")"
      audit_start write path "$(json_str "$path")" sha256 "$(json_str "$sha")"
      chmod "$mode" -- "$path"
      mode_fixed=true
      audit_event finished verdict '"ok"' error null
    fi
  elif [[ $as_user == true ]]; then
    audit_start write path "$(json_str "$path")" sha256 "$(json_str "$sha")"
    at_exit cleanup_tmp
    TMP_FILE=$(mktemp -- "$dir/.$base.XXXXXXXX")
    printf '%s' "$b64" | base64 -d >"$TMP_FILE"
    chmod "$mode" -- "$TMP_FILE"
    [[ $(file_sha256 "$TMP_FILE") == "$sha" ]] ||
      fail "$EXIT_VERIFY_FAILED" write-failed "the temporary copy of $path does not hash to the expected SHA-256" true \
        path "$(json_str "$path")"
    mv -f -T -- "$TMP_FILE" "$path"
    TMP_FILE=""
    [[ $(file_sha256 "$path") == "$sha" ]] ||
      fail "$EXIT_VERIFY_FAILED" write-failed "$path does not hash to the expected SHA-256 after the write" true \
        path "$(json_str "$path")"
    result=written
    audit_event finished verdict '"ok"' error null
  else
    elevating || fail "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un) cannot write $dir and --elevate is none; nothing was changed" false \
      channel '"filesystem"' path "$(json_str "$path")" fix "$(json_str "set hosts.d601.elevate sudo (README 'Non-root hosts'), or log in as root")"
    require_root filesystem "$tee $staged" "$tee" "$staged" @@ "$mv -f -T $staged $path" "$mv" -f -T "$staged" "$path" @@
    audit_start write path "$(json_str "$path")" sha256 "$(json_str "$sha")"
    printf '%s' "$b64" | base64 -d | as_root "$tee" "$staged" >/dev/null
    [[ $(file_sha256 "$staged") == "$sha" && $(stat -c %a -- "$staged") == "${mode#0}" ]] ||
      fail "$EXIT_VERIFY_FAILED" write-failed "the staged copy $staged does not hash to the expected SHA-256 or has not mode $mode (nothing replaced $path)" true \
        path "$(json_str "$path")"
    as_root "$mv" -f -T "$staged" "$path"
    [[ $(file_sha256 "$path") == "$sha" ]] ||
      fail "$EXIT_VERIFY_FAILED" write-failed "$path does not hash to the expected SHA-256 after the write" true \
        path "$(json_str "$path")"
    result=written
    audit_event finished verdict '"ok"' error null
  fi
  json_obj ok true action '"write"' path "$(json_str "$path")" result "$(json_str "$result")" \
    sha256 "$(json_str "$sha")" \
    previousSha256 "$(if [[ -n $previous ]]; then json_str "$previous"; else printf null; fi)" \
    mode "$(json_str "$mode")" modeFixed "$mode_fixed"
}

# --------------------------------------------------------------------------- activate

unit_prop() { systemctl show -p "$2" --value -- "$1" 2>/dev/null || true; }

# The six systemctl calls of activate, as root (sudoers rules: README "Non-root hosts").
SYSTEMCTL=""
systemctl_rules() { # UNIT: require_root's argument list for every systemctl call activate may make
  local s=$SYSTEMCTL u=$1
  printf '%s\n' "$s daemon-reload" "$s" daemon-reload @@ \
    "$s enable --quiet -- $u" "$s" enable --quiet -- "$u" @@ \
    "$s start --no-block -- $u" "$s" start --no-block -- "$u" @@ \
    "$s stop -- $u" "$s" stop -- "$u" @@ \
    "$s restart --no-block -- $u" "$s" restart --no-block -- "$u" @@ \
    "$s reset-failed -- $u" "$s" reset-failed -- "$u" @@
}
root_systemctl() { as_root "$SYSTEMCTL" "$@"; }

# container_state NAME: "<running>|<spec label>|<id>|<started at>" ("absent" when there is no such
# container).
container_state() {
  local out
  if out=$(timeout 20 docker inspect --type container \
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
  started=$(timeout 20 docker inspect --type container --format '{{.State.StartedAt}}' -- "$1" \
    2>/dev/null) || return 0
  started_s=$(date -u -d "$started" +%s.%N 2>/dev/null) || return 0
  mapfile -t sources < <(timeout 20 docker inspect --type container \
    --format '{{range .Mounts}}{{if eq .Type "bind"}}{{.Source}}{{"\n"}}{{end}}{{end}}' -- "$1" 2>/dev/null || true)
  for src in "${sources[@]}"; do
    is_abs_path "$src" || continue
    [[ -f $src ]] || continue
    mtime=$(stat -c %.9Y -- "$src") || continue
    if awk -v m="$mtime" -v s="$started_s" 'BEGIN { exit !(m > s) }'; then
      printf '%s\n' "$src"
    fi
  done
}

# remove_container NAME: remove the container (never its volumes: no -v). The registry data is a
# bind mount of the storage directory, which no step ever deletes.
remove_container() {
  timeout 60 docker rm -f -- "$1" >/dev/null 2>&1 ||
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
  mapfile -t bindings < <(timeout 20 docker port "$name" 2>/dev/null || true)
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
      --elevate) arg_value $# "$1"; ELEVATE_ARG=$2; shift 2 ;;
      --audit-log) arg_value $# "$1"; AUDIT_LOG_ARG=$2; shift 2 ;;
      --stack) arg_value $# "$1"; STACK=$2; shift 2 ;;
      *) fail "$EXIT_INVALID" invalid-argument "unknown argument for activate" false argument "$(json_str "$1")" ;;
    esac
  done
  need unit_name --unit "$unit"
  need name --container "$container"
  need sha256_hex --spec-sha256 "$spec"
  host_args
  if ((EUID != 0)) && ! elevating; then
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "activate runs systemctl as root, and $(id -un) is not root with --elevate none; nothing was changed" false \
      channel '"systemd"' fix "$(json_str "set hosts.d601.elevate sudo (README 'Non-root hosts'), or log in as root")"
  fi
  require_tool systemctl
  SYSTEMCTL=$(command -v systemctl)
  [[ -d /run/systemd/system ]] ||
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "systemd is not running as the init system on $(hostname)" false channel '"systemd"'
  require_tool docker
  local out
  if ! out=$(timeout 20 docker version --format '{{.Server.Version}}' 2>&1); then
    if [[ $out == *"permission denied"* ]]; then
      fail "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un) may not use the Docker daemon on $(hostname); nothing was changed" false \
        channel '"docker"' fix "$(json_str "sudo usermod -aG docker $(id -un) (then log in again)")"
    fi
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "the Docker daemon on $(hostname) does not answer" true channel '"docker"'
  fi
  local rules=()
  mapfile -t rules < <(systemctl_rules "$unit")
  require_root systemd "${rules[@]}"

  # One activation at a time on this host. The lock file may be another user's (root's, from a
  # root login): flock needs only a read descriptor of it.
  if command -v flock >/dev/null 2>&1; then
    local lock="/run/lock/${unit%.service}.activate.lock"
    if [[ -r $lock ]]; then
      exec 9<"$lock"
    elif [[ -w ${lock%/*} ]]; then
      exec 9>"$lock"
    else
      exec 9>"${TMPDIR:-/tmp}/${unit%.service}.activate.lock"
    fi
    flock -w 60 9 || fail "$EXIT_BUSY" lock-busy "another install is activating $unit" true
  fi
  audit_start activate unit "$(json_str "$unit")" specSha256 "$(json_str "$spec")"

  local load need_reload was_active=false reloaded=false enabled=false started=false restarted=false
  load=$(unit_prop "$unit" LoadState)
  need_reload=$(unit_prop "$unit" NeedDaemonReload)
  [[ $(unit_prop "$unit" ActiveState) == active ]] && was_active=true
  if [[ $load != loaded || $need_reload == yes ]]; then
    root_systemctl daemon-reload
    reloaded=true
    load=$(unit_prop "$unit" LoadState)
  fi
  [[ $load == loaded ]] ||
    fail "$EXIT_PRECONDITION" precondition-failed "systemd cannot load $unit (LoadState=$load); the write step installs it" false \
      unit "$(json_str "$unit")"

  if [[ $(systemctl is-enabled -- "$unit" 2>/dev/null || true) != enabled ]]; then
    root_systemctl enable --quiet -- "$unit"
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
    [[ $state == failed ]] && root_systemctl reset-failed -- "$unit"
    root_systemctl start --no-block -- "$unit"
    started=true
    reason="inactive"
  elif [[ ($reloaded == true && $was_active == true) || ($running == true && $label != "$spec") ]]; then
    # The unit or the spec changed: stop with the definition in force, drop the outdated
    # container (so a renamed Compose project cannot collide with it), start the new one.
    root_systemctl stop -- "$unit"
    if [[ $running != absent && $label != "$spec" ]]; then
      remove_container "$container"
      replaced=true
    fi
    root_systemctl reset-failed -- "$unit" 2>/dev/null || true
    root_systemctl start --no-block -- "$unit"
    restarted=true
    if [[ $reloaded == true ]]; then reason="unit-reloaded"; else reason="spec-changed"; fi
  elif [[ $running == true && -n $(rewritten_mounts "$container") ]]; then
    root_systemctl restart --no-block -- "$unit" # a mounted file was rewritten (e.g. drift fixed)
    old_start=$started_at # until the restart happened, the running container still looks current
    restarted=true
    reason="mounted-file-rewritten"
  elif [[ $running != true ]] && ! wait_current "$unit" "$container" "$spec" 20; then
    root_systemctl restart --no-block -- "$unit" # active unit, but no current container
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
  audit_event finished verdict '"ok"' error null reloaded "$reloaded" started "$started" restarted "$restarted"
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
