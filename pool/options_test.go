package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/models/hubtest"
	"github.com/mlserve/mlserve/pool"
)

// TestOptionsRefused: every option Immich sends is checked before any
// work: null (which Immich never sends), the wrong kind, or a value out of
// range is ErrBadEntries (422), and nothing is downloaded.
func TestOptionsRefused(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	svc := newService(t, hub, t.TempDir(), pool.ServiceOptions{})
	text := "a photo"
	for _, c := range []struct {
		name  string
		entry pool.Entry
		text  bool
	}{
		{"faces minScore null", pool.Entry{Task: "facial-recognition", Type: "detection", ModelName: "buffalo_l", Options: opts(`{"minScore": null}`)}, false},
		{"faces minScore string", pool.Entry{Task: "facial-recognition", Type: "detection", ModelName: "buffalo_l", Options: opts(`{"minScore": "0.7"}`)}, false},
		{"faces minScore 1.5", pool.Entry{Task: "facial-recognition", Type: "detection", ModelName: "buffalo_l", Options: opts(`{"minScore": 1.5}`)}, false},
		{"ocr minScore null", pool.Entry{Task: "ocr", Type: "detection", ModelName: "PP-OCRv5_mobile", Options: opts(`{"minScore": null}`)}, false},
		{"ocr maxResolution null", pool.Entry{Task: "ocr", Type: "detection", ModelName: "PP-OCRv5_mobile", Options: opts(`{"maxResolution": null}`)}, false},
		{"ocr maxResolution 0", pool.Entry{Task: "ocr", Type: "detection", ModelName: "PP-OCRv5_mobile", Options: opts(`{"maxResolution": 0}`)}, false},
		{"ocr maxResolution 65536", pool.Entry{Task: "ocr", Type: "detection", ModelName: "PP-OCRv5_mobile", Options: opts(`{"maxResolution": 65536}`)}, false},
		{"ocr maxResolution 736.5", pool.Entry{Task: "ocr", Type: "detection", ModelName: "PP-OCRv5_mobile", Options: opts(`{"maxResolution": 736.5}`)}, false},
		{"ocr scoreMode null", pool.Entry{Task: "ocr", Type: "detection", ModelName: "PP-OCRv5_mobile", Options: opts(`{"scoreMode": null}`)}, false},
		{"ocr scoreMode other", pool.Entry{Task: "ocr", Type: "detection", ModelName: "PP-OCRv5_mobile", Options: opts(`{"scoreMode": "best"}`)}, false},
		{"ocr recognition minScore null", pool.Entry{Task: "ocr", Type: "recognition", ModelName: "PP-OCRv5_mobile", Options: opts(`{"minScore": null}`)}, false},
		{"ocr recognition minScore -1", pool.Entry{Task: "ocr", Type: "recognition", ModelName: "PP-OCRv5_mobile", Options: opts(`{"minScore": -1}`)}, false},
		{"clip language null", pool.Entry{Task: "clip", Type: "textual", ModelName: "ViT-B-32__openai", Options: opts(`{"language": null}`)}, true},
		{"clip language number", pool.Entry{Task: "clip", Type: "textual", ModelName: "ViT-B-32__openai", Options: opts(`{"language": 5}`)}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := &pool.Request{Entries: []pool.Entry{c.entry}, Image: []byte("not decoded")}
			if c.text {
				req = &pool.Request{Entries: []pool.Entry{c.entry}, Text: &text}
			}
			_, err := svc.Predict(context.Background(), req)
			if !errors.Is(err, pool.ErrBadEntries) {
				t.Fatalf("error %v, want ErrBadEntries", err)
			}
		})
	}
	if n := hub.Total(); n != 0 {
		t.Errorf("%d requests to the hub for refused options", n)
	}
}

func opts(s string) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		panic(err)
	}
	return m
}

// TestDecodeOptionsApply: the service decodes with its configured caps.
func TestDecodeOptionsApply(t *testing.T) {
	hub := hubtest.New(t, hubtest.Options{})
	hub.AddRepo("immich-app/ViT-B-32__openai", visualRepo())
	svc := newService(t, hub, t.TempDir(), pool.ServiceOptions{DecodeLimits: imaging.DecodeOptions{MaxPixels: 1000}})
	_, err := svc.Predict(context.Background(), &pool.Request{Entries: visualEntry, Image: jpeg(t)})
	if !errors.Is(err, imaging.ErrTooLarge) {
		t.Fatalf("error %v, want ErrTooLarge from a 1000-pixel cap", err)
	}
	svc = newService(t, hub, t.TempDir(), pool.ServiceOptions{})
	if _, err := svc.Predict(context.Background(), &pool.Request{Entries: visualEntry, Image: jpeg(t)}); err != nil {
		t.Fatal(err)
	}
}
