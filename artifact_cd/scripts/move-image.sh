# shellcheck shell=bash
# move-image.sh: bring the commit image (by digest) onto the host that will run it (R14, R16).
#
#   argv: artifact_cd.contract.MoveImageArgs (docs/contracts.md, generated argv table);
#   --d601 USER@HOST and --d601-port P are needed by the tunnel and stream modes; with
#   --d601-host-key 'ssh-ed25519 AAAA...' (hosts.d601.hostKey, issue 11) the master -> D601 hop trusts
#   exactly that key: a known_hosts in the script's temp dir holding only it (HostKeyAlias
#   unidesk-d601, StrictHostKeyChecking=yes, first in the options so nothing loosens them); D601
#   showing another key is host-key-mismatch (exit 5, not retryable, nothing moved, names the fix).
#
#   local  (D601): docker pull E/R@digest from the loopback registry.
#   tunnel (master server): ssh -N -L 127.0.0.1:<free port>:E <d601> (BatchMode,
#          ExitOnForwardFailure), docker pull 127.0.0.1:<port>/R@digest — only missing layers
#          travel and the registry port stays private. The tunnel is closed on every exit path and
#          the tunnel-port name is removed. bytesMoved = bytes the SSH client received on the
#          tunnel connection (its own "Transferred:" counter); layerBytes = registry sizes of the
#          layers docker actually downloaded.
#   stream (master server): ssh <d601> 'docker pull E/R@digest && docker save E/R@digest' |
#          docker load. bytesMoved = bytes of the tar that crossed (counted by dd).
# In every mode the resulting local image ID must equal --image-id (the config digest; with the
# containerd image store the ID is the manifest digest, also accepted) before it is tagged
# E/R:SHA. When E/R:SHA is already present with that ID nothing is moved (alreadyPresent).
# Disk space (local and tunnel modes): before pulling, the registry sizes of the config and of the
# layers this host does not hold yet (the config's diff IDs against every local image's layers)
# plus --reserve-bytes must fit in the free bytes `df` reports for the Docker data root (`docker
# info` DockerRootDir); a TMPDIR without room, and an ENOSPC ("no space left on device") during the
# pull or the load (every mode), are disk-full too.
# Failures: ssh-unreachable / registry-unreachable / transfer-failed (exit 4, retryable),
# manifest-missing (3), registry-blob-missing / registry-blob-corrupt (3: a blob of the image is
# gone from D601's registry storage or its content does not hash to its digest; names the digest
# and the repair), disk-full (3: names the host, the Docker data root and its filesystem, the bytes
# needed and free), digest-mismatch (6), infra-blocked (5: docker or ssh auth), host-key-mismatch (5:
# D601 did not show its pinned key). On failure nothing
# is tagged E/R:SHA and nothing is started (a pull by digest that fails leaves no name).
# Needs: bash, docker, df; local/tunnel: curl, python3; tunnel: ssh; stream: ssh, dd.
set -euo pipefail

MODE="" REGISTRY="" REPOSITORY="" TAG="" DIGEST="" IMAGE_ID="" D601="" D601_PORT="" RESERVE_BYTES=0
D601_HOST_KEY=""
TUNNEL_PID="" TUNNEL_PORT="" START=""
HOST_KEY_ALIAS=unidesk-d601
HOST_KEY_FIX="python -m artifact_cd hostkeys --stack <stack> prints the key D601 shows now; check it out of band, then pulumi config set --path 'hosts.d601.hostKey' '<key>'"

is_host_key() { [[ $1 =~ $HOST_KEY_PATTERN ]]; }

# ssh_opts: SSH_OPTS for the hop to D601; a pinned key (--d601-host-key) comes first: OpenSSH keeps
# the first value of an option, so no ssh_config can loosen it.
ssh_opts() {
  SSH_OPTS=()
  if [[ -n $D601_HOST_KEY ]]; then
    printf '%s %s\n' "$HOST_KEY_ALIAS" "$D601_HOST_KEY" >"$TMP/known_hosts"
    SSH_OPTS=(-o "UserKnownHostsFile=$TMP/known_hosts" -o GlobalKnownHostsFile=/dev/null
      -o StrictHostKeyChecking=yes -o "HostKeyAlias=$HOST_KEY_ALIAS" -o CheckHostIP=no)
  fi
  SSH_OPTS+=(-o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=3
    -o LogLevel=VERBOSE -p "$D601_PORT")
}

# classify_ssh LOG: fail with the SSH connection problem recorded in LOG (if any).
classify_ssh() {
  local log=$1 why
  why=$(grep -Ei 'connection refused|timed out|no route|could not resolve|network is unreachable|connection closed|connection reset' "$log" | tail -n 1 | tr -d '\r' | head -c 300 || true)
  if [[ -n $why ]]; then
    fail "$EXIT_RETRYABLE" ssh-unreachable "ssh to $D601 port $D601_PORT failed: $why" true d601 "$(json_str "$D601")"
  fi
  if [[ -n $D601_HOST_KEY ]] && grep -qiE 'host key verification failed|remote host identification has changed' "$log"; then
    fail "$EXIT_INFRA_BLOCKED" host-key-mismatch "$D601 (port $D601_PORT) did not show the master server its pinned host key ($D601_HOST_KEY); nothing was moved. If D601 was reinstalled, fetch its key, check it out of band and pin it again" false \
      channel '"ssh-d601"' d601 "$(json_str "$D601")" fix "$(json_str "$HOST_KEY_FIX")"
  fi
  why=$(grep -Ei 'permission denied|host key verification failed|no matching|too many authentication' "$log" | tail -n 1 | tr -d '\r' | head -c 300 || true)
  if [[ -n $why ]]; then
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "ssh to $D601 refused this host: $why" false channel '"ssh-d601"' d601 "$(json_str "$D601")"
  fi
}

close_tunnel() {
  [[ -n $TUNNEL_PID ]] || return 0
  kill -TERM "$TUNNEL_PID" 2>/dev/null || true
  wait "$TUNNEL_PID" 2>/dev/null || true
  TUNNEL_PID=""
}

free_port() {
  python3 -c "$FREE_PORT_PY"
}

# open_tunnel: start the SSH tunnel and wait until the registry answers through it.
open_tunnel() {
  local code attempt
  for ((attempt = 1; attempt <= 3; attempt++)); do
    TUNNEL_PORT=$(free_port)
    : >"$TMP/ssh.log"
    ssh "${SSH_OPTS[@]}" -o ExitOnForwardFailure=yes -E "$TMP/ssh.log" -N \
      -L "127.0.0.1:$TUNNEL_PORT:$REGISTRY" -- "$D601" </dev/null &
    TUNNEL_PID=$!
    local i
    for ((i = 0; i < 150; i++)); do
      if ! kill -0 "$TUNNEL_PID" 2>/dev/null; then
        wait "$TUNNEL_PID" 2>/dev/null || true
        TUNNEL_PID=""
        break
      fi
      code=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "http://127.0.0.1:$TUNNEL_PORT/v2/" 2>/dev/null || true)
      [[ $code == 200 ]] && return 0
      if grep -q 'administratively prohibited' "$TMP/ssh.log"; then
        close_tunnel
        fail "$EXIT_INFRA_BLOCKED" infra-blocked "the sshd of $D601 refuses TCP forwarding (AllowTcpForwarding); use transfer mode stream" false \
          channel '"ssh-forwarding"' d601 "$(json_str "$D601")"
      fi
      if grep -q 'open failed' "$TMP/ssh.log"; then
        close_tunnel
        fail "$EXIT_RETRYABLE" registry-unreachable "the SSH tunnel to $D601 is up but its registry $REGISTRY refuses connections" true \
          d601 "$(json_str "$D601")"
      fi
      sleep 0.1
    done
    if [[ -n $TUNNEL_PID ]]; then
      close_tunnel
      fail "$EXIT_RETRYABLE" registry-unreachable "no answer from $REGISTRY through the SSH tunnel within 15 s (HTTP ${code:-none})" true
    fi
    classify_ssh "$TMP/ssh.log"
    grep -qiE 'address already in use|cannot listen|bind' "$TMP/ssh.log" || break
  done
  fail "$EXIT_RETRYABLE" ssh-unreachable "ssh to $D601 port $D601_PORT exited: $(tail -n 1 "$TMP/ssh.log" | head -c 300)" true \
    d601 "$(json_str "$D601")"
}

# image_manifest BASE: the image manifest of DIGEST (an index resolved to this host's platform)
# into $TMP/acct.json; sets IMAGE_BYTES (config + layer sizes). Returns 1 when it is not readable.
IMAGE_BYTES="" IMAGE_CONFIG=""
image_manifest() {
  local base=$1 kind ref f3 f5
  [[ ! -s $TMP/acct.json ]] || return 0
  curl -sS --max-time 20 "${MANIFEST_ACCEPT[@]}" -o "$TMP/acct.json" "$base/manifests/$DIGEST" 2>/dev/null || return 1
  IFS=$'\x1f' read -r kind ref _ f3 _ f5 < <(manifest_parse manifest "$TMP/acct.json" "$(host_arch)") || true
  if [[ $kind == index ]] && is_digest "$ref"; then
    curl -sS --max-time 20 "${MANIFEST_ACCEPT[@]}" -o "$TMP/acct.json" "$base/manifests/$ref" 2>/dev/null || return 1
    IFS=$'\x1f' read -r kind ref _ f3 _ f5 < <(manifest_parse manifest "$TMP/acct.json" "$(host_arch)") || true
  fi
  if [[ $kind == manifest && $f3 =~ ^[0-9]+$ && $f5 =~ ^[0-9]+$ ]]; then
    IMAGE_BYTES=$((f3 + f5)) IMAGE_CONFIG=$ref
  else
    rm -f -- "$TMP/acct.json"
    return 1
  fi
}

# layer_bytes BASE LOG: registry sizes of the layers a `docker pull` log says it downloaded
# (artifact_cd/scripts/py/pulled.py).
LAYER_BYTES="null" LAYERS_PULLED="null" LAYERS_PRESENT="null"
layer_bytes() {
  local base=$1 log=$2 out
  image_manifest "$base" || return 0
  out=$(python3 -c "$PULLED_PY" "$TMP/acct.json" "$log" 2>/dev/null) || return 0
  read -r LAYER_BYTES LAYERS_PULLED LAYERS_PRESENT <<<"$out"
}

# space_of PATH: ROOT_FS / ROOT_MOUNT (the filesystem holding PATH and its mount point) and
# ROOT_FREE (bytes available there, `df -B1`); ROOT_FREE stays empty when it cannot be read.
ROOT_FS="" ROOT_MOUNT="" ROOT_FREE=""
space_of() {
  local line
  line=$(df -P -B1 -- "$1" 2>/dev/null | tail -n 1) || true
  read -r ROOT_FS _ _ ROOT_FREE _ ROOT_MOUNT <<<"$line" || true
  [[ $ROOT_FREE =~ ^[0-9]+$ ]] || ROOT_FREE=""
}

# docker_root_space: DOCKER_ROOT (docker info DockerRootDir) and its space (space_of).
DOCKER_ROOT=""
docker_root_space() {
  DOCKER_ROOT=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || true)
  is_abs_path "$DOCKER_ROOT" || DOCKER_ROOT=/var/lib/docker
  space_of "$DOCKER_ROOT"
}

# disk_full NEEDED WHY [PATH WHAT]: the structured, non-retryable disk-full failure for PATH (the
# Docker data root by default; space_of PATH has run).
DISK_EXTRA=()
disk_full() {
  local needed=$1 why=$2 path=${3:-$DOCKER_ROOT} what=${4:-the Docker data root}
  fail "$EXIT_PRECONDITION" disk-full \
    "$(hostname): $what $path (filesystem $ROOT_FS on $ROOT_MOUNT) $why; free space there (docker image prune, docker builder prune, or grow the filesystem), then deploy again" false \
    host "$(json_str "$(hostname)")" path "$(json_str "$path")" filesystem "$(json_str "$ROOT_FS")" \
    mountPoint "$(json_str "$ROOT_MOUNT")" bytesNeeded "${needed:-null}" bytesFree "${ROOT_FREE:-null}" \
    reserveBytes "$RESERVE_BYTES" "${DISK_EXTRA[@]}"
}

# tmp_with_room: make_tmp, then prove a small write fits there: a full TMPDIR would otherwise fail
# later, mid-transfer, without a reason. Else disk-full naming TMPDIR (nothing was moved yet).
TMP_ROOM_BYTES=65536
tmp_with_room() {
  make_tmp
  if ! head -c "$TMP_ROOM_BYTES" /dev/zero 2>/dev/null >"$TMP/.room"; then
    space_of "$TMP"
    disk_full "$TMP_ROOM_BYTES" "has no room for the transfer's logs and state" "${TMPDIR:-/tmp}" "the temporary directory"
  fi
  rm -f -- "$TMP/.room"
}

# missing_bytes BASE: NEEDED_BYTES = the config blob's size + the registry sizes of the layers
# this host does not hold yet (their diff IDs, from the config blob, against RootFS.Layers of every
# local image; artifact_cd/scripts/py/pulled.py missing), LAYERS_MISSING of LAYERS_TOTAL.
NEEDED_BYTES="" LAYERS_MISSING="null" LAYERS_TOTAL="null"
missing_bytes() {
  local base=$1 ids=() out
  NEEDED_BYTES=$IMAGE_BYTES
  curl -sS -L --max-time 20 -o "$TMP/config.json" "$base/blobs/$IMAGE_CONFIG" 2>/dev/null || : >"$TMP/config.json"
  : >"$TMP/present"
  mapfile -t ids < <(docker image ls -aq --no-trunc 2>/dev/null | sort -u)
  if ((${#ids[@]} > 0)); then
    docker image inspect --format '{{range .RootFS.Layers}}{{println .}}{{end}}' "${ids[@]}" >"$TMP/present" 2>/dev/null || true
  fi
  out=$(python3 -c "$PULLED_PY" missing "$TMP/acct.json" "$TMP/config.json" "$TMP/present" 2>/dev/null) || return 0
  read -r NEEDED_BYTES LAYERS_MISSING LAYERS_TOTAL <<<"$out"
  [[ $NEEDED_BYTES =~ ^[0-9]+$ ]] || NEEDED_BYTES=$IMAGE_BYTES
}

# precheck_space BASE: refuse before the pull when what is missing cannot fit on the Docker data
# root (the config + the missing layers' registry sizes + --reserve-bytes > free bytes). Skipped
# (with a warning) when the manifest or the free bytes cannot be read: the ENOSPC classification
# still applies. Registry sizes are compressed: the unpacked layers need more; --reserve-bytes is
# the operator's margin for that.
precheck_space() {
  local base=$1
  docker_root_space
  if ! image_manifest "$base" || [[ -z $ROOT_FREE ]]; then
    printf 'warning: disk pre-check skipped (manifest sizes or free bytes of %s unknown)\n' "$DOCKER_ROOT" >&2
    return 0
  fi
  missing_bytes "$base"
  if ((NEEDED_BYTES + RESERVE_BYTES > ROOT_FREE)); then
    DISK_EXTRA=(layersMissing "$LAYERS_MISSING" layers "$LAYERS_TOTAL")
    disk_full "$((NEEDED_BYTES + RESERVE_BYTES))" \
      "has $ROOT_FREE bytes free; $REPOSITORY@$DIGEST needs $NEEDED_BYTES bytes (registry sizes of its config and the $LAYERS_MISSING of $LAYERS_TOTAL layers not on this host) + $RESERVE_BYTES reserved"
  fi
}

# corrupt_digest LOG: the blob digest a failed verification names (a full sha256 digest on a
# line that is not the image reference itself).
corrupt_digest() {
  local pattern=${DIGEST_PATTERN#^}
  grep -iE 'verification failed|digest mismatch|does not match|unexpected digest|failed size validation' "$1" |
    grep -oE -- "${pattern%\$}" | grep -vxF -- "$DIGEST" | tail -n 1 || true
}

# missing_blobs BASE: the layer digests of the image manifest that BASE answers 404 for (HEAD),
# space-separated (docker's "unknown blob" does not say which one).
missing_blobs() {
  local base=$1 layer code out=""
  local -a fields
  image_manifest "$base" || return 0
  IFS=$'\x1f' read -r -a fields < <(manifest_parse layers "$TMP/acct.json") || true
  [[ ${fields[0]-} == layers ]] || return 0
  for layer in "${fields[@]:1}"; do
    is_digest "$layer" || continue
    code=$(curl -s -I -o /dev/null --max-time 10 -w '%{http_code}' "$base/blobs/$layer" 2>/dev/null || true)
    [[ $code != 404 ]] || out+="${out:+ }$layer"
  done
  printf '%s' "$out"
}

REPAIR_FIX="repair the registry copy of this commit on D601: python -m artifact_cd health --stack <stack> --integrity names the bad blobs; python -m artifact_cd publish --repair --stack <stack> --service <id> --repo <a clean checkout of commit TAG> drops a corrupt blob and uploads the same content again (the digest does not change); then deploy again"

# blob_failed CODE DIGEST WHY: registry-blob-missing / registry-blob-corrupt (not retryable).
blob_failed() {
  local code=$1 digest=$2 why=$3 fix=${REPAIR_FIX//TAG/$TAG}
  fail "$EXIT_PRECONDITION" "$code" "$why" false digest "$(json_str "$digest")" \
    repository "$(json_str "$REPOSITORY")" tag "$(json_str "$TAG")" fix "$(json_str "$fix")"
}

# load_failed LOG: an ENOSPC in LOG is disk-full (the Docker data root); returns otherwise.
nospace_failed() {
  local log=$1
  grep -qi 'no space left on device' "$log" || return 0
  [[ -n $DOCKER_ROOT ]] || docker_root_space
  disk_full "${IMAGE_BYTES:-}" "ran out of space during the transfer (no space left on device: $(grep -i 'no space left' "$log" | tail -n 1 | head -c 200))"
}

# pull_failed LOG BASE: classify a failed docker pull (BASE: the registry API it pulled from).
pull_failed() {
  local log=$1 base=$2 why digest
  why=$(grep -v '^[0-9a-f]\{12\}: ' "$log" | tail -n 2 | tr '\n' ' ' | head -c 400)
  nospace_failed "$log"
  if grep -qiE 'verification failed|digest mismatch|does not match( the)? (expected )?digest|unexpected digest|failed size validation' "$log"; then
    digest=$(corrupt_digest "$log")
    blob_failed registry-blob-corrupt "$digest" \
      "a blob of $REPOSITORY@$DIGEST in $REGISTRY does not hash to its digest ${digest:-(unnamed)}: the registry storage on D601 holds corrupt content: $why"
  fi
  if grep -qiE 'blob unknown|unknown blob' "$log"; then
    digest=$(missing_blobs "$base")
    blob_failed registry-blob-missing "${digest%% *}" \
      "a blob of $REPOSITORY@$DIGEST is missing from the registry storage at $REGISTRY (${digest:-not named by docker}: HEAD answers 404): $why"
  fi
  if grep -qiE 'connection refused|no route to host|i/o timeout' "$log" && [[ $MODE == local ]]; then
    fail "$EXIT_RETRYABLE" registry-unreachable "the registry $REGISTRY does not answer: $why" true
  fi
  if grep -qiE 'manifest unknown|not found' "$log"; then
    fail "$EXIT_PRECONDITION" manifest-missing "the registry no longer has $REPOSITORY@$DIGEST: $why" false
  fi
  fail "$EXIT_RETRYABLE" transfer-failed "docker pull of $REPOSITORY@$DIGEST failed: $why" true
}

# tag_verified SOURCE_REF ID: check ID, then tag it E/R:SHA and print the verdict.
tag_verified() {
  local source=$1 id=$2 bytes=$3 method=$4
  shift 4
  if ! image_is "$id" "$IMAGE_ID" "$DIGEST"; then
    fail "$EXIT_VERIFY_FAILED" digest-mismatch "the moved image has ID ${id:-<none>}, expected $IMAGE_ID (manifest $DIGEST)" false \
      imageId "$(json_str "$id")" expectedImageId "$(json_str "$IMAGE_ID")"
  fi
  docker tag "$source" "$LOCAL_REF" >&2 ||
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "docker could not tag the verified image as $LOCAL_REF" false channel '"docker"'
  json_obj ok true mode "$(json_str "$MODE")" image "$(json_str "$LOCAL_REF")" imageId "$(json_str "$id")" \
    digest "$(json_str "$DIGEST")" alreadyPresent false bytesMoved "$bytes" bytesMethod "$(json_str "$method")" \
    seconds "$(elapsed_since "$START")" "$@"
}

mode_local() {
  local ref="$REGISTRY/$REPOSITORY@$DIGEST" id
  precheck_space "http://$REGISTRY/v2/$REPOSITORY"
  docker pull "$ref" >"$TMP/pull.log" 2>&1 || pull_failed "$TMP/pull.log" "http://$REGISTRY/v2/$REPOSITORY"
  layer_bytes "http://$REGISTRY/v2/$REPOSITORY" "$TMP/pull.log"
  id=$(image_id_of "$ref")
  tag_verified "$ref" "$id" "$LAYER_BYTES" "registry sizes of the layers docker pull downloaded" \
    layersPulled "$LAYERS_PULLED" layersPresent "$LAYERS_PRESENT"
}

mode_tunnel() {
  require_tool ssh
  require_tool curl
  require_tool python3
  ssh_opts
  at_exit close_tunnel
  open_tunnel
  local ref="127.0.0.1:$TUNNEL_PORT/$REPOSITORY@$DIGEST" pull_pid rc=0 id
  precheck_space "http://127.0.0.1:$TUNNEL_PORT/v2/$REPOSITORY"
  docker pull "$ref" >"$TMP/pull.log" 2>&1 &
  pull_pid=$!
  while kill -0 "$pull_pid" 2>/dev/null; do
    if ! kill -0 "$TUNNEL_PID" 2>/dev/null; then
      kill -TERM "$pull_pid" 2>/dev/null || true
      wait "$pull_pid" 2>/dev/null || true
      TUNNEL_PID=""
      fail "$EXIT_RETRYABLE" transfer-failed "the SSH tunnel to $D601 closed during the pull: $(tail -n 1 "$TMP/ssh.log" | head -c 200)" true
    fi
    sleep 0.1
  done
  wait "$pull_pid" || rc=$?
  if ((rc != 0)); then
    kill -0 "$TUNNEL_PID" 2>/dev/null ||
      fail "$EXIT_RETRYABLE" transfer-failed "the SSH tunnel to $D601 closed during the pull" true
    pull_failed "$TMP/pull.log" "http://127.0.0.1:$TUNNEL_PORT/v2/$REPOSITORY"
  fi
  layer_bytes "http://127.0.0.1:$TUNNEL_PORT/v2/$REPOSITORY" "$TMP/pull.log"
  close_tunnel
  local received
  received=$(sed -n 's/.*Transferred: sent [0-9]*, received \([0-9]*\) bytes.*/\1/p' "$TMP/ssh.log" | tail -n 1)
  [[ $received =~ ^[0-9]+$ ]] || received=null
  id=$(image_id_of "$ref")
  if ! image_is "$id" "$IMAGE_ID" "$DIGEST"; then
    docker image rm "$ref" >/dev/null 2>&1 || true
  fi
  tag_verified "$ref" "$id" "$received" "bytes received by the SSH client on the tunnel connection" \
    layerBytes "$LAYER_BYTES" layersPulled "$LAYERS_PULLED" layersPresent "$LAYERS_PRESENT" \
    tunnelPort "$TUNNEL_PORT"
  # The tunnel-port name is only a transport detail: drop it (the image keeps E/R:SHA).
  docker image rm "$ref" >/dev/null 2>&1 || printf 'warning: could not remove %s\n' "$ref" >&2
}

mode_stream() {
  require_tool ssh
  require_tool dd
  ssh_opts
  local remote id="" bytes line
  printf -v remote 'docker pull -q %q >/dev/null && docker save %q' "$REGISTRY/$REPOSITORY@$DIGEST" \
    "$REGISTRY/$REPOSITORY@$DIGEST"
  set +e
  ssh "${SSH_OPTS[@]}" -E "$TMP/ssh.log" -- "$D601" "$remote" </dev/null |
    dd bs=1M 2>"$TMP/dd.err" | docker load >"$TMP/load.out" 2>"$TMP/load.err"
  local st=("${PIPESTATUS[@]}")
  set -e
  bytes=$(sed -n 's/^\([0-9][0-9]*\) bytes.*/\1/p' "$TMP/dd.err" | tail -n 1)
  [[ $bytes =~ ^[0-9]+$ ]] || bytes=0
  if ((st[0] != 0 || st[1] != 0 || st[2] != 0)); then
    if ((st[0] == 255 && bytes == 0)); then
      classify_ssh "$TMP/ssh.log"
    fi
    cat "$TMP/load.err" "$TMP/ssh.log" >"$TMP/stream.err" 2>/dev/null || true
    nospace_failed "$TMP/stream.err"
    local why
    why=$(cat "$TMP/load.err" "$TMP/ssh.log" 2>/dev/null | grep -v '^debug' | tail -n 2 | tr '\n' ' ' | head -c 400)
    fail "$EXIT_RETRYABLE" transfer-failed "stream from $D601 failed after $bytes bytes (ssh exit ${st[0]}, docker load exit ${st[2]}): $why" true \
      bytesMoved "$bytes"
  fi
  while IFS= read -r line; do
    case $line in
      "Loaded image ID: "*) id=${line#Loaded image ID: } ;;
      "Loaded image: "*) id=$(image_id_of "${line#Loaded image: }") ;;
    esac
  done <"$TMP/load.out"
  if ! image_is "$id" "$IMAGE_ID" "$DIGEST"; then
    # An untagged image that is not the registry's: remove it again (best effort).
    [[ -z $id ]] || docker image rm "$id" >/dev/null 2>&1 || true
  fi
  tag_verified "$id" "$id" "$bytes" "bytes of the docker save tar streamed over SSH (dd count)"
}

main() {
  exec </dev/null
  START=$EPOCHREALTIME
  while (($#)); do
    case $1 in
      --mode) arg_value $# "$1"; MODE=$2 ;;
      --registry) arg_value $# "$1"; REGISTRY=$2 ;;
      --repository) arg_value $# "$1"; REPOSITORY=$2 ;;
      --tag) arg_value $# "$1"; TAG=$2 ;;
      --digest) arg_value $# "$1"; DIGEST=$2 ;;
      --image-id) arg_value $# "$1"; IMAGE_ID=$2 ;;
      --d601) arg_value $# "$1"; D601=$2 ;;
      --d601-port) arg_value $# "$1"; D601_PORT=$2 ;;
      --reserve-bytes) arg_value $# "$1"; RESERVE_BYTES=$2 ;;
      --d601-host-key) arg_value $# "$1"; D601_HOST_KEY=$2 ;;
      *) unknown_arg "$1" ;;
    esac
    shift 2
  done
  need_one_of --mode "$MODE" local tunnel stream
  need loopback_endpoint --registry "$REGISTRY"
  need repository --repository "$REPOSITORY"
  need commit --tag "$TAG"
  need digest --digest "$DIGEST"
  need digest --image-id "$IMAGE_ID"
  [[ $RESERVE_BYTES =~ ^[0-9]{1,18}$ ]] ||
    fail "$EXIT_INVALID" invalid-argument "--reserve-bytes is not a byte count" false argument '"--reserve-bytes"'
  if [[ $MODE != local ]]; then
    need ssh_target --d601 "$D601"
    need port --d601-port "$D601_PORT"
  fi
  [[ -z $D601_HOST_KEY ]] || need host_key --d601-host-key "$D601_HOST_KEY"
  require_docker
  tmp_with_room
  LOCAL_REF="$REGISTRY/$REPOSITORY:$TAG"

  local have
  have=$(image_id_of "$LOCAL_REF")
  if image_is "$have" "$IMAGE_ID" "$DIGEST"; then
    json_obj ok true mode "$(json_str "$MODE")" image "$(json_str "$LOCAL_REF")" imageId "$(json_str "$have")" \
      digest "$(json_str "$DIGEST")" alreadyPresent true bytesMoved 0 \
      bytesMethod '"nothing moved: the image with this ID is already tagged here"' \
      seconds "$(elapsed_since "$START")"
    return 0
  fi
  "mode_$MODE"
}

LOCAL_REF=""
main "$@"
