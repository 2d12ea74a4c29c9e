#!/bin/sh
# Runs inside the installed guest (sent over the serial console by
# ci/qemu-e2e): enables and starts 10 oneshot units once with a systemctl
# loop and once through `op-dbus-agent apply` (D-Bus), resetting in
# between (untimed), and prints one line "BENCH-UNITS systemctl_ms=A agent_ms=B".
set -e
n=10
for i in $(seq 1 $n); do
  printf '[Unit]\nDescription=op-dbus bench %s\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n' "$i" \
    > /etc/systemd/system/opdbus-bench-$i.service
done
systemctl daemon-reload
# One call for all units (one reload), between the two timed runs; the
# guest is powered off afterwards, so there is no reset at the end.
reset() { systemctl disable --now -q $(for i in $(seq 1 $n); do echo opdbus-bench-$i.service; done); }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
for i in $(seq 1 $n); do systemctl enable -q opdbus-bench-$i.service; systemctl start opdbus-bench-$i.service; done
t1=$(ms)
reset
{
  printf '{"version":1,"plugins":{"systemd":{"units":{'
  for i in $(seq 1 $n); do
    [ "$i" = 1 ] || printf ','
    printf '"opdbus-bench-%s.service":{"enabled":true,"active_state":"active"}' "$i"
  done
  printf '}}}}\n'
} > /tmp/bench-units.json
t2=$(ms)
op-dbus-agent apply /tmp/bench-units.json --state-dir /tmp/bench-state >/dev/null
t3=$(ms)
echo "BENCH-UNITS systemctl_ms=$((t1 - t0)) agent_ms=$((t3 - t2))"
