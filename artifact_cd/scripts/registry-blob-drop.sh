# shellcheck shell=bash
# registry-blob-drop.sh: remove ONE corrupt blob's data file from the D601 registry storage, so
# that `publish --repair` can upload the same content again (issue 12).
#
#   argv: artifact_cd.contract.RegistryBlobDropArgs (docs/contracts.md, generated argv table)
#
# Runs on D601 (read-write, one file). Refuses unless every guard holds, in this order:
# 1. the tag's manifest (GET from the registry, all manifest media types) is --manifest-digest:
#    the image the caller verified is still the one the tag names (else manifest-changed, 3);
# 2. --digest is that image's config or one of its layers (else blob-not-referenced, 3): a blob
#    of another image is never touched;
# 3. <storage>/docker/registry/v2/blobs/sha256/<xx>/<hex>/data is a regular file inside the
#    storage (no symlink; else refused, 3); absent: nothing to drop (ok, dropped false);
# 4. its sha256 is NOT --digest (else blob-intact, 3: a correct blob is never dropped).
# Then only that data file is removed (its directory and every link stay: the registry answers 404
# for the blob until a push stores the same content again) and a HEAD proves the registry sees it
# gone. Who removes it (`removedBy`): the SSH user when it may write the blob's directory (a root
# login, the storage's owner), else the registry's own container --container (the registry writes
# its blobs as root; the operator reaches Docker through the docker group, nothing is elevated):
# `docker exec <container> rm -f -- /var/lib/registry/<the same relative path>`, only while that
# container runs and mounts exactly the checked storage at /var/lib/registry, then the file must be
# gone on the host. Otherwise infra-blocked (channel registry-storage) names the file, why the
# container could not remove it and the manual removal, after which publish --repair uploads the
# then missing blob.
# Output: {"ok":true,"dropped":true|false,"removedBy","digest","actual","bytes","path",...}
# Failures: invalid-argument (2) · manifest-missing / manifest-changed / blob-not-referenced /
# blob-intact / blob-path-refused (3) · registry-unreachable (4) · infra-blocked (5).
set -euo pipefail

main() {
  exec </dev/null
  local registry="" repository="" tag="" digest="" manifest_digest="" storage="" container=""
  while (($#)); do
    case $1 in
      --registry) arg_value $# "$1"; registry=$2 ;;
      --repository) arg_value $# "$1"; repository=$2 ;;
      --tag) arg_value $# "$1"; tag=$2 ;;
      --digest) arg_value $# "$1"; digest=$2 ;;
      --manifest-digest) arg_value $# "$1"; manifest_digest=$2 ;;
      --storage) arg_value $# "$1"; storage=$2 ;;
      --container) arg_value $# "$1"; container=$2 ;;
      *) unknown_arg "$1" ;;
    esac
    shift 2
  done
  need loopback_endpoint --registry "$registry"
  need repository --repository "$repository"
  need commit --tag "$tag"
  need digest --digest "$digest"
  need digest --manifest-digest "$manifest_digest"
  need managed_path --storage "$storage"
  need name --container "$container"
  require_tool python3
  require_tool sha256sum
  require_tool curl

  # 1 + 2: the tag still names the verified image, and the blob is part of it.
  local kind named
  IFS=$'\x1f' read -r kind named < <(python3 -c "$MANIFEST_PY" referenced "$registry" "$repository" "$tag" "$digest" "${MANIFEST_MEDIA_TYPES[@]}") || true
  case $kind in
    manifest-missing) fail "$EXIT_PRECONDITION" manifest-missing "$named" false ;;
    error) fail "$EXIT_RETRYABLE" registry-unreachable "$named" true ;;
    config | layer | not-referenced) ;;
    *) fail "$EXIT_INFRA_BLOCKED" infra-blocked "the registry lookup gave no answer" false channel '"python3"' ;;
  esac
  [[ $named == "$manifest_digest" ]] ||
    fail "$EXIT_PRECONDITION" manifest-changed "$repository:$tag now names $named, not $manifest_digest: nothing dropped" false \
      manifestDigest "$(json_str "$named")"
  [[ $kind != not-referenced ]] ||
    fail "$EXIT_PRECONDITION" blob-not-referenced "$digest is not a blob of $repository:$tag ($named): nothing dropped" false \
      digest "$(json_str "$digest")"

  # 3: the data file, inside the storage, no symlink on the way.
  local hex=${digest#sha256:} dir data real_storage real_dir
  dir="$storage/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex"
  data="$dir/data"
  local result=(digest "$(json_str "$digest")" manifestDigest "$(json_str "$named")" blobKind "$(json_str "$kind")"
    path "$(json_str "$data")")
  if [[ ! -e $data && ! -L $data ]]; then
    json_obj ok true dropped false state '"absent"' "${result[@]}"
    return 0
  fi
  real_storage=$(realpath -e -- "$storage")
  real_dir=$(realpath -e -- "$dir")
  if [[ -L $data || ! -f $data || $real_dir != "$real_storage/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex" ]]; then
    fail "$EXIT_PRECONDITION" blob-path-refused "$data is not a regular file inside $storage: nothing dropped" false \
      path "$(json_str "$data")"
  fi

  # 4: only content that does not hash to its name is dropped.
  local actual bytes
  actual=$(sha256_file "$data")
  bytes=$(stat -c %s -- "$data")
  [[ $actual != "$digest" ]] ||
    fail "$EXIT_PRECONDITION" blob-intact "$digest in $storage hashes to its digest: a correct blob is never dropped" false \
      digest "$(json_str "$digest")"
  local removed_by=user why
  if [[ -w $dir ]]; then
    rm -f -- "$data"
  elif why=$(drop_in_container "$container" "$real_storage" "${hex:0:2}/$hex"); then
    removed_by=registry-container
  else
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un) may not remove files in $dir on $(hostname) and the registry container could not ($why): nothing was dropped" false \
      channel '"registry-storage"' path "$(json_str "$data")" \
      fix "$(json_str "remove the corrupt file by hand after checking it (sudo rm -f -- $data: its sha256 is $actual, not $digest), then run publish --repair again: a missing blob needs no drop")"
  fi
  local code
  code=$(curl -s -I -o /dev/null --max-time 10 -w '%{http_code}' "http://$registry/v2/$repository/blobs/$digest" 2>/dev/null || true)
  json_obj ok true dropped true state '"dropped"' removedBy "$(json_str "$removed_by")" actual "$(json_str "$actual")" \
    bytes "$bytes" registryAnswers "$(json_str "${code:-none}")" "${result[@]}"
}

# drop_in_container CONTAINER REAL_STORAGE XX/HEX: remove the blob's data file through the running
# registry container that mounts REAL_STORAGE at /var/lib/registry; prints why not on failure.
drop_in_container() {
  local container=$1 storage=$2 rel=$3 state source
  if ! command -v docker >/dev/null 2>&1; then
    echo "docker is not installed"
    return 1
  fi
  if ! IFS='|' read -r state source < <(docker container inspect -f \
    '{{.State.Running}}|{{range .Mounts}}{{if eq .Destination "/var/lib/registry"}}{{.Source}}{{end}}{{end}}' \
    -- "$container" 2>/dev/null); then
    echo "no container $container, or Docker refused $(id -un)"
    return 1
  fi
  if [[ $state != true ]]; then
    echo "$container is not running"
    return 1
  fi
  if [[ -z $source || $(realpath -e -- "$source" 2>/dev/null) != "$storage" ]]; then
    echo "$container does not mount $storage at /var/lib/registry"
    return 1
  fi
  if ! docker exec "$container" rm -f -- "/var/lib/registry/docker/registry/v2/blobs/sha256/$rel/data" >/dev/null 2>&1; then
    echo "docker exec $container rm failed"
    return 1
  fi
  if [[ -e $storage/docker/registry/v2/blobs/sha256/$rel/data ]]; then
    echo "the file is still there after docker exec $container rm"
    return 1
  fi
}

main "$@"
