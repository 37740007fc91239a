// Package onnx reads and writes the parts of the ONNX protobuf format that
// mlserve needs, with google.golang.org/protobuf/encoding/protowire and no
// generated code.
//
// The reader ([Inspect]) streams a model file and returns its graph inputs
// and outputs (names, element types, static and symbolic dimensions), its
// custom metadata and a summary of its nodes, without loading weights into
// memory. mlserve uses it to name a session's inputs before the session is
// built, to find PP-OCR dictionaries in metadata, and to apply Immich's rules
// that look at a graph (a dynamic "batch" axis, MXNet-converted ArcFace
// models).
//
// The writer ([Graph], [Model]) builds small graphs in code: test fixtures
// with the exact signatures of Immich's models and benchmark graphs with the
// real architectures and random weights.
package onnx

import "fmt"

// DataType is ONNX's TensorProto.DataType.
type DataType int32

// The element types mlserve uses.
const (
	Undefined DataType = 0
	Float     DataType = 1
	Uint8     DataType = 2
	Int8      DataType = 3
	Int32     DataType = 6
	Int64     DataType = 7
	String    DataType = 8
	Bool      DataType = 9
	Float16   DataType = 10
	Double    DataType = 11
)

func (t DataType) String() string {
	switch t {
	case Float:
		return "float32"
	case Uint8:
		return "uint8"
	case Int8:
		return "int8"
	case Int32:
		return "int32"
	case Int64:
		return "int64"
	case String:
		return "string"
	case Bool:
		return "bool"
	case Float16:
		return "float16"
	case Double:
		return "float64"
	}
	return fmt.Sprintf("dtype(%d)", int32(t))
}

// Dim is one dimension of a tensor type: a fixed size, a symbolic name
// (dim_param, e.g. "batch"), or neither (unknown).
type Dim struct {
	Value int64
	Param string
}

// Dynamic reports whether the dimension has no fixed size.
func (d Dim) Dynamic() bool { return d.Param != "" || d.Value <= 0 }

func (d Dim) String() string {
	if d.Param != "" {
		return d.Param
	}
	if d.Value <= 0 {
		return "?"
	}
	return fmt.Sprint(d.Value)
}

// D builds a dimension list from ints (fixed) and strings (symbolic).
func D(dims ...any) []Dim {
	out := make([]Dim, len(dims))
	for i, d := range dims {
		switch v := d.(type) {
		case int:
			out[i] = Dim{Value: int64(v)}
		case int64:
			out[i] = Dim{Value: v}
		case string:
			out[i] = Dim{Param: v}
		default:
			panic(fmt.Sprintf("onnx.D: unsupported dimension %T", d))
		}
	}
	return out
}

// ValueInfo describes a graph input or output.
type ValueInfo struct {
	Name string
	Type DataType
	Dims []Dim
}

func (v ValueInfo) String() string {
	return fmt.Sprintf("%s %s%v", v.Name, v.Type, v.Dims)
}

// Protobuf field numbers of onnx.proto (IR version 8).
const (
	fModelIRVersion     = 1
	fModelProducerName  = 2
	fModelProducerVer   = 3
	fModelDomain        = 4
	fModelVersion       = 5
	fModelDocString     = 6
	fModelGraph         = 7
	fModelOpsetImport   = 8
	fModelMetadataProps = 14

	fOpsetDomain  = 1
	fOpsetVersion = 2

	fEntryKey   = 1
	fEntryValue = 2

	fGraphNode        = 1
	fGraphName        = 2
	fGraphInitializer = 5
	fGraphInput       = 11
	fGraphOutput      = 12

	fNodeInput     = 1
	fNodeOutput    = 2
	fNodeName      = 3
	fNodeOpType    = 4
	fNodeAttribute = 5
	fNodeDomain    = 7

	fAttrName   = 1
	fAttrF      = 2
	fAttrI      = 3
	fAttrS      = 4
	fAttrT      = 5
	fAttrFloats = 7
	fAttrInts   = 8
	fAttrType   = 20

	fTensorDims     = 1
	fTensorDataType = 2
	fTensorName     = 8
	fTensorRawData  = 9

	fValueInfoName = 1
	fValueInfoType = 2

	fTypeTensor      = 1
	fTensorElemType  = 1
	fTensorShape     = 2
	fShapeDim        = 1
	fDimValue        = 1
	fDimParam        = 2
	attrTypeFloat    = 1
	attrTypeInt      = 2
	attrTypeString   = 3
	attrTypeTensor   = 4
	attrTypeFloats   = 6
	attrTypeInts     = 7
	defaultIRVersion = 8
	defaultOpset     = 17
)
