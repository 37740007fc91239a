package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
var errInvalidFormat = errors.New("Invalid request format.") //nolint:staticcheck // ST1005: Immich's exact message, sent to its clients as is

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

// predictFields are the form fields /predict reads, with their caps.
func (s *Server) predictFields() map[string]int64 {
	return map[string]int64{"entries": maxEntriesBytes, "text": maxTextBytes, "image": s.opts.MaxBodyBytes}
}

// predict is POST /predict. Before reading the body it refuses what it
// can refuse cheaply: a declared body over the limit (413), a full or
// closing service (503 and Retry-After, from the admission). The body is
// then read as it arrives, field by field with caps, charged to the
// in-flight byte budget; the work runs under a context that ends at the
// worker timeout, at the end of the shutdown drain, or when the client
// hangs up.
func (s *Server) predict(c *fiber.Ctx) error {
	if s.predictor == nil {
		return fiber.NewError(fiber.StatusServiceUnavailable, "no models are served by this instance")
	}
	start := time.Now()
	if ok, err := s.admit(c); !ok {
		return err
	}
	defer s.adm.Release()
	r := s.newRequest(c)
	defer r.end()
	f, err := r.readForm(s.predictFields())
	if err != nil {
		return s.formError(c, err)
	}
	entriesText, ok := f["entries"].text()
	if !ok {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Status(fiber.StatusUnprocessableEntity).SendString(missingEntries)
	}
	entries, err := ParseEntries(entriesText)
	if err != nil {
		return fiber.NewError(fiber.StatusUnprocessableEntity, errInvalidFormat.Error())
	}
	req := &pool.Request{Entries: entries}
	if img, ok := f["image"].blob(); ok {
		if len(img) == 0 {
			return fiber.NewError(fiber.StatusBadRequest, "Image is empty (zero bytes)")
		}
		req.Image = img
	} else if text, ok := f["text"].text(); ok {
		t := string(text)
		req.Text = &t
	}

	stop := r.watch()
	res, err := s.predictor.Predict(r.ctx, req)
	stop()
	if err != nil {
		if r.gone.Load() {
			s.logger.Debug("predict cancelled: the client hung up", "err", err)
		}
		return s.predictError(c, err)
	}
	body, err := encodeResponse(res)
	if err != nil {
		return err
	}
	t := res.Timings
	c.Set("Server-Timing", fmt.Sprintf("queue;dur=%.1f, load;dur=%.1f, decode;dur=%.1f, preprocess;dur=%.1f, batch;dur=%.1f, infer;dur=%.1f, postprocess;dur=%.1f, total;dur=%.1f",
		ms(t.Queue), ms(t.Load), ms(t.Decode), ms(t.Preprocess), ms(t.BatchWait), ms(t.Inference), ms(t.Postprocess), ms(time.Since(start))))
	if h := providerHeader(res); h != "" {
		c.Set("X-Mlserve-Provider", h)
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(body)
}

// admit refuses a request before its body is read: 413 when it declares
// more than the limit, 503 with Retry-After when the service is full or
// shutting down. When it reports true the caller holds an admission
// place; otherwise the answer is given (or err is, for the error handler).
func (s *Server) admit(c *fiber.Ctx) (bool, error) {
	if n := c.Request().Header.ContentLength(); int64(n) > s.opts.MaxBodyBytes {
		return false, fiber.ErrRequestEntityTooLarge
	}
	if err := s.adm.Acquire(); err != nil {
		return false, s.predictError(c, err)
	}
	return true, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// providerHeader is X-Mlserve-Provider: for each entry ("task/type"),
// where it ran: "CPU", or the provider and the device of the replica that
// ran it ("CUDA@CUDA:1"), "+"-joined when parts of it ran on several
// ("CUDA@CUDA:0+CUDA@CUDA:1"), and "CPU (fallback)" for a model that
// moved to the CPU because its device failed (MLSERVE_ALLOW_CPU_FALLBACK).
func providerHeader(res *pool.Response) string {
	var parts []string
	for _, k := range sortedKeys(res.Providers) {
		ran := res.Ran[k]
		if len(ran) == 0 {
			parts = append(parts, k+"="+res.Providers[k])
			continue
		}
		names := make([]string, len(ran))
		for i, w := range ran {
			names[i] = whereName(w)
		}
		parts = append(parts, k+"="+strings.Join(names, "+"))
	}
	return strings.Join(parts, ", ")
}

// whereName names a place a model runs: its provider, and its device
// when that is not the provider's name ("CPU", "CUDA@CUDA:1",
// "OpenVINO@OpenVINO:GPU.0", "CPU (fallback)").
func whereName(w pool.Where) string {
	name := w.Provider
	if w.Device != "" && w.Device != w.Provider {
		name += "@" + w.Device
	}
	if w.Fallback {
		name += " (fallback)"
	}
	return name
}
