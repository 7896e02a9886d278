"""RespClient against a real redis-server (the session one, or our own to kill/restart/password-protect)
and against raw asyncio servers that misbehave on purpose. Every async test runs on uvloop (what the
gateway runs) and on the stock asyncio loop; the parser-sensitive ones also on both readers."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import shutil
import ssl
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.ratelimit import resp
from gateway.ratelimit.resp import PyReader, RespClient, RespConnectionError, RespError, encode
from tests.support.procs import RedisServer, free_port

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
try:
    import hiredis

    READERS: dict[str, Callable[[], Any]] = {"hiredis": lambda: hiredis.Reader(replyError=RespError), "python": PyReader}
except ImportError:  # pragma: no cover
    READERS = {"python": PyReader}


def on_loops(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on each loop, bounded so that a hang fails instead of stalling the run."""

    def wrapper(loop_kind: str, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop_kind]) as runner:
            runner.run(asyncio.wait_for(fn(**kwargs), 15))

    sig = inspect.signature(fn)
    loop_param = inspect.Parameter("loop_kind", inspect.Parameter.KEYWORD_ONLY)
    wrapper.__signature__ = sig.replace(parameters=[*sig.parameters.values(), loop_param])  # type: ignore[attr-defined]
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    wrapper.pytestmark = getattr(fn, "pytestmark", [])  # type: ignore[attr-defined]
    return pytest.mark.parametrize("loop_kind", list(LOOPS))(wrapper)


@pytest.fixture(autouse=True)
def patient_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The product's 0.25 s connect deadline keeps a dead Redis off the request path; here it would
    fail a connect+handshake on a machine busy with other work. Tests that are about the deadline
    pass `connect_timeout` themselves."""
    defaults = RespClient.__init__.__kwdefaults__
    assert defaults is not None and "connect_timeout" in defaults
    monkeypatch.setitem(defaults, "connect_timeout", 10.0)


@pytest.fixture(params=list(READERS))
def reader_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(resp, "new_reader", READERS[request.param])
    return str(request.param)


@pytest.fixture
def key() -> str:
    return f"resp-{uuid.uuid4().hex[:10]}"



@pytest.fixture(scope="module")
def auth_redis() -> Iterator[RedisServer]:
    """A server with `requirepass secret` and ACL users alice/bob."""
    server = RedisServer().start()
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", "alice", "on", ">alicepw", "~*", "+@all")
    admin.execute_command("ACL", "SETUSER", "bob", "on", ">p@ss:w/rd", "~*", "+@all")
    admin.config_set("requirepass", "secret")
    admin.close()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


async def fixed_window(client: RespClient, keys: list[tuple[str, int]]) -> list[Any]:
    cmds: list[tuple[Any, ...]] = []
    for k, window in keys:
        cmds += [("SET", k, 0, "EX", window, "NX"), ("INCR", k), ("TTL", k)]
    return await client.execute(cmds)


# --- the reader, without a socket ----------------------------------------------------------------
STREAMS = [
    pytest.param(b"+OK\r\n", b"OK", id="simple"),
    pytest.param(b":-42\r\n", -42, id="integer"),
    pytest.param(b"$5\r\nhello\r\n", b"hello", id="bulk"),
    pytest.param(b"$4\r\na\r\nb\r\n", b"a\r\nb", id="bulk_binary_safe"),
    pytest.param(b"$0\r\n\r\n", b"", id="bulk_empty"),
    pytest.param(b"$-1\r\n", None, id="bulk_null"),
    pytest.param(b"*-1\r\n", None, id="array_null"),
    pytest.param(b"*0\r\n", [], id="array_empty"),
    pytest.param(b"*3\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n*-1\r\n", [[1, [b"x"]], None, None], id="nested"),
]


@pytest.mark.parametrize("reader_name", list(READERS))
@pytest.mark.parametrize(("stream", "expected"), STREAMS)
def test_reader_whole_and_byte_by_byte(reader_name: str, stream: bytes, expected: Any) -> None:
    whole = READERS[reader_name]()
    whole.feed(stream + stream)
    assert [whole.gets(), whole.gets(), whole.gets()] == [expected, expected, False]
    trickle = READERS[reader_name]()
    got = []
    for i in range(len(stream)):
        trickle.feed(stream[i : i + 1])
        while (reply := trickle.gets()) is not False:
            got.append(reply)
    assert got == [expected]


@pytest.mark.parametrize("reader_name", list(READERS))
def test_reader_errors_are_values_also_nested(reader_name: str) -> None:
    reader = READERS[reader_name]()
    reader.feed(b"-ERR top\r\n*2\r\n:1\r\n-WRONGTYPE inner\r\n")
    top, arr = reader.gets(), reader.gets()
    assert isinstance(top, RespError) and str(top) == "ERR top"
    assert arr[0] == 1 and isinstance(arr[1], RespError) and str(arr[1]) == "WRONGTYPE inner"


@pytest.mark.parametrize("reader_name", list(READERS))
def test_reader_rejects_unknown_type_byte(reader_name: str) -> None:
    reader = READERS[reader_name]()
    reader.feed(b"?what\r\n")
    with pytest.raises(Exception):  # noqa: B017 - hiredis.ProtocolError or ValueError
        reader.gets()


def test_encode_arguments() -> None:
    assert b"".join(encode([("SET", b"k\xff", 0, "EX", -1)])) == (
        b"*5\r\n$3\r\nSET\r\n$2\r\nk\xff\r\n$1\r\n0\r\n$2\r\nEX\r\n$2\r\n-1\r\n"
    )


@pytest.mark.parametrize("bad", [pytest.param(True, id="bool"), pytest.param(1.5, id="float"), pytest.param(None, id="none")])
def test_encode_refuses_ambiguous_arguments(bad: Any) -> None:
    with pytest.raises(TypeError):
        encode([("SET", "k", bad)])


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        pytest.param("http://127.0.0.1:6379/0", {}, id="scheme"),
        pytest.param("redis://127.0.0.1:6379/x", {}, id="db_not_int"),
        pytest.param("redis://127.0.0.1:6379/0", {"connections": 0}, id="no_connections"),
    ],
)
def test_bad_configuration_fails_at_construction(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RespClient(url, **kwargs)


# --- against the session redis ---------------------------------------------------------------------
@on_loops
async def test_fixed_window_batch_matches_redis_py(redis_srv: RedisServer, reader_kind: str, key: str) -> None:
    client, ref = RespClient(redis_srv.url), redis.asyncio.Redis.from_url(redis_srv.url)
    try:
        for _ in range(3):
            ours = await fixed_window(client, [(key + ":a", 10), (key + ":b", 900)])
            pipe = ref.pipeline(transaction=True)
            for k, window in [(key + ":ra", 10), (key + ":rb", 900)]:
                pipe.set(k, 0, ex=window, nx=True)
                pipe.incr(k)
                pipe.ttl(k)
            theirs = await pipe.execute()
            assert [bool(x) for x in ours[0::3]] == [bool(x) for x in theirs[0::3]]  # b"OK"/None vs True/None
            assert ours[1::3] == theirs[1::3] and ours[2::3] == theirs[2::3]
        assert ours[1::3] == [3, 3] and ours[2::3] == [10, 900]
    finally:
        await client.close()
        await ref.aclose()


@pytest.mark.parametrize("connections", [1, 2])
@on_loops
async def test_200_concurrent_calls_get_their_own_replies(
    redis_srv: RedisServer, reader_kind: str, key: str, connections: int
) -> None:
    client = RespClient(redis_srv.url, connections=connections)
    try:
        results = await asyncio.gather(*(client.execute([("INCR", key), ("ECHO", f"call-{i}")]) for i in range(200)))
    finally:
        await client.close()
    assert [r[1] for r in results] == [b"call-%d" % i for i in range(200)]
    counts = [r[0] for r in results]
    # one connection: FIFO end to end; two: each connection's order is kept, together they cover 1..200
    assert (counts if connections == 1 else sorted(counts)) == list(range(1, 201))


@on_loops
async def test_nested_and_null_replies(redis_srv: RedisServer, reader_kind: str, key: str) -> None:
    client = RespClient(redis_srv.url)
    try:
        await client.execute([("XADD", key, "1-1", "f", "v"), ("XADD", key, "2-1", "g", "")], transaction=False)
        got = await client.execute(
            [("XRANGE", key, "-", "+"), ("GET", key + ":nope"), ("BLPOP", key + ":list", 1), ("LRANGE", key + ":nope", 0, -1)]
        )
    finally:
        await client.close()
    # BLPOP does not block inside MULTI: an empty list answers a null array
    assert got == [[[b"1-1", [b"f", b"v"]], [b"2-1", [b"g", b""]]], None, None, []]


@on_loops
async def test_error_inside_exec_comes_back_as_a_value(redis_srv: RedisServer, key: str) -> None:
    client = RespClient(redis_srv.url)
    try:
        await client.execute([("SET", key, "abc")], transaction=False)
        got = await client.execute([("INCR", key), ("INCR", key + ":n"), ("GET", key)])
        assert isinstance(got[0], RespError) and "not an integer" in str(got[0])
        assert got[1:] == [1, b"abc"]
        plain = await client.execute([("INCR", key), ("PING",)], transaction=False)
        assert isinstance(plain[0], RespError) and plain[1] == b"PONG"
    finally:
        await client.close()


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(("NOSUCHCOMMAND",), id="unknown_command"),
        pytest.param(("INCR",), id="wrong_arity"),
        pytest.param(("GET", "a", "b"), id="too_many_args"),
    ],
)
@on_loops
async def test_error_while_queueing_raises(redis_srv: RedisServer, key: str, bad: tuple[str, ...]) -> None:
    client = RespClient(redis_srv.url, connections=1)
    try:
        with pytest.raises(RespError):
            await client.execute([("INCR", key), bad])
        # nothing ran (EXECABORT) and the connection is still in step
        assert await client.execute([("GET", key), ("ECHO", "next")]) == [None, b"next"]
    finally:
        await client.close()


@on_loops
async def test_select_db(redis_srv: RedisServer, key: str) -> None:
    for url, db in [(f"redis://127.0.0.1:{redis_srv.port}/5", 5), (f"redis://127.0.0.1:{redis_srv.port}?db=4", 4)]:
        client = RespClient(url)
        try:
            await client.execute([("SET", key, url)])
        finally:
            await client.close()
        check = redis.asyncio.Redis(port=redis_srv.port, db=db)
        assert await check.get(key) == url.encode()
        await check.aclose()
    check = redis.asyncio.Redis(port=redis_srv.port, db=0)
    assert await check.get(key) is None
    await check.aclose()


@on_loops
async def test_select_out_of_range_raises(redis_srv: RedisServer) -> None:
    client = RespClient(f"redis://127.0.0.1:{redis_srv.port}/99")
    with pytest.raises(RespError, match="DB index"):
        await client.execute([("PING",)])
    await client.close()


@on_loops
async def test_cancelled_caller_does_not_desynchronise(redis_srv: RedisServer, key: str) -> None:
    client = RespClient(redis_srv.url, connections=1)
    other = RespClient(redis_srv.url)
    try:
        # BLPOP parks on the server: its reply arrives only after we have cancelled its caller
        blocked = asyncio.ensure_future(client.execute([("BLPOP", key + ":q", 5)], transaction=False))
        await asyncio.sleep(0.05)
        behind = asyncio.ensure_future(client.execute([("INCR", key), ("ECHO", "behind")]))
        await asyncio.sleep(0.01)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        await other.execute([("RPUSH", key + ":q", "x")])
        assert await behind == [1, b"behind"]
        # cancelled in bulk, half of them before their write even happened
        calls = [asyncio.ensure_future(client.execute([("INCR", key), ("ECHO", f"c{i}")])) for i in range(20)]
        for call in calls[::2]:
            call.cancel()
        done = await asyncio.gather(*calls[1::2])
        assert [d[1] for d in done] == [b"c%d" % i for i in range(1, 20, 2)]
        assert await client.execute([("GET", key)], transaction=False) == [b"%d" % (1 + len(done))]
        with pytest.raises(TimeoutError):  # a caller's own bound cancels it: same thing
            async with asyncio.timeout(0.05):
                await client.execute([("BLPOP", key + ":q2", "0.2")], transaction=False)
    finally:
        await other.close()
    assert await client.execute([("ECHO", "still in step")], transaction=False) == [b"still in step"]
    await client.close()


# --- auth ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("userinfo", "ok"),
    [
        pytest.param(":secret@", True, id="password"),
        pytest.param("default:secret@", True, id="default_user"),
        pytest.param("alice:alicepw@", True, id="user_password"),
        pytest.param("bob:p%40ss%3Aw%2Frd@", True, id="quoted_password"),
        pytest.param(":wrong@", False, id="wrong_password"),
        pytest.param("alice:secret@", False, id="wrong_user_password"),
        pytest.param("", False, id="no_password"),
    ],
)
@on_loops
async def test_auth(auth_redis: RedisServer, userinfo: str, ok: bool) -> None:
    client = RespClient(f"redis://{userinfo}127.0.0.1:{auth_redis.port}/0")
    try:
        if ok:
            assert await client.execute([("PING",)]) == [b"PONG"]
        else:
            with pytest.raises(RespError):
                await client.execute([("PING",)])
            assert await client.ping() is False
    finally:
        await client.close()


# --- failures ----------------------------------------------------------------------------------------
@on_loops
async def test_server_killed_mid_traffic_then_restarted(own_redis: RedisServer) -> None:
    # Two connections: the BLPOP holds one (a blocking command stalls its connection's FIFO).
    client = RespClient(own_redis.url, connections=2)
    try:
        assert await client.ping() and await client.ping()  # both connections up
        blocked = asyncio.ensure_future(client.execute([("BLPOP", "q", 30)], transaction=False))
        stop, errors, oks = False, [], 0

        async def traffic() -> None:
            nonlocal oks
            while not stop:
                try:
                    await client.execute([("INCR", "n")])
                    oks += 1
                except RespConnectionError as exc:
                    errors.append(exc)
                    await asyncio.sleep(0.001)

        workers = [asyncio.ensure_future(traffic()) for _ in range(8)]
        await asyncio.sleep(0.1)
        own_redis.kill()
        async with asyncio.timeout(2):  # promptly, not after the 30 s BLPOP
            with pytest.raises(RespConnectionError):
                await blocked
        await asyncio.sleep(0.1)
        stop = True
        await asyncio.gather(*workers)
        assert oks > 0 and errors and all(isinstance(e, ConnectionError) for e in errors)
        with pytest.raises(RespConnectionError):  # refused while down: one quick attempt, no hang
            await client.execute([("INCR", "n")])
        assert await client.ping() is False
        own_redis.start()
        assert await client.execute([("INCR", "n")]) == [1] and await client.execute([("INCR", "n")]) == [2]
    finally:
        await client.close()


@on_loops
async def test_connection_refused() -> None:
    client = RespClient(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RespConnectionError) as info:
        await client.execute([("PING",)])
    assert isinstance(info.value, ConnectionError)
    await client.close()


@on_loops
async def test_close_fails_pending_and_later_calls(redis_srv: RedisServer, key: str) -> None:
    client = RespClient(redis_srv.url)
    await client.ping()
    await client.ping()
    pending = asyncio.ensure_future(client.execute([("BLPOP", key, 30)], transaction=False))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(RespConnectionError):
        await pending
    with pytest.raises(RespConnectionError):
        await client.execute([("PING",)])


# --- raw servers: protocol edge cases ---------------------------------------------------------------
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    return data


async def raw_server(
    handler: Handler, accepted: list[int] | None = None, *, unix: Path | None = None, tls: ssl.SSLContext | None = None
) -> tuple[asyncio.Server, int]:
    async def wrapped(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if accepted is not None:
            accepted.append(1)
        try:
            await handler(r, w)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    if unix is not None:
        return await asyncio.start_unix_server(wrapped, str(unix)), 0
    server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


@on_loops
async def test_reply_trickled_byte_by_byte(reader_kind: str) -> None:
    reply = b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*3\r\n:1\r\n$-1\r\n*-1\r\n$5\r\nhe\r\nl\r\n"

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_until(r, b"EXEC\r\n")
        for i in range(len(reply)):
            w.write(reply[i : i + 1])
            await w.drain()
            await asyncio.sleep(0)

    server, port = await raw_server(handler)
    client = RespClient(f"redis://127.0.0.1:{port}")
    try:
        assert await client.execute([("A",), ("B",)]) == [[1, None, None], b"he\r\nl"]
    finally:
        await client.close()
        server.close()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"+OK\r\n+QUEUED\r\n*1\r\n", id="closed_mid_reply"),
        pytest.param(b"?garbage\r\n", id="protocol_error"),
        pytest.param(b"", id="closed_before_reply"),
    ],
)
@on_loops
async def test_broken_reply_fails_pending_and_drops_connection(reader_kind: str, answer: bytes) -> None:
    accepted: list[int] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_until(r, b"EXEC\r\n")
        w.write(answer)
        await w.drain()
        await asyncio.sleep(0.05)
        w.close()

    server, port = await raw_server(handler, accepted)
    client = RespClient(f"redis://127.0.0.1:{port}", connections=1)
    try:
        for expected_accepts in (1, 2):  # the second call reconnects
            with pytest.raises(RespConnectionError):
                await client.execute([("INCR", "k")])
            assert len(accepted) == expected_accepts
    finally:
        await client.close()
        server.close()


@on_loops
async def test_unsolicited_reply_drops_connection() -> None:
    accepted: list[int] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_until(r, b"PING\r\n"):
            w.write(b"+PONG\r\n+EXTRA\r\n")  # one reply too many: the stream can no longer be trusted

    server, port = await raw_server(handler, accepted)
    client = RespClient(f"redis://127.0.0.1:{port}", connections=1)
    try:
        assert await client.ping() is True
        await asyncio.sleep(0.05)
        assert await client.ping() is True
        assert len(accepted) == 2
    finally:
        await client.close()
        server.close()


@on_loops
async def test_connect_timeout_bounds_a_silent_handshake() -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # accepts, never answers AUTH

    server, port = await raw_server(handler)
    client = RespClient(f"redis://:pw@127.0.0.1:{port}/0", connect_timeout=0.1)
    try:
        async with asyncio.timeout(2):
            with pytest.raises(RespConnectionError, match="TimeoutError"):
                await client.execute([("PING",)])
    finally:
        await client.close()
        server.close()


@on_loops
async def test_unix_socket_with_password_and_db() -> None:
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(await read_until(r, b"SELECT\r\n$1\r\n2\r\n"))
        w.write(b"+OK\r\n+OK\r\n")
        seen.append(await read_until(r, b"PING\r\n"))
        w.write(b"+PONG\r\n")
        await asyncio.sleep(1)

    path = Path(tempfile.mkdtemp(prefix="gw-resp-")) / "redis.sock"
    server, _ = await raw_server(handler, unix=path)
    client = RespClient(f"unix://:s%40cret@{path}?db=2")
    try:
        assert await client.ping() is True
        assert seen == [b"*2\r\n$4\r\nAUTH\r\n$6\r\ns@cret\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n", b"*1\r\n$4\r\nPING\r\n"]
    finally:
        await client.close()
        server.close()
        shutil.rmtree(path.parent, ignore_errors=True)


# --- TLS (rediss://) against a raw TLS server; trust comes from SSL_CERT_FILE, as in production ---------
@pytest.fixture(scope="module")
def tls_files() -> Iterator[tuple[Path, Path]]:
    """A self-signed certificate for `localhost` (and its key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="gw-resp-tls-"))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    yield folder / "cert.pem", folder / "key.pem"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    ("host", "trusted", "ok"),
    [
        pytest.param("localhost", True, True, id="verified"),
        pytest.param("localhost", False, False, id="untrusted_cert"),
        pytest.param("127.0.0.1", True, False, id="hostname_mismatch"),
    ],
)
@on_loops
async def test_tls(tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, host: str, trusted: bool, ok: bool) -> None:
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while await read_until(r, b"PING\r\n"):
            w.write(b"+PONG\r\n")

    server, port = await raw_server(handler, tls=server_ctx)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert) if trusted else "/nonexistent")
    monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent")
    client = RespClient(f"rediss://{host}:{port}/", connect_timeout=2)
    try:
        if ok:
            assert await client.execute([("PING",)], transaction=False) == [b"PONG"]
        else:
            with pytest.raises(RespConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.execute([("PING",)], transaction=False)
    finally:
        await client.close()
        server.close()


@on_loops
async def test_concurrent_first_calls_share_one_connect_per_connection() -> None:
    accepted: list[int] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        buf = b""
        while chunk := await r.read(65536):
            buf += chunk
            n, buf = buf.count(b"PING\r\n"), buf[buf.rfind(b"PING\r\n") + 6 :] if b"PING\r\n" in buf else buf
            w.write(b"+PONG\r\n" * n)

    server, port = await raw_server(handler, accepted)
    client = RespClient(f"redis://127.0.0.1:{port}", connections=2)
    try:
        assert await asyncio.gather(*(client.ping() for _ in range(50))) == [True] * 50
        assert len(accepted) == 2
        assert await client.execute([], transaction=False) == []
    finally:
        await client.close()
        server.close()


@on_loops
async def test_disconnect_unsticks_a_silent_connection() -> None:
    """A server that stops answering (half-open TCP): only the caller's bound ends a call, and
    `disconnect()` is how a probe gets a fresh connection instead of queueing behind the stuck one."""
    accepted: list[int] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if len(accepted) == 1:
            await asyncio.sleep(30)  # the first connection goes silent
        while await read_until(r, b"PING\r\n"):
            w.write(b"+PONG\r\n")

    server, port = await raw_server(handler, accepted)
    client = RespClient(f"redis://127.0.0.1:{port}", connections=1)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.ping()
        stuck = asyncio.ensure_future(client.execute([("PING",)], transaction=False))
        await asyncio.sleep(0.01)
        await client.disconnect()
        with pytest.raises(RespConnectionError):
            await stuck
        assert await client.ping() is True and len(accepted) == 2
    finally:
        await client.close()
        server.close()


# --- coalescing: calls made in one loop step share one write ------------------------------------
@on_loops
async def test_calls_in_one_step_share_one_write(own_redis: RedisServer) -> None:
    client = RespClient(own_redis.url)
    try:
        assert await client.ping()
        conn = client._conns[0]
        assert conn is not None and conn.transport is not None
        writes: list[bytes] = []

        class CountingTransport:
            def __init__(self, real: Any) -> None:
                self.real = real

            def write(self, data: bytes) -> None:
                writes.append(bytes(data))
                self.real.write(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.real, name)

        conn.transport = CountingTransport(conn.transport)  # type: ignore[assignment]
        # 50 callers in the same step, transactions and plain calls mixed: one write, and each
        # caller gets its own replies in order.
        calls = [client.execute([("INCRBY", "n", i)], transaction=i % 2 == 0) for i in range(1, 51)]
        results = await asyncio.gather(*calls)
        assert len(writes) == 1
        assert [r[0] for r in results] == [sum(range(1, i + 1)) for i in range(1, 51)]
        # Calls in later steps get writes of their own (nothing waits for a batch to fill).
        await client.execute([("INCR", "n")])
        await client.execute([("INCR", "n")])
        assert len(writes) == 3
    finally:
        await client.close()


@on_loops
async def test_a_connection_lost_before_its_flush_fails_the_queued_calls(own_redis: RedisServer) -> None:
    client = RespClient(own_redis.url)
    try:
        assert await client.ping()
        conn = client._conns[0]
        assert conn is not None
        pending = asyncio.ensure_future(client.execute([("INCR", "n")]))
        await asyncio.sleep(0)  # queued, not yet written
        conn.abort("test: lost")
        with pytest.raises(RespConnectionError):
            await pending
        assert await client.execute([("INCR", "n")]) == [1]  # the next call reconnects; the lost one never ran
    finally:
        await client.close()
