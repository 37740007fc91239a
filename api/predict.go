package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

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
	t := res.Timings
	c.Set("Server-Timing", fmt.Sprintf("queue;dur=%.1f, load;dur=%.1f, decode;dur=%.1f, preprocess;dur=%.1f, batch;dur=%.1f, infer;dur=%.1f, postprocess;dur=%.1f, total;dur=%.1f",
		ms(t.Queue), ms(t.Load), ms(t.Decode), ms(t.Preprocess), ms(t.BatchWait), ms(t.Inference), ms(t.Postprocess), ms(time.Since(start))))
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
