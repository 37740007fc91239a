#!/usr/bin/python3
"""Regenerate the lossless-format decoding corpus and its goldens.

mlserve decodes PNG, WebP, BMP and TIFF without OpenCV's imgcodecs (which
would link GDAL, OpenEXR, GStreamer and more into the binary). This corpus
proves that the replacement decoders give the pixels of the reference
(PIL, as Immich's decode_pil) and of the decoder they replaced (OpenCV's
imdecode with IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION, or IMREAD_ANYDEPTH
for 16-bit grey, exactly as inference/imaging did before).

Run with Debian's interpreter, which has python3-pil, python3-numpy and
python3-opencv (OpenCV 4.6, the library gocv linked):

    /usr/bin/python3 scripts/golden_formats.py

It writes inference/imaging/testdata/formats/: the encoded inputs and
formats.json, with, for each input, the size and the sha256 of the RGB
pixels PIL gives (or PIL's error) and of those the OpenCV path gave (or
"error"). The Go test (TestDecodeFormats) decodes each input and compares.
"""

import hashlib
import io
import json
import os
import struct
import sys
import warnings
import zlib

import cv2
import numpy as np
import PIL
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden_clip import ROOT, encode, png_chunk, raw_png, smooth, write  # noqa: E402

OUT = os.path.join(ROOT, "inference", "imaging", "testdata", "formats")

warnings.simplefilter("ignore")


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def decode_pil(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def gray16(data: bytes) -> bool:
    """The former path's test (Header.gray16): 16-bit greyscale PNG or TIFF."""
    if data.startswith(b"\x89PNG"):
        return data[24] == 16 and data[25] == 0
    if data[:4] in (b"II*\0", b"MM\0*"):
        with Image.open(io.BytesIO(data)) as im:
            return im.mode.startswith("I;16")
    return False


def decode_opencv(data: bytes):
    """inference/imaging's former path: decodeGray16 or decodeOpenCV."""
    buf = np.frombuffer(data, np.uint8)
    if gray16(data):
        m = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_IGNORE_ORIENTATION)
        if m is not None and m.dtype == np.uint16 and m.ndim == 2:
            g = np.minimum(m, 255).astype(np.uint8)
            return np.dstack([g, g, g])
    else:
        m = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if m is None:
        return None
    if m.ndim == 2:
        return np.dstack([m, m, m])
    if m.shape[2] == 4:
        m = m[..., :3]
    return np.ascontiguousarray(m[..., ::-1])


def adam7_png(arr, color_type, depth, extra=b""):
    """An interlaced (Adam7) PNG of 8- or 16-bit samples, written by hand."""
    h, w = arr.shape[:2]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        sub = sub.reshape(sub.shape[0], -1)
        for row in sub:
            raw += b"\0" + (row.astype(">u2").tobytes() if depth == 16 else row.astype(np.uint8).tobytes())
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra
            + png_chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + png_chunk(b"IEND", b""))


# ---------------------------------------------------------------- BMP by hand


def bmp(width, height, bpp, rows, *, header=40, compression=0, palette=None, masks=None,
        top_down=False, clrused=None, pixels=None):
    """A BMP with rows (bottom-up order is applied here) given as bytes per row
    (unpadded), or the raw pixel block in `pixels` (RLE)."""
    if pixels is None:
        stride = ((width * bpp + 31) // 32) * 4
        order = rows if top_down else rows[::-1]
        pixels = b"".join(r + b"\0" * (stride - len(r)) for r in order)
    pal = b""
    if palette is not None:
        if header == 12:
            pal = b"".join(bytes([b, g, r]) for r, g, b in palette)
        else:
            pal = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    h = -height if top_down else height
    if header == 12:
        dib = struct.pack("<IHHHH", 12, width, height, 1, bpp)
        extra = b""
    else:
        n = len(palette) if palette is not None and clrused is None else (clrused or 0)
        dib = struct.pack("<IiiHHIIiiII", header, width, h, 1, bpp, compression, len(pixels), 2835, 2835, n, 0)
        extra = b""
        if header >= 52 and masks is not None:
            dib += struct.pack("<III", *masks[:3])
            if header >= 56:
                dib += struct.pack("<I", masks[3] if len(masks) > 3 else 0)
        dib += b"\0" * (header - len(dib))
        if header == 40 and masks is not None:
            extra = struct.pack("<III", *masks[:3])
    off = 14 + len(dib) + len(extra) + len(pal)
    return b"BM" + struct.pack("<IHHI", off + len(pixels), 0, 0, off) + dib + extra + pal + pixels


def pack_bits(vals, bpp):
    per = 8 // bpp
    out = bytearray((len(vals) + per - 1) // per)
    for i, v in enumerate(vals):
        out[i // per] |= int(v) << (8 - bpp * (i % per + 1))
    return bytes(out)


def rle8(idx):
    """RLE8: runs, absolute runs, an end-of-line per row and a delta."""
    out = bytearray()
    h, w = idx.shape
    for y in range(h - 1, -1, -1):
        row = idx[y]
        x = 0
        while x < w:
            run = 1
            while x + run < w and run < 255 and row[x + run] == row[x]:
                run += 1
            if run >= 3 or w - x < 3:
                out += bytes([run, row[x]])
                x += run
            else:
                n = min(w - x, 5)
                out += bytes([0, n]) + bytes(row[x:x + n].tolist()) + (b"\0" if n % 2 else b"")
                x += n
        out += b"\0\0"
    out += b"\0\1"
    return bytes(out)


def rle4(idx):
    out = bytearray()
    h, w = idx.shape
    for y in range(h - 1, -1, -1):
        row = idx[y]
        x = 0
        while x < w:
            n = min(w - x, 8)
            if n >= 3:
                b = pack_bits(row[x:x + n], 4)
                out += bytes([0, n]) + b + (b"\0" if len(b) % 2 else b"")
            else:
                out += bytes([n, (int(row[x]) << 4) | int(row[min(x + 1, w - 1)])])
            x += n
        out += b"\0\0"
    out += b"\0\1"
    return bytes(out)


# ---------------------------------------------------------------- TIFF by hand


def tiff(width, height, spp, bps, data, *, photometric, extra=None, colormap=None, planar=1):
    """A little-endian, uncompressed, single-strip TIFF."""
    entries = []

    def tag(t, typ, vals):
        entries.append((t, typ, vals))

    tag(256, 4, [width])
    tag(257, 4, [height])
    tag(258, 3, [bps] * spp)
    tag(259, 3, [1])
    tag(262, 3, [photometric])
    tag(273, 4, [0])  # patched below
    tag(277, 3, [spp])
    tag(278, 4, [height])
    tag(279, 4, [len(data)])
    tag(284, 3, [planar])
    if colormap is not None:
        tag(320, 3, colormap)
    if extra is not None:
        tag(338, 3, [extra])
    entries.sort()
    ifd_off = 8
    ifd_len = 2 + 12 * len(entries) + 4
    blob = bytearray()
    blob_off = ifd_off + ifd_len
    recs = []
    for t, typ, vals in entries:
        size = {3: 2, 4: 4}[typ]
        fmt = {3: "H", 4: "I"}[typ]
        raw = struct.pack("<%d%s" % (len(vals), fmt), *vals)
        if len(raw) <= 4:
            recs.append([t, typ, len(vals), raw + b"\0" * (4 - len(raw)), None])
        else:
            recs.append([t, typ, len(vals), struct.pack("<I", blob_off + len(blob)), None])
            blob += raw
            if len(blob) % 2:
                blob += b"\0"
    data_off = blob_off + len(blob)
    out = bytearray(b"II*\0" + struct.pack("<I", ifd_off) + struct.pack("<H", len(recs)))
    for t, typ, n, val, _ in recs:
        if t == 273:
            val = struct.pack("<I", data_off)
        out += struct.pack("<HHI", t, typ, n) + val
    out += struct.pack("<I", 0) + blob + data
    return bytes(out)


# ---------------------------------------------------------------- the corpus


def inputs(rng) -> dict:
    W, H = 37, 23
    rgb = smooth(rng, H, W, noise=20)
    alpha = rng.integers(0, 256, (H, W)).astype(np.uint8)
    alpha[0, :5] = 0  # fully transparent pixels keep their colour
    rgba = np.dstack([rgb, alpha])
    big = smooth(rng, 61, 83, noise=8)  # odd sizes: chroma upsampling edges
    big_a = np.dstack([big, rng.integers(0, 256, big.shape[:2]).astype(np.uint8)])
    pal16 = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(16)]
    pal256 = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(256)]
    idx16 = rng.integers(0, 16, (H, W)).astype(np.uint8)
    idx256 = rng.integers(0, 256, (H, W)).astype(np.uint8)
    # Runs for the RLE encoders.
    runs = np.repeat(rng.integers(0, 16, (H, (W + 3) // 4)), 4, axis=1)[:, :W].astype(np.uint8)
    g16 = rng.integers(0, 600, (H, W))
    out = {}

    # PNG: layouts the decode/ corpus does not have.
    flat_pal = bytes(np.array(pal16, np.uint8).ravel())
    out["png_pal1.png"] = raw_png(rng.integers(0, 2, (H, W)), 3, 1, png_chunk(b"PLTE", flat_pal[:6]))
    out["png_pal2.png"] = raw_png(rng.integers(0, 4, (H, W)), 3, 2, png_chunk(b"PLTE", flat_pal[:12]))
    out["png_pal8_full.png"] = raw_png(idx256, 3, 8, png_chunk(b"PLTE", bytes(np.array(pal256, np.uint8).ravel())))
    out["png_gray8_trns.png"] = raw_png(rgb[..., 1], 0, 8, png_chunk(b"tRNS", struct.pack(">H", int(rgb[0, 0, 1]))))
    out["png_gray16_trns.png"] = raw_png(g16, 0, 16, png_chunk(b"tRNS", struct.pack(">H", int(g16[0, 0]))))
    out["png_rgb16_trns.png"] = raw_png(rng.integers(0, 65536, (H, W, 3)), 2, 16, png_chunk(b"tRNS", b"\0\1\0\2\0\3"))
    out["png_gama_srgb.png"] = raw_png(rgb, 2, 8, png_chunk(b"gAMA", struct.pack(">I", 45455)) + png_chunk(b"sRGB", b"\0"))
    out["png_1x1.png"] = raw_png(rgb[:1, :1], 2, 8)
    out["png_1x40.png"] = raw_png(smooth(rng, 40, 1), 2, 8)
    out["png_adam7_rgb8.png"] = adam7_png(rgb, 2, 8)
    out["png_adam7_rgba16.png"] = adam7_png(rng.integers(0, 65536, (H, W, 4)), 6, 16)
    out["png_adam7_pal8.png"] = adam7_png(idx16, 3, 8, png_chunk(b"PLTE", flat_pal))
    b = io.BytesIO()
    Image.fromarray(rgba).save(b, "PNG")
    out["png_rgba8_pil.png"] = b.getvalue()
    p = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out["png_pal4_pil.png"] = encode(p, "PNG", bits=4)
    out["png_gray_pil.png"] = encode(Image.fromarray(rgb[..., 2]), "PNG")
    out["png_la_pil.png"] = encode(Image.fromarray(rgba[..., [0, 3]].copy(), "LA"), "PNG")

    # WebP: lossy and lossless, with and without alpha, odd sizes.
    out["webp_lossy_q90.webp"] = encode(Image.fromarray(big), "WEBP", quality=90)
    out["webp_lossy_q30.webp"] = encode(Image.fromarray(rgb), "WEBP", quality=30)
    out["webp_lossy_alpha.webp"] = encode(Image.fromarray(big_a), "WEBP", quality=75)
    out["webp_lossy_alpha_exact.webp"] = encode(Image.fromarray(big_a), "WEBP", quality=75, exact=True)
    out["webp_lossless.webp"] = encode(Image.fromarray(big), "WEBP", lossless=True)
    out["webp_lossless_alpha_exact.webp"] = encode(Image.fromarray(rgba), "WEBP", lossless=True, exact=True)
    out["webp_1x1.webp"] = encode(Image.fromarray(rgb[:1, :1]), "WEBP", quality=80)
    out["webp_cv2.webp"] = cv2.imencode(".webp", big[..., ::-1], [cv2.IMWRITE_WEBP_QUALITY, 85])[1].tobytes()

    # BMP: every depth and compression OpenCV and PIL read.
    rows24 = [bytes(rgb[y, :, ::-1].ravel()) for y in range(H)]
    rows32 = [bytes(np.column_stack([rgb[y, :, ::-1], alpha[y]]).ravel()) for y in range(H)]
    out["bmp24_topdown.bmp"] = bmp(W, H, 24, rows24, top_down=True)
    out["bmp24_v5.bmp"] = bmp(W, H, 24, rows24, header=124)
    out["bmp24_os2.bmp"] = bmp(W, H, 24, rows24, header=12)
    out["bmp32.bmp"] = bmp(W, H, 32, rows32)
    out["bmp32_v5_bitfields.bmp"] = bmp(W, H, 32, rows32, header=124, compression=3,
                                        masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000))
    out["bmp32_bitfields.bmp"] = bmp(W, H, 32, rows32, compression=3, masks=(0xFF0000, 0xFF00, 0xFF))
    v555 = ((rgb[..., 0].astype(np.uint16) >> 3) << 10) | ((rgb[..., 1].astype(np.uint16) >> 3) << 5) | (rgb[..., 2] >> 3)
    v565 = ((rgb[..., 0].astype(np.uint16) >> 3) << 11) | ((rgb[..., 1].astype(np.uint16) >> 2) << 5) | (rgb[..., 2] >> 3)
    out["bmp16_555.bmp"] = bmp(W, H, 16, [v555[y].astype("<u2").tobytes() for y in range(H)])
    out["bmp16_565.bmp"] = bmp(W, H, 16, [v565[y].astype("<u2").tobytes() for y in range(H)], compression=3,
                               masks=(0xF800, 0x7E0, 0x1F))
    out["bmp8.bmp"] = bmp(W, H, 8, [bytes(idx256[y]) for y in range(H)], palette=pal256)
    out["bmp8_short_palette.bmp"] = bmp(W, H, 8, [bytes(idx16[y]) for y in range(H)], palette=pal16)
    grey = [(v, v, v) for v in range(256)]
    out["bmp8_grey.bmp"] = bmp(W, H, 8, [bytes(idx256[y]) for y in range(H)], palette=grey)
    out["bmp8_os2.bmp"] = bmp(W, H, 8, [bytes(idx256[y]) for y in range(H)], palette=pal256, header=12)
    out["bmp4.bmp"] = bmp(W, H, 4, [pack_bits(idx16[y], 4) for y in range(H)], palette=pal16)
    out["bmp1.bmp"] = bmp(W, H, 1, [pack_bits(idx16[y] & 1, 1) for y in range(H)], palette=pal16[:2])
    out["bmp8_rle.bmp"] = bmp(W, H, 8, None, compression=1, palette=pal256, pixels=rle8(runs * 13))
    out["bmp4_rle.bmp"] = bmp(W, H, 4, None, compression=2, palette=pal16, pixels=rle4(runs))
    out["bmp8_index_over_palette.bmp"] = bmp(W, H, 8, [bytes(idx256[y]) for y in range(H)], palette=pal16)
    out["bmp16_565_v5.bmp"] = bmp(W, H, 16, [v565[y].astype("<u2").tobytes() for y in range(H)], header=124,
                                  compression=3, masks=(0xF800, 0x7E0, 0x1F, 0))
    rows32rgba = [bytes(rgba[y].ravel()) for y in range(H)]
    out["bmp32_v5_rgba_masks.bmp"] = bmp(W, H, 32, rows32rgba, header=124, compression=3,
                                         masks=(0xFF, 0xFF00, 0xFF0000, 0xFF000000))
    # RLE8 with a delta (skip 3 right, 2 down) and an early end of bitmap.
    d = bytearray()
    for y in range(4):
        d += bytes([W, y * 20 + 5]) + b"\0\0"
    d += bytes([5, 77]) + b"\0\2\3\2" + bytes([7, 99]) + b"\0\1"
    out["bmp8_rle_delta.bmp"] = bmp(W, H, 8, None, compression=1, palette=pal256, pixels=bytes(d))
    out["bmp_pil_rgba.bmp"] = encode(Image.fromarray(rgba), "BMP")
    out["bmp_pil_1bit.bmp"] = encode(Image.fromarray(rgb[..., 0]).convert("1"), "BMP")
    out["bmp_pil_gray.bmp"] = encode(Image.fromarray(rgb[..., 0]), "BMP")

    # TIFF: what x/image/tiff's header reader accepts (the gate in front of
    # both paths): grey 1/8/16, palette, RGB(A) 8/16, compressions.
    im = Image.fromarray(rgb)
    out["tiff_lzw.tiff"] = encode(im, "TIFF", compression="tiff_lzw")
    out["tiff_deflate.tiff"] = encode(im, "TIFF", compression="tiff_adobe_deflate")
    out["tiff_packbits.tiff"] = encode(im, "TIFF", compression="packbits")
    out["tiff_gray8.tiff"] = encode(Image.fromarray(rgb[..., 1]), "TIFF")
    out["tiff_bilevel.tiff"] = encode(Image.fromarray(rgb[..., 1]).convert("1"), "TIFF")
    out["tiff_bilevel_g4.tiff"] = encode(Image.fromarray(rgb[..., 1]).convert("1"), "TIFF", compression="group4")
    out["tiff_palette.tiff"] = encode(im.convert("P", palette=Image.Palette.ADAPTIVE, colors=200), "TIFF")
    out["tiff_rgba_unassoc.tiff"] = encode(Image.fromarray(rgba), "TIFF")
    out["tiff_rgba_assoc.tiff"] = tiff(W, H, 4, 8, rgba.tobytes(), photometric=2, extra=1)
    out["tiff_rgb16.tiff"] = tiff(W, H, 3, 16, rng.integers(0, 65536, (H, W, 3)).astype("<u2").tobytes(), photometric=2)
    out["tiff_rgba16_unassoc.tiff"] = tiff(W, H, 4, 16, rng.integers(0, 65536, (H, W, 4)).astype("<u2").tobytes(),
                                           photometric=2, extra=2)
    out["tiff_miniswhite8.tiff"] = tiff(W, H, 1, 8, rgb[..., 0].tobytes(), photometric=0)
    out["tiff_gray16_miniswhite.tiff"] = tiff(W, H, 1, 16, (g16 * 100).astype("<u2").tobytes(), photometric=0)
    cmap = [int(v) * 257 for v in np.array(pal256, np.uint16)[:, 0]] + \
           [int(v) * 257 for v in np.array(pal256, np.uint16)[:, 1]] + \
           [int(v) * 257 for v in np.array(pal256, np.uint16)[:, 2]]
    out["tiff_palette_hand.tiff"] = tiff(W, H, 1, 8, idx256.tobytes(), photometric=3, colormap=cmap)
    out["tiff_rgba16_assoc.tiff"] = tiff(W, H, 4, 16, rng.integers(0, 65536, (H, W, 4)).astype("<u2").tobytes(),
                                         photometric=2, extra=1)
    cmap8 = [v for c in range(3) for v in np.array(pal256, np.uint16)[:, c].tolist()]
    out["tiff_palette_8bit_cmap.tiff"] = tiff(W, H, 1, 8, idx256.tobytes(), photometric=3, colormap=cmap8)
    out["tiff_jpeg.tiff"] = encode(im, "TIFF", compression="jpeg")
    return out


# Where PIL 9.4 and OpenCV 4.6 disagree, the decoder follows the one named
# here, for the reason given; everywhere else they agree and it matches both.
FOLLOW = {
    "bmp16_555.bmp": ("pil", "OpenCV shifts 5/6-bit samples left; PIL scales them to 0..255 (v*255/31)"),
    "bmp16_565.bmp": ("pil", "OpenCV shifts 5/6-bit samples left; PIL scales them to 0..255 (v*255/63)"),
    "bmp16_565_v5.bmp": ("pil", "OpenCV looks for the masks after a V4/V5 header, not in it, and fails"),
    "bmp32_v5_rgba_masks.bmp": ("pil", "OpenCV ignores 32-bit masks and reads every file as BGRA"),
    "bmp8_index_over_palette.bmp": ("pil", "indices past a short palette: PIL's grey ramp, OpenCV's black"),
    "bmp4_rle.bmp": ("opencv", "PIL 9.4 drops the last pixel of an odd-length RLE4 absolute run"),
    "bmp8_rle_delta.bmp": ("opencv", "PIL 9.4 reads the two bytes of an RLE delta twice"),
    "tiff_palette_8bit_cmap.tiff": ("pil", "libtiff guesses an 8-bit colormap when every entry is < 256"),
    "tiff_rgb16.tiff": ("pil", "libtiff rounds 16-bit samples to 8 bits; PIL takes the high byte"),
    "tiff_rgba16_assoc.tiff": ("pil", "libtiff's RGBA reader rounds; PIL un-premultiplies the high bytes"),
    "tiff_rgba16_unassoc.tiff": ("pil", "libtiff premultiplies unassociated alpha; PIL keeps the colour"),
    "tiff_rgba_assoc.tiff": ("pil", "PIL un-premultiplies associated alpha; OpenCV keeps the stored values"),
    "tiff_rgba_unassoc.tiff": ("pil", "libtiff premultiplies unassociated alpha; PIL keeps the colour"),
    # Not a disagreement: both read it, the new decoder does not.
    "tiff_jpeg.tiff": ("error", "JPEG-compressed TIFF: golang.org/x/image/tiff cannot read it"),
}


def main() -> None:
    rng = np.random.default_rng(10)
    cases = []
    for name, data in sorted(inputs(rng).items()):
        write(os.path.join(OUT, name), data)
        c = {"input": name}
        try:
            with Image.open(io.BytesIO(data)) as src:
                c["pil_mode"] = src.mode
            im = decode_pil(data)
            c["w"], c["h"] = im.width, im.height
            c["pil_sha256"] = sha256(np.asarray(im).tobytes())
        except Exception as e:  # noqa: BLE001 (PIL raises many kinds)
            c["pil_error"] = "%s: %s" % (type(e).__name__, e)
        m = decode_opencv(data)
        if m is None:
            c["opencv_error"] = "imdecode returned an empty Mat"
        else:
            c["opencv_sha256"] = sha256(m.tobytes())
            c.setdefault("w", m.shape[1])
            c.setdefault("h", m.shape[0])
        pil, cv = c.get("pil_sha256"), c.get("opencv_sha256")
        follow, reason = FOLLOW.get(name, (None, ""))
        if follow is None:
            if pil != cv:
                sys.exit("%s: PIL and OpenCV disagree; add it to FOLLOW with a reason" % name)
            follow = "both" if pil else "error"
        c["follow"] = follow
        if reason:
            c["reason"] = reason
        c["want_sha256"] = {"pil": pil, "opencv": cv, "both": pil, "error": None}[follow]
        cases.append(c)
    meta = {"pillow": PIL.__version__, "opencv": cv2.__version__, "cases": cases}
    write(os.path.join(OUT, "formats.json"), (json.dumps(meta, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
