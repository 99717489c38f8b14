# shellcheck shell=bash
# elevate.sh: run the few commands that need root as root, and nothing else (issue 11).
#
# A host is reached as an unprivileged user (hosts.<h>.user, `ubuntu` by default). Per host the
# stack config says how a privileged command runs (hosts.<h>.elevate, the scripts' --elevate):
#   sudo  `sudo -n <absolute command> <args>` for exactly the commands that need root (the SSH
#         user is root: run directly). The sudoers entries are listed in README "Non-root hosts".
#   none  never elevate: the user is root, or already has the access (a group on the socket, a
#         readable kubeconfig). A missing access then fails naming the fix.
# Docker is used through the `docker` group (never elevated here).
#
#   elevate_init MODE            once, after the arguments were parsed (MODE validated here)
#   elevating                    true when privileged commands go through sudo
#   as_root CMD ARGS...          CMD ARGS as root (CMD an absolute path: what sudoers matches)
#   sudo_allows CMD ARGS...      whether `sudo -n` would run exactly this command without a password
#   require_root CHANNEL [RULE CMD... @@]...  before anything changes: every command (CMD..., up
#       to the next `@@`, a word no command here takes) that `sudo -n` may not run fails
#       infra-blocked (exit 5) naming the commands and the sudoers lines to add (RULE: the sudoers
#       command pattern); no-op when not elevating.
#       Usage: require_root k3s-containerd "/usr/bin/ctr version" /usr/bin/ctr version @@
ELEVATE_MODE=sudo
ELEVATE=()

elevate_init() {
  ELEVATE_MODE=${1:-sudo}
  need_one_of --elevate "$ELEVATE_MODE" sudo none
  if ((EUID == 0)) || [[ $ELEVATE_MODE == none ]]; then
    ELEVATE=()
  else
    ELEVATE=(sudo -n)
  fi
}

elevating() { ((${#ELEVATE[@]} > 0)); }

as_root() { "${ELEVATE[@]}" "$@"; }

sudo_allows() { sudo -n -l -- "$@" >/dev/null 2>&1; }

# sudoers_line RULE: the line an operator adds (visudo -f /etc/sudoers.d/unidesk-artifact-cd).
sudoers_line() { printf '%s ALL=(root) NOPASSWD: %s' "$(id -un)" "$1"; }

require_root() {
  local channel=$1
  shift
  elevating || return 0
  if ! command -v sudo >/dev/null 2>&1; then
    fail "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un) is not root and sudo is not installed on $(hostname); nothing was changed" false \
      channel '"sudo"' fix "$(json_str "install sudo and add the sudoers lines of README 'Non-root hosts', or set hosts.<host>.elevate none for a root login")"
  fi
  local rule cmd=() missing_cmds=() missing_lines=()
  while (($#)); do
    rule=$1
    shift
    cmd=()
    while (($#)) && [[ $1 != @@ ]]; do
      cmd+=("$1")
      shift
    done
    (($#)) && shift # the @@
    if ! sudo_allows "${cmd[@]}"; then
      missing_cmds+=("sudo -n ${cmd[*]}")
      missing_lines+=("$(sudoers_line "$rule")")
    fi
  done
  ((${#missing_cmds[@]} == 0)) && return 0
  local more=""
  ((${#missing_cmds[@]} == 1)) || more=" (and $((${#missing_cmds[@]} - 1)) more)"
  fail "$EXIT_INFRA_BLOCKED" infra-blocked "$(id -un) may not run as root on $(hostname): ${missing_cmds[0]}$more; nothing was changed; add the sudoers line(s)" false \
    channel "$(json_str "$channel")" command "$(json_str "${missing_cmds[0]}")" commands "$(json_list "${missing_cmds[@]}")" \
    sudoers "$(json_list "${missing_lines[@]}")" \
    fix "$(json_str "add to /etc/sudoers.d/unidesk-artifact-cd (visudo -f): ${missing_lines[0]}")"
}
