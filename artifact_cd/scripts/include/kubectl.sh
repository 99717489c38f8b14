# shellcheck shell=bash
# kubectl.sh: which kubectl the k3s steps run (k3s-import.sh's preflight, k3s-verify.sh), after
# elevate.sh (issue 11).
#
#   choose_kubectl SUFFIX   KUBECTL = k3s's own kubectl, through `sudo -n` when the user cannot read
#       k3s's root-only kubeconfig (its rules from the caller's `kubectl_rules K3S`, checked by
#       require_root before anything changes; KUBECTL_ELEVATED=true), else a plain kubectl; refuses
#       infra-blocked when neither is installed, or the kubeconfig is unreadable with --elevate none.
#       SUFFIX ends those refusals' detail (e.g. "; nothing was changed"; may be empty).
# Functions and constants only; nothing here runs by itself.

K3S_KUBECONFIG=/etc/rancher/k3s/k3s.yaml # k3s's admin kubeconfig (root-only on a default install)
# shellcheck disable=SC2034 # reported by the scripts that say whether they elevated
KUBECTL_ELEVATED=false

choose_kubectl() {
  local suffix=$1 k3s rules=()
  KUBECTL_ELEVATED=false
  if command -v k3s >/dev/null 2>&1; then
    k3s=$(command -v k3s)
    KUBECTL=("$k3s" kubectl)
    if ((EUID != 0)) && [[ -z ${KUBECONFIG-} && ! -r $K3S_KUBECONFIG ]]; then
      if elevating; then
        mapfile -t rules < <(kubectl_rules "$k3s")
        require_root kubernetes-api "${rules[@]}"
        KUBECTL=(sudo -n "$k3s" kubectl)
        # shellcheck disable=SC2034 # see above
        KUBECTL_ELEVATED=true
      else
        fail "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un) cannot read $K3S_KUBECONFIG (root-only) and --elevate is none$suffix" false \
          channel '"kubernetes-api"' fix "$(json_str "set hosts.d601.elevate sudo (with the sudoers lines of README 'Non-root hosts') or let $(id -un) read a kubeconfig (k3s --write-kubeconfig-mode, KUBECONFIG)")"
      fi
    fi
  elif command -v kubectl >/dev/null 2>&1; then
    KUBECTL=(kubectl)
  else
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "neither k3s nor kubectl is installed on $(hostname)$suffix" false channel '"kubectl"'
  fi
}
