package onnx

import (
	"bufio"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
)

// Weight is an initializer whose data lies in the model file itself
// (TensorProto.raw_data), located so that it can be mapped from the file
// instead of read.
type Weight struct {
	Name string
	Type DataType
	Dims []int64
	// Offset and Size locate the data in the file, in bytes.
	Offset, Size int64
}

// TensorProto fields that only Weights reads.
const (
	fTensorSegment       = 3
	fTensorDataLocation  = 14
	dataLocationExternal = 1
)

// Weights lists the float32 initializers of at least minSize bytes whose
// data is stored in the model file as raw_data, in file order. Like
// Inspect it streams the file and never reads the weights. Initializers
// kept in external files, split in segments, or stored in typed fields
// (float_data) are left out.
func Weights(path string, minSize int64) ([]Weight, error) {
	f, size, err := openModel(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cr := &countingReader{r: f}
	br := bufio.NewReaderSize(cr, 1<<20)
	pos := func() int64 { return cr.n - int64(br.Buffered()) }
	ws, err := decodeWeights(&msg{r: br, n: size}, pos, minSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ws, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func decodeWeights(d *msg, pos func() int64, minSize int64) ([]Weight, error) {
	var ws []Weight
	for d.n > 0 {
		num, typ, err := d.tag()
		if err != nil {
			return nil, err
		}
		if num != fModelGraph || typ != protowire.BytesType {
			if err := d.skip(typ); err != nil {
				return nil, err
			}
			continue
		}
		g, err := d.sub()
		if err != nil {
			return nil, err
		}
		for g.n > 0 {
			num, typ, err := g.tag()
			if err != nil {
				return nil, err
			}
			if num != fGraphInitializer || typ != protowire.BytesType {
				if err := g.skip(typ); err != nil {
					return nil, err
				}
				continue
			}
			t, err := g.sub()
			if err != nil {
				return nil, err
			}
			w, ok, err := decodeWeight(t, pos)
			if err != nil {
				return nil, err
			}
			if ok && w.Type == Float && w.Size >= minSize {
				ws = append(ws, w)
			}
		}
	}
	return ws, nil
}

// decodeWeight reads one TensorProto; ok tells whether its data is
// raw_data in the file, whole.
func decodeWeight(t *msg, pos func() int64) (w Weight, ok bool, err error) {
	raw, external, segmented := false, false, false
	for t.n > 0 {
		num, typ, err := t.tag()
		if err != nil {
			return w, false, err
		}
		switch {
		case num == fTensorDims && typ == protowire.VarintType:
			v, err := t.varint()
			if err != nil {
				return w, false, err
			}
			w.Dims = append(w.Dims, int64(v))
		case num == fTensorDims && typ == protowire.BytesType:
			b, err := t.bytes(maxSmallField)
			if err != nil {
				return w, false, err
			}
			for len(b) > 0 {
				v, n := protowire.ConsumeVarint(b)
				if n < 0 {
					return w, false, fmt.Errorf("%w: bad tensor dims", ErrInvalid)
				}
				w.Dims = append(w.Dims, int64(v))
				b = b[n:]
			}
		case num == fTensorDataType && typ == protowire.VarintType:
			v, err := t.varint()
			if err != nil {
				return w, false, err
			}
			w.Type = DataType(v)
		case num == fTensorName && typ == protowire.BytesType:
			b, err := t.bytes(maxSmallField)
			if err != nil {
				return w, false, err
			}
			w.Name = string(b)
		case num == fTensorRawData && typ == protowire.BytesType:
			l, err := t.length()
			if err != nil {
				return w, false, err
			}
			w.Offset, w.Size, raw = pos(), l, true
			if err := t.discard(l); err != nil {
				return w, false, err
			}
		case num == fTensorDataLocation && typ == protowire.VarintType:
			v, err := t.varint()
			if err != nil {
				return w, false, err
			}
			external = v == dataLocationExternal
		case num == fTensorSegment:
			segmented = true
			if err := t.skip(typ); err != nil {
				return w, false, err
			}
		default:
			if err := t.skip(typ); err != nil {
				return w, false, err
			}
		}
	}
	if !raw || external || segmented {
		return w, false, nil
	}
	n := int64(1)
	for _, d := range w.Dims {
		if d < 0 || d > 1<<40 {
			return w, false, fmt.Errorf("%w: initializer %s has dims %v", ErrInvalid, w.Name, w.Dims)
		}
		if d > 0 && n > (1<<40)/d {
			return w, false, fmt.Errorf("%w: initializer %s has dims %v", ErrInvalid, w.Name, w.Dims)
		}
		n *= d
	}
	if w.Type == Float && n*4 != w.Size {
		return w, false, fmt.Errorf("%w: initializer %s: dims %v need %d bytes, raw_data has %d", ErrInvalid, w.Name, w.Dims, n*4, w.Size)
	}
	return w, true, nil
}
