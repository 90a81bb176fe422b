#!/bin/bash
# /usr/lib/hybridnb/init — the init of every image built from a hybridnb recipe.
#
# Container: the image's ENTRYPOINT (docker's own init is PID 1 and forwards signals); the
#   container's command, if any, is run once the services are up.
# VM: PID 1, started by the initramfs (vmboot-init.sh) with --vm after it configured eth0
#   and mounted the root disk; identity from the kernel command line (hybrid.ip=10.0.1.200/24
#   hybrid.gw= hybrid.dns= hybrid.domain= hybrid.name=), or from cloud-init and its NoCloud
#   seed with hybrid.cloudinit=1.
#
# Both: render the recipe's templated files with the endpoint's name/address/domain, start
# the recipe's services in the foreground (logs in /var/log/hybridnb/<service>.log), wait
# until each accepts connections, run the recipe's boot commands, then print
#   HYBRIDNB-READY name=<name> ip=<address> uptime=<s> services=<name/port,...>
# or, when a service dies or is not ready in time,
#   HYBRIDNB-FAILED name=<name> service=<service> reason=<why>   (and the log tail).
# A VM also runs the QEMU guest agent (the rootfs's own qemu-ga, else the disk's copy).
# The services and their readiness come from /etc/hybridnb/services.sh (generated from the
# recipe by hybridnb.core.recipe.services_script).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HNB=/etc/hybridnb
LOGDIR=/var/log/hybridnb
LIB=/usr/lib/hybridnb
MODE=container
if [ "${1:-}" = --vm ]; then MODE=vm; shift; fi
NAME= ADDR= DOMAIN= GW= DNS= CLOUDINIT=
HNB_SERVICES=() HNB_READY=() HNB_MODULES=() HNB_TEMPLATES=() HNB_TEMPLATE_MODES=()
hnb_boot() { :; }
# shellcheck source=/dev/null
[ -r "$HNB/services.sh" ] && . "$HNB/services.sh"
TIMEOUT=${HYBRIDNB_SERVICE_TIMEOUT:-120}

say() { echo "hybridnb-init: $*"; }
uptime_s() { local up _; read -r up _ < /proc/uptime; echo "$up"; }

# ------------------------------------------------------------------ identity
vm_mounts() {
    mountpoint -q /proc || mount -t proc proc /proc
    mountpoint -q /sys || mount -t sysfs sysfs /sys
    mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
    mkdir -p /dev/pts /dev/shm
    mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts 2>/dev/null
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
    mkdir -p /run/lock && chmod 1777 /run/lock
    mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    ln -sfn /proc/self/fd /dev/fd 2>/dev/null
    [ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
}

from_cmdline() {
    local arg
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
            hybrid.ip=*) ADDR="${arg#*=}"; ADDR="${ADDR%/*}" ;;
            hybrid.gw=*) GW="${arg#*=}" ;;
            hybrid.dns=*) DNS="${arg#*=}" ;;
            hybrid.domain=*) DOMAIN="${arg#*=}" ;;
            hybrid.name=*) NAME="${arg#*=}" ;;
            hybrid.cloudinit=1) CLOUDINIT=1 ;;
            hybrid.timeout=*) TIMEOUT="${arg#*=}" ;;
        esac
    done
}

default_gateway() {
    local ifc dst gw rest
    while read -r ifc dst gw rest; do
        if [ "$dst" = 00000000 ] && [ "$gw" != 00000000 ]; then
            printf '%d.%d.%d.%d' "0x${gw:6:2}" "0x${gw:4:2}" "0x${gw:2:2}" "0x${gw:0:2}"
            return
        fi
    done < /proc/net/route
}

search_domain() {
    local key rest
    while read -r key rest; do
        [ "$key" = search ] && { echo "${rest%% *}"; return; }
    done < /etc/resolv.conf 2>/dev/null
}

# What the system says (containers; VMs configured by cloud-init).
from_system() {
    NAME=${HYBRIDNB_NAME:-$(cat /proc/sys/kernel/hostname)}
    NAME=${NAME%%.*}
    DOMAIN=${HYBRIDNB_DOMAIN:-$(search_domain)}
    GW=${HYBRIDNB_GATEWAY:-$(default_gateway)}
    ADDR=${HYBRIDNB_ADDRESS:-}
    if [ -z "$ADDR" ]; then
        local a _
        read -r a _ < <(getent ahostsv4 "$NAME" 2>/dev/null | grep -v '^127\.')
        ADDR=$a
    fi
    [ -z "$ADDR" ] && ADDR=$(local_address)
}

local_address() {  # the first non-loopback local IPv4 address (from the kernel's FIB)
    local line prev=
    while read -r line; do
        case "$line" in
            *"/32 host LOCAL"*) case "$prev" in 127.*|"") ;; *) echo "$prev"; return ;; esac ;;
        esac
        prev=${line##*-- }
    done < /proc/net/fib_trie
}

write_identity() {
    hostname "$NAME" 2>/dev/null || echo "$NAME" > /proc/sys/kernel/hostname
    echo "$NAME" > /etc/hostname
    {
        echo "127.0.0.1 localhost"
        [ -n "$ADDR" ] && echo "$ADDR ${NAME}${DOMAIN:+.$DOMAIN} $NAME"
    } > /etc/hosts
    if [ ! -L /etc/resolv.conf ]; then
        {
            [ -n "$DOMAIN" ] && echo "search $DOMAIN"
            local s
            for s in ${DNS//,/ }; do echo "nameserver $s"; done
        } > /etc/resolv.conf
    fi
}

run_cloud_init() {
    say "running cloud-init at $(uptime_s)"
    command -v resolvconf >/dev/null && resolvconf --enable-updates
    cloud-init init --local >> "$LOGDIR/cloud-init.log" 2>&1 || say "cloud-init local stage failed"
    ifup -a >> "$LOGDIR/cloud-init.log" 2>&1 || say "ifup -a failed"
    cloud-init init >> "$LOGDIR/cloud-init.log" 2>&1 || say "cloud-init network stage failed"
    cloud-init modules --mode=config >> "$LOGDIR/cloud-init.log" 2>&1 \
        || say "cloud-init config stage failed"
    cloud-init modules --mode=final >> "$LOGDIR/cloud-init.log" 2>&1 \
        || say "cloud-init final stage failed"
    say "cloud-init done at $(uptime_s)"
}

# ------------------------------------------------------------------ files, agent
sed_escape() { printf '%s' "$1" | sed -e 's/[\/&]/\\&/g'; }

render_templates() {
    local i dst tmp fqdn=${NAME}${DOMAIN:+.$DOMAIN}
    for i in "${!HNB_TEMPLATES[@]}"; do
        dst=${HNB_TEMPLATES[$i]}
        tmp="$dst.hybridnb-tmp"
        mkdir -p "$(dirname "$dst")"
        sed -e "s/{{ *name *}}/$(sed_escape "$NAME")/g" \
            -e "s/{{ *address *}}/$(sed_escape "$ADDR")/g" \
            -e "s/{{ *domain *}}/$(sed_escape "$DOMAIN")/g" \
            -e "s/{{ *fqdn *}}/$(sed_escape "$fqdn")/g" \
            -e "s/{{ *gateway *}}/$(sed_escape "$GW")/g" \
            "$HNB/templates$dst" > "$tmp" && chmod "${HNB_TEMPLATE_MODES[$i]}" "$tmp" \
            && mv -f "$tmp" "$dst" || say "could not render $dst"
    done
}

start_agent() {
    local p port= i=0
    while [ -z "$port" ] && [ $i -lt 40 ]; do
        for p in /sys/class/virtio-ports/*; do
            [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
        done
        [ -z "$port" ] && { sleep 0.05; i=$((i + 1)); }
    done
    if [ -z "$port" ]; then say "no guest agent channel"; return; fi
    mkdir -p /dev/virtio-ports /run/qga
    ln -sf "$port" /dev/virtio-ports/org.qemu.guest_agent.0
    if [ -x /usr/sbin/qemu-ga ]; then
        /usr/sbin/qemu-ga -m virtio-serial -p "$port" -f /run/qemu-ga.pid -t /run/qga -d
    else
        "$LIB/qga/ld.so" --library-path "$LIB/qga/lib" "$LIB/qga/qemu-ga" \
            -m virtio-serial -p "$port" -f /run/qemu-ga.pid -t /run/qga -d
    fi || say "qemu-ga failed to start"
}

# ------------------------------------------------------------------ services
PIDS=()
FAILED=

fail() {  # service reason (the log tail first: whoever waits for the marker stops there)
    FAILED=$1
    [ -r "$LOGDIR/$1.log" ] && tail -n 20 "$LOGDIR/$1.log" | sed "s/^/hybridnb-init: $1| /"
    echo "HYBRIDNB-FAILED name=$NAME service=$1 reason=$2"
}

port_open() {  # port: a connection to it succeeds (loopback, else the lab address)
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    [ -n "$ADDR" ] && (exec 3<>"/dev/tcp/$ADDR/$1") 2>/dev/null
}

is_ready() {  # index started-at
    local ready=${HNB_READY[$1]} p
    case "$ready" in
        tcp:*)
            local ports=${ready#tcp:}
            for p in ${ports//,/ }; do port_open "$p" || return 1; done ;;
        unix:*) [ -S "${ready#unix:}" ] || return 1 ;;
        cmd:*) timeout 10 sh -c "${ready#cmd:}" || return 1 ;;
        *) [ $((SECONDS - $2)) -ge 1 ] || return 1 ;;
    esac
}

start_services() {
    local i s started=$SECONDS
    mkdir -p "$LOGDIR"
    if [ ${#HNB_MODULES[@]} -gt 0 ] && [ "$MODE" = vm ]; then
        modprobe -a "${HNB_MODULES[@]}" >> "$LOGDIR/modules.log" 2>&1 \
            || say "some kernel modules did not load: ${HNB_MODULES[*]} (see $LOGDIR/modules.log)"
    fi
    for i in "${!HNB_SERVICES[@]}"; do
        s=${HNB_SERVICES[$i]}
        if ! "hnb_prepare_$i" >> "$LOGDIR/$s.log" 2>&1; then
            fail "$s" "its preparation failed"
            return 1
        fi
        "hnb_run_$i" >> "$LOGDIR/$s.log" 2>&1 < /dev/null &
        PIDS[$i]=$!
        say "started $s (pid ${PIDS[$i]}) at $(uptime_s)"
    done
    local pending=("${!HNB_SERVICES[@]}") left code
    while [ ${#pending[@]} -gt 0 ]; do
        left=()
        for i in "${pending[@]}"; do
            s=${HNB_SERVICES[$i]}
            if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
                wait "${PIDS[$i]}"; code=$?
                fail "$s" "exited with code $code"
                return 1
            fi
            if is_ready "$i" "$started"; then
                say "$s ready (${HNB_READY[$i]}) at $(uptime_s)"
            else
                left+=("$i")
            fi
        done
        pending=("${left[@]}")
        [ ${#pending[@]} -eq 0 ] && break
        if [ $((SECONDS - started)) -ge "$TIMEOUT" ]; then
            i=${pending[0]}
            fail "${HNB_SERVICES[$i]}" "not ready after ${TIMEOUT} s (waiting for ${HNB_READY[$i]})"
            return 1
        fi
        sleep 0.1
    done
    hnb_boot >> "$LOGDIR/boot.log" 2>&1
    code=$?
    if [ $code -ne 0 ]; then
        fail boot "a boot command failed with code $code"
        return 1
    fi
}

service_list() {  # postgresql/5432,web/80+443,dockerd
    local i out= ready ports
    for i in "${!HNB_SERVICES[@]}"; do
        ready=${HNB_READY[$i]}
        out+="${out:+,}${HNB_SERVICES[$i]}"
        case "$ready" in tcp:*) ports=${ready#tcp:}; out+="/${ports//,/+}" ;; esac
    done
    echo "$out"
}

# ------------------------------------------------------------------ main
if [ "$MODE" = vm ]; then
    vm_mounts
    mkdir -p "$LOGDIR"
    from_cmdline
    say "root mounted, init running at $(uptime_s)"
    if [ -n "$CLOUDINIT" ]; then
        run_cloud_init
        from_system
    else
        write_identity
    fi
    start_agent
else
    from_system
fi

render_templates
if start_services; then
    echo "HYBRIDNB-READY name=$NAME ip=$ADDR uptime=$(uptime_s) services=$(service_list)"
elif [ "$MODE" = container ]; then
    exit 1
fi

if [ "$MODE" = container ]; then
    [ $# -gt 0 ] && exec "$@"
    trap 'kill "${PIDS[@]}" 2>/dev/null; exit 0' TERM INT
    while :; do sleep 3600 & wait $!; done
fi
# PID 1 of a VM: never exit; reap whatever is orphaned.
trap '' TERM INT
while :; do sleep 3600 & wait; done
