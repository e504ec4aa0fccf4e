#!/usr/bin/env python3
"""Captures what real servers send into seeds for Fuzz/FuzzTransport.swift.

Asks nginx, qemu-nbd and nbdkit exactly what the fuzz target asks its fake server, and writes
the servers' bytes (everything they sent, in order) to Fuzz/seeds-transport/:

  nginx-*: HEAD /disk.vmdk, then GET bytes=0-1023 and bytes=1024-2047 on the same keep-alive
           connection (the second only when the file is longer than 1 KiB);
  qemu-nbd-*, nbdkit-*: the handshake for export "disk" (STRUCTURED_REPLY, SET_META_CONTEXT
           base:allocation when structured replies were agreed, GO asking NBD_INFO_BLOCK_SIZE),
           a read of two 4 KiB requests, a block status of up to 1 GiB (with a context) and a
           write of one 4 KiB request.

Needs /usr/sbin/nginx, qemu-nbd, qemu-img and nbdkit (absent ones are skipped).
Run from the repository root: python3 Fuzz/capture-transport-seeds.py
"""

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds-transport")


def wait_for(connect, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        try:
            return connect()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


class Recorder:
    """A socket that keeps every byte received."""

    def __init__(self, sock):
        self.sock = sock
        self.got = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        out = bytearray()
        while len(out) < n:
            b = self.sock.recv(n - len(out))
            if not b:
                raise EOFError("closed after %d of %d bytes" % (len(out), n))
            out += b
        self.got += out
        return bytes(out)

    def recv_until(self, marker):
        out = bytearray()
        while not out.endswith(marker):
            b = self.sock.recv(1)
            if not b:
                break
            out += b
        self.got += out
        return bytes(out)


def save(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    print("%s: %d bytes" % (name, len(data)))


# MARK: nginx


def http_exchange(port, path, ranges):
    r = Recorder(wait_for(lambda: socket.create_connection(("127.0.0.1", port))))

    def request(method, extra=""):
        r.send(
            (
                "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sUser-Agent: vmdk-toolkit\r\n"
                "Accept-Encoding: identity\r\nConnection: keep-alive\r\n\r\n" % (method, path, port, extra)
            ).encode()
        )
        head = r.recv_until(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return head, length

    _, size = request("HEAD")
    for first, last in ranges:
        if first >= size:
            break
        _, length = request("GET", "Range: bytes=%d-%d\r\n" % (first, min(last, size - 1)))
        r.recv_exact(length)
    r.sock.close()
    return bytes(r.got)


def capture_nginx():
    nginx = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else shutil.which("nginx")
    if not nginx:
        print("no nginx: skipped")
        return
    prefix = tempfile.mkdtemp(prefix="fuzz-nginx-")
    os.makedirs(prefix + "/www")
    os.makedirs(prefix + "/tmp")
    with open(prefix + "/www/disk.vmdk", "wb") as f:
        f.write(bytes((i * 7) & 0xFF for i in range(3000)))
    with open(prefix + "/www/small.vmdk", "wb") as f:
        f.write(b"# Disk DescriptorFile\nversion=1\n")
    port = 18000 + os.getpid() % 1000
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "".join("  %s_temp_path %s/tmp/%s;\n" % (t, prefix, t) for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
    with open(prefix + "/nginx.conf", "w") as f:
        f.write(
            "%sdaemon off;\nmaster_process off;\nworker_processes 1;\npid %s/nginx.pid;\n"
            "error_log %s/error.log warn;\nevents { worker_connections 64; }\nhttp {\n%s"
            "  default_type application/octet-stream;\n  access_log off;\n  etag on;\n"
            "  keepalive_timeout 30s;\n  server {\n    listen 127.0.0.1:%d;\n    root %s/www;\n  }\n}\n"
            % (user, prefix, prefix, temps, port, prefix)
        )
    p = subprocess.Popen([nginx, "-c", prefix + "/nginx.conf", "-p", prefix, "-e", prefix + "/error.log"])
    try:
        ranges = [(0, 1023), (1024, 2047)]
        save("nginx-head-two-ranges", http_exchange(port, "/disk.vmdk", ranges))
        save("nginx-small-file", http_exchange(port, "/small.vmdk", ranges))
        save("nginx-404", http_exchange(port, "/missing.vmdk", ranges))
        # A range past the end: 416 with Content-Range bytes */SIZE.
        save("nginx-416", http_exchange(port, "/disk.vmdk", []) + http_416(port))
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(prefix, ignore_errors=True)


def http_416(port):
    r = Recorder(socket.create_connection(("127.0.0.1", port)))
    r.send(b"GET /disk.vmdk HTTP/1.1\r\nHost: x\r\nRange: bytes=5000-5001\r\nConnection: close\r\n\r\n")
    while True:
        b = r.sock.recv(4096)
        if not b:
            break
        r.got += b
    return bytes(r.got)


# MARK: NBD

MAGIC_OPT = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9


def nbd_session(sock):
    r = Recorder(sock)
    greeting = r.recv_exact(18)
    flags = struct.unpack(">H", greeting[16:18])[0]
    r.send(struct.pack(">I", 1 | (flags & 2)))

    def option(opt, data=b""):
        r.send(struct.pack(">QII", MAGIC_OPT, opt, len(data)) + data)

    def reply():
        _, _, rtype, length = struct.unpack(">QIII", r.recv_exact(20))
        return rtype, r.recv_exact(length)

    export = b"disk"
    option(8)
    structured = reply()[0] == 1
    context = None
    if structured:
        option(10, struct.pack(">I", len(export)) + export + struct.pack(">II", 1, 15) + b"base:allocation")
        while True:
            rtype, payload = reply()
            if rtype == 1 or rtype & 0x80000000:
                break
            if rtype == 4:
                context = struct.unpack(">I", payload[:4])[0]
    option(7, struct.pack(">I", len(export)) + export + struct.pack(">HH", 1, 3))
    size = 0
    while True:
        rtype, payload = reply()
        if rtype == 1 or rtype & 0x80000000:
            break
        if rtype == 3 and struct.unpack(">H", payload[:2])[0] == 0:
            size = struct.unpack(">Q", payload[2:10])[0]

    def request(cookie, cmd, offset, length, data=b""):
        r.send(struct.pack(">IHHQQI", 0x25609513, 0, cmd, cookie, offset, length) + data)
        while True:
            magic = struct.unpack(">I", r.recv_exact(4))[0]
            if magic == 0x67446698:
                error = struct.unpack(">I", r.recv_exact(4))[0]
                r.recv_exact(8)
                if cmd == 0 and error == 0:
                    r.recv_exact(length)
                return
            cflags, _, _, clength = struct.unpack(">HHQI", r.recv_exact(16))
            r.recv_exact(clength)
            if cflags & 1:
                return

    # Cookies count from 1 over the connection, as NBDLink hands them out.
    piece = 4096
    request(1, 0, 0, min(size, piece))
    cookie = 2
    if size > piece:
        request(2, 0, piece, min(size - piece, piece))
        cookie = 3
    if context is not None:
        request(cookie, 7, 0, min(size, 1 << 30))
        cookie += 1
    request(cookie, 1, 0, min(size, piece), b"\x5a" * min(size, piece))
    sock.close()
    return bytes(r.got)


def unix_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def capture_nbd(name, argv, sock_path):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        save(name, nbd_session(wait_for(lambda: unix_connect(sock_path))))
    finally:
        p.kill()
        p.wait()


def capture_nbd_servers():
    work = tempfile.mkdtemp(prefix="fuzz-nbd-")
    image = work + "/disk.raw"
    with open(image, "wb") as f:
        f.write(bytes((i * 13) & 0xFF for i in range(4096)))
        f.truncate(1 << 20)
    sock = work + "/nbd.sock"
    try:
        if shutil.which("qemu-nbd"):
            capture_nbd("qemu-nbd-raw", ["qemu-nbd", "-f", "raw", "-x", "disk", "-k", sock, image], sock)
            os.unlink(sock) if os.path.exists(sock) else None
            capture_nbd("qemu-nbd-readonly", ["qemu-nbd", "-r", "-f", "raw", "-x", "disk", "-k", sock, image], sock)
            os.unlink(sock) if os.path.exists(sock) else None
        if shutil.which("nbdkit"):
            capture_nbd("nbdkit-memory", ["nbdkit", "-f", "-U", sock, "-e", "disk", "memory", "64K"], sock)
            os.unlink(sock) if os.path.exists(sock) else None
            capture_nbd("nbdkit-no-sr", ["nbdkit", "-f", "--no-sr", "-U", sock, "-e", "disk", "memory", "64K"], sock)
            os.unlink(sock) if os.path.exists(sock) else None
            capture_nbd(
                "nbdkit-error", ["nbdkit", "-f", "-U", sock, "-e", "disk", "--filter=error", "memory", "64K", "error-rate=100%"], sock
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    capture_nginx()
    capture_nbd_servers()
    sys.exit(0)
