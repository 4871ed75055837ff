"""What runs inside the guest: its ``/init`` and the agent, as text packed into the image.

The guest is a busybox initramfs: no package manager, no SSH, no module auto-loading (the
kernel's ``modprobe`` helper is pointed at ``/bin/false`` so the only modules that load are
the ones the project loads, in the order it chooses). ``/tmp`` and ``/run`` are tmpfs and are
excluded from the filesystem diff; everything else in ``/`` is the image (listed with sha256 in
``/etc/persona/image.sha256``) plus what the host's life added.
"""

from __future__ import annotations

AGENT_TTY = "/dev/ttyS1"
BASELINE = "/etc/persona/image.sha256"
VOLATILE = ("/tmp", "/run", "/proc", "/sys", "/dev")

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo /bin/false > /proc/sys/kernel/modprobe
for kv in $(cat /proc/cmdline); do
  case "$kv" in persona.host=*) hostname "${kv#persona.host=}" ;; esac
done
ip link set lo up
echo "persona guest $(hostname) up at $(cut -d' ' -f1 /proc/uptime) s" > /dev/ttyS0
while true; do
  /bin/sh /etc/persona/agent.sh 2>/dev/ttyS0
  sleep 0.2
done
"""

AGENT = r"""#!/bin/sh
# persona guest agent: framed requests on the second serial port (see persona/vm/protocol.py)
TTY=/dev/ttyS1
stty -F $TTY raw -echo
exec <$TTY >$TTY
echo "READY $(cat /proc/sys/kernel/random/boot_id) $(cut -d' ' -f1 /proc/uptime)"
export PERSONA_DATA=/run/req.data
while read -r kw id to n m; do
  [ "$kw" = REQ ] || continue
  # one read of both parts: head buffers, a second head on the tty could lose bytes
  head -c "$((n + m))" > /run/req.all
  if head -c "$n" /run/req.all | base64 -d > /run/req.sh 2>/run/err &&
     tail -c "+$((n + 1))" /run/req.all | base64 -d > /run/req.data 2>/run/err; then
    timeout -s KILL "$to" /bin/sh /run/req.sh </dev/null >/run/out 2>/run/err
    rc=$?
  else
    : > /run/out
    rc=125
  fi
  echo "RES $id $rc $(wc -c < /run/out) $(wc -c < /run/err)"
  base64 /run/out
  echo "--"
  base64 /run/err
  echo "END $id"
done
"""
