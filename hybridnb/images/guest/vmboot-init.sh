#!/bin/sh
# /init of the initramfs that boots a recipe's VM disk (busybox; see hybridnb/images/vmkernel.py).
#
# Loads the virtio, block, ext4, overlay and iso9660 modules, configures eth0 from the kernel
# command line like the test VM (hybrid.ip=10.0.1.200/24 hybrid.gw= hybrid.mtu= hybrid.name=;
# not with hybrid.cloudinit=1, where cloud-init does it), mounts the root disk and hands over
# to the image's init (/usr/lib/hybridnb/init --vm) with switch_root.
#   root=/dev/vda (default)   the disk: the image's ext4, seen through a per-VM qcow2 overlay
#   hybrid.rootmode=rw        mount it read-write (the overlay file takes the writes), or
#   hybrid.rootmode=tmpfs     mount it read-only under an overlayfs whose upper layer is a
#                             tmpfs (writes live in guest RAM; the disk may be shared as is)
# Anything that goes wrong prints HYBRIDNB-FAILED and powers the VM off (the domain stops).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "hybridnb-boot: $*"; }
die() {
    echo "HYBRIDNB-FAILED name=$NAME service=boot reason=$*"
    sleep 1
    poweroff -f
}
say "started at $(cut -d" " -f1 /proc/uptime)"

for m in $(cat /etc/modules-order); do
    insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done

IP= GW= NAME=vm MTU= ROOT=/dev/vda ROOTMODE=rw CLOUDINIT=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        hybrid.ip=*) IP="${arg#*=}" ;;
        hybrid.gw=*) GW="${arg#*=}" ;;
        hybrid.name=*) NAME="${arg#*=}" ;;
        hybrid.mtu=*) MTU="${arg#*=}" ;;
        hybrid.rootmode=*) ROOTMODE="${arg#*=}" ;;
        hybrid.cloudinit=1) CLOUDINIT=1 ;;
        root=*) ROOT="${arg#*=}" ;;
    esac
done
say "modules loaded at $(cut -d" " -f1 /proc/uptime)"

i=0
while [ ! -b "$ROOT" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ -b "$ROOT" ] || die "no root disk $ROOT"
mkdir -p /newroot
case "$ROOTMODE" in
    tmpfs)
        mkdir -p /lower /rw
        mount -t ext4 -o ro "$ROOT" /lower || die "cannot mount $ROOT read-only"
        mount -t tmpfs -o mode=755 tmpfs /rw
        mkdir -p /rw/upper /rw/work
        mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work \
            /newroot || die "cannot mount the overlay root"
        ;;
    *)
        mount -t ext4 -o rw,noatime "$ROOT" /newroot || die "cannot mount $ROOT"
        ;;
esac
[ -x /newroot/usr/lib/hybridnb/init ] || die "$ROOT holds no /usr/lib/hybridnb/init"
say "root mounted ($ROOTMODE) at $(cut -d" " -f1 /proc/uptime)"

hostname "$NAME"
ip link set lo up
if [ -z "$CLOUDINIT" ]; then
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    if [ -e /sys/class/net/eth0 ]; then
        [ -n "$MTU" ] && ip link set eth0 mtu "$MTU"
        [ -n "$IP" ] && ip addr add "$IP" dev eth0
        ip link set eth0 up
        [ -n "$GW" ] && ip route add default via "$GW"
        say "eth0 up at $(cut -d" " -f1 /proc/uptime)"
    else
        say "no eth0 (virtio_net did not find a NIC)"
    fi
fi

mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /usr/lib/hybridnb/init --vm
