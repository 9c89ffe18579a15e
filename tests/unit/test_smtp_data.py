"""gateway.smtp_data.read_data: the bulk DATA reader gives what a line-by-line
reader (aiosmtpd's way) gives, however the bytes are split into packets."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.smtp_data import DataError, DataResult, read_data

END = b"\r\n.\r\n"


def line_by_line(wire: bytes, *, max_bytes: int, max_line: int) -> tuple[DataResult, bytes]:
    """The reference: split at CRLF, stop at the line ".", count and unstuff per line
    (as aiosmtpd 1.4.6's smtp_DATA). Returns the result and the bytes left unread."""
    lines: list[bytes] = []
    received = 0
    error: DataError | None = None
    pos = 0
    while True:
        end = wire.find(b"\r\n", pos)
        assert end >= 0, "the wire data has no end of DATA"
        line = wire[pos : end + 2]
        pos = end + 2
        if line == b".\r\n":
            break
        received += len(line)
        if error is None and received > max_bytes:
            error = DataError.TOO_MUCH
        if error is None and len(line) - 2 > max_line:
            error = DataError.LINE_TOO_LONG
        lines.append(line[1:] if line.startswith(b".") else line)
    if error is not None:
        return DataResult(b"", error), wire[pos:]
    return DataResult(b"".join(lines)), wire[pos:]


async def read_chunks(
    chunks: list[bytes], *, max_bytes: int, max_line: int, limit: int = 2**16
) -> tuple[DataResult, bytes]:
    """Feed ``chunks`` to a real StreamReader as packets arriving one after another;
    returns the result and what the reader still holds afterwards."""
    reader = asyncio.StreamReader(limit=limit)

    async def feed() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    result = await asyncio.wait_for(read_data(reader, max_bytes=max_bytes, max_line=max_line), 5)
    await feeder
    return result, await reader.read()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


async def test_a_message_ends_at_crlf_dot_crlf_and_the_next_command_stays_unread() -> None:
    result, rest = await read_chunks(
        [b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"], max_bytes=1000, max_line=100
    )
    assert result == DataResult(b"Subject: hi\r\n\r\nbody\r\n")
    assert rest == b"QUIT\r\n"


async def test_a_dot_line_straight_after_354_is_an_empty_message() -> None:
    result, rest = await read_chunks([b".\r\nNOOP\r\n"], max_bytes=1000, max_line=100)
    assert result == DataResult(b"")
    assert rest == b"NOOP\r\n"


@pytest.mark.parametrize("fake", [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n"])
async def test_smuggling_endings_are_content(fake: bytes) -> None:
    wire = b"a" + fake + b"MAIL FROM:<x@y>\r\n.\r\n"
    result, rest = await read_chunks([wire], max_bytes=1000, max_line=100)
    assert rest == b""  # DATA ended at the real end only
    assert result.content.endswith(b"MAIL FROM:<x@y>\r\n")
    assert result == line_by_line(wire, max_bytes=1000, max_line=100)[0]


async def test_lines_ending_in_a_dot_do_not_end_data() -> None:
    wire = b"Regards.\r\nSee you.\r\n..\r\n.\r\n"
    result, _ = await read_chunks([wire], max_bytes=1000, max_line=100)
    assert result.content == b"Regards.\r\nSee you.\r\n.\r\n"


async def test_dot_stuffing_is_undone_on_every_line() -> None:
    result, _ = await read_chunks([b"..a\r\n...\r\nb.\r\n.\r\n"], max_bytes=1000, max_line=100)
    assert result.content == b".a\r\n..\r\nb.\r\n"


async def test_over_max_bytes_is_read_to_the_end_and_reported() -> None:
    wire = b"x" * 50 + b"\r\n" + b"y" * 50 + b"\r\n.\r\nQUIT\r\n"
    result, rest = await read_chunks([wire], max_bytes=60, max_line=100)
    assert result == DataResult(b"", DataError.TOO_MUCH)
    assert rest == b"QUIT\r\n"


async def test_exactly_max_bytes_is_kept() -> None:
    body = b"x" * 8 + b"\r\n"
    result, _ = await read_chunks([body + b".\r\n"], max_bytes=len(body), max_line=100)
    assert result == DataResult(body)


async def test_a_line_over_max_line_is_reported_and_one_at_it_is_kept() -> None:
    over, _ = await read_chunks([b"a" * 11 + b"\r\n.\r\n"], max_bytes=1000, max_line=10)
    at, _ = await read_chunks([b"a" * 10 + b"\r\n.\r\n"], max_bytes=1000, max_line=10)
    assert over == DataResult(b"", DataError.LINE_TOO_LONG)
    assert at == DataResult(b"a" * 10 + b"\r\n")


async def test_the_transparency_dot_counts_towards_the_line_length() -> None:
    result, _ = await read_chunks([b".." + b"a" * 9 + b"\r\n.\r\n"], max_bytes=1000, max_line=10)
    assert result.error is DataError.LINE_TOO_LONG


async def test_a_long_line_without_end_of_data_in_the_stream_limit_is_still_read() -> None:
    # No ".CRLF" within the StreamReader's limit: read in pieces, not refused.
    line = b"b" * 5000
    result, _ = await read_chunks(
        [line[:2000], line[2000:], b"\r\n.\r\n"], max_bytes=10_000, max_line=6000, limit=512
    )
    assert result == DataResult(line + b"\r\n")


async def test_an_endless_line_stops_being_kept_once_over_max_line() -> None:
    reader = asyncio.StreamReader(limit=64)
    reader.feed_data(b"z" * 10_000 + b"\r\n.\r\n")
    result = await asyncio.wait_for(read_data(reader, max_bytes=1_000_000, max_line=100), 5)
    assert result.error is DataError.LINE_TOO_LONG


async def test_the_stream_ending_before_end_of_data_raises() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        await read_chunks([b"Subject: cut\r\n\r\nhalf"], max_bytes=1000, max_line=100)


# Bytes that make DATA interesting: line ends, bare CR/LF, dots, letters.
_wire_bytes = st.lists(
    st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"bb", b"\r\n.", b".\r\n"]),
    max_size=60,
).map(b"".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_wire_bytes,
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    max_bytes=st.integers(min_value=1, max_value=120),
    max_line=st.integers(min_value=1, max_value=30),
    limit=st.integers(min_value=4, max_value=64),
)
@example(body=b"", cuts=[], max_bytes=10, max_line=10, limit=8)
@example(body=b"\r\n", cuts=[1], max_bytes=10, max_line=10, limit=8)
def test_matches_a_line_by_line_reader(
    body: bytes, cuts: list[int], max_bytes: int, max_line: int, limit: int
) -> None:
    wire = body + END + b"NEXT\r\n"
    expected, rest = line_by_line(wire, max_bytes=max_bytes, max_line=max_line)
    got, got_rest = asyncio.run(
        read_chunks(split(wire, cuts), max_bytes=max_bytes, max_line=max_line, limit=limit)
    )
    if expected.error is not None and got.error is not None:
        # When one packet breaks both limits, which one is named may differ.
        assert got.content == b""
    else:
        assert got == expected
    assert got_rest == rest
