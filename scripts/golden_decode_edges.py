#!/usr/bin/python3
"""Regenerate the decoder's edge-case and truncation goldens with PIL.

Run with Debian's interpreter (python3-pil 9.4, as the other goldens):

    /usr/bin/python3 scripts/golden_decode_edges.py

It writes, deterministically:

  inference/imaging/testdata/edge/     small inputs where decoders commonly
      differ from PIL: GIF canvases and palettes, LZW streams that stop early
      or run on, PNG and JPEG files with their ends cut, damaged or padded;
      edge.json gives, for each, PIL's error or its RGB size and sha256.
  inference/imaging/testdata/truncated.json   for every input of decode/ and
      edge/, the prefix lengths whose bytes PIL decodes (ranges [from, to)),
      and the sha256 of PIL's RGB for the shortest accepted prefix; every
      other prefix makes PIL raise (LOAD_TRUNCATED_IMAGES is False, as in
      Immich).

Decoding is Immich's decode_pil: Image.open, load, convert("RGB").
"""

import hashlib
import io
import json
import os
import struct
import sys
import warnings
import zlib

import numpy as np
import PIL
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_clip import IMAGING, encode, png_chunk, raw_png, smooth, write  # noqa: E402

warnings.simplefilter("ignore")
Image.MAX_IMAGE_PIXELS = None


def decode_pil(data: bytes):
    """PIL's RGB image, or the exception it raised."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        if im.mode != "RGB":
            im = im.convert("RGB")
        return im
    except Exception as e:  # noqa: BLE001 - any failure is a refusal
        return e


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def lzw(indices, mcs: int, grow: bool = True, extra=(), end: bool = True) -> bytes:
    """GIF LZW data sub-blocks. With grow, a real compressor (table and
    code size growth, clear when full); without, one literal per code with
    clears before the code size would grow. extra codes go after the pixels."""
    clear, eoi = 1 << mcs, (1 << mcs) + 1
    out, acc, nbits = bytearray(), 0, 0
    size = mcs + 1

    def emit(code):
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(acc & 255)
            acc >>= 8
            nbits -= 8

    emit(clear)
    if grow:
        table = {(i,): i for i in range(clear)}
        nxt = eoi + 1
        w = ()
        for v in indices:
            c = (v,)
            if w + c in table:
                w = w + c
                continue
            emit(table[w])
            if nxt < 4096:
                table[w + c] = nxt
                nxt += 1
                if nxt > (1 << size) and size < 12:
                    size += 1
            else:
                emit(clear)
                table = {(i,): i for i in range(clear)}
                nxt, size = eoi + 1, mcs + 1
            w = c
        if w:
            emit(table[w])
    else:
        n = 0
        for v in indices:
            emit(int(v))
            n += 1
            if n == (1 << size) - clear - 3:
                emit(clear)
                n = 0
    for c in extra:
        emit(c)
    if end:
        emit(eoi)
    if nbits:
        out.append(acc & 255)
    b = bytearray()
    for i in range(0, len(out), 255):
        chunk = out[i:i + 255]
        b += bytes([len(chunk)]) + chunk
    return bytes(b) + b"\0"


def gif(screen, table, frame, mcs=4, transparent=None, interlace=False, pre=b"", tail=b";", data=None,
        gce=None, local=None):
    sw, sh = screen
    x, y, w, h, idx = frame
    flags = 0
    if table is not None:
        bits = max(1, (len(table) // 3 - 1).bit_length())
        flags = 0x80 | (bits - 1)
        table = table + bytes(3 * (1 << bits) - len(table))
    b = b"GIF89a" + struct.pack("<HHBBB", sw, sh, flags, 0, 0) + (table or b"") + pre
    if gce is not None:
        b += gce
    elif transparent is not None:
        b += bytes([0x21, 0xF9, 4, 1, 0, 0, transparent, 0])
    lflags = 0x40 if interlace else 0
    ltable = b""
    if local is not None:
        bits = max(1, (len(local) // 3 - 1).bit_length())
        lflags |= 0x80 | (bits - 1)
        ltable = local + bytes(3 * (1 << bits) - len(local))
    rows = [list(r) for r in idx]
    if interlace:
        order = list(range(0, h, 8)) + list(range(4, h, 8)) + list(range(2, h, 4)) + list(range(1, h, 2))
        rows = [rows[r] for r in order]
    flat = [int(v) for r in rows for v in r]
    b += bytes([0x2C]) + struct.pack("<HHHHB", x, y, w, h, lflags) + ltable + bytes([mcs])
    b += data if data is not None else lzw(flat, mcs)
    return bytes(b) + tail


def edge_inputs() -> dict:
    rng = np.random.default_rng(20240613)
    pal = rng.integers(0, 256, 48).astype(np.uint8).tobytes()
    idx = lambda h, w, n=16: rng.integers(0, n, (h, w))  # noqa: E731
    noise = Image.fromarray(rng.integers(0, 256, (120, 160, 3)).astype(np.uint8)).convert("P")
    photo = Image.fromarray(smooth(rng, 40, 56, noise=10))
    out = {
        # Palettes: indices past the table, and no table at all (mode L).
        "gif_short_table.gif": gif((12, 7), pal[:6], (0, 0, 12, 7, idx(7, 12, 16))),
        "gif_no_table.gif": gif((12, 7), None, (0, 0, 12, 7, idx(7, 12, 16))),
        # Canvas: a frame sticking out of the screen, a 0×0 screen, a screen
        # much larger than its frame (filled with index 0 or the transparent one).
        "gif_frame_outside.gif": gif((10, 6), pal, (4, 3, 9, 8, idx(8, 9))),
        "gif_screen_0x0.gif": gif((0, 0), pal, (2, 1, 7, 5, idx(5, 7))),
        "gif_screen_large.gif": gif((90, 70), pal, (80, 60, 3, 2, idx(2, 3))),
        "gif_screen_large_trns.gif": gif((90, 70), pal, (1, 1, 3, 2, idx(2, 3)), transparent=9),
        # Interlacing, with heights that leave passes empty.
        "gif_interlaced_11.gif": gif((9, 11), pal, (0, 0, 9, 11, idx(11, 9)), interlace=True),
        "gif_interlaced_3.gif": gif((5, 3), pal, (0, 0, 5, 3, idx(3, 5)), interlace=True),
        "gif_interlaced_1.gif": gif((5, 1), pal, (0, 0, 5, 1, idx(1, 5)), interlace=True),
        # LZW: PIL's own compressor (table growth to 12 bits, clears, KwKwK).
        "gif_pil_noise.gif": encode(noise, "GIF"),
        "gif_grow_8bit.gif": gif((64, 48), bytes(range(256)) * 3, (0, 0, 64, 48, idx(48, 64, 7)), mcs=8),
        # Codes after the last pixel (PIL stops at the last pixel), no end
        # code, an end code before the last pixel followed by more blocks.
        "gif_extra_codes.gif": gif((6, 4), pal, (0, 0, 6, 4, idx(4, 6)),
                                   data=lzw([int(v) for v in idx(4, 6).ravel()], 4, extra=(3, 4, 5))),
        "gif_no_end_code.gif": gif((6, 4), pal, (0, 0, 6, 4, idx(4, 6)),
                                   data=lzw([int(v) for v in idx(4, 6).ravel()], 4, end=False)),
        "gif_bad_code.gif": gif((6, 4), pal, (0, 0, 6, 4, idx(4, 6)),
                                data=lzw([1, 2], 4, extra=(30,))),
        # Blocks: stray bytes, a later GCE without transparency, a short GCE,
        # comment and NETSCAPE extensions, a local table, an LZW size of 12.
        "gif_stray_bytes.gif": gif((6, 4), pal, (0, 0, 6, 4, idx(4, 6)), pre=b"\x07\x00zz"),
        "gif_two_gce.gif": gif((6, 4), pal, (1, 0, 4, 3, idx(3, 4)),
                               gce=bytes([0x21, 0xF9, 4, 1, 0, 0, 7, 0, 0x21, 0xF9, 4, 0, 0, 0, 2, 0])),
        "gif_short_gce.gif": gif((6, 4), pal, (0, 0, 6, 4, idx(4, 6)), gce=bytes([0x21, 0xF9, 2, 1, 0, 0])),
        "gif_extensions.gif": gif((6, 4), pal, (0, 0, 6, 4, idx(4, 6)),
                                  pre=b"\x21\xfe\x05hello\x03abc\x00\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"),
        "gif_netscape_empty.gif": gif((6, 4), pal, (0, 0, 6, 4, idx(4, 6)), pre=b"\x21\xff\x0bNETSCAPE2.0\x00"),
        "gif_local_table.gif": gif((6, 4), pal, (0, 0, 6, 4, idx(4, 6, 4)), local=pal[::-1][:12]),
        "gif_mcs_12.gif": gif((6, 4), None, (0, 0, 6, 4, idx(4, 6, 200)), mcs=12),
        "gif_mcs_13.gif": gif((6, 4), None, (0, 0, 6, 4, idx(4, 6, 200)), mcs=12).replace(b"\x00\x0c", b"\x00\x0d", 1),
        "gif_no_frame.gif": b"GIF89a\x05\x00\x05\x00\x00\x00\x00;",
    }
    png = encode(photo, "PNG")
    iend = png.rfind(b"IEND") - 4
    idat = png.find(b"IDAT") - 4
    out["png_no_iend.png"] = png[:iend]
    out["png_trailing_garbage.png"] = png + b"garbage"
    bad_crc = bytearray(png)
    bad_crc[iend - 1] ^= 0xFF  # the IDAT chunk's CRC
    out["png_bad_idat_crc.png"] = bytes(bad_crc)
    # The same rows split over three IDAT chunks, then cut inside the last.
    n = int.from_bytes(png[idat:idat + 4], "big")
    z = png[idat + 8:idat + 8 + n]
    parts = [z[: n // 3], z[n // 3: 2 * n // 3], z[2 * n // 3:]]
    split = png[:idat] + b"".join(png_chunk(b"IDAT", p) for p in parts) + png_chunk(b"IEND", b"")
    out["png_split_idat.png"] = split
    out["png_interlaced_cut.png"] = encode(photo, "PNG", optimize=False)[:-20]
    out["png_gray16_no_iend.png"] = raw_png(rng.integers(0, 600, (9, 13)), 0, 16)[:-12]
    jpg = encode(photo, "JPEG", quality=90)
    out["jpeg_trailing_garbage.jpg"] = jpg + b"\x00garbage\xff"
    out["jpeg_no_eoi.jpg"] = jpg[:-2]
    out["jpeg_cut_then_eoi.jpg"] = jpg[: len(jpg) * 2 // 3] + b"\xff\xd9"
    out["jpeg_progressive_cut_then_eoi.jpg"] = encode(photo, "JPEG", progressive=True)[:700] + b"\xff\xd9"
    out["bmp_rle8.bmp"] = rle8_bmp(rng)
    out["webp_lossy_alpha.webp"] = encode(photo.convert("RGBA"), "WEBP", quality=70)
    out["tiff_lzw.tiff"] = encode(photo, "TIFF", compression="tiff_lzw")
    return out


def rle8_bmp(rng) -> bytes:
    """A 8-bit BMP with RLE8 runs, absolute runs, end-of-line and end-of-bitmap codes."""
    w, h = 11, 5
    px = bytearray()
    for y in range(h):
        px += bytes([4, int(rng.integers(0, 6))])         # a run of 4
        px += bytes([0, 5]) + bytes(int(v) for v in rng.integers(0, 6, 5)) + b"\0"  # absolute 5, padded
        px += bytes([2, 1])                                 # a run of 2
        px += b"\0\0"                                      # end of line
    px += b"\0\1"
    pal = b"".join(bytes([int(b), int(g), int(r), 0]) for r, g, b in rng.integers(0, 256, (6, 3)))
    off = 14 + 40 + len(pal)
    hdr = b"BM" + struct.pack("<IHHI", off + len(px), 0, 0, off)
    dib = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(px), 2835, 2835, 6, 0)
    return hdr + dib + pal + bytes(px)


def verdict(data: bytes) -> dict:
    ok = []
    first_sha = None
    for n in range(len(data) + 1):
        im = decode_pil(data[:n])
        if isinstance(im, Exception):
            continue
        if first_sha is None:
            first_sha = sha256(im.tobytes())
        if ok and ok[-1][1] == n:
            ok[-1][1] = n + 1
        else:
            ok.append([n, n + 1])
    return {"len": len(data), "ok": ok, "first_rgb_sha256": first_sha}


def main() -> None:
    edge = os.path.join(IMAGING, "edge")
    cases = []
    inputs = edge_inputs()
    for name, data in sorted(inputs.items()):
        write(os.path.join(edge, name), data)
        im = decode_pil(data)
        c = {"input": name}
        if isinstance(im, Exception):
            c["error"] = f"{type(im).__name__}: {im}"[:120]
        else:
            c.update({"w": im.width, "h": im.height, "rgb_sha256": sha256(im.tobytes())})
        cases.append(c)
    write(os.path.join(edge, "edge.json"),
          json.dumps({"pillow": PIL.__version__, "cases": cases}, indent=1).encode())

    trunc = {}
    dec = os.path.join(IMAGING, "decode")
    for name in sorted(os.listdir(dec)):
        if name.endswith(".json") or name.endswith(".rgb.png"):
            continue
        with open(os.path.join(dec, name), "rb") as f:
            trunc["decode/" + name] = verdict(f.read())
    for name, data in sorted(inputs.items()):
        trunc["edge/" + name] = verdict(data)
    write(os.path.join(IMAGING, "truncated.json"),
          json.dumps({"pillow": PIL.__version__, "files": trunc}, indent=1).encode())


if __name__ == "__main__":
    main()
