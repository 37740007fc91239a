package imaging

import (
	"bytes"
	"fmt"
	"image"
	"image/gif"
)

// gifFrame is what PIL takes from a GIF's first frame besides its pixels:
// the colour table as stored (Go's decoder blanks the transparent entry,
// PIL keeps its colour) and the transparent index.
type gifFrame struct {
	table       []byte // RGB triples
	transparent int    // -1 when none
}

// decodeGIF reads the first frame as PIL 9 does for a GIF opened and
// converted to RGB: the logical screen filled with the transparent index
// (or index 0), the frame's indices on top, every index mapped through the
// frame's colour table with transparency ignored. OpenCV 4.6 has no GIF
// decoder.
func decodeGIF(data []byte) (*Image, error) {
	f, err := gifFirstFrame(data)
	if err != nil {
		return nil, err
	}
	cfg, err := gif.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: gif: %w", ErrDecode, err)
	}
	m, err := gif.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: gif: %w", ErrDecode, err)
	}
	p, ok := m.(*image.Paletted)
	if !ok {
		return nil, fmt.Errorf("%w: gif: unexpected frame type %T", ErrDecode, m)
	}
	im := New(cfg.Width, cfg.Height)
	if im.W == 0 {
		return nil, ErrEmpty
	}
	fill := 0
	if f.transparent >= 0 {
		fill = f.transparent
	}
	r, g, b := f.color(fill)
	for i := 0; i < len(im.Pix); i += 3 {
		im.Pix[i], im.Pix[i+1], im.Pix[i+2] = r, g, b
	}
	area := p.Rect.Intersect(im.Bounds())
	for y := area.Min.Y; y < area.Max.Y; y++ {
		for x := area.Min.X; x < area.Max.X; x++ {
			r, g, b := f.color(int(p.ColorIndexAt(x, y)))
			i := (y*im.W + x) * 3
			im.Pix[i], im.Pix[i+1], im.Pix[i+2] = r, g, b
		}
	}
	return im, nil
}

func (f gifFrame) color(i int) (r, g, b uint8) {
	if 3*i+3 > len(f.table) {
		return 0, 0, 0
	}
	return f.table[3*i], f.table[3*i+1], f.table[3*i+2]
}

// gifFirstFrame walks the blocks up to the first image descriptor.
func gifFirstFrame(data []byte) (gifFrame, error) {
	f := gifFrame{transparent: -1}
	bad := func(what string) (gifFrame, error) {
		return f, fmt.Errorf("%w: gif: %s", ErrDecode, what)
	}
	if len(data) < 13 {
		return bad("truncated header")
	}
	i := 13
	if flags := data[10]; flags&0x80 != 0 {
		n := 3 << (flags&7 + 1)
		if i+n > len(data) {
			return bad("truncated colour table")
		}
		f.table = data[i : i+n]
		i += n
	}
	for i < len(data) {
		switch data[i] {
		case 0x21: // extension: label, then data sub-blocks
			if i+2 > len(data) {
				return bad("truncated extension")
			}
			label := data[i+1]
			i += 2
			if label == 0xF9 && i+5 <= len(data) && data[i] == 4 {
				f.transparent = -1
				if data[i+1]&1 != 0 {
					f.transparent = int(data[i+4])
				}
			}
			for {
				if i >= len(data) {
					return bad("truncated extension")
				}
				n := int(data[i])
				i += 1 + n
				if n == 0 {
					break
				}
			}
		case 0x2C: // image descriptor
			if i+10 > len(data) {
				return bad("truncated image descriptor")
			}
			if flags := data[i+9]; flags&0x80 != 0 {
				n := 3 << (flags&7 + 1)
				if i+10+n > len(data) {
					return bad("truncated local colour table")
				}
				f.table = data[i+10 : i+10+n]
			}
			return f, nil
		default:
			return bad("no image")
		}
	}
	return bad("no image")
}
