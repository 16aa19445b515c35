"""inclavared's metrics in the Prometheus text exposition format (version 0.0.4), served
over plain HTTP at /metrics on the address given with --metrics."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    sessions_total: int = 0
    sessions_active: int = 0
    session_ends: Counter[str] = field(default_factory=Counter)  # by outcome
    verifications: Counter[tuple[str, str]] = field(default_factory=Counter)  # (party, result)
    bytes_forwarded: Counter[str] = field(default_factory=Counter)  # by direction
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_count: int = 0
    latency_sum: float = 0.0

    def observe_attestation(self, seconds: float) -> None:
        self.latency_count += 1
        self.latency_sum += seconds
        for index, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[index] += 1

    def render(self) -> str:
        lines = [
            "# HELP inclavared_sessions_total Verifier sessions accepted.",
            "# TYPE inclavared_sessions_total counter",
            f"inclavared_sessions_total {self.sessions_total}",
            "# HELP inclavared_sessions_active Verifier sessions open now.",
            "# TYPE inclavared_sessions_active gauge",
            f"inclavared_sessions_active {self.sessions_active}",
            "# HELP inclavared_session_ends_total Sessions ended, by outcome.",
            "# TYPE inclavared_session_ends_total counter",
        ]
        lines += [
            f'inclavared_session_ends_total{{outcome="{outcome}"}} {count}'
            for outcome, count in sorted(self.session_ends.items())
        ]
        lines += [
            "# HELP inclavared_verifications_total Evidence verifications, by party and result.",
            "# TYPE inclavared_verifications_total counter",
        ]
        lines += [
            f'inclavared_verifications_total{{party="{party}",result="{result}"}} {count}'
            for (party, result), count in sorted(self.verifications.items())
        ]
        lines += [
            "# HELP inclavared_forwarded_bytes_total Application bytes forwarded, by direction.",
            "# TYPE inclavared_forwarded_bytes_total counter",
        ]
        lines += [
            f'inclavared_forwarded_bytes_total{{direction="{direction}"}} {count}'
            for direction, count in sorted(self.bytes_forwarded.items())
        ]
        lines += [
            "# HELP inclavared_attestation_seconds Time to answer a get-evidence request.",
            "# TYPE inclavared_attestation_seconds histogram",
        ]
        lines += [
            f'inclavared_attestation_seconds_bucket{{le="{bound}"}} {count}'
            for bound, count in zip(LATENCY_BUCKETS, self.latency_buckets, strict=True)
        ]
        lines += [
            f'inclavared_attestation_seconds_bucket{{le="+Inf"}} {self.latency_count}',
            f"inclavared_attestation_seconds_sum {self.latency_sum:.6f}",
            f"inclavared_attestation_seconds_count {self.latency_count}",
        ]
        return "\n".join(lines) + "\n"


async def serve_metrics(metrics: Metrics, host: str, port: int) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if request.startswith(b"GET ") and path in (b"/metrics", b"/metrics/"):
                status, body = "200 OK", metrics.render().encode()
            else:
                status, body = "404 Not Found", b"not found: GET /metrics\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)
