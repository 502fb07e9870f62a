"""The sans-IO request parser: every request is fed whole AND one byte at a time."""

import pytest

from unsloth_min.http import HttpError, Limits, Request, RequestParser, is_token_list, parse_media_type

SMALL = Limits(max_request_line=64, max_header_bytes=128, max_headers=4, max_body=100)


def _drain(parser: RequestParser) -> list[Request]:
    out = []
    while (request := parser.maybe_request()) is not None:
        out.append(request)
    return out


def _parse(data: bytes, limits: Limits, bytewise: bool) -> list[Request]:
    parser, out = RequestParser(limits), []
    for piece in ([data[i : i + 1] for i in range(len(data))] if bytewise else [data]):
        parser.feed(piece)
        out += _drain(parser)
    return out


def parse(data: bytes, limits: Limits = Limits()) -> list[Request]:
    """All complete requests in `data`; the same whether fed whole or byte by byte."""
    whole, bytewise = _parse(data, limits, False), _parse(data, limits, True)
    assert whole == bytewise
    return whole


def parse_error(data: bytes, limits: Limits = Limits()) -> int:
    """The HttpError status for `data`; the same whether fed whole or byte by byte."""
    statuses = []
    for bytewise in (False, True):
        with pytest.raises(HttpError) as info:
            _parse(data, limits, bytewise)
        statuses.append(info.value.status)
    assert statuses[0] == statuses[1]
    return statuses[0]


def one(data: bytes, limits: Limits = Limits()) -> Request:
    requests = parse(data, limits)
    assert len(requests) == 1
    return requests[0]


def test_simple_get():
    r = one(b"GET /v1/models?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-Thing:  v a l \t\r\n\r\n")
    assert (r.method, r.target, r.path, r.query, r.version) == (
        "GET", "/v1/models?x=1&y=2", "/v1/models", "x=1&y=2", "HTTP/1.1")
    assert r.headers == [("host", "a"), ("x-thing", "v a l")]
    assert r.header("X-THING") == "v a l" and r.header("nope", "d") == "d"
    assert r.body == b"" and r.peer is None and r.context == {}


def test_header_first_match_and_latin1():
    r = one(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nA: 2\r\nB: caf\xe9\r\n\r\n")
    assert r.header("a") == "1" and r.header("b") == "caf\u00e9"


def test_target_forms():
    r = one(b"GET http://example.com:80/p/q?z HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert (r.path, r.query) == ("/p/q", "z")
    r = one(b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert (r.path, r.query) == ("/", "")
    r = one(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (r.path, r.target) == ("*", "*")
    assert parse_error(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n") == 400
    assert parse_error(b"CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n") == 400


def test_effective_authority():
    # RFC 9112 §3.2.2: an absolute-form target's authority overrides Host; the guard reads only this
    assert one(b"GET / HTTP/1.1\r\nHost: LocalHost:8888\r\n\r\n").authority == "LocalHost:8888"
    r = one(b"GET http://evil.example:1/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (r.authority, r.path, r.header("host")) == ("evil.example:1", "/x", "localhost")
    assert one(b"GET http://[::1]?q HTTP/1.1\r\nHost: a\r\n\r\n").authority == "[::1]"
    assert one(b"GET http://a/b@c HTTP/1.1\r\nHost: a\r\n\r\n").authority == "a"  # `@` in the path
    assert one(b"GET / HTTP/1.0\r\n\r\n").authority is None
    assert one(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").authority == "a"


@pytest.mark.parametrize("target", [b"http://evil@localhost/", b"http://u:p@localhost:1/x",
                                    b"http://localhost@evil.example/", b"http://@localhost/",
                                    b"http:///x", b"http://:80/x", b"http://a b/", b"http://a:8x/",
                                    b"http://[::1/"])
def test_bad_absolute_authority(target):
    # RFC 9110 §4.2.4: userinfo is deprecated, a recipient should treat it as an error; §4.2.1:
    # no empty host. Either way a 400, never a second reading of which host was meant.
    assert parse_error(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n") == 400


def test_content_type():
    def ctype(*values: bytes):
        return one(b"POST / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"Content-Type: " + v + b"\r\n"
                                                                 for v in values) + b"\r\n").content_type
    assert ctype(b"Application/JSON; Charset=UTF-8") == ("application/json", {"charset": "UTF-8"})
    assert ctype() is None and ctype(b"a/b", b"a/b") is None and ctype(b"a/b;") is None


def test_field_grammars():
    assert parse_media_type('a/b; c="d\\"e" ;F=g') == ("a/b", {"c": 'd"e', "f": "g"})
    assert parse_media_type("a/b") == ("a/b", {}) and parse_media_type("a/b ") == ("a/b", {})
    for bad in ("a", "a/", "/b", "a/b;", "a/b; c", "a/b; c=", 'a/b; c="d', "a b/c", "a/b,c/d"):
        assert parse_media_type(bad) is None, bad
    assert is_token_list("x-api-key, content-type") and is_token_list("a,b")
    assert not any(map(is_token_list, ["", "a,", "a, ,b", "bad header!", "a;b"]))


def test_http10_needs_no_host():
    assert one(b"GET / HTTP/1.0\r\n\r\n").version == "HTTP/1.0"


def test_content_length_body():
    r = one(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    assert r.body == b"hello"
    r = one(b"POST /x HTTP/1.1\r\nHost: a\r\ncontent-length:2\r\n\r\nok")
    assert r.body == b"ok"
    r = one(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000003\r\n\r\nabc")
    assert r.body == b"abc"


@pytest.mark.parametrize("host", [b"", b"localhost", b"LocalHost:8888", b"127.0.0.1:1",
                                  b"[::1]", b"[::1]:80", b"xn--bcher-kva.example", b"a.b-c_d~"])
def test_valid_hosts(host):
    assert one(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n").header("host") == host.decode()


def test_chunked_body_with_extensions_and_trailers():
    r = one(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
            b"5;name=val\r\nhello\r\n1A \r\n" + b"x" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert r.body == b"hello" + b"x" * 26
    assert ("x-trailer", "t") not in r.headers


def test_pipelined_requests_and_leading_crlf():
    data = (b"\r\n\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
            b"GET /4 HTTP/1.1\r\nHo")
    requests = parse(data)
    assert [(r.path, r.body) for r in requests] == [("/1", b""), ("/2", b"abc"), ("/3", b"de")]


def test_leftover_stays_buffered():
    parser = RequestParser()
    parser.feed(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HT")
    assert parser.maybe_request().path == "/1"
    assert parser.maybe_request() is None and parser.started and parser.buffered == 9
    parser.feed(b"TP/1.1\r\nHost: a\r\n\r\n")
    assert parser.maybe_request().path == "/2"
    assert not parser.started


def test_head_before_body():
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    head = parser.maybe_head()
    assert head is not None and head.expects_continue
    assert parser.maybe_body() is None
    parser.feed(b"body")
    assert parser.maybe_body() == b"body" and head.body == b"body"


@pytest.mark.parametrize("version, connection, keep", [
    ("1.1", None, True), ("1.1", "close", False), ("1.1", "Keep-Alive, Close", False),
    ("1.1", "keep-alive", True), ("1.0", None, False), ("1.0", "keep-alive", True),
    ("1.0", "Keep-Alive", True), ("1.0", "close", False),
])
def test_keep_alive(version, connection, keep):
    extra = f"Connection: {connection}\r\n" if connection else ""
    r = one(f"GET / HTTP/{version}\r\nHost: a\r\n{extra}\r\n".encode())
    assert r.keep_alive is keep


@pytest.mark.parametrize("version, expect, flag", [
    ("1.1", "100-continue", True), ("1.1", "100-Continue", True), ("1.1", None, False),
    ("1.0", "100-continue", False),  # RFC 9110 §10.1.1: ignored on HTTP/1.0
])
def test_expects_continue(version, expect, flag):
    extra = f"Expect: {expect}\r\n" if expect else ""
    assert one(f"GET / HTTP/{version}\r\nHost: a\r\n{extra}\r\n".encode()).expects_continue is flag


GET = b"GET / HTTP/1.1\r\nHost: a\r\n"


@pytest.mark.parametrize("data, status", [
    # line ends and request line
    (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
    (b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTX/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/3\r\nHost: a\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    # header lines
    (GET + b"X: a\r\n b\r\n\r\n", 400),
    (GET + b" X: a\r\n\r\n", 400),
    (GET + b"X : a\r\n\r\n", 400),
    (GET + b"X\t: a\r\n\r\n", 400),
    (GET + b"X: a\x00b\r\n\r\n", 400),
    (GET + b"X: a\x1bb\r\n\r\n", 400),
    (GET + b"X: a\x7f\r\n\r\n", 400),
    (GET + b"X\x01: a\r\n\r\n", 400),
    (GET + b"X@Y: a\r\n\r\n", 400),
    (GET + b": a\r\n\r\n", 400),
    (GET + b"NoColon\r\n\r\n", 400),
    (b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # raw UTF-8: must be %-encoded
    (GET + b"Expect: 100-continue, x\r\n\r\n", 417),
    (GET + b"Expect: sing\r\n\r\n", 417),
    # Host
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (GET + b"Host: b\r\n\r\n", 400),
    (GET + b"HOST: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400),
    # Content-Length and Transfer-Encoding
    (GET + b"Content-Length: abc\r\n\r\n", 400),
    (GET + b"Content-Length: +5\r\n\r\n", 400),
    (GET + b"Content-Length: -1\r\n\r\n", 400),
    (GET + b"Content-Length: 0x5\r\n\r\n", 400),
    (GET + b"Content-Length: 5, 5\r\n\r\n", 400),
    (GET + b"Content-Length: \xd9\xa3\r\n\r\n", 400),  # Arabic-Indic digit, not ASCII
    (GET + b"Content-Length: " + b"1" * 20 + b"\r\n\r\n", 400),
    (GET + b"Content-Length: \r\n\r\n", 400),
    (GET + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (GET + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nab", 400),  # even equal copies
    (GET + b"Content-Length: 1_0\r\n\r\n", 400),  # int() would say 10
    (GET + b"Content-Length:  5\r\n\r\n", 400),  # int() would skip the space
    (GET + b"Content-Length:\t5\r\n\r\n", 400),
    (GET + b"Content-Length: 5 \r\n\r\n", 400),
    (GET + b"Content-Length: 5\x0b\r\n\r\n", 400),  # str.strip() would drop a VT
    (GET + b"Content-Length: 1e3\r\n\r\n", 400),
    (GET + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (GET + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    (GET + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (GET + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
])
def test_errors(data, status):
    assert parse_error(data) == status


CHUNKED = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("body, status", [
    (b"zz\r\n", 400),
    (b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    (b"+5\r\nhello\r\n0\r\n\r\n", 400),
    (b"5_0\r\n", 400),
    (b"5\r\nhello\r\n0\r\nBad Trailer: x\r\n\r\n", 400),  # trailers are checked, then dropped
    (b"5\r\nhello\r\n0\r\nT: v\n\r\n", 400),
    (b"5\r\nhello\r\n0\r\n folded\r\n\r\n", 400),
    (b" 5\r\nhello\r\n0\r\n\r\n", 400),
    (b"-1\r\n", 400),
    (b"\r\n", 400),
    (b"1" * 17 + b"\r\n", 400),
    (b"5\r\nhelloX\r\n0\r\n\r\n", 400),
    (b"5\r\nhello\rX0\r\n\r\n", 400),
    (b"5\nhello\r\n0\r\n\r\n", 400),
    (b"5;" + b"e" * 2000 + b"\r\n", 400),
])
def test_chunked_errors(body, status):
    assert parse_error(CHUNKED + body) == status


def test_chunked_limits():
    assert parse_error(CHUNKED + b"65\r\n", SMALL) == 413  # 101 > max_body=100, before data
    assert parse_error(CHUNKED + b"40\r\n" + b"x" * 64 + b"\r\n30\r\n", SMALL) == 413
    assert one(CHUNKED + b"40\r\n" + b"x" * 64 + b"\r\n24\r\n" + b"y" * 36 + b"\r\n0\r\n\r\n",
               SMALL).body == b"x" * 64 + b"y" * 36
    assert parse_error(CHUNKED + b"0\r\n" + b"T: " + b"t" * 200 + b"\r\n\r\n", SMALL) == 431


def test_content_length_limit_before_body():
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n"
    assert parse_error(head, SMALL) == 413  # no body byte sent yet
    assert one(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"b" * 100,
               SMALL).body == b"b" * 100


def test_request_line_limit():
    fits = b"GET /" + b"a" * 50 + b" HTTP/1.1\r\nHost: a\r\n\r\n"  # request line of 64 bytes
    assert one(fits, SMALL).path == "/" + "a" * 50
    assert parse_error(b"GET /" + b"a" * 51 + b" HTTP/1.1\r\nHost: a\r\n\r\n", SMALL) == 414
    assert parse_error(b"GET /" + b"a" * 100, SMALL) == 414  # incomplete: no end in sight


def test_header_limits():
    assert parse_error(GET + b"X: " + b"v" * 200 + b"\r\n\r\n", SMALL) == 431
    assert parse_error(GET + b"X: " + b"v" * 200, SMALL) == 431  # incomplete line
    four = GET + b"".join(b"H%d: v\r\n" % i for i in range(3)) + b"\r\n"
    assert len(one(four, SMALL).headers) == 4
    five = GET + b"".join(b"H%d: v\r\n" % i for i in range(4)) + b"\r\n"
    assert parse_error(five, SMALL) == 431
    many = GET + b"".join(b"H: %d\r\n" % i for i in range(20))
    assert parse_error(many, SMALL) == 431


def test_http_error_carries_status():
    err = HttpError(413, "too big")
    assert (err.status, err.message) == (413, "too big")
