#!/usr/bin/env python3
"""Log in on a QEMU guest's serial console (a UNIX socket), run commands,
print their output between markers, then power the guest off.

usage: serial_login.py SOCKET USER PASSWORD TIMEOUT CMD...
Each CMD's output is printed as `=== CMD (exit N) [T s]` then its lines; exits 0 when
every command ran (their own exit codes are printed, not judged)."""
import socket
import sys
import time


def main():
    sock_path, user, password, timeout = sys.argv[1:5]
    cmds = sys.argv[5:]
    deadline = time.time() + float(timeout)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.settimeout(1.0)
    buf = b""

    def read_until(token, limit=None):
        nonlocal buf
        end = deadline if limit is None else min(deadline, time.time() + limit)
        while time.time() < end:
            i = buf.find(token)
            if i >= 0:
                out, buf = buf[: i + len(token)], buf[i + len(token):]
                return out
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            buf += chunk
        raise SystemExit(f"serial_login: timed out waiting for {token!r}; last output: {buf[-400:]!r}")

    def send(line):
        s.sendall(line.encode() + b"\r")

    send("")
    read_until(b"login: ")
    send(user)
    read_until(b"Password: ")
    send(password)
    read_until(b"# ")
    # A prompt we control, so output can be cut out exactly. The quotes keep
    # the echoed command line from containing the marker itself.
    send("stty -echo; export TERM=dumb PS1='OPDBUS''-PROMPT# '")
    read_until(b"OPDBUS-PROMPT# ")
    for i, cmd in enumerate(cmds):
        end = f"OPDBUS-END-{i}"
        t0 = time.time()
        send(f"{cmd}; echo \"OPDBUS-E\"\"ND-{i}\" $?")
        out = read_until(f"{end} ".encode())
        rest = read_until(b"\n")
        text = out.decode(errors="replace")
        text = text[: text.rfind(end)]
        lines = text.replace("\r", "").replace("OPDBUS-PROMPT# ", "").split("\n")
        print(f"=== {cmd} (exit {rest.decode().strip()}) [{time.time() - t0:.1f} s]")
        print("\n".join(lines).strip())
        sys.stdout.flush()
    send("systemctl poweroff")
    # Keep the connection open until the guest has taken the command: bytes
    # still queued in the chardev are dropped when the client goes away.
    try:
        read_until(b"Power", limit=60)
    except SystemExit:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
