package onnx

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func sample() Model {
	g := NewGraph("g")
	x := g.Input("image", Float, D("batch", 3, 224, 224))
	m := g.Input("mask", Int32, D("batch", 77))
	w := g.Const([]int64{2}, []float32{1, 2})
	y := g.NamedOp("Sub_0", "Sub", []string{x, w}, nil)
	y = g.NamedOp("Mul_1", "Mul", []string{y, w}, Attrs{"alpha": float32(1), "axes": []int64{1, 2}, "mode": "x", "k": 3})
	g.Output("embedding", y, Float, D("batch", 512))
	g.Output("mask_out", m, Int32, D("batch", "seq"))
	return Model{Graph: g, Producer: "test", Metadata: map[string]string{"character": "a\nb\nc", "k": ""}}
}

func decodeBytes(b []byte) (*Info, error) {
	return Decode(bufio.NewReader(bytes.NewReader(b)), int64(len(b)))
}

func TestRoundTrip(t *testing.T) {
	info, err := decodeBytes(sample().Marshal())
	if err != nil {
		t.Fatal(err)
	}
	wantIn := []ValueInfo{
		{Name: "image", Type: Float, Dims: D("batch", 3, 224, 224)},
		{Name: "mask", Type: Int32, Dims: D("batch", 77)},
	}
	if !reflect.DeepEqual(info.Inputs, wantIn) {
		t.Errorf("inputs %v", info.Inputs)
	}
	if got := info.OutputNames(); !reflect.DeepEqual(got, []string{"embedding", "mask_out"}) {
		t.Errorf("outputs %v", got)
	}
	if info.Outputs[1].Dims[1].Param != "seq" || !info.Outputs[1].Dims[1].Dynamic() {
		t.Errorf("symbolic dim %v", info.Outputs[1].Dims)
	}
	if info.Metadata["character"] != "a\nb\nc" || info.Producer != "test" || info.IRVersion != 8 || info.Opsets[""] != 17 {
		t.Errorf("model fields %+v", info)
	}
	if len(info.Nodes) < 2 || info.Nodes[0] != (NodeSummary{"Sub_0", "Sub"}) || info.Nodes[1] != (NodeSummary{"Mul_1", "Mul"}) {
		t.Errorf("nodes %v", info.Nodes)
	}
	if _, ok := info.Input("mask"); !ok {
		t.Error("Input(mask) not found")
	}
}

// Old exporters list initializers among the graph inputs; they are not
// inputs a caller feeds.
func TestInitializersAreNotInputs(t *testing.T) {
	g := NewGraph("g")
	x := g.Input("x", Float, D(2))
	w := g.Const([]int64{2}, []float32{1, 2})
	g.inputs = append(g.inputs, ValueInfo{Name: w, Type: Float, Dims: D(2)})
	g.Output("y", g.Op("Add", []string{x, w}, nil), Float, D(2))
	info, err := decodeBytes(Model{Graph: g}.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if got := info.InputNames(); !reflect.DeepEqual(got, []string{"x"}) {
		t.Fatalf("inputs %v", got)
	}
}

func TestMalformed(t *testing.T) {
	full := sample().Marshal()
	for name, b := range map[string][]byte{
		"empty":          {},
		"no graph":       Model{Graph: NewGraph("g")}.Marshal()[:2],
		"truncated":      full[:len(full)/2],
		"garbage":        []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
		"huge length":    {0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad wire type":  {0x0f},
		"field number 0": {0x00, 0x01},
	} {
		if _, err := decodeBytes(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// FuzzDecode: any bytes give an Info or ErrInvalid, never a panic or a
// hang; and what the writer produces always reads back.
func FuzzDecode(f *testing.F) {
	f.Add(sample().Marshal())
	f.Add([]byte{})
	f.Add([]byte{0x3a, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := decodeBytes(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if info == nil {
			t.Fatal("nil info without error")
		}
	})
}
