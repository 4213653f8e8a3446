"""A Service's part of kube-proxy, for the pods podman runs: listen on each Service port and pass
every connection to one of the Service's pods at the target port, taking the pods in turn.
Standard library only: it runs in fintech-base, in a container named after the Service.

    python3 forward.py 80=fintech-serving-0:3000,fintech-serving-1:3000 [PORT=HOST:PORT,...]
"""

import asyncio
import itertools
import signal
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def handler(endpoints: list[tuple[str, int]]):
    turns = itertools.cycle(endpoints)

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        host, port = next(turns)
        try:
            pod_reader, pod_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()  # no pod answers: the client sees the connection refused
            return
        await asyncio.gather(pipe(client_reader, pod_writer), pipe(pod_reader, client_writer))

    return handle


async def main(specs: list[str]) -> None:
    servers = []
    for spec in specs:
        port, targets = spec.split("=", 1)
        endpoints = [(host, int(target)) for host, target in (t.rsplit(":", 1) for t in targets.split(","))]
        servers.append(await asyncio.start_server(handler(endpoints), "0.0.0.0", int(port)))
        print(f"forward: :{port} -> {targets}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
