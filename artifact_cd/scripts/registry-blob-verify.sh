# shellcheck shell=bash
# registry-blob-verify.sh: read-only content check of the D601 registry's blob storage (issue 12).
#
#   argv: artifact_cd.contract.RegistryBlobVerifyArgs (docs/contracts.md, generated argv table)
#
# Runs on D601 as the SSH user; writes nothing. Hashes the blob data files of the filesystem
# storage (<storage>/docker/registry/v2/blobs/sha256/<xx>/<hex>/data), newest first, until the
# time or byte budget is spent (artifact_cd/scripts/py/manifest.py verify-storage): a blob whose sha256 is
# not its name is corrupt; the repository:tag pairs whose image uses it are named. The decision
# (the health scope storage-integrity) is artifact_cd.health's.
# Output: {"ok":true,"probe":"registry-blob-verify","totalBlobs","totalBytes","checkedBlobs",
# "checkedBytes","unreadableBlobs","complete","stoppedBy","corrupt":[{digest,actual,bytes,usedBy}]...}
# Failures: invalid-argument (2) · infra-blocked (5: python3 missing).
set -euo pipefail

main() {
  exec </dev/null
  local storage="" seconds="" bytes=""
  while (($#)); do
    case $1 in
      --storage) arg_value $# "$1"; storage=$2 ;;
      --budget-seconds) arg_value $# "$1"; seconds=$2 ;;
      --budget-bytes) arg_value $# "$1"; bytes=$2 ;;
      *) unknown_arg "$1" ;;
    esac
    shift 2
  done
  need managed_path --storage "$storage"
  [[ $seconds =~ ^[1-9][0-9]{0,4}$ ]] ||
    fail "$EXIT_INVALID" invalid-argument "--budget-seconds is not a whole number of seconds (1..99999)" false argument '"--budget-seconds"'
  [[ $bytes =~ ^[0-9]{1,15}$ ]] ||
    fail "$EXIT_INVALID" invalid-argument "--budget-bytes is not a byte count" false argument '"--budget-bytes"'
  require_tool python3
  python3 -c "$MANIFEST_PY" verify-storage "$storage" "$seconds" "$bytes"
}

main "$@"
