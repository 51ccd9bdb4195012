"""Hardening: hostile and malformed clients against the real server.

1. A table of raw malformed, hostile, truncated, pipelined-after-garbage, split and smuggling
   requests, each with the statuses it must get; after every case the same single worker
   still answers.
2. Slowloris: 200 connections that never finish their head are all cut at --socket-timeout
   while normal requests keep being answered.
3. Clients leaving mid-body and mid-response: the worker lives, close() is called on every
   response iterable, no file descriptor leaks, one log line each and no traceback.
4. --limit-post (413) and --buffer-size (431/414) with the option named in the log.
5. --http-keepalive closes idle keep-alive connections.
6. A body that stalls is cut at --socket-timeout; the app's read raises; other requests are
   served meanwhile.
Also: a response nobody reads is given up at --socket-timeout; the head timer of a reused
connection starts with its next head; a big unread body never breaks keep-alive framing.
"""

from __future__ import annotations

import json
import os
import resource
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

import pytest
from support import app, build_request, wait_until

HOST = b"Host: 127.0.0.1"
TE = b"Transfer-Encoding: chunked"
GET_PID = b"GET /pid HTTP/1.1"
#: request line of basic.py's /upload-record, which records what wsgi.input.read() did;
#: @TAG@ becomes the case id
UP = b"POST /upload-record?tag=@TAG@ HTTP/1.1"
#: --limit-post of the table's server
TABLE_LIMIT = 1 << 20
#: the default --buffer-size
BUFFER = 32768


def req(first: bytes, *headers: bytes, body: bytes = b"", host: bool = True,
        eol: bytes = b"\r\n") -> bytes:
    """A raw request: the request line, Host (unless told not to), `headers`, a blank line
    and `body`, lines ended by `eol`."""
    lines = [first] + ([HOST] if host else []) + list(headers)
    return eol.join(lines) + eol + eol + body


def up(*headers: bytes, body: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    return req(UP, *headers, body=body, eol=eol)


def up_chunked(body: bytes, *headers: bytes) -> bytes:
    return up(TE, *headers, body=body)


def cl(n: int) -> bytes:
    return b"Content-Length: %d" % n


def get(path: str, **kw) -> bytes:
    return build_request("GET", path, **kw)


def head_of_size(size: int) -> bytes:
    """A GET /pid head of exactly `size` bytes (the padding is in the query)."""
    bare = req(b"GET /pid? HTTP/1.1")
    return req(b"GET /pid?" + b"a" * (size - len(bare)) + b" HTTP/1.1")


def env_of(r) -> dict:
    return json.loads(r.body)


def check_underscore_dropped(responses) -> None:
    env = env_of(responses[-1])
    assert env.get("HTTP_X_GOOD") == "2", "a normal header went missing"
    assert "HTTP_X_EVIL" not in env, "a header with '_' in its name reached the environ"


def check_underscore_cl_ignored(responses) -> None:
    env = env_of(responses[-1])
    assert "HTTP_CONTENT_LENGTH" not in env
    assert env.get("CONTENT_LENGTH", "") in ("", "0"), env.get("CONTENT_LENGTH")


def check_obs_text_kept(responses) -> None:
    assert env_of(responses[-1]).get("HTTP_X_A") == "caf\xe9"


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One raw request (or several on one connection) and what the server must answer.

    `expect`: the statuses, in order; () means the server answers nothing and just closes.
    `send`: "whole" (one sendall), "bytes" (one byte per packet) or "odd" (pieces of the sizes
    in `pieces`, cycling), with small sleeps between packets.
    `shut`: shut down the client's write side after sending (a truncated request).
    `after`: "keep" (a GET /pid on the same connection must then be answered), "close" (the
    server must close cleanly: EOF, no more bytes, no reset) or "closed" (EOF or a reset, for
    a client that flooded past what the server reads away); default: "close" after an error,
    HTTP/1.0, Connection: close or `shut`, else "keep".
    `body`: the last response's body. `saw`: the prefix of what /upload-record recorded for
    this case (what the app's wsgi.input.read() did). `check`: more asserts on the responses.
    """

    id: str
    raw: bytes
    expect: tuple[int, ...]
    send: str = "whole"
    pieces: tuple[int, ...] = (1, 2, 3, 5, 8, 13, 21)
    shut: bool = False
    after: str | None = None
    body: bytes | None = None
    saw: str | None = None
    check: Callable | None = None


HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"
PIPE_BODY_REQ = req(GET_PID)
TLS_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n"

CASES = [
    # --- accepted: bare LF, OWS, duplicates, leading zeros, dropped '_' headers ------------
    Case("ok-plain", req(GET_PID), (200,)),
    Case("bare-lf-head", req(GET_PID, eol=b"\n"), (200,)),
    Case("bare-lf-mixed", GET_PID + b"\r\n" + HOST + b"\n\r\n", (200,)),
    Case("bare-lf-cl-body", up(cl(5), body=b"hello", eol=b"\n"), (200,), body=b"5",
         saw="ok 5"),
    Case("bare-lf-chunk-framing", up_chunked(b"5\nhello\n0\n\n"), (200,), body=b"5",
         saw="ok 5"),
    Case("bare-lf-everywhere-chunked", up(TE, body=b"5\nhello\n0\n\n", eol=b"\n"), (200,),
         body=b"5", saw="ok 5"),
    Case("bare-lf-trailer", up_chunked(b"5\r\nhello\r\n0\r\nX-T: 1\n\n"), (200,), saw="ok 5"),
    Case("te-tab-ows", up(b"Transfer-Encoding:\tchunked", body=HELLO_CHUNKED), (200,),
         saw="ok 5"),
    Case("te-trailing-ows", up(b"Transfer-Encoding: chunked \t", body=HELLO_CHUNKED), (200,),
         saw="ok 5"),
    Case("te-uppercase-coding", up(b"Transfer-Encoding: CHUNKED", body=HELLO_CHUNKED), (200,),
         saw="ok 5"),
    Case("te-lowercase-name", up(b"transfer-encoding: chunked", body=HELLO_CHUNKED), (200,),
         saw="ok 5"),
    Case("cl-duplicate-same", up(cl(5), cl(5), body=b"hello"), (200,), saw="ok 5"),
    Case("cl-leading-zeros", up(b"Content-Length: 005", body=b"hello"), (200,), saw="ok 5"),
    Case("cl-ows-around", up(b"Content-Length:\t5 ", body=b"hello"), (200,), saw="ok 5"),
    Case("cl-zero-get", req(GET_PID, cl(0)), (200,)),
    Case("get-with-unread-body", req(GET_PID, cl(5), body=b"hello"), (200,)),
    Case("cl-body-holds-a-request", up(cl(len(PIPE_BODY_REQ)), body=PIPE_BODY_REQ), (200,),
         body=b"%d" % len(PIPE_BODY_REQ), saw=f"ok {len(PIPE_BODY_REQ)}"),
    Case("chunked-then-pipelined", up_chunked(HELLO_CHUNKED + req(GET_PID)), (200, 200)),
    Case("chunk-extensions", up_chunked(b'5;a=b;c="d e"\r\nhello\r\n0;z\r\n\r\n'), (200,),
         saw="ok 5"),
    Case("chunk-extension-1023", up_chunked(b"5;" + b"e" * 1023 + b"\r\nhello\r\n0\r\n\r\n"),
         (200,), saw="ok 5"),
    Case("chunk-size-16-digits", up_chunked(b"0000000000000005\r\nhello\r\n0\r\n\r\n"), (200,),
         saw="ok 5"),
    Case("chunk-size-upper-hex", up_chunked(b"A\r\n0123456789\r\n0\r\n\r\n"), (200,),
         saw="ok 10"),
    Case("trailers-4k", up_chunked(b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 4000 + b"\r\n\r\n"),
         (200,), saw="ok 5"),
    Case("hundred-header-lines", req(GET_PID, *[b"X-H%d: v" % i for i in range(99)]), (200,)),
    Case("obs-text-value", req(b"GET /environ HTTP/1.1", b"X-A: caf\xe9"), (200,),
         check=check_obs_text_kept),
    Case("empty-header-value", req(GET_PID, b"X-Empty:"), (200,)),
    Case("underscore-header-dropped", req(b"GET /environ HTTP/1.1", b"X_Evil: 1", b"X-Good: 2"),
         (200,), check=check_underscore_dropped),
    Case("underscore-content-length-ignored",
         req(b"GET /environ HTTP/1.1", b"Content_Length: 40"), (200,),
         check=check_underscore_cl_ignored),
    Case("underscore-transfer-encoding-ignored",
         up(b"Transfer_Encoding: chunked", cl(5), body=b"hello"), (200,), saw="ok 5"),
    Case("leading-empty-line", b"\r\n" + req(GET_PID), (200,)),
    Case("lowercase-method", req(b"get /pid HTTP/1.1"), (400,)),
    Case("http10-without-host", b"GET /pid HTTP/1.0\r\n\r\n", (200,)),
    Case("long-uri-within-limit", req(b"GET /pid?" + b"q" * 20000 + b" HTTP/1.1"), (200,)),
    Case("head-exactly-buffer-size", head_of_size(BUFFER), (200,)),
    Case("half-close-after-request", req(GET_PID), (200,), shut=True),
    Case("get-with-chunked-body", req(GET_PID, TE, body=HELLO_CHUNKED), (200,)),
    Case("trailer-allowed-field",
         up_chunked(b"5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n"), (200,), saw="ok 5"),
    Case("connection-close-then-garbage",
         req(GET_PID, b"Connection: close") + b"GARBAGE\r\n\r\n", (200,)),
    # --- smuggling: CL.TE, TE.CL, TE spelled oddly ------------------------------------------
    Case("cl-te", up(cl(6), TE, body=b"0\r\n\r\nG"), (400,)),
    Case("te-cl", up(TE, cl(6), body=b"0\r\n\r\nG"), (400,)),
    Case("cl-te-smuggled-request",
         up(cl(4), TE, body=b"5c\r\nGPOST / HTTP/1.1\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n"),
         (400,)),
    Case("te-cl-zero", up(TE, cl(0), body=HELLO_CHUNKED), (400,)),
    Case("te-space-before-colon", up(b"Transfer-Encoding : chunked", body=HELLO_CHUNKED),
         (400,)),
    Case("te-tab-before-colon", up(b"Transfer-Encoding\t: chunked", body=HELLO_CHUNKED),
         (400,)),
    Case("te-obs-fold", up(b"Transfer-Encoding:", b" chunked", body=HELLO_CHUNKED), (400,)),
    Case("te-vertical-tab", up(b"Transfer-Encoding:\x0bchunked", body=HELLO_CHUNKED), (400,)),
    Case("te-form-feed", up(b"Transfer-Encoding:\x0cchunked", body=HELLO_CHUNKED), (400,)),
    Case("te-cr-inside", up(b"Transfer-Encoding: chunked\rX", body=HELLO_CHUNKED), (400,)),
    Case("te-twice", up(TE, TE, body=HELLO_CHUNKED), (400,)),
    Case("te-chunked-chunked", up(b"Transfer-Encoding: chunked, chunked", body=HELLO_CHUNKED),
         (400,)),
    Case("te-chunked-not-final", up(b"Transfer-Encoding: chunked, gzip", body=HELLO_CHUNKED),
         (400,)),
    Case("te-in-http10",
         b"POST /upload-record?tag=@TAG@ HTTP/1.0\r\n" + TE + b"\r\n\r\n" + HELLO_CHUNKED,
         (400,)),
    Case("te-xchunked", up(b"Transfer-Encoding: xchunked", body=HELLO_CHUNKED), (501,)),
    Case("te-gzip", up(b"Transfer-Encoding: gzip", body=b"hello"), (501,)),
    Case("te-gzip-chunked", up(b"Transfer-Encoding: gzip, chunked", body=HELLO_CHUNKED),
         (501,)),
    Case("te-identity", up(b"Transfer-Encoding: identity", body=b"hello"), (501,)),
    Case("te-gzip-then-chunked-headers",
         up(b"Transfer-Encoding: gzip", TE, body=HELLO_CHUNKED), (501,)),
    # --- Content-Length that is not 1*DIGIT, or disagrees ------------------------------------
    Case("cl-plus", up(b"Content-Length: +5", body=b"hello"), (400,)),
    Case("cl-minus", up(b"Content-Length: -1", body=b"hello"), (400,)),
    Case("cl-list", up(b"Content-Length: 1,2", body=b"hello"), (400,)),
    Case("cl-list-same", up(b"Content-Length: 5, 5", body=b"hello"), (400,)),
    Case("cl-trailing-junk", up(b"Content-Length:  5x", body=b"hello"), (400,)),
    Case("cl-inner-space", up(b"Content-Length: 5 5", body=b"hello"), (400,)),
    Case("cl-hex", up(b"Content-Length: 0x5", body=b"hello"), (400,)),
    Case("cl-decimal", up(b"Content-Length: 5.0", body=b"hello"), (400,)),
    Case("cl-exponent", up(b"Content-Length: 1e3", body=b"hello"), (400,)),
    Case("cl-empty", up(b"Content-Length: ", body=b"hello"), (400,)),
    Case("cl-u64-overflow", up(b"Content-Length: 18446744073709551616", body=b"hello"), (400,)),
    Case("cl-differ", up(cl(5), cl(6), body=b"hello!"), (400,)),
    Case("cl-space-before-colon", up(b"Content-Length : 5", body=b"hello"), (400,)),
    # --- head syntax -------------------------------------------------------------------------
    Case("obs-fold-space", req(GET_PID, b"X-A: a", b" b"), (400,)),
    Case("obs-fold-tab", req(GET_PID, b"X-A: a", b"\tb"), (400,)),
    Case("first-header-folded", GET_PID + b"\r\n " + HOST + b"\r\n\r\n", (400,)),
    Case("cr-in-value", req(GET_PID, b"X-A: a\rb"), (400,)),
    Case("nul-at-value-end", req(GET_PID, b"X-A: a\x00"), (400,)),
    Case("method-at-sign", req(b"G@T /pid HTTP/1.1"), (400,)),
    Case("method-brace", req(b"GE{T /pid HTTP/1.1"), (400,)),
    Case("method-del", req(b"\x7fGET /pid HTTP/1.1"), (400,)),
    Case("method-non-ascii", req(b"G\xc9T /pid HTTP/1.1"), (400,)),
    Case("name-at-sign", req(GET_PID, b"X@Y: 1"), (400,)),
    Case("name-paren", req(GET_PID, b"X(Y): 1"), (400,)),
    Case("name-quote", req(GET_PID, b'X"Y: 1'), (400,)),
    Case("name-bracket", req(GET_PID, b"[X]: 1"), (400,)),
    Case("name-slash", req(GET_PID, b"X/Y: 1"), (400,)),
    Case("name-non-ascii", req(GET_PID, b"X-\xe9: 1"), (400,)),
    Case("host-missing-http11", req(GET_PID, host=False), (400,)),
    Case("host-twice", req(GET_PID, b"Host: other"), (400,)),
    Case("host-twice-same", req(GET_PID, HOST), (400,)),
    Case("host-twice-http10", b"GET /pid HTTP/1.0\r\n" + HOST + b"\r\nHost: b\r\n\r\n", (400,)),
    Case("bare-cr-line-ends", GET_PID + b"\r" + HOST + b"\r\r", (400,)),
    Case("nul-junk", b"\x00\x00\x00\r\n\r\n", (400,)),
    Case("tls-client-hello", TLS_HELLO, (400,)),
    Case("binary-junk", bytes(range(256)), (400,)),
    Case("version-trailing-space", req(b"GET /pid HTTP/1.1 "), (400,)),
    Case("version-mixed-case", req(b"GET /pid Http/1.1"), (400,)),
    Case("version-https", req(b"GET /pid HTTPS/1.1"), (400,)),
    Case("version-no-minor", req(b"GET /pid HTTP/1"), (400,)),
    Case("version-three-parts", req(b"GET /pid HTTP/1.1.1"), (400,)),
    Case("version-two-digit-major", req(b"GET /pid HTTP/11"), (400,)),
    Case("version-letter-minor", req(b"GET /pid HTTP/1.x"), (400,)),
    Case("version-0.9", req(b"GET /pid HTTP/0.9"), (505,)),
    Case("version-9.9", req(b"GET /pid HTTP/9.9"), (505,)),
    Case("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (505,)),
    # --- chunk framing: 400 and the app's read() raises ----------------------------------
    Case("chunk-size-not-hex", up_chunked(b"zz\r\nhello\r\n0\r\n\r\n"), (400,), saw="error"),
    Case("chunk-size-leading-space", up_chunked(b" 5\r\nhello\r\n0\r\n\r\n"), (400,),
         saw="error"),
    Case("chunk-size-trailing-space", up_chunked(b"5 \r\nhello\r\n0\r\n\r\n"), (400,),
         saw="error"),
    Case("chunk-size-negative", up_chunked(b"-5\r\nhello\r\n0\r\n\r\n"), (400,), saw="error"),
    Case("chunk-size-0x", up_chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), (400,), saw="error"),
    Case("chunk-size-17-digits", up_chunked(b"00000000000000005\r\nhello\r\n0\r\n\r\n"),
         (400,), saw="error"),
    Case("chunk-size-overflow", up_chunked(b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
         (400,), saw="error"),
    Case("chunk-data-longer", up_chunked(b"5\r\nhelloXX\r\n0\r\n\r\n"), (400,), saw="error"),
    Case("chunk-data-shorter", up_chunked(b"5\r\nhel\r\n0\r\n\r\n"), (400,), saw="error"),
    Case("chunk-size-cr-without-lf", up_chunked(b"5\rXhello\r\n0\r\n\r\n"), (400,),
         saw="error"),
    Case("chunk-data-cr-without-lf", up_chunked(b"5\r\nhello\rX0\r\n\r\n"), (400,),
         saw="error"),
    Case("chunk-empty-size-line", up_chunked(b"\r\nhello\r\n0\r\n\r\n"), (400,), saw="error"),
    Case("chunk-extension-only", up_chunked(b";x\r\nhello\r\n0\r\n\r\n"), (400,), saw="error"),
    Case("chunk-extension-too-long",
         up_chunked(b"5;" + b"e" * 2000 + b"\r\nhello\r\n0\r\n\r\n"), (400,), saw="error"),
    Case("trailers-too-large",
         up_chunked(b"5\r\nhello\r\n0\r\n" + b"X-T: " + b"t" * 9000 + b"\r\n\r\n"), (400,),
         saw="error"),
    Case("chunk-extension-bare-cr", up_chunked(b'5;a="b\rc"\r\nhello\r\n0\r\n\r\n'), (400,),
         saw="error"),
    Case("trailers-bad-end", up_chunked(b"5\r\nhello\r\n0\r\n\rX"), (400,), saw="error"),
    # framing and routing fields may not come late, in the trailer section (RFC 9110 §6.5.1)
    Case("trailer-with-content-length",
         up_chunked(b"5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n"), (400,), saw="error"),
    Case("trailer-with-transfer-encoding",
         up_chunked(b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"), (400,),
         saw="error"),
    Case("trailer-folded", up_chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), (400,),
         saw="error"),
    Case("chunk-size-u64-max", up_chunked(b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), (413,),
         saw="error"),
    Case("chunked-grows-past-limit",
         up_chunked(b"80000\r\n" + b"a" * 0x80000 + b"\r\n80001\r\n"), (413,), saw="error"),
    # a rejection found while the app reads the body, with more body behind it: the answer
    # must still end in a clean close (EOF), as for rejections of the head
    Case("chunk-error-then-more-body", up_chunked(b"zz\r\n" + b"x" * 300000), (400,),
         saw="error"),
    Case("chunked-past-limit-then-more-body",
         up_chunked(b"%x\r\n" % (TABLE_LIMIT + 1) + b"x" * 300000), (413,), saw="error"),
    Case("cl-past-limit", up(cl(TABLE_LIMIT + 1)), (413,)),
    Case("cl-past-limit-then-body", up(cl(TABLE_LIMIT + 1)) + b"x" * 300000, (413,)),
    Case("cl-19-digits", up(b"Content-Length: 9999999999999999999"), (413,)),
    # --- oversized heads ---------------------------------------------------------------------
    Case("uri-too-long", req(b"GET /pid?" + b"u" * 40000 + b" HTTP/1.1"), (414,)),
    Case("header-too-big", req(GET_PID, b"X-Big: " + b"b" * 40000), (431,)),
    Case("line-fits-head-does-not",
         req(b"GET /pid?" + b"u" * 30000 + b" HTTP/1.1", b"X-Big: " + b"b" * 5000), (431,)),
    Case("head-one-over-buffer-size", head_of_size(BUFFER + 1), (431,)),
    Case("header-lines-101", req(GET_PID, *[b"X-H%d: v" % i for i in range(100)]), (431,)),
    Case("header-lines-1000", req(GET_PID, *[b"a:b"] * 1000), (431,)),
    # --- a valid request, then garbage on the same connection --------------------------------
    Case("pipe-then-garbage", req(GET_PID) + b"GARBAGE\r\n\r\n", (200, 400)),
    Case("pipe-then-bad-cl", req(GET_PID) + req(GET_PID, b"Content-Length: -1"), (200, 400)),
    Case("pipe-body-then-binary", up(cl(5), body=b"hello") + b"\x00\x01\x02\r\n\r\n",
         (200, 400), saw="ok 5"),
    Case("pipe-chunked-then-garbage", up_chunked(HELLO_CHUNKED) + b"junk junk junk\r\n\r\n",
         (200, 400), saw="ok 5"),
    Case("pipe-then-http2", req(GET_PID) + req(b"GET /pid HTTP/2.0"), (200, 505)),
    Case("pipe-then-cl-te", req(GET_PID) + up(cl(6), TE, body=b"0\r\n\r\nG"), (200, 400)),
    Case("pipe-then-tls", req(GET_PID) + TLS_HELLO, (200, 400)),
    Case("pipe-then-oversized-head", req(GET_PID) + req(GET_PID, b"X-Big: " + b"b" * 40000),
         (200, 431)),
    Case("garbage-then-200k-more", b"GARBAGE\r\n\r\n" + b"x" * 200000, (400,), after="closed"),
    Case("pipe-three-then-obs-fold", req(GET_PID) * 3 + req(GET_PID, b"X-A: a", b" b"),
         (200, 200, 200, 400)),
    # --- truncated: the client shuts its write side; the server must not hang ----------------
    Case("trunc-nothing", b"", (), shut=True),
    Case("trunc-one-byte", b"G", (), shut=True),
    Case("trunc-request-line", b"GET /pid HTT", (), shut=True),
    Case("trunc-no-blank-line", GET_PID + b"\r\n" + HOST + b"\r\n", (), shut=True),
    Case("trunc-final-cr", GET_PID + b"\r\n" + HOST + b"\r\n\r", (), shut=True),
    Case("trunc-cl-body", up(cl(10), body=b"hello"), (), shut=True, saw="error"),
    Case("trunc-chunk-data", up_chunked(b"5\r\nhel"), (), shut=True, saw="error"),
    Case("trunc-before-last-chunk", up_chunked(b"5\r\nhello\r\n"), (), shut=True, saw="error"),
    Case("trunc-in-trailers", up_chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n"), (), shut=True,
         saw="error"),
    Case("trunc-after-pipelined", req(GET_PID) + b"GET /pid HTTP/1.1\r\nHo", (200,),
         shut=True),
    Case("trunc-mid-pipelined-body", req(GET_PID) + up(cl(10), body=b"hello"), (200,),
         shut=True, saw="error"),
    Case("trunc-tls-bytes", b"\x16\x03\x01", (400,), shut=True),
]

#: cases sent again one byte per packet, or in odd pieces: the status must not change
BYTEWISE = ["ok-plain", "bare-lf-chunk-framing", "cl-te", "te-obs-fold", "te-space-before-colon",
            "chunk-size-not-hex", "chunk-data-shorter", "pipe-then-garbage", "http2-preface",
            "underscore-transfer-encoding-ignored", "cl-differ", "trunc-cl-body", "version-0.9",
            "version-9.9", "trailer-with-content-length"]
ODD = ["chunked-then-pipelined", "cl-body-holds-a-request", "te-tab-ows", "header-lines-101",
       "pipe-three-then-obs-fold", "chunk-extension-too-long", "bare-lf-trailer",
       "get-with-chunked-body"]
_by_id = {c.id: c for c in CASES}
CASES += [Case(**{**_by_id[i].__dict__, "id": i + "-bytewise", "send": "bytes"})
          for i in BYTEWISE]
CASES += [Case(**{**_by_id[i].__dict__, "id": i + "-odd-split", "send": "odd"}) for i in ODD]
CASES += [Case(**{**_by_id[i].__dict__, "id": i + "-odd-split", "send": "odd",
                   "pieces": (997, 1, 101)}) for i in ("header-too-big", "trailers-too-large")]


def test_table_is_big_and_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len({c.raw for c in CASES}) >= 80
    assert len(CASES) >= 80


@pytest.fixture(scope="module")
def tsrv(headrace_module):
    return headrace_module("--wsgi-file", app("basic.py"), "--processes", "1",
                           "--limit-post", str(TABLE_LIMIT))


@pytest.fixture(scope="module")
def tpid(tsrv):
    return int(tsrv.request(get("/pid")).body)


def told_to_close(conn) -> bool:
    """The server already sent a response saying it closes (every rejection does): a polite
    client stops sending there instead of writing into a closed socket."""
    if not select.select([conn.sock], [], [], 0)[0]:
        return False
    try:
        data = conn.sock.recv(65536, socket.MSG_PEEK)
    except OSError:
        return True
    return not data or b"\r\nConnection: close\r\n" in data


def pause(conn, secs: float) -> bool:
    """Sleep `secs` between packets; True as soon as the server said it closes."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if told_to_close(conn):
            return True
        time.sleep(0.0002)
    return told_to_close(conn)


def send_case(conn, raw: bytes, case: Case) -> None:
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if case.send == "whole":
            conn.send(raw)
            return
        pos, i = 0, 0
        while pos < len(raw):
            n = 1 if case.send == "bytes" else case.pieces[i % len(case.pieces)]
            conn.send(raw[pos:pos + n])
            pos += n
            i += 1
            if pause(conn, 0.001 if case.send == "bytes" else 0.003):
                return
    except (BrokenPipeError, ConnectionResetError):
        pass  # rejected early; the response must still be readable


def peer_end(conn, timeout: float = 5.0) -> str:
    """How the server ends the connection: "eof", "reset", "still open", or extra bytes."""
    conn.sock.settimeout(timeout)
    try:
        data = conn.rfile.read1(65536)
    except (socket.timeout, TimeoutError):
        return f"still open after {timeout} s"
    except ConnectionResetError:
        return "reset"
    return "eof" if data == b"" else f"more bytes: {data[:200]!r}"


def default_after(case: Case) -> str:
    first_line = case.raw.split(b"\n", 1)[0]
    if (not case.expect or case.expect[-1] >= 400 or case.shut or b"HTTP/1.0" in first_line
            or b"connection: close" in case.raw.lower()):
        return "close"
    return "keep"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request(tsrv, tpid, case):
    raw = case.raw.replace(b"@TAG@", case.id.encode())
    shown = raw if len(raw) < 300 else raw[:150] + b"..." + raw[-100:]
    mark = len(tsrv.log())
    got: list[object] = []
    responses = []
    with tsrv.connect(timeout=10) as c:
        send_case(c, raw, case)
        if case.shut:
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server already closed: what it sent is still checked below
        for _ in case.expect:
            try:
                r = c.read_response()
            except (EOFError, ConnectionResetError, socket.timeout) as e:
                got.append(type(e).__name__)
                break
            got.append(r.status)
            responses.append(r)
        assert tuple(got) == case.expect, f"{shown!r}: wanted {case.expect}, got {tuple(got)}"
        if not case.expect:
            end = peer_end(c)
            assert end == "eof", f"{shown!r}: wanted a plain close, got {end}"
        elif (case.after or default_after(case)) == "keep":
            c.send(get("/pid"))
            nxt = c.read_response()
            assert (nxt.status, nxt.body) == (200, str(tpid).encode()), (
                f"{shown!r}: the connection did not carry a next request: {nxt}")
        else:
            end = peer_end(c)
            ok = ("eof", "reset") if case.after == "closed" else ("eof",)
            assert end in ok, f"{shown!r}: after {tuple(got)} wanted a clean close, got {end}"
    if case.body is not None:
        assert responses[-1].body == case.body
    if case.check is not None:
        case.check(responses)
    if case.saw is not None:
        path = tsrv.record / f"upload-{case.id}"
        wait_until(lambda: path.exists() and path.read_text() != "started", 5,
                   f"the app's record of {case.id}")
        text = path.read_text()
        assert text.startswith(case.saw), f"{shown!r}: the app's body read gave {text!r}"
    # the same single worker serves the next request
    r = tsrv.request(get("/pid"))
    assert (r.status, int(r.body)) == (200, tpid), "the worker was replaced"
    new = tsrv.log()[mark:]
    assert "Traceback" not in new and "panicked" not in new, new[-3000:]


# --- slowloris ------------------------------------------------------------------------------

SLOW_CONNS = 200
#: connections that send nothing at all (TCP_DEFER_ACCEPT may hold them in the kernel for a
#: while before the server sees them, so their bound is looser)
SILENT_CONNS = 20


def test_slowloris(headrace):
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 600:
        pytest.skip(f"ulimit -n is {soft}: {SLOW_CONNS} slowloris connections need >= 600 fds")
    srv = headrace("--wsgi-file", app("hard_app.py"), "--processes", "1", "--threads", "2",
                   "--socket-timeout", "3")
    pid = int(srv.request(get("/pid")).body)
    sel = selectors.DefaultSelector()
    opened: dict[socket.socket, float] = {}
    silent: set[socket.socket] = set()
    closed: dict[socket.socket, float] = {}
    got: dict[socket.socket, bytes] = {}
    latencies: list[float] = []
    total = SLOW_CONNS + SILENT_CONNS
    try:
        for i in range(total):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            if i < SLOW_CONNS:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            else:
                silent.add(s)
            s.setblocking(False)
            opened[s] = time.monotonic()
            got[s] = b""
            sel.register(s, selectors.EVENT_READ)
        start = time.monotonic()
        deadline = start + 14
        next_drip = start + 0.5
        next_probe = start + 0.1
        while len(closed) < total and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_drip:
                next_drip += 0.5
                for s in opened:
                    if s not in closed and s not in silent:
                        try:
                            s.send(b"X")  # a header name that never ends
                        except OSError:
                            pass  # closed (or full); the read side reports it
            if now >= next_probe and now - start < 10:
                next_probe += 0.15
                t0 = time.monotonic()
                r = srv.request(get("/pid"), timeout=3)
                latencies.append(time.monotonic() - t0)
                assert (r.status, int(r.body)) == (200, pid)
            for key, _ in sel.select(timeout=0.03):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    data = b""
                if data:
                    got[s] += data
                    continue
                closed[s] = time.monotonic()
                sel.unregister(s)
        slow = sorted(closed[s] - opened[s] for s in closed if s not in silent)
        quiet = sorted(closed[s] - opened[s] for s in closed if s in silent)
        assert len(slow) == SLOW_CONNS, (
            f"only {len(slow)} of {SLOW_CONNS} slowloris connections were closed within 14 s")
        assert slow[0] >= 2.0, f"a slowloris connection was cut after {slow[0]:.2f} s (< 3 s)"
        assert slow[-1] <= 6.5, f"a slowloris connection lived {slow[-1]:.2f} s (timeout 3 s)"
        assert len(quiet) == SILENT_CONNS, (
            f"only {len(quiet)} of {SILENT_CONNS} silent connections were closed within 14 s")
        assert quiet[0] >= 2.0, f"a silent connection was cut after {quiet[0]:.2f} s (< 3 s)"
        assert quiet[-1] <= 9.0, f"a silent connection lived {quiet[-1]:.2f} s (timeout 3 s)"
        bad = [d[:80] for d in got.values() if d and not d.startswith(b"HTTP/1.1 408 ")]
        assert not bad, f"slow connections got something other than 408: {bad[:3]}"
        assert len(latencies) >= 8
        assert max(latencies) < 0.5, f"normal requests were slow: max {max(latencies):.3f} s"
    finally:
        for s in opened:
            s.close()
        sel.close()
    assert set(srv.worker_pids()) == {pid}, "the worker was replaced"
    assert "Traceback" not in srv.log()


# --- clients leaving mid-body and mid-response ----------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def steady_fd_count(pid: int) -> int:
    """The worker's fd count once it stops changing (the warm-up connections closed): two
    readings 0.1 s apart agree, polled for at most 5 s."""
    last = [fd_count(pid)]

    def same() -> bool:
        now = fd_count(pid)
        steady = now == last[0]
        last[0] = now
        return steady

    wait_until(same, 5, "the worker's fd count to settle", interval=0.1)
    return last[0]


def test_disconnects_mid_body_and_mid_response(headrace):
    srv = headrace("--wsgi-file", app("hard_app.py"), "--processes", "1", "--threads", "2")
    pid = int(srv.request(get("/pid")).body)
    pids = set(srv.worker_pids())
    # warm up both paths, so lazy imports do not count as leaks
    assert srv.request(build_request("POST", "/sink?tag=warm", body=b"w" * 5000)).body == b"5000"
    assert srv.request(get("/stream?tag=warm2&n=2&size=10&delay=0")).body == b"s" * 20
    fds_before = steady_fd_count(pid)
    n = 20

    body_socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"POST /sink?tag=mb%d HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                  % i + b"b" * 1000)
        body_socks.append(s)
    time.sleep(0.1)
    for s in body_socks:
        s.close()

    sel = selectors.DefaultSelector()
    seen: dict[socket.socket, int] = {}
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /stream?tag=mr%d&n=400&size=65536&delay=0.01 HTTP/1.1\r\nHost: x\r\n\r\n"
                  % i)
        s.setblocking(False)
        seen[s] = 0
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    try:
        while seen and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.1):
                s = key.fileobj
                try:
                    data = s.recv(1000)
                except (BlockingIOError, InterruptedError):
                    continue
                seen[s] += len(data)
                if seen[s] >= 1000 or not data:
                    sel.unregister(s)
                    s.close()  # with unread data: the server's next write fails
                    del seen[s]
        assert not seen, f"{len(seen)} streamed responses never started within 20 s"
    finally:
        for s in seen:
            s.close()
        sel.close()

    rec = srv.record
    tags = [f"mb{i}" for i in range(n)] + [f"mr{i}" for i in range(n)]
    wait_until(lambda: all((rec / f"close-{t}").exists() for t in tags), 15,
               "close() on every response iterable: missing "
               + str([t for t in tags if not (rec / f"close-{t}").exists()]))
    for i in range(n):
        text = (rec / f"read-mb{i}").read_text()
        assert text.startswith("error"), f"mid-body client {i}: the app's read gave {text!r}"
    srv.wait_log("went away mid-body", count=n, timeout=10)
    srv.wait_log("client disconnected while the response was written", count=n, timeout=10)

    def settled():
        return fd_count(pid) <= fds_before + 2

    wait_until(settled, 10, f"the worker's fds to return to {fds_before} (+2)")
    r = srv.request(get("/pid"))
    assert (r.status, int(r.body)) == (200, pid)
    assert set(srv.worker_pids()) == pids, "a worker died and was respawned"
    log = srv.log()
    assert log.count("went away mid-body") == n, "not one line per mid-body disconnect"
    assert log.count("client disconnected while the response was written") == n
    assert "Traceback" not in log, log[-3000:]


# --- --limit-post and --buffer-size -----------------------------------------------------------


@pytest.fixture(scope="module")
def lsrv(headrace_module):
    return headrace_module("--wsgi-file", app("basic.py"), "--processes", "1",
                           "--limit-post", "1000", "--buffer-size", "4096")


@pytest.fixture(scope="module")
def lpid(lsrv):
    return int(lsrv.request(get("/pid")).body)


def upload(tag: str, *headers: bytes, body: bytes = b"") -> bytes:
    return req(b"POST /upload-record?tag=" + tag.encode() + b" HTTP/1.1", *headers, body=body)


LIMIT_CASES = [
    # (id, raw, status, what the app's read gave (None: the app must not run), log words)
    ("cl-over", upload("cl-over", cl(1001)), 413, None, ["413", "--limit-post"]),
    ("cl-over-expect-continue", upload("cl-over-expect-continue", cl(1001),
                                       b"Expect: 100-continue"), 413, None, ["413"]),
    ("cl-at", upload("cl-at", cl(1000), body=b"x" * 1000), 200, "ok 1000", []),
    ("chunked-over", upload("chunked-over", TE, body=b"258\r\n" + b"x" * 600 + b"\r\n258\r\n"
                            + b"y" * 600 + b"\r\n0\r\n\r\n"), 413, "error", ["413", "--limit-post"]),
    ("chunked-at", upload("chunked-at", TE, body=b"1f4\r\n" + b"x" * 500 + b"\r\n1f4\r\n"
                          + b"y" * 500 + b"\r\n0\r\n\r\n"), 200, "ok 1000", []),
    ("header-5000", req(GET_PID, b"X-Big: " + b"h" * 5000), 431, None, ["431", "--buffer-size"]),
    ("uri-5000", req(b"GET /pid?" + b"u" * 5000 + b" HTTP/1.1"), 414, None,
     ["414", "--buffer-size"]),
]


@pytest.mark.parametrize("cid,raw,status,saw,words", LIMIT_CASES,
                         ids=[c[0] for c in LIMIT_CASES])
def test_limits(lsrv, lpid, cid, raw, status, saw, words):
    mark = len(lsrv.log())
    with lsrv.connect(timeout=5) as c:
        c.send(raw)
        # "at once": for cl-over no body was sent at all; no 100 Continue before a 413
        r = c.read_response(skip_interim=False)
        assert r.status == status, f"{cid}: got {r.status}, wanted {status}"
        if status >= 400:
            assert peer_end(c) == "eof"
    path = lsrv.record / f"upload-{cid}"
    if saw is None:
        assert not path.exists(), f"{cid}: the app ran for a request refused at the head"
    else:
        wait_until(lambda: path.exists() and path.read_text() != "started", 5, "the app")
        assert path.read_text().startswith(saw), path.read_text()
    if words:
        lines = wait_until(lambda: [ln for ln in lsrv.log()[mark:].splitlines()
                                    if all(w in ln for w in words)], 5,
                           f"a log line with {words}")
        assert lines
    r = lsrv.request(get("/pid"))
    assert (r.status, int(r.body)) == (200, lpid)
    assert "Traceback" not in lsrv.log()[mark:]


# --- keep-alive idle timeout ------------------------------------------------------------------


def test_keepalive_idle_timeout(headrace):
    srv = headrace("--wsgi-file", app("hard_app.py"), "--processes", "1",
                   "--http-keepalive", "2")
    pid = int(srv.request(get("/pid")).body)
    with srv.connect() as idle, srv.connect() as busy:
        idle.send(get("/pid"))
        assert int(idle.read_response().body) == pid
        t0 = time.monotonic()
        idle.sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(idle.sock, selectors.EVENT_READ)
        ended_at = None
        served = 0
        next_busy = t0
        try:
            while time.monotonic() < t0 + 7:
                if served < 5 and time.monotonic() >= next_busy:
                    # a connection that keeps working is not idle: requests 1.2 s apart
                    busy.send(get("/pid"))
                    assert int(busy.read_response().body) == pid, "busy connection dropped"
                    served += 1
                    next_busy += 1.2
                if ended_at is None and sel.select(timeout=0.05):
                    ended_at = time.monotonic()
                    try:
                        data = idle.sock.recv(100)
                    except ConnectionResetError:
                        data = b"<reset>"
                    assert data == b"", f"idle keep-alive connection got {data!r}, not EOF"
                if ended_at is not None and served >= 5:
                    break
                if ended_at is not None:
                    time.sleep(0.02)
        finally:
            sel.close()
        assert ended_at is not None, "idle keep-alive connection still open after 7 s"
        idle_for = ended_at - t0
        assert 1.5 <= idle_for <= 4.5, f"idle connection closed after {idle_for:.2f} s"
        assert served == 5


# --- a body that stalls ---------------------------------------------------------------------


def test_body_read_stall(headrace):
    srv = headrace("--wsgi-file", app("hard_app.py"), "--processes", "1", "--threads", "2",
                   "--socket-timeout", "2")
    pid = int(srv.request(get("/pid")).body)
    mark = len(srv.log())
    latencies = []
    with srv.connect() as c:
        c.send(b"POST /slow-read?tag=stall HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"
               + b"h" * 5000)
        sent = time.monotonic()
        c.sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(c.sock, selectors.EVENT_READ)
        answered = None
        probes = [sent + 0.5, sent + 1.0, sent + 1.5]
        try:
            while time.monotonic() < sent + 8 and (answered is None or probes):
                if probes and time.monotonic() >= probes[0]:
                    probes.pop(0)
                    t0 = time.monotonic()
                    r = srv.request(get("/pid"), timeout=3)
                    latencies.append(time.monotonic() - t0)
                    assert (r.status, int(r.body)) == (200, pid)
                if answered is None and sel.select(timeout=0.05):
                    answered = time.monotonic()
        finally:
            sel.close()
        assert answered is not None, "stalled body: no 408 nor close within 8 s"
        took = answered - sent
        assert 1.5 <= took <= 4.5, f"stalled body cut after {took:.2f} s (--socket-timeout 2)"
        c.sock.setblocking(True)
        rest = c.read_until_eof(5)
    assert rest == b"" or rest.startswith(b"HTTP/1.1 408 "), rest[:200]
    assert max(latencies) < 0.5, f"the other thread was not serving: {latencies}"
    text = (srv.record / "read-stall").read_text()
    assert text.startswith("error") and "Timeout" in text, text
    r = srv.request(get("/pid"))
    assert (r.status, int(r.body)) == (200, pid)
    assert "Traceback" not in srv.log()[mark:]


def test_response_write_stall(headrace):
    # A client that asks for a big streamed response and never reads it: once the socket
    # buffers are full, the write stalls; --socket-timeout 2 ends it, close() is called, and
    # the other thread serves meanwhile.
    srv = headrace("--wsgi-file", app("hard_app.py"), "--processes", "1", "--threads", "2",
                   "--socket-timeout", "2")
    pid = int(srv.request(get("/pid")).body)
    mark = len(srv.log())
    closed = srv.record / "close-wstall"
    latencies = []
    with srv.connect() as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(get("/stream?tag=wstall&n=2000&size=65536&delay=0"))
        sent = time.monotonic()
        done = None
        while time.monotonic() < sent + 12 and done is None:
            t0 = time.monotonic()
            r = srv.request(get("/pid"), timeout=3)
            latencies.append(time.monotonic() - t0)
            assert (r.status, int(r.body)) == (200, pid)
            if closed.exists():
                done = time.monotonic()
            time.sleep(0.2)
        assert done is not None, "a response nobody reads was not given up within 12 s"
        took = done - sent
        assert 1.5 <= took <= 6.0, f"write stall ended after {took:.2f} s (--socket-timeout 2)"
        got = len(c.read_until_eof(10))
    assert got < 2000 * 65536, "the whole response went out to a client that never read"
    assert max(latencies) < 0.5, f"the other thread was not serving: {latencies}"
    log = srv.wait_log("client disconnected while the response was written", timeout=5)
    assert "Traceback" not in log[mark:]


def test_head_timeout_on_reused_connection(headrace):
    # The head timer of a keep-alive connection starts with the next head's first byte: not
    # at the accept (which would cut it at once here) and not never.
    srv = headrace("--wsgi-file", app("hard_app.py"), "--processes", "1",
                   "--socket-timeout", "2")
    pid = int(srv.request(get("/pid")).body)
    with srv.connect() as c:
        c.send(get("/pid"))
        assert int(c.read_response().body) == pid
        time.sleep(2.5)  # idle, longer than --socket-timeout, shorter than --http-keepalive
        c.send(b"GET /pid HTTP/1.1\r\n")
        started = time.monotonic()
        ended = None
        while ended is None and time.monotonic() < started + 8:
            if select.select([c.sock], [], [], 0.4)[0]:
                ended = time.monotonic()
                break
            try:
                c.send(b"X")
            except OSError:
                ended = time.monotonic()
        assert ended is not None, "a slow second head on a reused connection was never cut"
        took = ended - started
        assert 1.5 <= took <= 4.5, f"second head cut after {took:.2f} s (--socket-timeout 2)"
        rest = c.read_until_eof(5)
    assert rest == b"" or rest.startswith(b"HTTP/1.1 408 "), rest[:200]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_unread_big_body_keeps_framing(headrace, framing):
    # The app answers without reading a 3 MB body (more than the server reads away after the
    # app). The client sent the whole body, so unless the response said Connection: close, it
    # may send its next request on the same connection: that must work.
    srv = headrace("--wsgi-file", app("basic.py"), "--processes", "1")
    pid = int(srv.request(get("/pid")).body)
    size = 3 * 1024 * 1024
    if framing == "chunked":
        piece = b"x" * 65536
        body = b"".join(b"10000\r\n" + piece + b"\r\n" for _ in range(size // 65536))
        raw = req(b"POST /pid HTTP/1.1", TE, body=body + b"0\r\n\r\n")
    else:
        raw = req(b"POST /pid HTTP/1.1", cl(size), body=b"x" * size)
    with srv.connect() as c:
        sent = threading.Event()

        def send_all():
            try:
                c.send(raw)
                sent.set()
            except OSError:
                pass

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        r = c.read_response()
        assert (r.status, int(r.body)) == (200, pid)
        sender.join(10)
        announced_close = "close" in (r.header("Connection") or "").lower()
        if announced_close:
            assert peer_end(c) in ("eof", "reset")
        else:
            assert sent.is_set(), "the server stopped reading a body it did not refuse"
            try:
                c.send(get("/pid"))
                nxt = c.read_response()
            except (EOFError, ConnectionResetError, BrokenPipeError) as e:
                raise AssertionError(
                    f"response without Connection: close, then the connection was dropped ({e!r})"
                ) from None
            assert (nxt.status, int(nxt.body)) == (200, pid)
