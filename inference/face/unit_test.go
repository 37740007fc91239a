package face

import (
	"errors"
	"math"
	"testing"

	"github.com/mlserve/mlserve/onnx"
)

func TestRoundHalfEven(t *testing.T) {
	for _, c := range []struct{ in, want float32 }{
		{0.5, 0}, {1.5, 2}, {2.5, 2}, {-0.5, 0}, {-1.5, -2}, {-2.5, -2}, {690.5, 690}, {-88.5, -88},
		{0.49999997, 0}, {1.0000001, 1}, {-89.4, -89}, {833.6, 834},
	} {
		if got := roundHalfEven(c.in); got != c.want {
			t.Errorf("round(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func cand(score float32, box ...float32) candidate {
	return candidate{score: score, box: [4]float32{box[0], box[1], box[2], box[3]}}
}

func TestNMSPlusOne(t *testing.T) {
	// Two 10×10 boxes (11×11 with "+1") overlapping by 6 columns: the
	// intersection is 7×11 = 77, the union 242−77 = 165, IoU 0.467 > 0.4.
	a, b := cand(0.9, 0, 0, 10, 10), cand(0.8, 4, 0, 14, 10)
	if got := nmsPlusOne([]candidate{a, b}, 0.4); len(got) != 1 || got[0].score != 0.9 {
		t.Errorf("overlapping: kept %v", got)
	}
	// Shifted by 7: intersection 4×11 = 44, IoU 44/198 = 0.22: both kept.
	c := cand(0.8, 7, 0, 17, 10)
	if got := nmsPlusOne([]candidate{a, c}, 0.4); len(got) != 2 {
		t.Errorf("apart: kept %v", got)
	}
	// Without the "+1" convention the first pair would be 0.43 too; with
	// touching boxes it matters: [0,10] and [10,20] overlap by one pixel
	// column ("+1"), IoU 11/231.
	d := cand(0.7, 10, 0, 20, 10)
	if got := nmsPlusOne([]candidate{a, d}, 0.04); len(got) != 1 {
		t.Errorf("touching boxes at thresh 0.04: kept %v, want 1 (IoU 0.048)", got)
	}
	// A suppressed box does not suppress others: a > b (suppressed), and b
	// would suppress e, but a does not.
	e := cand(0.6, 8, 0, 18, 10)
	if got := nmsPlusOne([]candidate{a, b, e}, 0.4); len(got) != 2 || got[1].score != 0.6 {
		t.Errorf("chain: kept %v", got)
	}
	// NaN boxes are suppressed, never kept after a valid one.
	n := cand(0.5, float32(math.NaN()), 0, 1, 1)
	if got := nmsPlusOne([]candidate{a, n}, 0.4); len(got) != 1 {
		t.Errorf("NaN: kept %v", got)
	}
	if got := nmsPlusOne(nil, 0.4); len(got) != 0 {
		t.Errorf("empty: %v", got)
	}
}

func TestSortByScoreTies(t *testing.T) {
	c := []candidate{{score: 0.5, index: 3}, {score: 0.9, index: 5}, {score: 0.5, index: 1}, {score: 0.7, index: 0}}
	sortByScore(c)
	want := []int{5, 0, 1, 3}
	for i, w := range want {
		if c[i].index != w {
			t.Fatalf("order %v, want indices %v", c, want)
		}
	}
}

func TestNMSWeighted(t *testing.T) {
	a := cand(0.9, 0, 0, 10, 10)
	b := cand(0.3, 2, 0, 12, 10) // IoU 8/12 = 0.67: merged into a
	c := cand(0.8, 50, 50, 60, 60)
	a.kps[0] = [2]float32{1, 1}
	b.kps[0] = [2]float32{5, 1}
	got := nmsWeighted([]candidate{a, b, c}, 0.3)
	if len(got) != 2 {
		t.Fatalf("kept %v", got)
	}
	if got[0].score != 0.9 || math.Abs(float64(got[0].box[0])-0.5) > 1e-6 || math.Abs(float64(got[0].kps[0][0])-2) > 1e-6 {
		t.Errorf("merged %+v, want score 0.9, x1 0.5, first keypoint x 2", got[0])
	}
	if got[1].box != c.box {
		t.Errorf("second %v", got[1])
	}
}

func TestPlanLetterbox(t *testing.T) {
	for _, c := range []struct {
		w, h, nw, nh int
		scale        float64
	}{
		{600, 800, 480, 640, 0.8},
		{800, 600, 640, 480, 0.8},
		{1, 1, 640, 640, 640},
		{10000, 10, 640, 0, 0},
		{3, 2000, 0, 640, 0.32},
	} {
		lb := planLetterbox(c.w, c.h, 640, 640)
		if lb.newW != c.nw || lb.newH != c.nh || lb.scale != c.scale {
			t.Errorf("%dx%d: %+v, want %dx%d scale %v", c.w, c.h, lb, c.nw, c.nh, c.scale)
		}
		if lb.empty() != (c.nw == 0 || c.nh == 0) {
			t.Errorf("%dx%d: empty = %v", c.w, c.h, lb.empty())
		}
	}
}

func TestSimilarity(t *testing.T) {
	// The template onto itself is the identity.
	m, ok := Similarity(ArcFaceTemplate, ArcFaceTemplate)
	if !ok {
		t.Fatal("no transform")
	}
	id := [2][3]float64{{1, 0, 0}, {0, 1, 0}}
	for r := range 2 {
		for c := range 3 {
			if math.Abs(m[r][c]-id[r][c]) > 1e-5 {
				t.Fatalf("template→template = %v", m)
			}
		}
	}
	// A rotated, scaled, shifted template is mapped back exactly.
	var src [5][2]float32
	th := 0.3
	for i, p := range ArcFaceTemplate {
		x, y := float64(p[0]), float64(p[1])
		src[i] = [2]float32{float32(2*(x*math.Cos(th)-y*math.Sin(th)) + 100), float32(2*(x*math.Sin(th)+y*math.Cos(th)) + 40)}
	}
	m, ok = Similarity(src, ArcFaceTemplate)
	if !ok {
		t.Fatal("no transform")
	}
	for i, p := range src {
		x := m[0][0]*float64(p[0]) + m[0][1]*float64(p[1]) + m[0][2]
		y := m[1][0]*float64(p[0]) + m[1][1]*float64(p[1]) + m[1][2]
		if math.Abs(x-float64(ArcFaceTemplate[i][0])) > 1e-3 || math.Abs(y-float64(ArcFaceTemplate[i][1])) > 1e-3 {
			t.Errorf("point %d maps to (%v, %v), want %v", i, x, y, ArcFaceTemplate[i])
		}
	}
	if _, ok := Similarity([5][2]float32{}, ArcFaceTemplate); ok {
		t.Error("coincident points give a transform")
	}
	inf := ArcFaceTemplate
	inf[2][0] = float32(math.Inf(-1))
	if _, ok := Similarity(inf, ArcFaceTemplate); ok {
		t.Error("an infinite point gives a transform")
	}
}

// FuzzSimilarity: any five points give a finite transform or ok=false,
// never a panic, and a transform maps the points' centroid onto the
// template's.
func FuzzSimilarity(f *testing.F) {
	f.Add(float32(38), float32(51), float32(73), float32(51), float32(56), float32(71), float32(41), float32(92), float32(70), float32(92))
	f.Add(float32(0), float32(0), float32(0), float32(0), float32(0), float32(0), float32(0), float32(0), float32(0), float32(0))
	f.Add(float32(1e30), float32(-1e30), float32(3), float32(3), float32(1), float32(1), float32(2), float32(2), float32(5), float32(5))
	f.Fuzz(func(t *testing.T, a, b, c, d, e, g, h, i, j, k float32) {
		src := [5][2]float32{{a, b}, {c, d}, {e, g}, {h, i}, {j, k}}
		m, ok := Similarity(src, ArcFaceTemplate)
		if !ok {
			return
		}
		var sx, sy, tx, ty float64
		for p := range 5 {
			sx += float64(src[p][0]) / 5
			sy += float64(src[p][1]) / 5
			tx += float64(ArcFaceTemplate[p][0]) / 5
			ty += float64(ArcFaceTemplate[p][1]) / 5
		}
		x := m[0][0]*sx + m[0][1]*sy + m[0][2]
		y := m[1][0]*sx + m[1][1]*sy + m[1][2]
		scale := math.Hypot(m[0][0], m[1][0])
		tol := 1e-6 * (1 + math.Abs(m[0][2]) + math.Abs(m[1][2]) + scale*(math.Abs(sx)+math.Abs(sy)))
		if math.Abs(x-tx) > tol || math.Abs(y-ty) > tol {
			t.Errorf("centroid maps to (%v, %v), want (%v, %v); M %v", x, y, tx, ty, m)
		}
		if m[0][0] != m[1][1] || m[0][1] != -m[1][0] {
			t.Errorf("not a similarity: %v", m)
		}
	})
}

func TestParseConfig(t *testing.T) {
	cases := []struct {
		json      string
		detection bool
		family    string
		err       bool
	}{
		{`{}`, true, FamilySCRFD, false},
		{`{}`, false, FamilyArcFace, false},
		{`{"family":"SCRFD"}`, true, FamilySCRFD, false},
		{`{"family":"ultraface","landmarks":"landmarks.onnx"}`, true, FamilyUltraFace, false},
		{`{"family":"ultraface"}`, true, "", true},
		{`{"family":"blazeface"}`, true, FamilyBlazeFace, false},
		{`{"family":"blazeface","landmarks":"../x.onnx"}`, true, "", true},
		{`{"family":"blazeface","landmarks":"a/b.onnx"}`, true, "", true},
		{`{"family":"blazeface","landmarks":".."}`, true, "", true},
		{`{"family":"scrfd","landmarks":"lm.onnx"}`, true, "", true},
		{`{"family":"mobilefacenet"}`, false, FamilyMobileFaceNet, false},
		{`{"family":"mobilefacenet"}`, true, "", true},
		{`{"family":"ultraface","landmarks":"x"}`, false, "", true},
		{`{"mean":0,"std":1}`, false, FamilyArcFace, false},
		{`{"mean":0,"std":1}`, true, "", true},
		{`{"std":0}`, false, "", true},
		{`{"std":-1}`, false, "", true},
		{`{"mean":1e300}`, false, "", true},
		{`{"famliy":"scrfd"}`, true, "", true},
		{`{} {}`, true, "", true},
		{`[]`, true, "", true},
		{``, true, "", true},
		{`null`, true, FamilySCRFD, false},
	}
	for _, c := range cases {
		got, err := ParseConfig([]byte(c.json), c.detection)
		if (err != nil) != c.err {
			t.Errorf("%s (detection %v): err %v, want error %v", c.json, c.detection, err, c.err)
			continue
		}
		if err != nil && !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v does not wrap ErrConfig", c.json, err)
		}
		if err == nil && got.Family != c.family {
			t.Errorf("%s: family %q, want %q", c.json, got.Family, c.family)
		}
	}
}

// FuzzParseConfig: never a panic; what is accepted is a known family,
// with a landmark file name that stays in the folder and a usable std.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{`{}`, `{"family":"ultraface","landmarks":"landmarks.onnx"}`, `{"family":"blazeface"}`,
		`{"mean":127.5,"std":127.5}`, `{"family":"mobilefacenet"}`, `{"landmarks":"/etc/passwd"}`, `{"std":1e-9}`} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, data []byte, detection bool) {
		c, err := ParseConfig(data, detection)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			return
		}
		switch c.Family {
		case FamilySCRFD, FamilyUltraFace, FamilyBlazeFace:
			if !detection {
				t.Fatalf("recognition config with family %q", c.Family)
			}
		case FamilyArcFace, FamilyMobileFaceNet:
			if detection {
				t.Fatalf("detection config with family %q", c.Family)
			}
		default:
			t.Fatalf("accepted family %q", c.Family)
		}
		if c.Landmarks != "" && !validFileName(c.Landmarks) {
			t.Fatalf("accepted landmark file %q", c.Landmarks)
		}
		if c.Std != nil && !(*c.Std > 0) {
			t.Fatalf("accepted std %v", *c.Std)
		}
	})
}

func TestIsMXNet(t *testing.T) {
	nodes := func(names ...string) []onnx.NodeSummary {
		var out []onnx.NodeSummary
		for _, n := range names {
			out = append(out, onnx.NodeSummary{Name: n})
		}
		return out
	}
	conv := []string{"Conv_0", "Conv_1", "Conv_2", "Conv_3", "Conv_4", "Conv_5", "Conv_6", "Conv_7"}
	for _, c := range []struct {
		nodes []onnx.NodeSummary
		want  bool
	}{
		{nodes("Sub_0", "Mul_1", "Conv_2"), true},
		{nodes("_minusscalar0", "_mulscalar0", "conv0"), true},
		{nodes("Sub", "Conv", "Mul"), true},
		{nodes("Sub_0", "Conv_1"), false},
		{nodes("Mul_0"), false},
		{nodes(append(conv, "Sub", "Mul")...), false},
		{nodes("Conv_0", "Sub_1", "Conv", "Conv", "Conv", "Conv", "Conv", "_mul7"), true},
		{nodes("sub", "mul"), false},
		{nil, false},
	} {
		if got := isMXNet(c.nodes); got != c.want {
			t.Errorf("%v: %v, want %v", c.nodes, got, c.want)
		}
	}
}
