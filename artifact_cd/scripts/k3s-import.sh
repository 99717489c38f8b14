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
# Non-root (issue 11): the containerd socket of k3s is root-only. When the SSH user cannot use it,
# every ctr call runs as `sudo -n <k3s|ctr> ctr --address SOCK -n NS ...` (--elevate sudo, the
# default) and a missing sudoers rule fails infra-blocked before anything is pulled, naming the
# command and the line to add (include/elevate.sh); --elevate none never elevates.
# Preflight (issue 11, read-only, before anything is pulled): every --deployment NAME:CONTAINER
# (the Deployments the plan's patches target, in --deployment-namespace) must exist with that
# container: `<k3s> kubectl -n NS get deployment NAME -o jsonpath={..containers[*].name}` (plain
# `kubectl` without k3s; elevated like k3s-verify.sh when the kubeconfig is root-only, its sudoers
# rule `<k3s> kubectl -n NS get deployment *`). A missing one fails deployment-missing /
# container-missing (exit 3, not retryable) naming the key services.<id>.names.deployments.
# Audit (issue 13): with --audit-log, one started and one finished/failed line (step k3s-import,
# target d601-k3s) on the host's deploy audit log.
# Output: {"ok":true,"image","digest","namespace","imageId","platform","socket","ctr","elevated"}
# Needs: bash, ctr (containerd) or k3s, python3; k3s or kubectl (the preflight, with --deployment);
# sudo when elevating.
# include: elevate.sh
# include: kubectl.sh
# include: audit.sh
set -euo pipefail

SOCKET="" NAMESPACE="" REGISTRY="" REPOSITORY="" TAG="" DIGEST="" IMAGE_ID=""
ELEVATE_ARG="" AUDIT_LOG_ARG="" STACK="" SERVICE_ID="" DEPLOYMENT_NAMESPACE=""
CTR=()
DEPLOYMENTS=() # NAME:CONTAINER
KUBECTL=()
CONTAINERS_JSONPATH='jsonpath={.spec.template.spec.containers[*].name}'

k8s_name() { [[ $1 =~ ^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$ ]]; }
k8s_label() { [[ $1 =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]]; }
is_deployment_container() { [[ $1 == *:* ]] && k8s_name "${1%%:*}" && k8s_label "${1#*:}"; }

# kubectl_rules K3S: the sudoers rule and the exact command of every kubectl call of the preflight.
kubectl_rules() {
  local k3s=$1 dep
  for dep in "${DEPLOYMENTS[@]}"; do
    printf '%s\n' "$k3s kubectl -n $DEPLOYMENT_NAMESPACE get deployment *" \
      "$k3s" kubectl -n "$DEPLOYMENT_NAMESPACE" get deployment "${dep%%:*}" -o "$CONTAINERS_JSONPATH" @@
  done
}

# deployments_exist: the read-only preflight (header): each Deployment and its container exist.
deployments_exist() {
  ((${#DEPLOYMENTS[@]})) || return 0
  local key="services.${SERVICE_ID:-<id>}.names.deployments"
  choose_kubectl ": the Deployments cannot be checked; nothing was changed"
  local dep name container out err
  err=$(mktemp) || fail "$EXIT_INFRA_BLOCKED" infra-blocked "no temp file for the preflight on $(hostname)" false channel '"tmp"'
  for dep in "${DEPLOYMENTS[@]}"; do
    name=${dep%%:*} container=${dep#*:}
    if ! out=$("${KUBECTL[@]}" -n "$DEPLOYMENT_NAMESPACE" get deployment "$name" -o "$CONTAINERS_JSONPATH" 2>"$err"); then
      local why
      why=$(tail -n 1 "$err" | head -c 300)
      rm -f -- "$err"
      if [[ $why == *NotFound* || $why == *" not found"* ]]; then
        fail "$EXIT_PRECONDITION" deployment-missing \
          "there is no Deployment $name in namespace $DEPLOYMENT_NAMESPACE on $(hostname): set $key to the Deployment(s) that run ${SERVICE_ID:-the service}; nothing was imported" false \
          deployment "$(json_str "$name")" namespace "$(json_str "$DEPLOYMENT_NAMESPACE")" key "$(json_str "$key")"
      fi
      fail "$EXIT_INFRA_BLOCKED" infra-blocked "could not read Deployment $DEPLOYMENT_NAMESPACE/$name: $why; nothing was changed" false \
        channel '"kubernetes-api"'
    fi
    if [[ " $out " != *" $container "* ]]; then
      rm -f -- "$err"
      fail "$EXIT_PRECONDITION" container-missing \
        "Deployment $DEPLOYMENT_NAMESPACE/$name has no container $container (its containers: ${out:-<none>}): set the container in $key; nothing was imported" false \
        deployment "$(json_str "$name")" namespace "$(json_str "$DEPLOYMENT_NAMESPACE")" container "$(json_str "$container")" \
        containers "$(json_str "$out")" key "$(json_str "$key")"
    fi
  done
  rm -f -- "$err"
}

# ctr_rules BIN...: the sudoers rule and the exact command of every ctr call this step makes
# (require_root's argument list).
ctr_rules() {
  local base="$* --address $SOCKET -n $NAMESPACE" ref="$REGISTRY/$REPOSITORY:$TAG"
  printf '%s\n' "$base version" "$@" --address "$SOCKET" -n "$NAMESPACE" version @@ \
    "$base images pull --plain-http *" "$@" --address "$SOCKET" -n "$NAMESPACE" images pull --plain-http "$ref" @@ \
    "$base images ls *" "$@" --address "$SOCKET" -n "$NAMESPACE" images ls "name==$ref" @@ \
    "$base images rm *" "$@" --address "$SOCKET" -n "$NAMESPACE" images rm "$ref" @@ \
    "$base content get *" "$@" --address "$SOCKET" -n "$NAMESPACE" content get "$DIGEST" @@
}

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
      --service-id) arg_value $# "$1"; SERVICE_ID=$2 ;;
      --elevate) arg_value $# "$1"; ELEVATE_ARG=$2 ;;
      --audit-log) arg_value $# "$1"; AUDIT_LOG_ARG=$2 ;;
      --stack) arg_value $# "$1"; STACK=$2 ;;
      --deployment-namespace) arg_value $# "$1"; DEPLOYMENT_NAMESPACE=$2 ;;
      --deployment) arg_value $# "$1"; is_deployment_container "$2" ||
        fail "$EXIT_INVALID" invalid-argument "--deployment must be NAME:CONTAINER (Kubernetes names)" false argument '"--deployment"'
        DEPLOYMENTS+=("$2") ;;
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
  [[ -z $SERVICE_ID ]] || need name --service-id "$SERVICE_ID"
  if [[ -n $DEPLOYMENT_NAMESPACE || ${#DEPLOYMENTS[@]} -gt 0 ]]; then # the preflight needs both
    k8s_label "$DEPLOYMENT_NAMESPACE" ||
      fail "$EXIT_INVALID" invalid-argument "--deployment-namespace is not a Kubernetes namespace" false argument '"--deployment-namespace"'
    ((${#DEPLOYMENTS[@]})) ||
      fail "$EXIT_INVALID" invalid-argument "--deployment-namespace needs at least one --deployment" false argument '"--deployment"'
  fi
  elevate_init "${ELEVATE_ARG:-sudo}"
  if [[ -n $AUDIT_LOG_ARG ]]; then
    need abs_path --audit-log "$AUDIT_LOG_ARG"
    need name --stack "$STACK"
    need name --service-id "$SERVICE_ID"
  fi

  local bin=()
  if command -v k3s >/dev/null 2>&1; then
    bin=("$(command -v k3s)" ctr)
  elif command -v ctr >/dev/null 2>&1; then
    bin=("$(command -v ctr)")
  else
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "neither k3s nor ctr is installed on $(hostname)" false channel '"ctr"'
  fi
  require_tool python3
  local elevated=false rules=()
  if ((EUID == 0)) || [[ -S $SOCKET && -r $SOCKET && -w $SOCKET ]]; then
    CTR=("${bin[@]}" --address "$SOCKET" -n "$NAMESPACE") # the user can use the socket itself
  elif elevating; then
    mapfile -t rules < <(ctr_rules "${bin[@]}")
    require_root k3s-containerd "${rules[@]}"
    CTR=(sudo -n "${bin[@]}" --address "$SOCKET" -n "$NAMESPACE")
    elevated=true
  elif [[ -e $SOCKET ]]; then
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un) cannot use the containerd socket $SOCKET (root-only) and --elevate is none; nothing was changed" false \
      channel '"k3s-containerd"' fix "$(json_str "set hosts.d601.elevate sudo (with the sudoers lines of README 'Non-root hosts') or give $(id -un) access to $SOCKET")"
  fi
  [[ $elevated == true || -S $SOCKET ]] || fail "$EXIT_INFRA_BLOCKED" infra-blocked "no containerd socket at $SOCKET" false channel '"k3s-containerd"'
  "${CTR[@]}" version >/dev/null 2>&1 ||
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "containerd at $SOCKET does not answer (or there is no socket)" false channel '"k3s-containerd"'
  deployments_exist
  make_tmp
  if [[ -n $AUDIT_LOG_ARG ]]; then
    audit_init "$AUDIT_LOG_ARG" "$STACK" "$STACK" "$SERVICE_ID" d601-k3s k3s-import
    AUDIT_FIELDS+=(fromCommit null toCommit "$(json_str "$TAG")" digest "$(json_str "$DIGEST")" imageId "$(json_str "$IMAGE_ID")")
    audit_event started
  fi

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

  audit_event finished verdict '"ok"' error null
  json_obj ok true image "$(json_str "$ref")" digest "$(json_str "$DIGEST")" namespace "$(json_str "$NAMESPACE")" \
    imageId "$(json_str "$IMAGE_ID")" platform "$(json_str "${platform:-linux/$(host_arch)}")" \
    socket "$(json_str "$SOCKET")" ctr "$(json_str "${bin[0]##*/}")" elevated "$elevated" seconds "$(elapsed_since "$start")"
}

main "$@"
