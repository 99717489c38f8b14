# shellcheck shell=bash
# manifest-check.sh: prove that the commit-pinned artifact exists in the D601 registry (R11).
#
#   argv: artifact_cd.contract.ManifestCheckArgs (docs/contracts.md, generated argv table)
#
# Runs on D601 (read-only). HEAD /v2/<repo>/manifests/<tag> with all manifest media types
# (MANIFEST_ACCEPT; without them the registry answers with a schema1 digest); the digest is Docker-Content-Digest.
# Then GET the manifest by that digest (its sha256 must equal the digest), resolve an index/list to
# this host's platform (linux/amd64 fallback), and GET the image config blob (its sha256 must equal
# the config digest): imageId = config digest, which `docker pull`, `docker load` and
# `docker inspect` all report as the image ID. The config's revision label must equal the tag.
# Last, HEAD every layer blob (cheap: no body): a tag whose layers are gone from storage would
# only fail later, mid-pull on the target. HEAD proves existence, not content (a corrupt blob
# still answers 200; verifying content is a GET + sha256 of every byte, not done here).
#
# Output: {"ok":true,"digest","imageId","mediaType","repository","tag","platform","labels",...}
# Failures: manifest-missing (404, exit 3) · label-mismatch (exit 3) · registry-blob-missing (a layer
# blob answers 404, exit 3, names the digest and the fix) · registry-blob-corrupt (the config blob
# does not hash to its digest, exit 3); both carry manifestDigest and imageId for publish --repair · registry-unreachable
# (connection refused/timeout, exit 4, retryable) · registry-error (5xx: exit 4, retryable;
# anything else unexpected: exit 5, channel "registry").
# Needs on the target: bash, curl, python3 (json parsing), coreutils (sha256sum, mktemp).
set -euo pipefail

CURL_OPTS=(-sS --connect-timeout 5 --max-time 30)

# http_get URL OUT [curl args...]: GET into OUT; sets HTTP_CODE, CURL_RC, CURL_ERR.
HTTP_CODE="" CURL_RC=0 CURL_ERR=""
http_get() {
  local url=$1 out=$2
  shift 2
  CURL_RC=0
  HTTP_CODE=$(curl "${CURL_OPTS[@]}" "$@" -o "$out" -w '%{http_code}' "$url" 2>"$TMP/curl.err") || CURL_RC=$?
  CURL_ERR=$(tail -n 1 "$TMP/curl.err" | head -c 300)
}

# check_http WHAT: turn the last http_get into a structured failure unless it answered 200.
check_http() {
  local what=$1
  if ((CURL_RC != 0)); then
    fail "$EXIT_RETRYABLE" registry-unreachable "$what: the registry at $REGISTRY did not answer (curl exit $CURL_RC: $CURL_ERR)" true \
      registry "$(json_str "$REGISTRY")"
  fi
  case $HTTP_CODE in
    200) return 0 ;;
    404) fail "$EXIT_PRECONDITION" manifest-missing "$what: not found (404) in $REGISTRY" false repository "$(json_str "$REPOSITORY")" \
      tag "$(json_str "$TAG")" ;;
    408 | 429 | 5??) fail "$EXIT_RETRYABLE" registry-error "$what: the registry answered HTTP $HTTP_CODE" true httpStatus "$HTTP_CODE" ;;
    *) fail "$EXIT_INFRA_BLOCKED" registry-error "$what: unexpected HTTP ${HTTP_CODE:-none} from the registry" false \
      httpStatus "$(json_str "$HTTP_CODE")" channel '"registry"' ;;
  esac
}

# fetch_verified KIND DIGEST OUT: GET a manifest or blob by digest; its sha256 must equal DIGEST.
fetch_verified() {
  local kind=$1 digest=$2 out=$3 actual
  need digest "$kind digest" "$digest"
  if [[ $kind == blob ]]; then
    http_get "$BASE/blobs/$digest" "$out" -L
  else
    http_get "$BASE/manifests/$digest" "$out" "${MANIFEST_ACCEPT[@]}"
  fi
  check_http "GET $kind $digest"
  actual=$(sha256_file "$out")
  if [[ $actual != "$digest" && $kind == blob ]]; then
    fail "$EXIT_PRECONDITION" registry-blob-corrupt \
      "the config blob $digest of $REPOSITORY:$TAG in $REGISTRY hashes to $actual: the registry storage holds corrupt content" false \
      digest "$(json_str "$digest")" repository "$(json_str "$REPOSITORY")" tag "$(json_str "$TAG")" \
      manifestDigest "$(json_str "$MANIFEST_DIGEST")" imageId "$(json_str "$digest")" fix "$(json_str "$(repair_fix)")"
  fi
  [[ $actual == "$digest" ]] ||
    fail "$EXIT_INFRA_BLOCKED" registry-error "the $kind served for $digest hashes to $actual" false channel '"registry"'
}

# repair_fix: how the operator gets a missing or corrupt blob of this commit back.
repair_fix() {
  printf '%s' "from a clean checkout of commit $TAG: python -m artifact_cd publish --repair --stack <stack> --service <id> --repo <checkout> --registry $REGISTRY drops a corrupt blob on D601 and uploads this commit's very image again (the same digests; a different build is refused); or docker push $REGISTRY/$REPOSITORY:$TAG from the host that built it"
}

# check_layers MANIFEST: HEAD /v2/<repo>/blobs/<digest> of every layer MANIFEST lists. 404 is a
# non-retryable registry-blob-missing naming the digest; other answers as check_http says.
check_layers() {
  local manifest=$1 kind layer
  local -a fields
  IFS=$'\x1f' read -r -a fields < <(manifest_parse layers "$manifest") || true
  kind=${fields[0]-}
  [[ $kind == layers ]] || fail "$EXIT_INFRA_BLOCKED" registry-error "manifest layers: ${fields[1]-unreadable}" false \
    channel '"registry"'
  for layer in "${fields[@]:1}"; do
    is_digest "$layer" || fail "$EXIT_INFRA_BLOCKED" registry-error "a layer of $REPOSITORY:$TAG has no sha256 digest" \
      false channel '"registry"'
    CURL_RC=0
    HTTP_CODE=$(curl "${CURL_OPTS[@]}" -I -L -o /dev/null -w '%{http_code}' "$BASE/blobs/$layer" 2>"$TMP/curl.err") ||
      CURL_RC=$?
    CURL_ERR=$(tail -n 1 "$TMP/curl.err" | head -c 300)
    if ((CURL_RC == 0)) && [[ $HTTP_CODE == 404 ]]; then
      fail "$EXIT_PRECONDITION" registry-blob-missing \
        "layer blob $layer of $REPOSITORY:$TAG is missing from the registry storage at $REGISTRY (HEAD answered 404)" false \
        digest "$(json_str "$layer")" repository "$(json_str "$REPOSITORY")" tag "$(json_str "$TAG")" \
        manifestDigest "$(json_str "$MANIFEST_DIGEST")" imageId "$(json_str "$IMAGE_CONFIG")" \
        fix "$(json_str "the registry stores blob $layer again under the same digest once this commit's very image is pushed again: $(repair_fix)")"
    fi
    check_http "HEAD layer blob $layer"
  done
}

REGISTRY="" REPOSITORY="" TAG="" BASE="" MANIFEST_DIGEST="" IMAGE_CONFIG=""

main() {
  exec </dev/null
  while (($#)); do
    case $1 in
      --registry) arg_value $# "$1"; REGISTRY=$2 ;;
      --repository) arg_value $# "$1"; REPOSITORY=$2 ;;
      --tag) arg_value $# "$1"; TAG=$2 ;;
      *) unknown_arg "$1" ;;
    esac
    shift 2
  done
  need loopback_endpoint --registry "$REGISTRY"
  need repository --repository "$REPOSITORY"
  need commit --tag "$TAG"
  require_tool curl
  require_tool python3
  require_tool sha256sum
  make_tmp
  BASE="http://$REGISTRY/v2/$REPOSITORY"

  # 1. HEAD by tag: the digest the registry holds for this commit.
  local digest="" media="" line
  CURL_RC=0
  HTTP_CODE=$(curl "${CURL_OPTS[@]}" --retry 2 --retry-delay 1 --retry-connrefused -I "${MANIFEST_ACCEPT[@]}" \
    -o /dev/null -D "$TMP/head" -w '%{http_code}' "$BASE/manifests/$TAG" 2>"$TMP/curl.err") || CURL_RC=$?
  CURL_ERR=$(tail -n 1 "$TMP/curl.err" | head -c 300)
  check_http "HEAD $REPOSITORY:$TAG"
  while IFS= read -r line; do
    line=${line%$'\r'}
    case ${line,,} in
      docker-content-digest:*) digest=${line#*:} digest=${digest//[[:space:]]/} ;;
      content-type:*) media=${line#*:} media=${media//[[:space:]]/} media=${media%%;*} ;;
    esac
  done <"$TMP/head"
  is_digest "$digest" ||
    fail "$EXIT_INFRA_BLOCKED" registry-error "HEAD $REPOSITORY:$TAG answered without a sha256 Docker-Content-Digest" false \
      channel '"registry"'

  MANIFEST_DIGEST=$digest

  # 2. The manifest itself (an index is resolved to this host's platform).
  local kind ref f2 f3 f4 f5 platform="" arch
  arch=$(host_arch)
  fetch_verified manifest "$digest" "$TMP/manifest"
  IFS=$'\x1f' read -r kind ref f2 f3 f4 f5 < <(manifest_parse manifest "$TMP/manifest" "$arch") || true
  [[ -n $media ]] || media=$f2
  if [[ $kind == index ]]; then
    platform=$f3
    fetch_verified manifest "$ref" "$TMP/child"
    IFS=$'\x1f' read -r kind ref f2 f3 f4 f5 < <(manifest_parse manifest "$TMP/child" "$arch") || true
    [[ $kind != index ]] || fail "$EXIT_INFRA_BLOCKED" registry-error "nested index under $digest" false channel '"registry"'
  fi
  [[ $kind == manifest ]] || fail "$EXIT_INFRA_BLOCKED" registry-error "manifest $digest: $ref" false channel '"registry"'
  IMAGE_CONFIG=$ref
  local config_digest=$ref config_size=$f3 layers=$f4 layer_bytes=$f5 image_manifest=$TMP/manifest
  [[ -z $platform ]] || image_manifest=$TMP/child

  # 3. The config blob: the image ID and the labels the CD verifies.
  local os arch_c revision source service
  fetch_verified blob "$config_digest" "$TMP/config"
  IFS=$'\x1f' read -r kind os arch_c revision source service \
    < <(manifest_parse config "$TMP/config" "$REVISION_LABEL" "$SOURCE_LABEL" "$SERVICE_LABEL") || true
  [[ $kind == config ]] || fail "$EXIT_INFRA_BLOCKED" registry-error "config $config_digest: $os" false channel '"registry"'
  [[ -n $platform ]] || platform="$os/$arch_c"
  local labels
  labels=$(json_obj "$REVISION_LABEL" "$(json_str "$revision")" "$SOURCE_LABEL" "$(json_str "$source")" \
    "$SERVICE_LABEL" "$(json_str "$service")")
  if [[ $revision != "$TAG" ]]; then
    fail "$EXIT_PRECONDITION" label-mismatch "the image tagged $TAG carries revision label '${revision:-<none>}'" false \
      digest "$(json_str "$digest")" labels "$labels"
  fi

  # 4. Every layer blob exists (HEAD only).
  check_layers "$image_manifest"

  json_obj ok true registry "$(json_str "$REGISTRY")" repository "$(json_str "$REPOSITORY")" \
    tag "$(json_str "$TAG")" digest "$(json_str "$digest")" imageId "$(json_str "$config_digest")" \
    mediaType "$(json_str "$media")" platform "$(json_str "$platform")" labels "$labels" \
    configBytes "${config_size:-0}" layers "${layers:-0}" layerBytes "${layer_bytes:-0}"
}

main "$@"
