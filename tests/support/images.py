"""Small real images for tests, made with the standard library (no Pillow)."""
from __future__ import annotations

import base64
import struct
import zlib


def png(width: int, height: int, pixel) -> bytes:
    """An RGB PNG whose pixel (x, y) is `pixel(x, y)` → (r, g, b)."""
    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


# two different images of the same size: a gradient and its inverse on another channel
GRADIENT = png(40, 30, lambda x, y: (x * 6 % 256, y * 8 % 256, 30))
INVERSE = png(40, 30, lambda x, y: (255 - x * 6 % 256, 200, y * 8 % 256))
PIXEL = png(1, 1, lambda x, y: (255, 0, 0))
