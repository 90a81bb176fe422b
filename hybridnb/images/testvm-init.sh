#!/bin/sh
# /init of the hybridnb test VM (busybox initramfs, see hybridnb/images/testvm.py).
#
# Reads its identity from the kernel command line:
#   hybrid.ip=10.0.1.200/24 hybrid.gw=10.0.1.1 hybrid.dns=10.0.1.1[,..]
#   hybrid.domain=hybrid.local hybrid.name=vm1 [hybrid.mtu=1500]
# loads the virtio modules, configures eth0, serves HTTP on port 80 (busybox httpd), echoes
# UDP on port 7 (hnb-udp, when the image has it), starts the probe helper (hnb-probe) on the
# virtio-serial port org.hybridnb.probe.0, runs qemu-guest-agent on the virtio-serial port org.qemu.guest_agent.0, and prints the ready
# marker "HYBRIDNB-READY name=<name> ip=<ip>" on the console (ttyS0).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp /var/log /www
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mkdir -p /run/qga
ln -sf /run /var/run

say() { echo "hybridnb-init: $*"; }
say "started at $(cut -d" " -f1 /proc/uptime)"

for m in $(cat /etc/modules-order); do
    insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done

IP= GW= DNS= DOMAIN= NAME=testvm MTU=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        hybrid.ip=*) IP="${arg#*=}" ;;
        hybrid.gw=*) GW="${arg#*=}" ;;
        hybrid.dns=*) DNS="${arg#*=}" ;;
        hybrid.domain=*) DOMAIN="${arg#*=}" ;;
        hybrid.name=*) NAME="${arg#*=}" ;;
        hybrid.mtu=*) MTU="${arg#*=}" ;;
    esac
done

say "modules loaded at $(cut -d" " -f1 /proc/uptime)"
hostname "$NAME"
echo "$NAME" > /etc/hostname
ip link set lo up

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

: > /etc/resolv.conf
[ -n "$DOMAIN" ] && echo "search $DOMAIN" >> /etc/resolv.conf
for s in $(echo "$DNS" | tr ',' ' '); do echo "nameserver $s" >> /etc/resolv.conf; done
ADDR="${IP%/*}"
{
    echo "127.0.0.1 localhost"
    [ -n "$ADDR" ] && echo "$ADDR $NAME${DOMAIN:+.$DOMAIN} $NAME"
} > /etc/hosts

cat > /www/index.html <<EOF
<html><head><title>$NAME</title></head>
<body><h1>hybridnb test VM $NAME</h1><p>name=$NAME ip=$ADDR</p></body></html>
EOF
httpd -p 80 -h /www
# UDP echo on the probe engine's UDP port (busybox has no UDP server)
[ -x /bin/hnb-udp ] && { hnb-udp echo 7 </dev/null & }
# the resident probe helper, on its virtio-serial port (it finds the port itself)
[ -x /bin/hnb-probe ] && { hnb-probe serve org.hybridnb.probe.0 </dev/null & }

# The guest agent: devtmpfs has no udev, so find the named virtio-serial port ourselves.
QGA=
i=0
while [ -z "$QGA" ] && [ $i -lt 40 ]; do
    for p in /sys/class/virtio-ports/*; do
        [ -e "$p/name" ] || continue
        if [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ]; then QGA="/dev/${p##*/}"; fi
    done
    [ -z "$QGA" ] && { sleep 0.05; i=$((i + 1)); }
done
if [ -n "$QGA" ]; then
    mkdir -p /dev/virtio-ports
    ln -sf "$QGA" /dev/virtio-ports/org.qemu.guest_agent.0
    qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 \
        -f /run/qemu-ga.pid -t /run/qga -d || say "qemu-ga failed to start"
else
    say "no guest agent channel"
fi

echo "HYBRIDNB-READY name=$NAME ip=$ADDR uptime=$(cut -d" " -f1 /proc/uptime)"
# PID 1 must never exit.
while :; do sleep 3600; done
