"""A corpus of hostile HTTP/1.1 byte strings: requests a client sends a router, and
responses a backend sends back (issue 8's fuzzing suite, HTTP part).

Each request case is `Case(name, data, expect, half_close)`: `expect` is "refuse" (the
router must answer 4xx/5xx or close) or "safe" (a shape that is odd but unambiguous, which
may be served). Wherever a message could be framed two ways, the second reading hides a
request for `/smuggled` (or, in responses, a body saying SMUGGLED): a recording backend
that ever sees `/smuggled`, or a client that ever reads SMUGGLED, means a smuggle.
"""

from __future__ import annotations

from dataclasses import dataclass

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: hello\r\n\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expect: str = "refuse"
    half_close: bool = False


# Transfer-Encoding values and header spellings seen in smuggling write-ups (PortSwigger's
# "HTTP request smuggling", RFC 9112 §6.3, llhttp's lenient flags).
TE_VALUES = [
    b"chunked", b" chunked", b"chunked ", b"\tchunked", b"Chunked", b"CHUNKED", b"chunked,",
    b", chunked", b"chunked, identity", b"identity, chunked", b"gzip, chunked", b"chunked, gzip",
    b"xchunked", b"chunkedx", b"chunk", b"chunked;", b'"chunked"', b"chun ked", b"identity",
    b"chunked\x0b", b"\x0bchunked", b"chunked\x00", b"gzip", b"deflate, chunked",
    b"chunked, chunked", b"cHuNkEd", b"chunked\r\n ", b"chunked\x85", b"\xffchunked",
]
TE_NAMES = [
    b"Transfer-Encoding", b"transfer-encoding", b"TRANSFER-ENCODING", b"Transfer-Encoding ",
    b" Transfer-Encoding", b"Transfer-Encoding\t", b"Transfer_Encoding", b"Transfer-Encodin",
    b"X-Transfer-Encoding", b"Transfer-Encoding\x00",
]


def _valid_te(name: bytes, value: bytes) -> bool:
    return name.lower() == b"transfer-encoding" and value.strip(b" \t").lower() == b"chunked"


def _head(lines: list[bytes], line: bytes = b"POST /c HTTP/1.1") -> bytes:
    return b"\r\n".join([line, b"Host: hello", *lines]) + b"\r\n\r\n"


def request_cases() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    chunked_hiding = b"0\r\n\r\n" + SMUGGLED  # CL reader: body; TE reader: second request
    te_body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    # --- CL.TE and TE.CL with every TE spelling: always ambiguous, always refused
    for name in TE_NAMES:
        for value in TE_VALUES:
            te = name + b": " + value
            # another header's name (X-Transfer-Encoding): framed by CL alone, served
            other = name in (b"Transfer-Encodin", b"X-Transfer-Encoding")
            add(Case(f"CL.TE {name!r}: {value!r}",
                     _head([b"Content-Length: %d" % len(chunked_hiding), te]) + chunked_hiding,
                     "safe" if other else "refuse"))
            if name in (b"Transfer-Encoding", b" Transfer-Encoding", b"Transfer_Encoding"):
                add(Case(f"TE.CL {name!r}: {value!r}",
                         _head([te, b"Content-Length: 4"]) + te_body))
    # --- TE alone, obfuscated: refused unless it is plainly `chunked`
    for value in TE_VALUES:
        te = b"Transfer-Encoding: " + value
        if _valid_te(b"transfer-encoding", value):
            continue
        add(Case(f"TE only {value!r}", _head([te]) + chunked_hiding))
    add(Case("TE twice", _head([b"Transfer-Encoding: chunked",
                                b"Transfer-Encoding: identity"]) + chunked_hiding))
    add(Case("TE twice chunked", _head([b"Transfer-Encoding: chunked",
                                        b"Transfer-Encoding: chunked"]) + chunked_hiding))
    add(Case("TE obs-fold", _head([b"Transfer-Encoding:", b" chunked"]) + chunked_hiding))
    add(Case("TE on HTTP/1.0", _head([b"Transfer-Encoding: chunked",
                                      b"Content-Length: %d" % len(chunked_hiding)],
                                     b"POST /c HTTP/1.0") + chunked_hiding))
    # --- Content-Length shapes
    body = b"abcde" + SMUGGLED
    for a, b_ in [(b"5", b"5"), (b"5", b"6"), (b"5", b"45"), (b"0", b"5"), (b"45", b"5")]:
        add(Case(f"duplicate CL {a!r} {b_!r}",
                 _head([b"Content-Length: " + a, b"Content-Length: " + b_]) + body))
    for v in [b"5, 5", b"5,6", b"+5", b"-5", b"0x5", b"5 5", b"5.0", b"5e0", b" 5 ",
              b"99999999999999999999999", b"18446744073709551616", b"5\x00", b"\x005", b"",
              b"five", b"5;", b"05a", b"\t", b"1_0"]:
        if v == b" 5 ":  # valid (OWS around the value): what follows would be a real request
            add(Case(f"CL {v!r}", _head([b"Content-Length: " + v]) + b"abcde", "safe"))
        else:
            add(Case(f"CL {v!r}", _head([b"Content-Length: " + v]) + body))
    add(Case("CL obs-fold", _head([b"Content-Length:", b" 5"]) + body))
    add(Case("CL name space", _head([b"Content-Length : 5"]) + body))
    add(Case("CL underscore", _head([b"Content_Length: 5"]) + b"abcde", "safe"))
    # --- line endings
    for i, d in enumerate([
        b"GET /c HTTP/1.1\nHost: hello\n\n",
        b"GET /c HTTP/1.1\r\nHost: hello\n\n",
        b"GET /c HTTP/1.1\r\nHost: hello\r\n\n",
        b"GET /c HTTP/1.1\rHost: hello\r\r",
        b"GET /c HTTP/1.1\r\nHost: hello\rX: y\r\n\r\n",
        b"GET /c HTTP/1.1\r\nHost: hello\r\nX: y\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: hello\r\nTransfer-Encoding: chunked\r\n\r\n5\nabcde\n0\n\n",
        b"POST /c HTTP/1.1\r\nHost: hello\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde0\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: hello\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n"
        b"\n" + SMUGGLED,
        b"GET /c HTTP/1.1\r\n\nHost: hello\r\n\r\n",
        b"\r\n\r\nGET /c HTTP/1.1\r\nHost: hello\r\n\r\n",
    ]):
        add(Case(f"line ending {i}", d, "safe" if i == 10 else "refuse"))
    # --- obs-fold and whitespace in headers
    for d in [b"X-A: a\r\n b", b"X-A: a\r\n\tb", b" X-A: a", b"X-A : a", b"X-A\t: a", b"X A: a",
              b": novalue", b"X-A", b"X-A:: a", b"Host: hello\r\n Host2: evil"]:
        # `X-A:: a` is the value ": a", valid
        add(Case(f"header {d[:20]!r}", _head([d], b"GET /c HTTP/1.1"),
                 "safe" if d == b"X-A:: a" else "refuse"))
    # --- NUL and control bytes
    for where, d in [
        ("method", b"G\x00T /c HTTP/1.1\r\nHost: hello\r\n\r\n"),
        ("url", b"GET /c\x00x HTTP/1.1\r\nHost: hello\r\n\r\n"),
        ("url-ctl", b"GET /c\x01x HTTP/1.1\r\nHost: hello\r\n\r\n"),
        ("url-del", b"GET /c\x7fx HTTP/1.1\r\nHost: hello\r\n\r\n"),
        ("version", b"GET /c HTTP/1.1\x00\r\nHost: hello\r\n\r\n"),
        ("name", b"GET /c HTTP/1.1\r\nHo\x00st: hello\r\n\r\n"),
        ("value", b"GET /c HTTP/1.1\r\nHost: hello\r\nX: a\x00b\r\n\r\n"),
        ("value-ctl", b"GET /c HTTP/1.1\r\nHost: hello\r\nX: a\x01b\r\n\r\n"),
        ("value-del", b"GET /c HTTP/1.1\r\nHost: hello\r\nX: a\x7fb\r\n\r\n"),
        ("host", b"GET /c HTTP/1.1\r\nHost: hel\x00lo\r\n\r\n"),
        ("leading", b"\x00GET /c HTTP/1.1\r\nHost: hello\r\n\r\n"),
        ("body-chunk-size", b"POST /c HTTP/1.1\r\nHost: hello\r\nTransfer-Encoding: chunked\r\n"
                            b"\r\n5\x00\r\nabcde\r\n0\r\n\r\n"),
    ]:
        add(Case(f"NUL/control in {where}", d))
    # --- chunk sizes and chunk framing
    pre = b"POST /c HTTP/1.1\r\nHost: hello\r\nTransfer-Encoding: chunked\r\n\r\n"
    for d in [b"ffffffffffffffffffff\r\n", b"10000000000000000\r\nx", b"-1\r\nx\r\n0\r\n\r\n",
              b"0x5\r\nabcde\r\n0\r\n\r\n", b" 5\r\nabcde\r\n0\r\n\r\n",
              b"5 \r\nabcde\r\n0\r\n\r\n",
              b"5\r\nabcdef\r\n0\r\n\r\n", b"5\r\nabc\r\n0\r\n\r\n", b"g\r\n", b"\r\n",
              b"5;a=\x00\r\nabcde\r\n0\r\n\r\n", b"5;\r\nabcde\r\n0\r\n\r\n",
              b"5\r\nabcde\r\n0\r\nX: y\r\nbad trailer\r\n\r\n", b"5\r\nabcde\r\n0\r\n\r\r\n",
              b"1" * 70 + b"\r\n", b"5\r\nabcde\r\n\r\n",
              b"5\r\nabcde\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
              b"5\r\nabcde\r\n00\r\n\r\n"]:
        safe = d in (b"5;\r\nabcde\r\n0\r\n\r\n", b"5\r\nabcde\r\n00\r\n\r\n",
                     b"5\r\nabcde\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n")
        add(Case(f"chunk {d[:24]!r}", pre + d, "safe" if safe else "refuse"))
    # --- methods
    for m in [b"G ET", b"GET\t", b"get", b"FOO", b"G@T", b"GET(", b"\xc3\x89T", b"X" * 300, b"",
              b"CONNECT", b"PRI", b"GET /c GET"]:
        line = m + b" /c HTTP/1.1" if m != b"CONNECT" else b"CONNECT hello:80 HTTP/1.1"
        add(Case(f"method {m[:20]!r}", line + b"\r\nHost: hello\r\n\r\n"))
    add(Case("PRI h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
    # --- versions and HTTP/0.9 shapes
    for v in [b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.0", b"HTTP/1", b"HTTP/11",
              b"http/1.1", b"HTTP/1.1x", b"HTTP/ 1.1", b"HTTP/1.1 ", b"HTTPS/1.1", b"HTTP/9.9",
              b"HTTP/1.01"]:
        add(Case(f"version {v!r}", b"GET /c " + v + b"\r\nHost: hello\r\n\r\n"))
    for d in [b"GET /c\r\nHost: hello\r\n\r\n", b"GET /c\r\n\r\n", b"GET /c\r\n",
              b"GET /\r\nHost: hello\r\n\r\n" + SMUGGLED, b"GET /c \r\nHost: hello\r\n\r\n",
              b"GET\r\n\r\n", b"GET /c HTTP/1.1 extra\r\nHost: hello\r\n\r\n"]:
        add(Case(f"HTTP/0.9-ish {d[:24]!r}", d))
    # --- Host
    for hs in [[b"Host: hello", b"Host: evil"], [b"Host: hello", b"Host: hello"],
               [b"Host: hel lo"], [b"Host: a/b"], [b"Host: a@evil"], [b"Host: hello:8o"],
               [b"Host: [::1"], [b"Host: hello\\evil"], [b"Host: hello?x"], [b"Host: hello#x"],
               [b"Host: hello\"x"], [b"Host: <hello>"]]:
        add(Case(f"host {hs!r}", b"\r\n".join([b"GET /c HTTP/1.1", *hs]) + b"\r\n\r\n"))
    add(Case("absolute-form two Hosts",
             b"GET http://hello/c HTTP/1.1\r\nHost: hello\r\nHost: evil\r\n\r\n"))
    add(Case("absolute-form bad url", b"GET http://hel lo/c HTTP/1.1\r\nHost: hello\r\n\r\n"))
    add(Case("absolute-form userinfo", b"GET http://a@/c HTTP/1.1\r\nHost: hello\r\n\r\n"))
    # --- request line oddities
    for d in [b"GET /a b HTTP/1.1", b"GET  HTTP/1.1", b"GET /c\tHTTP/1.1",
              b"GET /c#frag\x00 HTTP/1.1",
              b" GET /c HTTP/1.1", b"GET /c  HTTP/1.1 x", b"GET /\xff HTTP/1.1\x00"]:
        add(Case(f"request line {d[:24]!r}", d + b"\r\nHost: hello\r\n\r\n"))
    # --- oversized heads
    add(Case("70 KB target", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: hello\r\n\r\n"))
    add(Case("70 KB header", _head([b"X-Big: " + b"b" * 70_000], b"GET /c HTTP/1.1")))
    add(Case("5000 headers (40 KB, under the 64 KB head limit)",
             _head([b"X-%d: v" % i for i in range(5000)], b"GET /c HTTP/1.1"), "safe"))
    add(Case("70 KB header name", _head([b"X" * 70_000 + b": v"], b"GET /c HTTP/1.1")))
    add(Case("endless head", b"GET /c HTTP/1.1\r\nHost: hello\r\n" + b"X-y: z\r\n" * 20_000))
    # --- truncated heads and bodies, then a half-close (or silence: the body timeout)
    for d in [b"GET /c HTTP/1.1\r\nHost: hel", b"GET /c HTTP/1.1\r\nHost: hello\r\n",
              b"POST /c HTTP/1.1\r\nHost: hello\r\nContent-Length: 100\r\n\r\nabc",
              pre + b"5\r\nab", pre + b"5\r\nabcde\r\n", pre + b"5\r\nabcde\r\n0\r\n"]:
        add(Case(f"truncated {d[-16:]!r} + half-close", d, half_close=True))
        add(Case(f"truncated {d[-16:]!r} + silence", d))
    # --- a smuggled request in a body that is honestly framed is only a body (served)
    add(Case("honest CL body holding a request",
             _head([b"Content-Length: %d" % len(SMUGGLED)]) + SMUGGLED, "safe"))
    add(Case("honest chunked body holding a request",
             _head([b"Transfer-Encoding: chunked"]) + te_body, "safe"))
    add(Case("Upgrade h2c", _head([b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
                                   b"HTTP2-Settings: AAMAAABkAAQAAP__"], b"GET /c HTTP/1.1")
             + SMUGGLED, "safe"))
    add(Case("Expect garbage", _head([b"Expect: 100-continue", b"Content-Length: 5"]) + b"abcde",
             "safe"))
    return cases


# Odd but harmless: the reason phrase is never forwarded (the standard one is sent).
SAFE_RESPONSES = {b"HTTP/1.1 200 OK\x00\r\nContent-Length: 2\r\n\r\nab"}


def response_cases() -> list[bytes]:
    """What a broken or hostile backend answers to `GET /r/<n>`."""
    ok = b"HTTP/1.1 200 OK\r\n"
    hidden = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
    chunk_hidden = b"0\r\n\r\n" + hidden
    out: list[bytes] = []
    for value in TE_VALUES:
        out.append(ok + b"Content-Length: %d\r\nTransfer-Encoding: " % len(chunk_hidden) + value
                   + b"\r\n\r\n" + chunk_hidden)
        if value.strip(b" \t").lower() != b"chunked":
            out.append(ok + b"Transfer-Encoding: " + value + b"\r\n\r\n" + chunk_hidden)
    out += [
        ok + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        ok + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        ok + b"Content-Length: -1\r\n\r\nab",
        ok + b"Content-Length: 2, 3\r\n\r\nabc",
        ok + b"Content-Length: 99999999999999999999999\r\n\r\nab",
        ok + b"Content-Length: abc\r\n\r\n",
        ok + b"Content-Length: 1000\r\n\r\nshort",  # truncated, then closed
        ok + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
        ok + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabc",  # truncated chunk
        ok + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        ok + b"Transfer-Encoding: chunked\r\n\r\n5\r\nabcdefgh\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nab",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nX\x00: a\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\n X: a\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 20 Short\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 2000 Long\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 -200 Neg\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 abc Nan\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/0.9 200 OK\r\nContent-Length: 2\r\n\r\nab",
        b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab",
        b"ICY 200 OK\r\n\r\nab",
        b"RTSP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1200 OK\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\x00\r\nContent-Length: 2\r\n\r\nab",
        b"\x00HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab",
        b"SPLAT \x00\x01 not http\r\n\r\n",
        b"",  # closed without a byte
        b"HTTP/1.1 200 O",  # closed mid status line
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",  # closed mid head
        b"HTTP/1.1 200 OK\r\n" + b"X-Filler: " + b"f" * 70_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-y: z\r\n" * 20_000 + b"\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n" * 50 + b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nx",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nxx",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nabcde" + hidden,
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk_hidden,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk_hidden,
        b"HTTP/1.1 200 OK\r\nContent-Length:\r\n 5\r\n\r\nabcde",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" + chunk_hidden,
    ]
    return out
