"""A TCP proxy on 127.0.0.1 that holds every request `delay_s` before passing it on: S3's
tens of milliseconds a request, in front of a loopback server (this kernel has no netem).

Each client connection gets its own upstream connection. What the client sends (an HTTP
request, small) is read, held for the delay, then forwarded; what the server answers is
moved back with splice(2) through a pipe, in the kernel, so the proxy costs little CPU even
at hundreds of MB/s. A request counts once per client write, which with keep-alive HTTP
(one request at a time a connection) is once per request."""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import List, Tuple


class DelayProxy:
    def __init__(self, upstream: Tuple[str, int], delay_s: float) -> None:
        self.upstream, self.delay_s = upstream, delay_s
        self.requests = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._open: List[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name="delay-proxy").start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open += [client, server]
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.requests += 1
                time.sleep(self.delay_s)
                server.sendall(data)
        except OSError:
            pass
        finally:
            _shut(server)

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        r, w = os.pipe()
        try:
            while True:
                n = os.splice(server.fileno(), w, 1 << 20)
                if n == 0:
                    break
                while n:
                    n -= os.splice(r, client.fileno(), n)
        except OSError:
            pass
        finally:
            os.close(r)
            os.close(w)
            _shut(client)

    def close(self) -> None:
        self._stopped = True
        self._sock.close()
        with self._lock:
            for s in self._open:
                _shut(s)
                s.close()


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
