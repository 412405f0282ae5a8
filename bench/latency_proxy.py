"""A TCP proxy that delays every chunk from client to server by a fixed latency (benchmarks only).

    python bench/latency_proxy.py LISTEN_PORT TARGET_PORT LATENCY_MS

Each HTTP request reaches the server ``LATENCY_MS`` later, like a network
round trip to a real S3 endpoint; connections are independent, so concurrent
requests wait concurrently.
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while data := await reader.read(65536):
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass  # the other side closed: this connection is over
    finally:
        writer.close()


async def main(listen: int, target: int, latency: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(client_r, server_w, latency), pipe(server_r, client_w, 0))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000))
