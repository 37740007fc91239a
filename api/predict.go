package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/mlserve/mlserve/inference/face"
	"github.com/mlserve/mlserve/inference/ocr"
	"github.com/mlserve/mlserve/pool"
)

// Predictor runs prediction requests (a *pool.Service).
type Predictor interface {
	Predict(ctx context.Context, req *pool.Request) (*pool.Response, error)
}

// errInvalidFormat is Immich's answer to entries it cannot parse.
var errInvalidFormat = errors.New("Invalid request format.")

// ParseEntries reads Immich's entries JSON: an object of task → object of
// type → {"modelName": string, "options": object}. Entries keep the order
// of the document. Anything else is errInvalidFormat.
func ParseEntries(data []byte) ([]pool.Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	// A repeated key keeps its first position and its last value, as a
	// Python dict does, at both levels.
	type taskEntries struct {
		task    string
		entries []pool.Entry
	}
	var tasks []*taskEntries
	err := walkObject(dec, func(task string) error {
		te := &taskEntries{task: task}
		replaced := false
		for i, t := range tasks {
			if t.task == task {
				tasks[i], replaced = te, true
			}
		}
		if !replaced {
			tasks = append(tasks, te)
		}
		return walkObject(dec, func(typ string) error {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return err
			}
			if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
				return errors.New("entry is null")
			}
			var e struct {
				ModelName *string                    `json:"modelName"`
				Options   map[string]json.RawMessage `json:"options"`
			}
			if err := json.Unmarshal(raw, &e); err != nil {
				return err
			}
			if e.ModelName == nil {
				return errors.New("modelName missing")
			}
			ne := pool.Entry{Task: task, Type: typ, ModelName: *e.ModelName, Options: e.Options}
			for i := range te.entries {
				if te.entries[i].Type == typ {
					te.entries[i] = ne
					return nil
				}
			}
			te.entries = append(te.entries, ne)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidFormat, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the entries object", errInvalidFormat)
	}
	var entries []pool.Entry
	for _, t := range tasks {
		entries = append(entries, t.entries...)
	}
	return entries, nil
}

// walkObject reads one JSON object and calls fn for each key, with the
// decoder positioned at the key's value, which fn must consume.
func walkObject(dec *json.Decoder, fn func(key string) error) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("expected an object, got %v", t)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := t.(string)
		if !ok {
			return fmt.Errorf("expected a key, got %v", t)
		}
		if err := fn(key); err != nil {
			return err
		}
	}
	_, err = dec.Token() // '}'
	return err
}

// missingEntries is FastAPI's validation error for a missing form field.
const missingEntries = `{"detail":[{"type":"missing","loc":["body","entries"],"msg":"Field required","input":null}]}`

func (s *Server) predict(c *fiber.Ctx) error {
	if s.predictor == nil {
		return fiber.NewError(fiber.StatusServiceUnavailable, "no models are served by this instance")
	}
	start := time.Now()
	form, err := c.MultipartForm()
	if err != nil {
		if errors.Is(err, fiber.ErrRequestEntityTooLarge) {
			return err
		}
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Status(fiber.StatusUnprocessableEntity).SendString(missingEntries)
	}
	defer form.RemoveAll()
	entriesText, ok := formValue(form, "entries")
	if !ok {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Status(fiber.StatusUnprocessableEntity).SendString(missingEntries)
	}
	entries, err := ParseEntries([]byte(entriesText))
	if err != nil {
		return fiber.NewError(fiber.StatusUnprocessableEntity, errInvalidFormat.Error())
	}
	req := &pool.Request{Entries: entries}
	img, hasImage, err := formImage(form)
	if err != nil {
		return err
	}
	if hasImage {
		if len(img) == 0 {
			return fiber.NewError(fiber.StatusBadRequest, "Image is empty (zero bytes)")
		}
		req.Image = img
	} else if text, ok := formValue(form, "text"); ok {
		req.Text = &text
	}

	ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
	defer cancel()
	res, err := s.predictor.Predict(ctx, req)
	if err != nil {
		return s.predictError(c, err)
	}
	body, err := encodeResponse(res)
	if err != nil {
		return err
	}
	c.Set("Server-Timing", fmt.Sprintf("queue;dur=%.1f, load;dur=%.1f, decode;dur=%.1f, infer;dur=%.1f, total;dur=%.1f",
		ms(res.Timings.Queue), ms(res.Timings.Load), ms(res.Timings.Decode), ms(res.Timings.Inference), ms(time.Since(start))))
	if len(res.Providers) > 0 {
		var parts []string
		for _, k := range sortedKeys(res.Providers) {
			parts = append(parts, k+"="+res.Providers[k])
		}
		c.Set("X-Mlserve-Provider", strings.Join(parts, ", "))
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(body)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// formValue returns a text field (the first, as FastAPI takes it).
func formValue(form *multipart.Form, name string) (string, bool) {
	if v := form.Value[name]; len(v) > 0 {
		return v[0], true
	}
	// A client may send a field as a file part; read it as text.
	if fs := form.File[name]; len(fs) > 0 {
		f, err := fs[0].Open()
		if err != nil {
			return "", false
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return "", false
		}
		return string(b), true
	}
	return "", false
}

// formImage returns the image part: a file (how Immich sends a Blob) or,
// leniently, a plain field.
func formImage(form *multipart.Form) ([]byte, bool, error) {
	if fs := form.File["image"]; len(fs) > 0 {
		f, err := fs[0].Open()
		if err != nil {
			return nil, true, err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		return b, true, err
	}
	if v := form.Value["image"]; len(v) > 0 {
		return []byte(v[0]), true, nil
	}
	return nil, false, nil
}

// encodeResponse writes Immich's JSON: one key per task in the order the
// entries ran, then imageHeight and imageWidth for image requests.
func encodeResponse(res *pool.Response) ([]byte, error) {
	b := make([]byte, 0, 8192)
	b = append(b, '{')
	first := true
	for _, task := range res.Order() {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, task)
		b = append(b, ':')
		var err error
		if b, err = appendOutput(b, res.Outputs[task]); err != nil {
			return nil, fmt.Errorf("encode %s: %w", task, err)
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

func appendOutput(b []byte, out any) ([]byte, error) {
	switch v := out.(type) {
	case []float32: // CLIP
		return appendEmbedding(b, v), nil
	case []face.Face: // detection + recognition
		b = append(b, '[')
		for i, f := range v {
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
	case *face.Detections: // detection alone: the detector's arrays
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
	case *ocr.Result:
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
	case *ocr.TextBoxes: // detection alone
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
