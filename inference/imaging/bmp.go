package imaging

import (
	"encoding/binary"
	"fmt"
)

// padBMP returns an uncompressed BMP whose data ends after the last row's
// pixels but before that row's padding to 4 bytes, padded with zeros. PIL
// reads rows with the padding between them only, so it decodes such files;
// OpenCV wants the last row's padding too. Any other file is returned as
// nil.
func padBMP(data []byte, h Header, maxBytes int64) ([]byte, error) {
	le := binary.LittleEndian
	if len(data) < 30 {
		return nil, nil
	}
	off := int64(le.Uint32(data[10:]))
	var bpp int64
	switch dib := le.Uint32(data[14:]); {
	case dib == 12:
		bpp = int64(le.Uint16(data[24:]))
	case dib >= 40 && len(data) >= 34:
		bpp = int64(le.Uint16(data[28:]))
		if c := le.Uint32(data[30:]); c != 0 && c != 3 { // BI_RGB, BI_BITFIELDS
			return nil, nil
		}
	default:
		return nil, nil
	}
	w, ht := int64(h.W), int64(h.H)
	stride := (w*bpp + 31) / 32 * 4
	full := off + ht*stride
	least := off + (ht-1)*stride + (w*bpp+7)/8
	if bpp == 0 || int64(len(data)) < least || int64(len(data)) >= full {
		return nil, nil
	}
	if full+h.DecodeBytes() > maxBytes {
		return nil, fmt.Errorf("%w: %w: bmp: padding its last row needs about %d MB, over the %d MB limit",
			ErrDecode, ErrTooLarge, (full+h.DecodeBytes())/1e6, maxBytes/1e6)
	}
	out := make([]byte, full)
	copy(out, data)
	return out, nil
}
