package pool

import (
	"testing"

	"github.com/mlserve/mlserve/inference/imaging"
)

func BenchmarkZZSplit(b *testing.B) {
	imgs := previews(b)
	v := loadBenchVisual(b)
	dec := NewDecoder(imaging.DecodeOptions{}, PreprocessExact)
	b.Run("decode", func(b *testing.B) {
		for i := range b.N {
			_, _, _, err := dec(imgs[i%len(imgs)], v.Size())
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	var decoded []*imaging.Image
	for _, d := range imgs {
		im, _, _, _ := dec(d, v.Size())
		decoded = append(decoded, im)
	}
	b.Run("prep", func(b *testing.B) {
		var dst []float32
		for i := range b.N {
			dst = v.Preprocess(decoded[i%len(decoded)], dst)
		}
	})
}
