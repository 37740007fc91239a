package imaging

import (
	"encoding/binary"
	"fmt"
)

// gifInfo is what PIL 9.4's GifImagePlugin reads before decoding the
// first frame.
type gifInfo struct {
	canvasW, canvasH int
	// table is the frame's colour table (local, else global) as stored:
	// PIL keeps the colour of the transparent entry.
	table       []byte
	transparent int // -1 when none
	// The frame: its place on the canvas, interlacing, LZW code size, and
	// where its data sub-blocks begin.
	x0, y0, w, h int
	interlace    bool
	bits         int
	data         int
}

// parseGIF walks a GIF's blocks to its first image descriptor as PIL does:
// unknown bytes between blocks are skipped, the last graphic control
// extension with a transparency flag sets the transparent index, and the
// canvas is the logical screen, enlarged where the first frame sticks out
// of it. Malformed blocks that make PIL fail make this fail too.
func parseGIF(data []byte) (*gifInfo, error) {
	bad := func(what string) (*gifInfo, error) {
		return nil, fmt.Errorf("%w: gif: %s", ErrDecode, what)
	}
	if len(data) < 13 {
		return bad("truncated header")
	}
	g := &gifInfo{transparent: -1}
	g.canvasW = int(binary.LittleEndian.Uint16(data[6:]))
	g.canvasH = int(binary.LittleEndian.Uint16(data[8:]))
	i := 13
	if flags := data[10]; flags&0x80 != 0 {
		n := 3 << (flags&7 + 1)
		if i+n > len(data) {
			n = len(data) - i // PIL takes what there is
		}
		g.table = data[i : i+n]
		i += n
	}
	// subBlock returns the sub-block at j and the index after it, or ok
	// false when the data ends inside it.
	subBlock := func(j int) (block []byte, next int, ok bool) {
		if j >= len(data) {
			return nil, j, false
		}
		n := int(data[j])
		if j+1+n > len(data) {
			return nil, j, false
		}
		return data[j+1 : j+1+n], j + 1 + n, true
	}
	for i < len(data) {
		switch data[i] {
		case ';':
			return bad("no image")
		case '!':
			if i+1 >= len(data) {
				return bad("truncated extension")
			}
			label := data[i+1]
			block, j, ok := subBlock(i + 2)
			if !ok {
				return bad("truncated extension")
			}
			if label == 0xF9 {
				// PIL reads the flags, the delay (bytes 1-2) and, when the
				// flag is set, the transparent index (byte 3) from the
				// first sub-block, whatever its length.
				if len(block) < 3 || (block[0]&1 != 0 && len(block) < 4) {
					return bad("short graphic control extension")
				}
				if block[0]&1 != 0 {
					g.transparent = int(block[3])
				}
			}
			if label == 0xFF && len(block) == 0 {
				return bad("empty application extension") // PIL slices None
			}
			if label == 0xFF && len(block) >= 11 && string(block[:11]) == "NETSCAPE2.0" {
				// PIL reads the loop count from the next sub-block and
				// fails when there is none.
				if block, j, ok = subBlock(j); !ok || len(block) == 0 {
					return bad("NETSCAPE2.0 extension without data")
				}
			}
			for len(block) > 0 {
				if block, j, ok = subBlock(j); !ok {
					return bad("truncated extension")
				}
			}
			i = j
		case ',':
			if i+10 > len(data) {
				return bad("truncated image descriptor")
			}
			d := data[i+1 : i+10]
			g.x0 = int(binary.LittleEndian.Uint16(d))
			g.y0 = int(binary.LittleEndian.Uint16(d[2:]))
			g.w = int(binary.LittleEndian.Uint16(d[4:]))
			g.h = int(binary.LittleEndian.Uint16(d[6:]))
			flags := d[8]
			g.interlace = flags&0x40 != 0
			i += 10
			if flags&0x80 != 0 {
				n := 3 << (flags&7 + 1)
				if i+n > len(data) {
					return bad("truncated local colour table")
				}
				g.table = data[i : i+n]
				i += n
			}
			if i >= len(data) {
				return bad("no image data")
			}
			g.bits = int(data[i])
			g.data = i + 1
			if g.bits > 12 {
				return bad("LZW code size over 12 bits")
			}
			if g.w == 0 || g.h == 0 {
				return bad("empty frame")
			}
			g.canvasW = max(g.canvasW, g.x0+g.w)
			g.canvasH = max(g.canvasH, g.y0+g.h)
			return g, nil
		default:
			i++ // PIL ignores stray bytes between blocks
		}
	}
	return bad("no image")
}

// color is index i through the colour table as PIL converts P to RGB:
// indices past the table keep the palette's initial grey ramp (i, i, i),
// which is also what a GIF without any table gives (PIL mode L).
func (g *gifInfo) color(i int) (r, gr, b uint8) {
	if 3*i+3 <= len(g.table) {
		return g.table[3*i], g.table[3*i+1], g.table[3*i+2]
	}
	return uint8(i), uint8(i), uint8(i)
}

// decodeGIF decodes the first frame as PIL 9.4 does for a GIF opened and
// converted to RGB: the canvas is filled with the transparent index (or
// index 0), the frame's LZW data is decoded onto it with PIL's decoder
// rules, and every index is mapped through the frame's colour table with
// transparency ignored. The canvas is written as RGB directly, so decoding
// holds 3 bytes per pixel. OpenCV 4.6 has no GIF decoder.
func decodeGIF(data []byte, h Header) (*Image, error) {
	g := h.gif
	im := New(g.canvasW, g.canvasH)
	if im.W == 0 {
		return nil, ErrEmpty
	}
	var lut [256][3]byte
	for i := range lut {
		lut[i][0], lut[i][1], lut[i][2] = g.color(i)
	}
	fill := 0
	if g.transparent >= 0 {
		fill = g.transparent
	}
	// Fill by doubling: a few memmoves rather than a loop over pixels.
	copy(im.Pix, lut[fill][:])
	for n := 3; n < len(im.Pix); n *= 2 {
		copy(im.Pix[n:], im.Pix[:n])
	}
	if err := gifLZW(data[g.data:], g, im, &lut); err != nil {
		return nil, err
	}
	return im, nil
}

// gifLZW is Pillow's GifDecode.c: codes are read from data sub-blocks
// (a sub-block is used only once it is complete), a clear code restarts
// the table, an end code is passed over (PIL keeps reading), codes past
// the next free entry are an error, and decoding stops as soon as the
// last pixel of the frame is written, whatever follows. If the data runs
// out first, the file is truncated.
func gifLZW(data []byte, g *gifInfo, im *Image, lut *[256][3]byte) error {
	const maxCodes = 4096
	broken := func(what string) error { return fmt.Errorf("%w: gif: %s", ErrDecode, what) }
	var (
		link   [maxCodes]uint16
		suffix [maxCodes]byte
		// stack holds a code's string from the right: up to maxCodes
		// characters (PIL's buffer) plus its first character.
		stack [maxCodes + 1]byte

		clear   = 1 << g.bits
		end     = clear + 1
		next    int
		size    int
		mask    int
		bitbuf  uint32
		nbits   int
		block   int // bytes left in the current sub-block
		pos     int
		fresh   = true // the next code is the first after a clear
		last    int
		lastOut byte

		// Output position, with PIL's interlace passes.
		x, y   int
		step   = 1
		pass   = 0
		xsize  = g.w
		ysize  = g.h
		rowOff = ((g.y0)*im.W + g.x0) * 3
	)
	if g.interlace {
		pass, step = 1, 8
	}
	reset := func() {
		next = clear + 2
		size = g.bits + 1
		mask = 1<<size - 1
	}
	reset()
	// put writes one index; it returns true once the frame is complete.
	put := func(v byte) bool {
		copy(im.Pix[rowOff+3*x:rowOff+3*x+3], lut[v][:])
		x++
		if x < xsize {
			return false
		}
		x = 0
		y += step
		for y >= ysize {
			switch pass {
			case 1:
				pass, y = 2, 4
			case 2:
				pass, step, y = 3, 4, 2
			case 3:
				pass, step, y = 0, 2, 1
			default:
				return true
			}
		}
		rowOff = ((g.y0+y)*im.W + g.x0) * 3
		return false
	}
	for {
		for nbits < size {
			if block > 0 {
				bitbuf |= uint32(data[pos]) << nbits
				nbits += 8
				pos++
				block--
				continue
			}
			if pos >= len(data) || pos+1+int(data[pos]) > len(data) {
				return fmt.Errorf("%w: %w: gif: image data ends after %d of %d rows", ErrDecode, ErrTruncated, y, ysize)
			}
			block = int(data[pos])
			pos++
		}
		c := int(bitbuf) & mask
		bitbuf >>= size
		nbits -= size
		switch {
		case c == clear:
			reset()
			fresh = true
			continue
		case c == end:
			continue
		case fresh:
			if c > clear {
				return broken("bad first code")
			}
			last, lastOut, fresh = c, byte(c), false
			if put(byte(c)) {
				return nil
			}
			continue
		case c > next:
			return broken("bad code")
		}
		code := c
		n := 0
		if c == next {
			stack[maxCodes-n] = lastOut
			n++
			c = last
		}
		for c >= clear {
			if n >= maxCodes || c >= maxCodes {
				return broken("bad code chain")
			}
			stack[maxCodes-n] = suffix[c]
			n++
			c = int(link[c])
		}
		stack[maxCodes-n] = byte(c)
		n++
		lastOut = byte(c)
		if next < maxCodes {
			suffix[next], link[next] = byte(c), uint16(last)
			if next == mask && size < 12 {
				size++
				mask = 1<<size - 1
			}
			next++
		}
		last = code
		for k := maxCodes + 1 - n; k <= maxCodes; k++ {
			if put(stack[k]) {
				return nil
			}
		}
	}
}
