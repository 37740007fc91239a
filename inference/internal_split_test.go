package inference

import "testing"

func TestSplits(t *testing.T) {
	for _, c := range []struct {
		n, runs int
		want    bool
	}{
		{1, 2, false}, {2, 2, true}, {3, 2, false}, {4, 2, true}, {7, 2, false}, {8, 2, true}, {9, 2, true},
		{2, 8, false}, {7, 8, false}, {8, 8, true}, {9, 8, false}, {16, 8, true},
		{3, 3, true}, {4, 3, false}, {25, 3, true}, {5, 1, false},
	} {
		if got := splits(c.n, c.runs); got != c.want {
			t.Errorf("splits(%d, %d) = %v, want %v", c.n, c.runs, got, c.want)
		}
	}
}
