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
# gone.
# Output: {"ok":true,"dropped":true|false,"digest","actual","bytes","path","manifestDigest",...}
# The SSH user must be able to write the blob's directory (a root login, or the storage's owner);
# nothing is elevated: otherwise infra-blocked (channel registry-storage) names the file and the
# manual removal, after which publish --repair uploads the then missing blob.
# Failures: invalid-argument (2) · manifest-missing / manifest-changed / blob-not-referenced /
# blob-intact / blob-path-refused (3) · registry-unreachable (4) · infra-blocked (5).
set -euo pipefail

main() {
  exec </dev/null
  local registry="" repository="" tag="" digest="" manifest_digest="" storage=""
  while (($#)); do
    case $1 in
      --registry) arg_value $# "$1"; registry=$2 ;;
      --repository) arg_value $# "$1"; repository=$2 ;;
      --tag) arg_value $# "$1"; tag=$2 ;;
      --digest) arg_value $# "$1"; digest=$2 ;;
      --manifest-digest) arg_value $# "$1"; manifest_digest=$2 ;;
      --storage) arg_value $# "$1"; storage=$2 ;;
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
  if [[ ! -w $dir ]]; then
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un) may not remove files in $dir on $(hostname): nothing was dropped" false \
      channel '"registry-storage"' path "$(json_str "$data")" \
      fix "$(json_str "log in as a user that owns the registry storage (hosts.d601.user), or remove the corrupt file by hand after checking it (sudo rm -f -- $data: its sha256 is $actual, not $digest), then run publish --repair again: a missing blob needs no drop")"
  fi
  rm -f -- "$data"
  local code
  code=$(curl -s -I -o /dev/null --max-time 10 -w '%{http_code}' "http://$registry/v2/$repository/blobs/$digest" 2>/dev/null || true)
  json_obj ok true dropped true state '"dropped"' actual "$(json_str "$actual")" bytes "$bytes" \
    registryAnswers "$(json_str "${code:-none}")" "${result[@]}"
}

main "$@"
