package inference

import (
	"fmt"
	"runtime"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/mlserve/mlserve/onnx"
)

// Tensor is a dense tensor in Go memory. Exactly one of the data slices is
// set, with as many elements as the shape holds.
type Tensor struct {
	Shape   []int64
	Float32 []float32
	Int32   []int32
	Int64   []int64
	Uint8   []uint8
}

// F32 makes a float32 tensor.
func F32(data []float32, shape ...int64) Tensor { return Tensor{Shape: shape, Float32: data} }

// I32 makes an int32 tensor.
func I32(data []int32, shape ...int64) Tensor { return Tensor{Shape: shape, Int32: data} }

// I64 makes an int64 tensor.
func I64(data []int64, shape ...int64) Tensor { return Tensor{Shape: shape, Int64: data} }

// Type is the element type.
func (t Tensor) Type() onnx.DataType {
	switch {
	case t.Float32 != nil:
		return onnx.Float
	case t.Int32 != nil:
		return onnx.Int32
	case t.Int64 != nil:
		return onnx.Int64
	case t.Uint8 != nil:
		return onnx.Uint8
	}
	return onnx.Undefined
}

// Len is the number of elements the shape holds.
func (t Tensor) Len() int {
	n := 1
	for _, d := range t.Shape {
		n *= int(d)
	}
	return n
}

func (t Tensor) dataLen() int {
	switch {
	case t.Float32 != nil:
		return len(t.Float32)
	case t.Int32 != nil:
		return len(t.Int32)
	case t.Int64 != nil:
		return len(t.Int64)
	case t.Uint8 != nil:
		return len(t.Uint8)
	}
	return -1
}

// bytes is the size of the tensor's data.
func (t Tensor) bytes() int64 {
	switch {
	case t.Float32 != nil:
		return 4 * int64(len(t.Float32))
	case t.Int32 != nil:
		return 4 * int64(len(t.Int32))
	case t.Int64 != nil:
		return 8 * int64(len(t.Int64))
	}
	return int64(len(t.Uint8))
}

func (t Tensor) validate() error {
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("%w: negative dimension in shape %v", ErrInput, t.Shape)
		}
	}
	if n := t.dataLen(); n != t.Len() {
		return fmt.Errorf("%w: shape %v holds %d elements, data has %d", ErrInput, t.Shape, t.Len(), n)
	}
	return nil
}

func (t Tensor) ortValue() (ort.Value, error) {
	shape := ort.NewShape(t.Shape...)
	switch {
	case t.Float32 != nil:
		return ort.NewTensor(shape, t.Float32)
	case t.Int32 != nil:
		return ort.NewTensor(shape, t.Int32)
	case t.Int64 != nil:
		return ort.NewTensor(shape, t.Int64)
	case t.Uint8 != nil:
		return ort.NewTensor(shape, t.Uint8)
	}
	return nil, fmt.Errorf("tensor has no data")
}

func (t Tensor) keepAlive() {
	runtime.KeepAlive(t.Float32)
	runtime.KeepAlive(t.Int32)
	runtime.KeepAlive(t.Int64)
	runtime.KeepAlive(t.Uint8)
}

// fromORT takes an output's data. The binding has already copied what ONNX
// Runtime allocated into a Go slice and released ONNX Runtime's buffer;
// the slice stays valid after the value is destroyed (it is Go memory),
// so no second copy is made.
func fromORT(v ort.Value) (Tensor, error) {
	shape := []int64(v.GetShape().Clone())
	switch x := v.(type) {
	case *ort.Tensor[float32]:
		return Tensor{Shape: shape, Float32: x.GetData()}, nil
	case *ort.Tensor[int32]:
		return Tensor{Shape: shape, Int32: x.GetData()}, nil
	case *ort.Tensor[int64]:
		return Tensor{Shape: shape, Int64: x.GetData()}, nil
	case *ort.Tensor[uint8]:
		return Tensor{Shape: shape, Uint8: x.GetData()}, nil
	}
	return Tensor{}, fmt.Errorf("unsupported output type %T", v)
}
