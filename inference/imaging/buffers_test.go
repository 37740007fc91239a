package imaging

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"github.com/mlserve/mlserve/internal/testenv"
)

// TestBuffersRecycle: a JPEG decoded into a recycled buffer (holding
// another photo's pixels) is byte for byte the JPEG decoded into fresh
// memory, at full size and scaled, and buffers are really reused.
func TestBuffersRecycle(t *testing.T) {
	var files [][]byte
	for i := 1; i <= 6; i++ {
		b, err := os.ReadFile(testenv.TestData(t, fmt.Sprintf("photos/sample%d.jpg", i)))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, b)
	}
	bufs := new(Buffers)
	reused := 0
	for round := range 3 {
		for i, data := range files {
			for _, minSide := range []int{0, 224} {
				want, _, err := DecodeScaled(data, DecodeOptions{MinSide: minSide})
				if err != nil {
					t.Fatal(err)
				}
				// Leave another photo's pixels in the pool first.
				prev, _, err := DecodeScaled(files[(i+1)%len(files)], DecodeOptions{MinSide: minSide, Buffers: bufs})
				if err != nil {
					t.Fatal(err)
				}
				old := &prev.Pix[:1][0]
				bufs.Put(prev)
				if prev.Pix != nil {
					t.Fatal("Put left the image its pixels")
				}
				got, _, err := DecodeScaled(data, DecodeOptions{MinSide: minSide, Buffers: bufs})
				if err != nil {
					t.Fatal(err)
				}
				if &got.Pix[:1][0] == old {
					reused++
				}
				if got.W != want.W || got.H != want.H || !bytes.Equal(got.Pix, want.Pix) {
					t.Fatalf("round %d, photo %d, minSide %d: the decode into a recycled buffer differs", round, i+1, minSide)
				}
				bufs.Put(got)
			}
		}
	}
	if reused == 0 {
		t.Fatal("no buffer was ever reused")
	}
	var none *Buffers
	none.Put(&Image{Pix: make([]byte, 3)}) // a nil *Buffers ignores Put
}
