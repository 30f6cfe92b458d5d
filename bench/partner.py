"""A fast HTTP/1.1 partner on loopback for benchmarks: answers every request 200 at once.

Run as a process of its own (`python bench/partner.py PORT`) so that it has its own core.
Counts requests; `GET /__count` returns the count (not counted itself).

A request whose path starts with `/hang` is answered 200 only after HANG_SECONDS (30 s), or
after the seconds given as `/hang/<seconds>`, without blocking the others (one request at
a time per connection, as HTTP/1.1 clients that do not pipeline send them). Hanging
requests are not in `/__count`: `GET /__hanging` returns how many arrived, `GET
/__hang_open` how many are still waiting (their connection open, no answer yet).
"""

from __future__ import annotations

import asyncio
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
HANG_SECONDS = 30.0


def _text(value: int) -> bytes:
    body = str(value).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class PartnerProtocol(asyncio.Protocol):
    count = 0
    hang_count = 0
    hang_open = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""
        self.hangs: list[asyncio.TimerHandle] = []

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            path = head.split(" ", 2)[1] if head.count(" ") >= 2 else ""
            if head.startswith("GET /__count "):
                body = str(PartnerProtocol.count).encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                     % (len(body), body))
            elif head.startswith("GET /__hanging "):
                self.transport.write(_text(PartnerProtocol.hang_count))
            elif head.startswith("GET /__hang_open "):
                self.transport.write(_text(PartnerProtocol.hang_open))
            elif path.startswith("/hang"):
                self.hang(path)
            else:
                PartnerProtocol.count += 1
                self.transport.write(RESPONSE)

    def hang(self, path: str) -> None:
        seconds = HANG_SECONDS
        tail = path[len("/hang"):].split("?", 1)[0].strip("/")
        if tail:
            seconds = float(tail)
        PartnerProtocol.hang_count += 1
        PartnerProtocol.hang_open += 1
        handle = asyncio.get_running_loop().call_later(seconds, self.answer_hang)
        self.hangs.append(handle)

    def answer_hang(self) -> None:
        self.hangs.pop(0)
        PartnerProtocol.hang_open -= 1
        if not self.transport.is_closing():
            self.transport.write(RESPONSE)

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in self.hangs:  # the client gave up waiting
            handle.cancel()
            PartnerProtocol.hang_open -= 1
        self.hangs = []


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(PartnerProtocol, "127.0.0.1", port, backlog=4096)
    print(f"partner listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
