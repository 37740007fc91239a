package ocr

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// CTC greedy decoding as RapidOCR's CTCLabelDecode: the most probable
// class per time step (the first on ties, as numpy's argmax), repeats
// collapsed, blanks (class 0) dropped. The score is numpy's
// round(mean(kept probabilities, each rounded with Python's round to 5
// decimals), 5), or 0 when nothing is kept.

// ctcDecode decodes one sequence of t steps of c class probabilities.
func ctcDecode(probs []float32, t, c int, chars []string) (string, float64, error) {
	var sb strings.Builder
	var conf []float64
	prev := -1
	for s := range t {
		row := probs[s*c : (s+1)*c]
		best, bestP := 0, row[0]
		for k, p := range row {
			// numpy's argmax and max treat NaN as the largest value.
			if p > bestP || (p != p && bestP == bestP) {
				best, bestP = k, p
			}
		}
		if best != prev && best != 0 {
			if best >= len(chars) {
				return "", 0, fmt.Errorf("%w: class %d, dictionary has %d entries", ErrDictionary, best, len(chars))
			}
			sb.WriteString(chars[best])
			conf = append(conf, pyRound5(float64(bestP)))
		}
		prev = best
	}
	if len(conf) == 0 {
		conf = []float64{0}
	}
	mean := pairwiseSum(conf) / float64(len(conf))
	return sb.String(), math.RoundToEven(mean*1e5) / 1e5, nil
}

// pyRound5 is Python's round(x, 5) on a float: the correctly rounded
// decimal (half to even on the exact binary value), read back.
func pyRound5(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 5, 64), 64)
	return v
}

// pairwiseSum is numpy's float64 add.reduce: the identity 0 plus numpy's
// pairwise summation (8 accumulators in blocks of up to 128, halves
// beyond), so that means agree to the last bit.
func pairwiseSum(a []float64) float64 { return 0 + pairwise(a) }

func pairwise(a []float64) float64 {
	n := len(a)
	switch {
	case n < 8:
		res := math.Copysign(0, -1)
		for _, v := range a {
			res += v
		}
		return res
	case n <= 128:
		var r [8]float64
		copy(r[:], a[:8])
		i := 8
		for ; i < n-n%8; i += 8 {
			for j := range 8 {
				r[j] += a[i+j]
			}
		}
		res := ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
		for ; i < n; i++ {
			res += a[i]
		}
		return res
	}
	n2 := n / 2
	n2 -= n2 % 8
	return pairwise(a[:n2]) + pairwise(a[n2:])
}
