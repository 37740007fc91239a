package api

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/mlserve/mlserve/pool"
)

// encodeResponse writes Immich's JSON: one key per task in the order the
// entries ran, then imageHeight and imageWidth for image requests.
func encodeResponse(res *pool.Response) ([]byte, error) {
	b := make([]byte, 0, 8192)
	b = append(b, '{')
	first := true
	for _, o := range res.Outputs {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, o.Task)
		b = append(b, ':')
		var err error
		if b, err = appendOutput(b, o.Result); err != nil {
			return nil, fmt.Errorf("encode %s: %w", o.Task, err)
		}
	}
	if res.HasImage {
		if !first {
			b = append(b, ',')
		}
		b = append(b, `"imageHeight":`...)
		b = strconv.AppendInt(b, int64(res.ImageHeight), 10)
		b = append(b, `,"imageWidth":`...)
		b = strconv.AppendInt(b, int64(res.ImageWidth), 10)
	}
	return append(b, '}'), nil
}

func appendOutput(b []byte, out pool.Result) ([]byte, error) {
	switch v := out.(type) {
	case *pool.CLIPResult:
		return appendEmbedding(b, v.Embedding), nil
	case *pool.FacesResult: // detection + recognition
		b = append(b, '[')
		for i, f := range v.Faces {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"boundingBox":{"x1":`...)
			b = appendFloat32(b, f.Box[0])
			b = append(b, `,"y1":`...)
			b = appendFloat32(b, f.Box[1])
			b = append(b, `,"x2":`...)
			b = appendFloat32(b, f.Box[2])
			b = append(b, `,"y2":`...)
			b = appendFloat32(b, f.Box[3])
			b = append(b, `},"embedding":`...)
			b = appendEmbedding(b, f.Embedding)
			// Immich writes the score as a Python float.
			b = append(b, `,"score":`...)
			b = appendFloat64(b, float64(f.Score))
			b = append(b, '}')
		}
		return append(b, ']'), nil
	case *pool.FaceDetectionResult: // detection alone: the detector's arrays
		b = append(b, `{"boxes":[`...)
		for i, box := range v.Boxes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloats32(b, box[:])
		}
		b = append(b, `],"scores":`...)
		b = appendFloats32(b, v.Scores)
		b = append(b, `,"landmarks":[`...)
		for i, lm := range v.Landmarks {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendPoints(b, lm[:])
		}
		return append(b, ']', '}'), nil
	case *pool.OCRResult:
		b = append(b, `{"box":`...)
		b = appendFloats32(b, v.Box)
		b = append(b, `,"boxScore":`...)
		b = appendFloats32(b, v.BoxScore)
		b = append(b, `,"text":[`...)
		for i, t := range v.Text {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, strings.ToValidUTF8(t, "\uFFFD"))
		}
		b = append(b, `],"textScore":[`...)
		for i, s := range v.TextScore {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloat64(b, s)
		}
		return append(b, ']', '}'), nil
	case *pool.TextDetectionResult: // detection alone
		b = append(b, `{"boxes":[`...)
		for i, q := range v.Boxes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendPoints(b, q[:])
		}
		b = append(b, `],"scores":`...)
		b = appendFloats32(b, v.Scores)
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("no wire format for %T", out)
}

// appendPoints writes points as [[x,y],...].
func appendPoints(b []byte, pts [][2]float32) []byte {
	b = append(b, '[')
	for i, p := range pts {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFloats32(b, p[:])
	}
	return append(b, ']')
}

func appendFloats32(b []byte, v []float32) []byte {
	b = append(b, '[')
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendFloat32(b, x)
	}
	return append(b, ']')
}
