package onnx

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"google.golang.org/protobuf/encoding/protowire"
)

// Tensor is a constant: an initializer or a Constant node's value.
type Tensor struct {
	Type DataType
	Dims []int64
	// Raw holds the little-endian element bytes.
	Raw []byte
}

// Floats makes a float32 tensor.
func Floats(dims []int64, data []float32) Tensor {
	checkLen(dims, len(data))
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return Tensor{Type: Float, Dims: dims, Raw: raw}
}

// Int64s makes an int64 tensor.
func Int64s(dims []int64, data []int64) Tensor {
	checkLen(dims, len(data))
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	return Tensor{Type: Int64, Dims: dims, Raw: raw}
}

// Int32s makes an int32 tensor.
func Int32s(dims []int64, data []int32) Tensor {
	checkLen(dims, len(data))
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
	}
	return Tensor{Type: Int32, Dims: dims, Raw: raw}
}

func checkLen(dims []int64, n int) {
	want := int64(1)
	for _, d := range dims {
		want *= d
	}
	if want != int64(n) {
		panic(fmt.Sprintf("onnx: tensor of shape %v needs %d values, got %d", dims, want, n))
	}
}

// Attrs are a node's attributes. Values may be int, int64, float32,
// float64, string, []int64, []int, []float32 or Tensor.
type Attrs map[string]any

type node struct {
	op, name, domain string
	inputs, outputs  []string
	attrs            Attrs
}

type initializer struct {
	name string
	t    Tensor
}

// Graph builds an ONNX graph. Node outputs get fresh names; [Graph.Output]
// exposes a value under the name a model's users expect.
type Graph struct {
	name         string
	nodes        []node
	inits        []initializer
	inputs       []ValueInfo
	outputs      []ValueInfo
	seq          int
	nodeNamePref string
}

// NewGraph starts an empty graph.
func NewGraph(name string) *Graph { return &Graph{name: name} }

func (g *Graph) fresh(prefix string) string {
	g.seq++
	return fmt.Sprintf("%s_%d", prefix, g.seq)
}

// Input declares a graph input and returns its name.
func (g *Graph) Input(name string, t DataType, dims []Dim) string {
	g.inputs = append(g.inputs, ValueInfo{Name: name, Type: t, Dims: dims})
	return name
}

// Init adds an initializer with a fresh name and returns the name.
func (g *Graph) Init(prefix string, t Tensor) string {
	name := g.fresh(prefix)
	g.inits = append(g.inits, initializer{name, t})
	return name
}

// Const is Init for a float32 tensor.
func (g *Graph) Const(dims []int64, data []float32) string { return g.Init("c", Floats(dims, data)) }

// ConstI64 is Init for an int64 tensor (shapes, axes).
func (g *Graph) ConstI64(data ...int64) string {
	return g.Init("i", Int64s([]int64{int64(len(data))}, data))
}

// Op adds a node with one output and returns the output's name.
func (g *Graph) Op(op string, inputs []string, attrs Attrs) string {
	return g.OpN(op, 1, inputs, attrs)[0]
}

// OpN adds a node with n outputs and returns their names.
func (g *Graph) OpN(op string, n int, inputs []string, attrs Attrs) []string {
	outs := make([]string, n)
	for i := range outs {
		outs[i] = g.fresh(op)
	}
	g.nodes = append(g.nodes, node{op: op, name: g.fresh(g.nodeNamePref + op), inputs: inputs, outputs: outs, attrs: attrs})
	return outs
}

// NamedOp adds a node with an explicit node name, for graphs whose node
// names matter to their users (Immich inspects the first nodes of ArcFace
// models).
func (g *Graph) NamedOp(name, op string, inputs []string, attrs Attrs) string {
	out := g.fresh(op)
	g.nodes = append(g.nodes, node{op: op, name: name, inputs: inputs, outputs: []string{out}, attrs: attrs})
	return out
}

// Output exposes value as a graph output called name.
func (g *Graph) Output(name, value string, t DataType, dims []Dim) {
	g.nodes = append(g.nodes, node{op: "Identity", name: g.fresh("out"), inputs: []string{value}, outputs: []string{name}})
	g.outputs = append(g.outputs, ValueInfo{Name: name, Type: t, Dims: dims})
}

// Model is a graph plus the model-level fields.
type Model struct {
	Graph    *Graph
	Opset    int64 // 0 means 17
	Producer string
	Metadata map[string]string
}

// Marshal encodes the model as ONNX protobuf bytes.
func (m Model) Marshal() []byte {
	var b []byte
	b = protowire.AppendTag(b, fModelIRVersion, protowire.VarintType)
	b = protowire.AppendVarint(b, defaultIRVersion)
	b = appendString(b, fModelProducerName, nonEmpty(m.Producer, "mlserve"))
	b = appendMessage(b, fModelGraph, m.Graph.marshal())
	opset := m.Opset
	if opset == 0 {
		opset = defaultOpset
	}
	var os []byte
	os = appendString(os, fOpsetDomain, "")
	os = protowire.AppendTag(os, fOpsetVersion, protowire.VarintType)
	os = protowire.AppendVarint(os, uint64(opset))
	b = appendMessage(b, fModelOpsetImport, os)
	keys := make([]string, 0, len(m.Metadata))
	for k := range m.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var e []byte
		e = appendString(e, fEntryKey, k)
		e = appendString(e, fEntryValue, m.Metadata[k])
		b = appendMessage(b, fModelMetadataProps, e)
	}
	return b
}

// WriteFile writes the model to path, creating parent folders.
func (m Model) WriteFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, m.Marshal(), 0o644)
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (g *Graph) marshal() []byte {
	var b []byte
	for _, n := range g.nodes {
		b = appendMessage(b, fGraphNode, n.marshal())
	}
	b = appendString(b, fGraphName, g.name)
	for _, in := range g.inits {
		b = appendMessage(b, fGraphInitializer, marshalTensor(in.name, in.t))
	}
	for _, v := range g.inputs {
		b = appendMessage(b, fGraphInput, marshalValueInfo(v))
	}
	for _, v := range g.outputs {
		b = appendMessage(b, fGraphOutput, marshalValueInfo(v))
	}
	return b
}

func (n node) marshal() []byte {
	var b []byte
	for _, in := range n.inputs {
		b = appendString(b, fNodeInput, in)
	}
	for _, out := range n.outputs {
		b = appendString(b, fNodeOutput, out)
	}
	b = appendString(b, fNodeName, n.name)
	b = appendString(b, fNodeOpType, n.op)
	keys := make([]string, 0, len(n.attrs))
	for k := range n.attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = appendMessage(b, fNodeAttribute, marshalAttr(k, n.attrs[k]))
	}
	if n.domain != "" {
		b = appendString(b, fNodeDomain, n.domain)
	}
	return b
}

func marshalAttr(name string, v any) []byte {
	var b []byte
	b = appendString(b, fAttrName, name)
	switch x := v.(type) {
	case int:
		b = appendInt(b, fAttrI, int64(x))
		b = appendInt(b, fAttrType, attrTypeInt)
	case int64:
		b = appendInt(b, fAttrI, x)
		b = appendInt(b, fAttrType, attrTypeInt)
	case float32:
		b = protowire.AppendTag(b, fAttrF, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(x))
		b = appendInt(b, fAttrType, attrTypeFloat)
	case float64:
		b = protowire.AppendTag(b, fAttrF, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(float32(x)))
		b = appendInt(b, fAttrType, attrTypeFloat)
	case string:
		b = appendString(b, fAttrS, x)
		b = appendInt(b, fAttrType, attrTypeString)
	case []int:
		for _, i := range x {
			b = appendInt(b, fAttrInts, int64(i))
		}
		b = appendInt(b, fAttrType, attrTypeInts)
	case []int64:
		for _, i := range x {
			b = appendInt(b, fAttrInts, i)
		}
		b = appendInt(b, fAttrType, attrTypeInts)
	case []float32:
		for _, f := range x {
			b = protowire.AppendTag(b, fAttrFloats, protowire.Fixed32Type)
			b = protowire.AppendFixed32(b, math.Float32bits(f))
		}
		b = appendInt(b, fAttrType, attrTypeFloats)
	case Tensor:
		b = appendMessage(b, fAttrT, marshalTensor("", x))
		b = appendInt(b, fAttrType, attrTypeTensor)
	default:
		panic(fmt.Sprintf("onnx: attribute %s has unsupported type %T", name, v))
	}
	return b
}

func marshalTensor(name string, t Tensor) []byte {
	var b []byte
	for _, d := range t.Dims {
		b = appendInt(b, fTensorDims, d)
	}
	b = appendInt(b, fTensorDataType, int64(t.Type))
	if name != "" {
		b = appendString(b, fTensorName, name)
	}
	b = protowire.AppendTag(b, fTensorRawData, protowire.BytesType)
	b = protowire.AppendBytes(b, t.Raw)
	return b
}

func marshalValueInfo(v ValueInfo) []byte {
	var shape []byte
	for _, d := range v.Dims {
		var dim []byte
		if d.Param != "" {
			dim = appendString(dim, fDimParam, d.Param)
		} else if d.Value > 0 {
			dim = appendInt(dim, fDimValue, d.Value)
		}
		shape = appendMessage(shape, fShapeDim, dim)
	}
	var tt []byte
	tt = appendInt(tt, fTensorElemType, int64(v.Type))
	tt = appendMessage(tt, fTensorShape, shape)
	var typ []byte
	typ = appendMessage(typ, fTypeTensor, tt)
	var b []byte
	b = appendString(b, fValueInfoName, v.Name)
	b = appendMessage(b, fValueInfoType, typ)
	return b
}

func appendString(b []byte, field protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMessage(b []byte, field protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

func appendInt(b []byte, field protowire.Number, v int64) []byte {
	b = protowire.AppendTag(b, field, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}
