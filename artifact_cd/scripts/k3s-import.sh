# shellcheck shell=bash
# k3s-import.sh: pull the commit image into native k3s containerd on D601 (R13).
#
#   argv: artifact_cd.contract.K3sImportArgs (docs/contracts.md, generated argv table)
#
# `ctr --address SOCK -n NS images pull --plain-http E/R:SHA` (`k3s ctr` when k3s is installed)
# pulls straight from the loopback registry, so containerd keeps the registry's manifest digest
# (a `docker save` tar would get another one). Then the image listed under E/R:SHA must carry
# --digest, and its config (resolved from containerd's own content store, index -> this host's
# platform) must be --image-id; otherwise the tag is removed again and the step fails
# digest-mismatch (exit 6). Failures: infra-blocked (5: no ctr, socket missing or not answering),
# registry-unreachable / transfer-failed (4), manifest-missing (3).
# Output: {"ok":true,"image","digest","namespace","imageId","platform","socket","ctr"}
# Needs: bash, ctr (containerd) or k3s, python3.
set -euo pipefail

SOCKET="" NAMESPACE="" REGISTRY="" REPOSITORY="" TAG="" DIGEST="" IMAGE_ID=""
CTR=()

main() {
  exec </dev/null
  local start=$EPOCHREALTIME
  while (($#)); do
    case $1 in
      --socket) arg_value $# "$1"; SOCKET=$2 ;;
      --namespace) arg_value $# "$1"; NAMESPACE=$2 ;;
      --registry) arg_value $# "$1"; REGISTRY=$2 ;;
      --repository) arg_value $# "$1"; REPOSITORY=$2 ;;
      --tag) arg_value $# "$1"; TAG=$2 ;;
      --digest) arg_value $# "$1"; DIGEST=$2 ;;
      --image-id) arg_value $# "$1"; IMAGE_ID=$2 ;;
      *) unknown_arg "$1" ;;
    esac
    shift 2
  done
  need abs_path --socket "$SOCKET"
  [[ $NAMESPACE =~ ^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$ ]] ||
    fail "$EXIT_INVALID" invalid-argument "--namespace is not a valid containerd namespace" false argument '"--namespace"'
  need loopback_endpoint --registry "$REGISTRY"
  need repository --repository "$REPOSITORY"
  need commit --tag "$TAG"
  need digest --digest "$DIGEST"
  need digest --image-id "$IMAGE_ID"

  if command -v k3s >/dev/null 2>&1; then
    CTR=(k3s ctr --address "$SOCKET" -n "$NAMESPACE")
  elif command -v ctr >/dev/null 2>&1; then
    CTR=(ctr --address "$SOCKET" -n "$NAMESPACE")
  else
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "neither k3s nor ctr is installed on $(hostname)" false channel '"ctr"'
  fi
  require_tool python3
  [[ -S $SOCKET ]] || fail "$EXIT_INFRA_BLOCKED" infra-blocked "no containerd socket at $SOCKET" false channel '"k3s-containerd"'
  "${CTR[@]}" version >/dev/null 2>&1 ||
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "containerd at $SOCKET does not answer" false channel '"k3s-containerd"'
  make_tmp

  local ref="$REGISTRY/$REPOSITORY:$TAG" why
  if ! "${CTR[@]}" images pull --plain-http "$ref" >"$TMP/pull.log" 2>&1; then
    why=$(grep '^ctr: ' "$TMP/pull.log" | tail -n 1 | head -c 400 || true)
    [[ -n $why ]] || why=$(tail -n 1 "$TMP/pull.log" | head -c 400)
    if grep -qiE 'connection refused|no route|i/o timeout|connection reset' "$TMP/pull.log"; then
      fail "$EXIT_RETRYABLE" registry-unreachable "ctr could not reach $REGISTRY: $why" true
    fi
    if grep -qiE 'not found' "$TMP/pull.log"; then
      fail "$EXIT_PRECONDITION" manifest-missing "$ref is not in the registry: $why" false
    fi
    fail "$EXIT_RETRYABLE" transfer-failed "ctr images pull $ref failed: $why" true
  fi

  local listed
  listed=$("${CTR[@]}" images ls "name==$ref" 2>/dev/null | awk -v r="$ref" '$1 == r { print $3 }' | head -n 1)
  if [[ $listed != "$DIGEST" ]]; then
    "${CTR[@]}" images rm "$ref" >/dev/null 2>&1 || true
    fail "$EXIT_VERIFY_FAILED" digest-mismatch "containerd lists $ref with digest ${listed:-<none>}, expected $DIGEST (the tag was removed again)" \
      false listedDigest "$(json_str "$listed")"
  fi

  # The config digest, from containerd's own copy of the manifest.
  local kind ref2 f3 rest platform=""
  "${CTR[@]}" content get "$DIGEST" >"$TMP/manifest" 2>/dev/null ||
    fail "$EXIT_VERIFY_FAILED" digest-mismatch "containerd has no content for $DIGEST after the pull" false
  IFS=$'\x1f' read -r kind ref2 _ f3 rest < <(manifest_parse manifest "$TMP/manifest" "$(host_arch)") || true
  if [[ $kind == index ]]; then
    platform=$f3
    if ! is_digest "$ref2" || ! "${CTR[@]}" content get "$ref2" >"$TMP/manifest" 2>/dev/null; then
      fail "$EXIT_VERIFY_FAILED" digest-mismatch "containerd has no platform manifest ${ref2:-<none>} under $DIGEST" false
    fi
    IFS=$'\x1f' read -r kind ref2 _ _ rest < <(manifest_parse manifest "$TMP/manifest" "$(host_arch)") || true
  fi
  if [[ $kind != manifest || $ref2 != "$IMAGE_ID" ]]; then
    "${CTR[@]}" images rm "$ref" >/dev/null 2>&1 || true
    fail "$EXIT_VERIFY_FAILED" digest-mismatch "the image under $DIGEST has config ${ref2:-<unknown>}, expected $IMAGE_ID (the tag was removed again)" false
  fi

  json_obj ok true image "$(json_str "$ref")" digest "$(json_str "$DIGEST")" namespace "$(json_str "$NAMESPACE")" \
    imageId "$(json_str "$IMAGE_ID")" platform "$(json_str "${platform:-linux/$(host_arch)}")" \
    socket "$(json_str "$SOCKET")" ctr "$(json_str "${CTR[0]}")" seconds "$(elapsed_since "$start")"
}

main "$@"
