#!/usr/bin/env python3
"""A second load client, in Python with aiohttp: the kind of client issue #13 measured with.

    scripts/aioload.py --url URL [--method PUT] [--header 'K: V']... --size BYTES
                       --count N --concurrency C [--retry-503]

The same arguments and the same JSON on stdout as the benches crate's `load` bin (wall_s,
uploads_per_s, p50_ms, p99_ms, errors, first_error, retries_503), so `scripts/bench-peers.sh
--client aiohttp` can put it in `load`'s place. `{n}` in the URL is the upload's number; the
body is `%PDF-1.7` and random bytes, built once. One aiohttp session with a connection pool
of C, C tasks taking the next number until N are sent. A 503 is sent again after 100 ms
(with --retry-503); the latency is then from the first attempt. The client spends its own
CPU on the same machine (about 0.3 ms per small upload on a 2-vCPU EPYC): `client_cpu_ms`
per upload is reported so it can be set beside the server's.

Needs aiohttp (`python3 -m pip install aiohttp`)."""
import argparse, asyncio, json, os, sys, time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--method", default="POST")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--retry-503", action="store_true")
    return p.parse_args()


async def run(args):
    import aiohttp

    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    body = b"%PDF-1.7\n" + os.urandom(max(args.size - 9, 0))
    latencies, errors, retries = [], [], 0
    next_n = 0
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker():
            nonlocal next_n, retries
            while next_n < args.count:
                n = next_n
                next_n += 1
                url = args.url.replace("{n}", str(n))
                started = time.perf_counter()
                while True:
                    try:
                        async with session.request(args.method, url, data=body, headers=headers) as res:
                            answer = await res.read()
                            status = res.status
                    except aiohttp.ClientError as e:
                        errors.append(str(e))
                        break
                    if args.retry_503 and status == 503:
                        retries += 1
                        await asyncio.sleep(0.1)
                        continue
                    if not 200 <= status < 300:
                        errors.append(f"status {status}: {answer[:200].decode('utf-8', 'replace')}")
                    break
                latencies.append(time.perf_counter() - started)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(q):
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000 if latencies else 0.0

    return dict(url=args.url, size=args.size, count=args.count, concurrency=args.concurrency,
                wall_s=wall, uploads_per_s=args.count / wall,
                mib_per_s=args.count * args.size / 1048576 / wall,
                p50_ms=pct(0.5), p99_ms=pct(0.99), errors=len(errors),
                first_error=errors[0] if errors else None, retries_503=retries,
                client_cpu_ms=time.process_time() * 1000 / max(args.count, 1))


if __name__ == "__main__":
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        sys.exit("aiohttp is missing: python3 -m pip install aiohttp")
    print(json.dumps(asyncio.run(run(parse_args()))))
