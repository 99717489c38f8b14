#!/bin/bash
# hostinit.sh HOSTDIR NAME: PID 1 of a rig host's fresh pid+mount+cgroup+uts+ipc+net namespaces,
# run by `unshare` (tests/rig/host.py). It builds the host's root filesystem and then becomes
# systemd. Nothing here is visible to the machine: every mount lives in the private mount
# namespace and disappears with it.
#
#   root      = overlay(lower=/, upper on a tmpfs)  -> the machine's / is never written
#   payload   = HOSTDIR/payload copied over the root (host keys, sshd config, units, masks, ...)
#   cgroups   = fresh hierarchies (one per line of HOSTDIR/cgroup-mounts), rooted at the host's
#               own sub-cgroups through the cgroup namespace
#   binds     = HOSTDIR/binds lines "SRC DST": real ext4 folders where overlayfs cannot be
#               (dockerd's and containerd's snapshotters)
set -euo pipefail

D=$1
NAME=$2
R=$D/root
[[ -d $D/payload && -d $R && -d $D/ovl ]] || { echo "hostinit: $D is not a prepared host dir" >&2; exit 2; }
[[ $NAME =~ ^[a-z][a-z0-9-]{0,30}$ ]] || { echo "hostinit: bad host name" >&2; exit 2; }

mount --make-rprivate /
hostname "$NAME"

mount -t tmpfs -o size=16g,mode=755 "rig-$NAME-upper" "$D/ovl"
mkdir -p "$D/ovl/u" "$D/ovl/w"
mount -t overlay "rig-$NAME-root" -o "lowerdir=/,upperdir=$D/ovl/u,workdir=$D/ovl/w" "$R"

# The machine's identity and credentials stay outside the host.
rm -f "$R"/etc/ssh/ssh_host_*
rm -rf "$R/root/.ssh"
rm -f "$R/etc/machine-id"
cp -a "$D/payload/." "$R/"

mount -t tmpfs -o mode=1777,nosuid,nodev "rig-$NAME-tmp" "$R/tmp"
mount -t tmpfs -o mode=755,nosuid,nodev "rig-$NAME-run" "$R/run"
mount -t proc proc "$R/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t tmpfs -o mode=755,nosuid,nodev,noexec "rig-$NAME-cgroup" "$R/sys/fs/cgroup"
while read -r dir fstype options; do
  mkdir -p "$R/sys/fs/cgroup/$dir"
  if [[ $fstype == cgroup2 ]]; then
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup/$dir"
  else
    mount -t cgroup -o "nosuid,nodev,noexec,$options" cgroup "$R/sys/fs/cgroup/$dir"
  fi
done <"$D/cgroup-mounts"

mount -t tmpfs -o mode=755,nosuid,size=4m "rig-$NAME-dev" "$R/dev"
(
  cd "$R/dev"
  mknod -m 666 null c 1 3
  mknod -m 666 zero c 1 5
  mknod -m 666 full c 1 7
  mknod -m 666 random c 1 8
  mknod -m 666 urandom c 1 9
  mknod -m 666 tty c 5 0
  touch console
  mount --bind "$D/console.log" console
  mkdir pts shm mqueue
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts pts
  ln -s pts/ptmx ptmx
  mount -t tmpfs -o mode=1777,nosuid,nodev "rig-$NAME-shm" shm
  ln -s /proc/self/fd fd
  ln -s /proc/self/fd/0 stdin
  ln -s /proc/self/fd/1 stdout
  ln -s /proc/self/fd/2 stderr
)

while read -r src dst; do
  mkdir -p "$R$dst"
  mount --bind "$src" "$R$dst"
done <"$D/binds"

cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
exec env -i container=other PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system </dev/null >/dev/console 2>&1
