# Shared QEMU helpers for the tier-3 scripts (sourced, not run).
# Boots under TCG (this machine's KVM does not work for guests), serial to a
# file, and waits for a marker line with a hard timeout.

OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
OVMF_VARS=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}

# qemu_start FIRMWARE(uefi|bios) SERIAL_LOG WORKDIR ARGS... ; sets QEMU_PID
qemu_start() {
  local fw=$1 log=$2 work=$3
  shift 3
  local fwargs=()
  if [ "$fw" = uefi ]; then
    cp "$OVMF_VARS" "$work/OVMF_VARS.fd"
    fwargs=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE"
            -drive "if=pflash,format=raw,unit=1,file=$work/OVMF_VARS.fd")
  fi
  : > "$log"
  local serial=(-serial "file:$log")
  if [ -n "${QEMU_SERIAL_SOCK:-}" ]; then
    # A socket a script can log in through, with everything logged to $log.
    rm -f "$QEMU_SERIAL_SOCK"
    serial=(-chardev "socket,id=ser0,path=$QEMU_SERIAL_SOCK,server=on,wait=off,logfile=$log,logappend=on"
            -serial chardev:ser0)
  fi
  qemu-system-x86_64 -accel tcg -machine q35 -m 1536 -smp "${QEMU_SMP:-2}" \
    -display none -monitor none "${serial[@]}" -no-reboot \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    "${fwargs[@]}" "$@" &
  QEMU_PID=$!
}

# qemu_wait_for LOG REGEX TIMEOUT_S: 0 when the marker appeared, 1 on
# timeout, 2 when QEMU ended first.
qemu_wait_for() {
  local log=$1 re=$2 limit=$3 start=$SECONDS
  while [ $((SECONDS - start)) -lt "$limit" ]; do
    if grep -aEq "$re" "$log" 2>/dev/null; then return 0; fi
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then
      grep -aEq "$re" "$log" 2>/dev/null && return 0
      return 2
    fi
    sleep 2
  done
  return 1
}

qemu_stop() {
  if [ -n "${QEMU_PID:-}" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill "$QEMU_PID" 2>/dev/null
    wait "$QEMU_PID" 2>/dev/null
  fi
  QEMU_PID=
}

# qemu_wait_exit TIMEOUT_S: waits for QEMU to end by itself; prints its status.
qemu_wait_exit() {
  local limit=$1 start=$SECONDS
  while kill -0 "$QEMU_PID" 2>/dev/null; do
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      qemu_stop
      echo timeout
      return 1
    fi
    sleep 2
  done
  wait "$QEMU_PID"
  echo $?
}

# show_log LOG: the tail of a serial log, for CI output on failure.
show_log() {
  echo "----- last 60 lines of $1 -----"
  tail -n 60 "$1" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g'
  echo "----- end of $1 -----"
}
