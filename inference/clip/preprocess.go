package clip

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"

	"github.com/mlserve/mlserve/inference/imaging"
)

// ErrPreprocessConfig: visual/preprocess_cfg.json is missing or unusable.
// Errors from a missing file also wrap fs.ErrNotExist.
var ErrPreprocessConfig = errors.New("clip: bad visual preprocess_cfg.json")

// visualMaxSize bounds the input side a preprocess_cfg.json may ask for;
// the largest CLIP models Immich lists take 384 (SigLIP) to 448 pixels.
const visualMaxSize = 4096

// visualPreprocess is what Immich reads from visual/preprocess_cfg.json:
// size, mean and std. "interpolation" and "resize_mode" are read by open_clip
// but not by Immich (it always resizes the shortest side with bicubic and
// crops the centre), so they are ignored here too.
type visualPreprocess struct {
	size      int
	mean, std [3]float32
	// lut[c][v] is the normalised value of channel c at 8-bit level v,
	// computed with numpy's float32 steps: (float32(v)/255 - mean)/std.
	lut [3][256]float32
}

// visualReadPreprocess reads and checks preprocess_cfg.json.
func visualReadPreprocess(path string) (*visualPreprocess, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPreprocessConfig, err)
	}
	return visualParsePreprocess(data, path)
}

// visualParsePreprocess parses preprocess_cfg.json; path is for messages.
func visualParsePreprocess(data []byte, path string) (*visualPreprocess, error) {
	var raw struct {
		Size json.RawMessage `json:"size"`
		Mean []float64       `json:"mean"`
		Std  []float64       `json:"std"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPreprocessConfig, path, err)
	}
	p := &visualPreprocess{}
	var err error
	if p.size, err = visualParseSize(raw.Size); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPreprocessConfig, path, err)
	}
	if err := visualTriple(&p.mean, raw.Mean, "mean"); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPreprocessConfig, path, err)
	}
	if err := visualTriple(&p.std, raw.Std, "std"); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPreprocessConfig, path, err)
	}
	for c := range 3 {
		if p.std[c] == 0 {
			return nil, fmt.Errorf("%w: %s: std is zero", ErrPreprocessConfig, path)
		}
		for v := range 256 {
			x := float32(v) / 255
			p.lut[c][v] = (x - p.mean[c]) / p.std[c]
		}
	}
	return p, nil
}

// visualParseSize reads "size": an integer, or a list whose first element
// Immich takes.
func visualParseSize(raw json.RawMessage) (int, error) {
	if len(raw) == 0 {
		return 0, errors.New("no size")
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, err
	}
	if list, ok := v.([]any); ok {
		if len(list) == 0 {
			return 0, errors.New("size is an empty list")
		}
		v = list[0]
	}
	f, ok := v.(float64)
	if !ok || f != math.Trunc(f) || f < 1 || f > visualMaxSize {
		return 0, fmt.Errorf("size %s is not an integer in 1..%d", raw, visualMaxSize)
	}
	return int(f), nil
}

// visualTriple reads a per-channel constant; a single value applies to all
// three channels, as numpy broadcasting does.
func visualTriple(dst *[3]float32, v []float64, name string) error {
	switch len(v) {
	case 1:
		v = []float64{v[0], v[0], v[0]}
	case 3:
	default:
		return fmt.Errorf("%s has %d values, want 3", name, len(v))
	}
	for i, x := range v {
		f := float32(x) // numpy: np.array(cfg[name], dtype=np.float32)
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return fmt.Errorf("%s[%d] = %v", name, i, x)
		}
		dst[i] = f
	}
	return nil
}

// VisualResizeDims is Immich's resize_pil geometry: the shorter side
// becomes size and the other int(long/short*size), truncated, computed in
// float64 as Python does. A square image keeps both sides at size.
func VisualResizeDims(w, h, size int) (rw, rh int) {
	if w < h {
		return size, int(float64(h) / float64(w) * float64(size))
	}
	return int(float64(w) / float64(h) * float64(size)), size
}

// visualScratch is the per-call memory of Preprocess, pooled by a Visual.
type visualScratch struct {
	rs   imaging.Resampler
	crop *imaging.Image
	in   []float32 // one image's tensor, for Embed
}

// preprocess writes the NCHW tensor of img into dst[:3*size*size] and
// returns it, reusing s's memory.
func (p *visualPreprocess) preprocess(s *visualScratch, img *imaging.Image, dst []float32) []float32 {
	n := p.size * p.size
	if cap(dst) < 3*n {
		dst = make([]float32, 3*n)
	}
	dst = dst[:3*n]
	// An image decoded smaller stands for the full one: the geometry is
	// the full image's, and the resampler maps the image onto it.
	fw, fh := img.FullSize()
	rw, rh := VisualResizeDims(fw, fh, p.size)
	s.crop = s.rs.ResizeRegion(s.crop, img, rw, rh, imaging.CenterRect(rw, rh, p.size), imaging.Bicubic)
	r, g, b := dst[:n:n], dst[n:2*n:2*n], dst[2*n:3*n:3*n]
	lr, lg, lb := &p.lut[0], &p.lut[1], &p.lut[2]
	pix := s.crop.Pix[:3*n]
	for i := range n {
		q := pix[3*i : 3*i+3 : 3*i+3]
		r[i], g[i], b[i] = lr[q[0]], lg[q[1]], lb[q[2]]
	}
	return dst
}
