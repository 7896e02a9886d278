"""Differential test: h1pool's response parsing against h11, on generated valid, borderline and
hostile framing. It fails when h1pool accepts a response h11 refuses, or reads a different
message (status, headers, body). h1pool refusing what h11 accepts is allowed: stricter is safe.

The bytes are fed straight into the connection protocol (split at a generated point, then EOF),
so each example costs microseconds; the example count is bounded to keep the suite fast.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.h1pool.conn import MAX_HEAD, Conn
from gateway.h1pool.pool import H1Pool


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return None

    def abort(self) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


LOOP = asyncio.new_event_loop()
POOL = H1Pool("http://127.0.0.1:9", 4)


def normal(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Names lower-cased, values stripped; h11 lower-cases Transfer-Encoding's value, so both do."""
    out = []
    for k, v in headers:
        k, v = k.lower(), v.strip()
        out.append((k, v.lower() if k == b"transfer-encoding" else v))
    return out


def h1pool_read(data: bytes, split: int) -> tuple[str, Any]:
    conn = Conn(POOL, LOOP)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    conn.start(False, LOOP.time() + 1000)
    for part in (data[:split], data[split:]):
        if part and not conn.closed:
            conn.data_received(part)
    if not conn.closed:
        conn.connection_lost(None)  # EOF
    if conn.timer is not None:
        conn.timer.cancel()
    if conn.exc is not None or not conn.headers_done:
        return "refused", None
    if not conn.done:
        return "incomplete", None
    return "ok", (conn.status, normal(conn.headers), b"".join(conn.chunks))


def h11_read(data: bytes, split: int) -> tuple[str, Any]:
    c = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    c.send(h11.Request(method="GET", target="/", headers=[("Host", "upstream")]))
    c.send(h11.EndOfMessage())
    status, headers, body = None, None, b""
    try:
        for part, eof in ((data[:split], False), (data[split:], False), (b"", True)):
            if eof:
                if c.their_state in (h11.CLOSED, h11.ERROR):
                    break
                c.receive_data(b"")
            elif part:
                c.receive_data(part)
            else:
                continue
            while True:
                ev = c.next_event()
                if ev is h11.NEED_DATA or ev is h11.PAUSED:
                    break
                if isinstance(ev, h11.Response):
                    status, headers = ev.status_code, [(bytes(k), bytes(v)) for k, v in ev.headers.raw_items()]
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage):
                    return "ok", (status, normal(headers or []), body)
                elif isinstance(ev, h11.ConnectionClosed):
                    break
    except h11.RemoteProtocolError:
        return "refused", None
    return "incomplete", None


EOL = st.sampled_from([b"\r\n"] * 6 + [b"\n"])
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=8).map(str.encode)
STATUS = st.sampled_from([
    b"HTTP/1.1 200 OK", b"HTTP/1.1 201 Created", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.0 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200", b"HTTP/1.1 200 ", b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 099 X", b"HTTP/2 200 OK", b"HTTP/1.1  200 OK", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
    b"http/1.1 200 OK", b"HTTP/1.1 200 O\x00K",
])
CL = st.sampled_from([b"0", b"3", b"5", b"10", b" 5", b"5 ", b"5, 5", b"5,6", b"-1", b"+5", b"0x5", b"", b"05",
                      b"99999999999999999999999"])
TE = st.sampled_from([b"chunked", b"Chunked", b"CHUNKED", b"gzip, chunked", b"chunked, gzip", b"chunked, chunked",
                      b" chunked", b"chunked ", b"identity", b"", b"chunked;q=1", b"x-chunked", b"chunked,"])
OTHER = st.one_of(
    st.tuples(TOKEN, st.sampled_from([b"a", b"b c", b"", b"\x7f", b"caf\xc3\xa9", b"x\ty"])).map(lambda t: t[0] + b": " + t[1]),
    st.sampled_from([b"Connection: close", b"Connection: keep-alive", b"X-Folded: a\r\n b", b"X-Space : a",
                     b"X Bad: a", b": empty-name", b"X-NoColon", b"Content-Type: text/plain", b"\tX-Tab: a"]),
)


# Trailer lines: valid, borderline (folded, bare LF, no colon, framing names) and oversized.
TRAILER = st.sampled_from([
    b"X-Trailer: 1\r\n", b"Server-Timing: db;dur=53\r\n", b"X-Empty:\r\n", b"X-Bad Name: 1\r\n",
    b"X-NoColon\r\n", b"X-Folded: a\r\n b\r\n", b"X-Lf: 1\n", b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n", b": empty-name\r\n", b"X-Ctl: a\x00b\r\n",
    b"X-Long: " + b"a" * (MAX_HEAD // 2) + b"\r\n", b"X-Huge: " + b"a" * (MAX_HEAD + 10) + b"\r\n",
])


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    eol = draw(EOL)
    lines = [draw(STATUS)]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["cl", "te", "other", "other"]))
        if kind == "cl":
            lines.append(b"Content-Length: " + draw(CL))
        elif kind == "te":
            lines.append(b"Transfer-Encoding: " + draw(TE))
        else:
            lines.append(draw(OTHER))
    head = eol.join(lines) + eol + eol
    body_kind = draw(st.sampled_from(["raw", "chunked", "bad_chunked"]))
    payload = draw(st.binary(max_size=12))
    if body_kind == "raw":
        return head + payload
    if body_kind == "chunked":
        ext = draw(st.sampled_from([b"", b";a=b", b" ", b";"]))
        trailer = b"".join(draw(st.lists(TRAILER, max_size=3)))
        body = (b"%x%s\r\n%s\r\n" % (len(payload), ext, payload) if payload else b"") + b"0\r\n" + trailer + b"\r\n"
        return head + body
    bad = draw(st.sampled_from([b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n", b"3\nabc\n0\n\n",
                                b"-3\r\nabc\r\n0\r\n\r\n", b"3\r\nabc", b"0x3\r\nabc\r\n0\r\n\r\n",
                                b"ffffffffffffffffff\r\nabc\r\n", b"3\r\nabc\r\n0\r\n"]))
    return head + bad


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=responses(), split_at=st.floats(0, 1))
def test_h1pool_is_never_more_lenient_than_h11(data: bytes, split_at: float) -> None:
    split = int(len(data) * split_at)
    ours, our_msg = h1pool_read(data, split)
    theirs, their_msg = h11_read(data, split)
    if ours == "ok":
        assert theirs == "ok", f"h1pool accepted what h11 refuses ({theirs}): {data!r}"
        assert our_msg == their_msg, f"different message: {our_msg!r} vs {their_msg!r} for {data!r}"


def test_the_generator_reaches_both_verdicts() -> None:
    """Guard against a vacuous property: known inputs give both an accepted and a refused case."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    assert h1pool_read(ok, 5) == h11_read(ok, 5) == ("ok", (200, [(b"content-length", b"3")], b"abc"))
    smuggle = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert h1pool_read(smuggle, 10)[0] == "refused"
    # Found by this test: trailer fields arrived through on_header and joined the response headers.
    trailer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nSet-Cookie: x=1\r\n\r\n"
    assert h1pool_read(trailer, 7) == ("ok", (200, [(b"transfer-encoding", b"chunked")], b""))
    # Found by this test: framing fields in the trailer (h11 refuses a repeated Transfer-Encoding);
    # h1pool refuses any framing field there, repeated or not.
    for fields in (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n",
                   b"Transfer-Encoding: chunked\r\n", b"content-length: 0\r\n"):
        framed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + fields + b"\r\n"
        assert h1pool_read(framed, 7)[0] == "refused", fields
    # A trailer section larger than the head limit is refused while it arrives, in one read or many.
    huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-Huge: " + b"a" * (MAX_HEAD + 1)
    for split in (60, len(huge) // 2, len(huge) - 1):
        assert h1pool_read(huge + b"\r\n\r\n", split)[0] == "refused"
        assert h1pool_read(huge, split)[0] == "refused"  # no end in sight: refused, not "incomplete"


def test_an_endless_trailer_is_refused_before_it_ends() -> None:
    """Bounded as it arrives (not when the line or the message completes): after a little more
    than the head limit of trailer bytes, with no EOF and no end of line, the exchange has failed."""
    conn = Conn(POOL, LOOP)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.start(False, LOOP.time() + 1000)
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: ")
    fed = 0
    while conn.exc is None and fed < 8 * MAX_HEAD:
        conn.data_received(b"a" * 4096)
        fed += 4096
    if conn.timer is not None:
        conn.timer.cancel()
    assert conn.exc is not None and transport.closed, f"still reading after {fed} trailer bytes"
    assert fed <= MAX_HEAD + 4096
    assert b"".join(conn.chunks) == b"abc"  # the body before it was taken as it came
