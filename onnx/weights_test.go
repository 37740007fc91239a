package onnx

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// weightsModel has a large and a small float initializer and an int64 one.
func weightsModel() (Model, []float32) {
	big := make([]float32, 3*1000)
	for i := range big {
		big[i] = float32(i) * 0.25
	}
	g := NewGraph("g")
	x := g.Input("x", Float, D("batch", 1000))
	w := g.Init("w", Floats([]int64{1000, 3}, big))
	b := g.Init("b", Floats([]int64{3}, []float32{1, 2, 3}))
	shape := g.ConstI64(-1, 3)
	y := g.Op("Add", []string{g.Op("MatMul", []string{x, w}, nil), b}, nil)
	g.Output("y", g.Op("Reshape", []string{y, shape}, nil), Float, D("batch", 3))
	return Model{Graph: g}, big
}

func TestWeights(t *testing.T) {
	m, big := weightsModel()
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := m.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	ws, err := Weights(path, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].Type != Float || !reflect.DeepEqual(ws[0].Dims, []int64{1000, 3}) || ws[0].Size != 4*3000 {
		t.Fatalf("weights %+v, want the 1000x3 float initializer alone", ws)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw := data[ws[0].Offset : ws[0].Offset+ws[0].Size]
	for i, want := range big {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != want {
			t.Fatalf("value %d at the offset is %v, want %v", i, got, want)
		}
	}
	all, err := Weights(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 { // the int64 shape is not float
		t.Errorf("with no minimum: %d weights, want 2 (float only)", len(all))
	}
}

func decodeWeightsBytes(b []byte) ([]Weight, error) {
	r := bytes.NewReader(b)
	br := bufio.NewReader(r)
	pos := func() int64 { return int64(len(b)) - int64(r.Len()) - int64(br.Buffered()) }
	return decodeWeights(&msg{r: br, n: int64(len(b))}, pos, 0)
}

// FuzzWeights: any bytes give weights that lie inside the file, or
// ErrInvalid; never a panic.
func FuzzWeights(f *testing.F) {
	m, _ := weightsModel()
	f.Add(m.Marshal())
	f.Add(sample().Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		ws, err := decodeWeightsBytes(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		for _, w := range ws {
			if w.Offset < 0 || w.Size < 0 || w.Offset+w.Size > int64(len(b)) {
				t.Fatalf("weight %s at %d+%d lies outside %d bytes", w.Name, w.Offset, w.Size, len(b))
			}
		}
	})
}
