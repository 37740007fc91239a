package onnx

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// ErrInvalid is wrapped by every error about a malformed model file.
var ErrInvalid = errors.New("invalid ONNX model")

// Info is what [Inspect] learns about a model without loading its weights.
type Info struct {
	IRVersion int64
	Producer  string
	// Opsets maps an operator-set domain ("" is the default) to its version.
	Opsets map[string]int64
	// Inputs excludes initializers that old exporters also list as inputs.
	Inputs  []ValueInfo
	Outputs []ValueInfo
	// Metadata holds the custom metadata_props.
	Metadata map[string]string
	// Nodes lists every node's name and op type, in graph order.
	Nodes []NodeSummary
}

// NodeSummary names one node.
type NodeSummary struct {
	Name, OpType string
}

// Input returns the input called name.
func (i *Info) Input(name string) (ValueInfo, bool) {
	for _, v := range i.Inputs {
		if v.Name == name {
			return v, true
		}
	}
	return ValueInfo{}, false
}

// InputNames lists the graph inputs in order.
func (i *Info) InputNames() []string {
	out := make([]string, len(i.Inputs))
	for k, v := range i.Inputs {
		out[k] = v.Name
	}
	return out
}

// OutputNames lists the graph outputs in order.
func (i *Info) OutputNames() []string {
	out := make([]string, len(i.Outputs))
	for k, v := range i.Outputs {
		out[k] = v.Name
	}
	return out
}

// maxSmallField bounds the fields read into memory (names, value infos,
// metadata). Weights are skipped, never read.
const maxSmallField = 64 << 20

// Inspect reads a model file's interface, metadata and node list. It streams
// the file, so memory use does not grow with the weights.
func Inspect(path string) (*Info, error) {
	f, size, err := openModel(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := Decode(bufio.NewReaderSize(f, 1<<20), size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}

// openModel opens a model file and tells its size.
func openModel(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// Decode reads a model of size bytes from r; see [Inspect].
func Decode(r *bufio.Reader, size int64) (*Info, error) {
	d := &msg{r: r, n: size}
	info := &Info{Opsets: map[string]int64{}, Metadata: map[string]string{}}
	initNames := map[string]bool{}
	var inputs []ValueInfo
	sawGraph := false
	for d.n > 0 {
		num, typ, err := d.tag()
		if err != nil {
			return nil, err
		}
		switch {
		case num == fModelIRVersion && typ == protowire.VarintType:
			v, err := d.varint()
			if err != nil {
				return nil, err
			}
			info.IRVersion = int64(v)
		case num == fModelProducerName && typ == protowire.BytesType:
			b, err := d.bytes(maxSmallField)
			if err != nil {
				return nil, err
			}
			info.Producer = string(b)
		case num == fModelOpsetImport && typ == protowire.BytesType:
			b, err := d.bytes(maxSmallField)
			if err != nil {
				return nil, err
			}
			dom, ver, err := parseOpset(b)
			if err != nil {
				return nil, err
			}
			info.Opsets[dom] = ver
		case num == fModelMetadataProps && typ == protowire.BytesType:
			b, err := d.bytes(maxSmallField)
			if err != nil {
				return nil, err
			}
			k, v, err := parseEntry(b)
			if err != nil {
				return nil, err
			}
			info.Metadata[k] = v
		case num == fModelGraph && typ == protowire.BytesType:
			sawGraph = true
			g, err := d.sub()
			if err != nil {
				return nil, err
			}
			if err := decodeGraph(g, info, &inputs, initNames); err != nil {
				return nil, err
			}
		default:
			if err := d.skip(typ); err != nil {
				return nil, err
			}
		}
	}
	if !sawGraph {
		return nil, fmt.Errorf("%w: no graph", ErrInvalid)
	}
	for _, in := range inputs {
		if !initNames[in.Name] {
			info.Inputs = append(info.Inputs, in)
		}
	}
	return info, nil
}

func decodeGraph(g *msg, info *Info, inputs *[]ValueInfo, initNames map[string]bool) error {
	for g.n > 0 {
		num, typ, err := g.tag()
		if err != nil {
			return err
		}
		if typ != protowire.BytesType {
			if err := g.skip(typ); err != nil {
				return err
			}
			continue
		}
		switch num {
		case fGraphNode:
			n, err := g.sub()
			if err != nil {
				return err
			}
			ns, err := decodeNode(n)
			if err != nil {
				return err
			}
			info.Nodes = append(info.Nodes, ns)
		case fGraphInitializer:
			t, err := g.sub()
			if err != nil {
				return err
			}
			name, err := decodeTensorName(t)
			if err != nil {
				return err
			}
			initNames[name] = true
		case fGraphInput, fGraphOutput:
			b, err := g.bytes(maxSmallField)
			if err != nil {
				return err
			}
			v, err := parseValueInfo(b)
			if err != nil {
				return err
			}
			if num == fGraphInput {
				*inputs = append(*inputs, v)
			} else {
				info.Outputs = append(info.Outputs, v)
			}
		default:
			if err := g.skip(typ); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodeNode(n *msg) (NodeSummary, error) {
	var ns NodeSummary
	for n.n > 0 {
		num, typ, err := n.tag()
		if err != nil {
			return ns, err
		}
		if typ == protowire.BytesType && (num == fNodeName || num == fNodeOpType) {
			b, err := n.bytes(maxSmallField)
			if err != nil {
				return ns, err
			}
			if num == fNodeName {
				ns.Name = string(b)
			} else {
				ns.OpType = string(b)
			}
			continue
		}
		if err := n.skip(typ); err != nil {
			return ns, err
		}
	}
	return ns, nil
}

func decodeTensorName(t *msg) (string, error) {
	name := ""
	for t.n > 0 {
		num, typ, err := t.tag()
		if err != nil {
			return "", err
		}
		if num == fTensorName && typ == protowire.BytesType {
			b, err := t.bytes(maxSmallField)
			if err != nil {
				return "", err
			}
			name = string(b)
			continue
		}
		if err := t.skip(typ); err != nil {
			return "", err
		}
	}
	return name, nil
}

// msg streams one length-delimited protobuf message.
type msg struct {
	r *bufio.Reader
	n int64 // bytes left in this message
}

func (m *msg) take(k int64) error {
	if k > m.n {
		return fmt.Errorf("%w: field runs past the end of its message", ErrInvalid)
	}
	m.n -= k
	return nil
}

func (m *msg) varint() (uint64, error) {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		if shift >= 64 {
			return 0, fmt.Errorf("%w: varint overflow", ErrInvalid)
		}
		if err := m.take(1); err != nil {
			return 0, err
		}
		c, err := m.r.ReadByte()
		if err != nil {
			return 0, truncated(err)
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, nil
		}
	}
}

func (m *msg) tag() (protowire.Number, protowire.Type, error) {
	v, err := m.varint()
	if err != nil {
		return 0, 0, err
	}
	num, typ := protowire.DecodeTag(v)
	if num < protowire.MinValidNumber {
		return 0, 0, fmt.Errorf("%w: bad field number", ErrInvalid)
	}
	return num, typ, nil
}

func (m *msg) length() (int64, error) {
	l, err := m.varint()
	if err != nil {
		return 0, err
	}
	if l > math.MaxInt64/2 || int64(l) > m.n {
		return 0, fmt.Errorf("%w: field length %d runs past the end of its message", ErrInvalid, l)
	}
	return int64(l), nil
}

// bytes reads a length-delimited field of at most limit bytes.
func (m *msg) bytes(limit int64) ([]byte, error) {
	l, err := m.length()
	if err != nil {
		return nil, err
	}
	if l > limit {
		return nil, fmt.Errorf("%w: field of %d bytes is larger than expected", ErrInvalid, l)
	}
	if err := m.take(l); err != nil {
		return nil, err
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(m.r, b); err != nil {
		return nil, truncated(err)
	}
	return b, nil
}

// sub starts a nested message, which the caller must read to its end
// before reading more of m.
func (m *msg) sub() (*msg, error) {
	l, err := m.length()
	if err != nil {
		return nil, err
	}
	if err := m.take(l); err != nil {
		return nil, err
	}
	return &msg{r: m.r, n: l}, nil
}

func (m *msg) discard(k int64) error {
	if err := m.take(k); err != nil {
		return err
	}
	for k > 0 {
		step := k
		if step > 1<<30 {
			step = 1 << 30
		}
		n, err := m.r.Discard(int(step))
		k -= int64(n)
		if err != nil {
			return truncated(err)
		}
	}
	return nil
}

func (m *msg) skip(typ protowire.Type) error {
	switch typ {
	case protowire.VarintType:
		_, err := m.varint()
		return err
	case protowire.Fixed32Type:
		return m.discard(4)
	case protowire.Fixed64Type:
		return m.discard(8)
	case protowire.BytesType:
		l, err := m.length()
		if err != nil {
			return err
		}
		return m.discard(l)
	}
	return fmt.Errorf("%w: unsupported wire type %d", ErrInvalid, typ)
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: file is truncated", ErrInvalid)
	}
	return err
}

// In-memory parsing of small messages.

func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %w", ErrInvalid, protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		var u uint64
		switch typ {
		case protowire.VarintType:
			u, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(b)
			u = uint64(x)
		case protowire.Fixed64Type:
			u, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: %w", ErrInvalid, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, u); err != nil {
			return err
		}
	}
	return nil
}

func parseOpset(b []byte) (string, int64, error) {
	var dom string
	var ver int64
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch {
		case num == fOpsetDomain && typ == protowire.BytesType:
			dom = string(v)
		case num == fOpsetVersion && typ == protowire.VarintType:
			ver = int64(u)
		}
		return nil
	})
	return dom, ver, err
}

func parseEntry(b []byte) (string, string, error) {
	var k, val string
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fEntryKey:
			k = string(v)
		case fEntryValue:
			val = string(v)
		}
		return nil
	})
	return k, val, err
}

func parseValueInfo(b []byte) (ValueInfo, error) {
	var vi ValueInfo
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fValueInfoName:
			vi.Name = string(v)
		case fValueInfoType:
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != fTypeTensor || typ != protowire.BytesType {
					return nil
				}
				return parseTensorType(v, &vi)
			})
		}
		return nil
	})
	return vi, err
}

func parseTensorType(b []byte, vi *ValueInfo) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch {
		case num == fTensorElemType && typ == protowire.VarintType:
			vi.Type = DataType(u)
		case num == fTensorShape && typ == protowire.BytesType:
			vi.Dims = []Dim{}
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != fShapeDim || typ != protowire.BytesType {
					return nil
				}
				var d Dim
				err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
					switch {
					case num == fDimValue && typ == protowire.VarintType:
						d.Value = int64(u)
					case num == fDimParam && typ == protowire.BytesType:
						d.Param = string(v)
					}
					return nil
				})
				vi.Dims = append(vi.Dims, d)
				return err
			})
		}
		return nil
	})
}
