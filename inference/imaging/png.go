package imaging

/*
#cgo LDFLAGS: -lz
#include <string.h>
#include <zlib.h>

// mlserve_png_restore inflates the zlib stream in[0:inlen] (which may be
// cut short) with zlib, as PIL's PNG decoder does, and writes the first
// raw bytes it yields into out as a new zlib stream of stored blocks,
// adler32 included. It returns how many raw bytes it got: raw when the
// stream held them all, fewer when it ends (or breaks) before.
static size_t mlserve_png_restore(const unsigned char *in, size_t inlen, unsigned char *out, size_t raw) {
	z_stream s;
	memset(&s, 0, sizeof s);
	if (inflateInit(&s) != Z_OK)
		return 0;
	s.next_in = (unsigned char *)in;
	s.avail_in = (uInt)inlen;
	unsigned char *p = out;
	*p++ = 0x78;
	*p++ = 0x01;
	uLong adler = adler32(0, Z_NULL, 0);
	size_t done = 0;
	for (size_t left = raw; left > 0;) {
		size_t n = left < 65535 ? left : 65535;
		p[0] = n == left;
		p[1] = n & 255;
		p[2] = n >> 8;
		p[3] = ~n & 255;
		p[4] = (~n >> 8) & 255;
		p += 5;
		s.next_out = p;
		s.avail_out = (uInt)n;
		while (s.avail_out > 0 && inflate(&s, Z_SYNC_FLUSH) == Z_OK) {
		}
		size_t got = n - s.avail_out;
		adler = adler32(adler, p, (uInt)got);
		done += got;
		if (got < n)
			break;
		p += n;
		left -= n;
	}
	inflateEnd(&s);
	if (done == raw) {
		p[0] = adler >> 24;
		p[1] = adler >> 16;
		p[2] = adler >> 8;
		p[3] = adler;
	}
	return done;
}
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"unsafe"
)

// PIL reads a PNG's image data until it has every row and ignores what
// follows: a file cut inside the end of its zlib stream (the checksum,
// the last bits of the final block), or missing its IEND chunk, or whose
// IDAT checksums are wrong, decodes in PIL. libpng (through OpenCV) wants
// the stream and the chunks whole and refuses such files. When OpenCV
// fails on a PNG, repairPNG rebuilds it the way PIL reads it: the chunks
// before the image data as they are, the rows inflated from the IDAT
// chunks (as far as they go, with zlib as PIL) and stored again in a
// fresh zlib stream, and an IEND. If the data does not hold every row,
// the file is truncated for PIL too.

// pngRaw is the size of a PNG's filtered rows: one filter byte per row of
// each Adam7 pass (or of the image), then the packed samples.
func pngRaw(w, h int, depth, colorType byte, interlaced bool) (int64, error) {
	var channels int64
	switch colorType {
	case 0, 3:
		channels = 1
	case 2:
		channels = 3
	case 4:
		channels = 2
	case 6:
		channels = 4
	default:
		return 0, fmt.Errorf("%w: png: colour type %d", ErrDecode, colorType)
	}
	bpp := channels * int64(depth)
	rows := func(pw, ph int64) int64 {
		if pw == 0 || ph == 0 {
			return 0
		}
		return ph * (1 + (pw*bpp+7)/8)
	}
	W, H := int64(w), int64(h)
	if !interlaced {
		return rows(W, H), nil
	}
	var n int64
	for _, p := range [7][4]int64{{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}} {
		x0, y0, dx, dy := p[0], p[1], p[2], p[3]
		n += rows((W-x0+dx-1)/dx, (H-y0+dy-1)/dy)
	}
	return n, nil
}

// repairPNG returns data rebuilt as described above, or an error: with
// ErrTruncated when the image data ends before the last row, with
// ErrTooLarge when the rebuilt file would not fit in maxBytes beside the
// decoded image.
func repairPNG(data []byte, h Header, maxBytes int64) ([]byte, error) {
	ihdr := data[16:29]
	raw, err := pngRaw(h.W, h.H, ihdr[8], ihdr[9], ihdr[12] == 1)
	if err != nil {
		return nil, err
	}
	// Stored deflate blocks carry 65535 bytes each, behind 5 bytes.
	const block = 65535
	zlen := 2 + raw + 5*((raw+block-1)/block) + 4
	if raw == 0 || zlen > 1<<31-1 {
		return nil, fmt.Errorf("%w: png: image data size out of range", ErrDecode)
	}
	// Chunks before the first IDAT are kept whole, checksums and all.
	i := 8
	for {
		if i+8 > len(data) {
			return nil, fmt.Errorf("%w: %w: png: no image data", ErrDecode, ErrTruncated)
		}
		n := int64(binary.BigEndian.Uint32(data[i:]))
		if string(data[i+4:i+8]) == "IDAT" {
			break
		}
		if n > int64(len(data)-i-12) {
			return nil, fmt.Errorf("%w: %w: png: chunk %q", ErrDecode, ErrTruncated, data[i+4:i+8])
		}
		i += 12 + int(n)
	}
	head := data[:i]
	size := int64(len(head)) + 8 + zlen + 4 + 12
	if need := size + int64(len(data)) + h.DecodeBytes(); need > maxBytes {
		return nil, fmt.Errorf("%w: %w: png: rebuilding its image data needs about %d MB, over the %d MB limit",
			ErrDecode, ErrTooLarge, need/1e6, maxBytes/1e6)
	}
	// The IDAT payloads, in order, as far as they go (PIL skips their
	// checksums).
	var comp []byte
	for i+8 <= len(data) && string(data[i+4:i+8]) == "IDAT" {
		n := int64(binary.BigEndian.Uint32(data[i:]))
		end := min(int64(len(data)), int64(i)+8+n)
		comp = append(comp, data[i+8:end]...)
		i = int(end) + 4
	}
	if len(comp) == 0 {
		return nil, fmt.Errorf("%w: %w: png: no image data", ErrDecode, ErrTruncated)
	}
	out := make([]byte, size)
	p := copy(out, head)
	binary.BigEndian.PutUint32(out[p:], uint32(zlen))
	copy(out[p+4:], "IDAT")
	z := out[p+8 : p+8+int(zlen)]
	got := C.mlserve_png_restore((*C.uchar)(unsafe.Pointer(&comp[0])), C.size_t(len(comp)),
		(*C.uchar)(unsafe.Pointer(&z[0])), C.size_t(raw))
	if int64(got) != raw {
		return nil, fmt.Errorf("%w: %w: png: image data ends after %d of %d bytes", ErrDecode, ErrTruncated, int64(got), raw)
	}
	q := p + 8 + int(zlen)
	binary.BigEndian.PutUint32(out[q:], crc32.ChecksumIEEE(out[p+4:q]))
	copy(out[q+4:], "\x00\x00\x00\x00IEND")
	binary.BigEndian.PutUint32(out[q+12:], crc32.ChecksumIEEE([]byte("IEND")))
	return out, nil
}
