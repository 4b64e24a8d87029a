#!/bin/sh
# /init of the linuxvm initramfs (busybox sh, PID 1).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox --install -s
# iproute2's ip, not busybox's applet (which has no xfrm).
rm -f /bin/ip /sbin/ip
ln -s /usr/sbin/ip /sbin/ip
echo 0 > /proc/sys/kernel/printk 2>/dev/null
# New interfaces: no DAD (it delays addresses by a second), no SLAAC or RS noise.
for k in accept_dad dad_transmits accept_ra router_solicitations; do
	echo 0 > /proc/sys/net/ipv6/conf/default/$k
	echo 0 > /proc/sys/net/ipv6/conf/all/$k
done
KVER=$(uname -r)
t0=$(cut -d' ' -f1 /proc/uptime)
while read -r m; do
	insmod "/lib/modules/$KVER/$m" || echo "init: insmod $m failed"
done < /etc/modules.load
t1=$(cut -d' ' -f1 /proc/uptime)
echo "init: modules loaded in $t0..$t1 s of uptime"
ip link set lo up
ip link set eth0 up
/bin/agent serve
echo "init: agent exited with $?"
poweroff -f
