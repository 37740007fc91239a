package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Errors of this package.
var (
	// ErrDrained: an in-process queue is closed and everything in it was
	// handled; workers stop.
	ErrDrained = errors.New("queue drained")
	// ErrClosed: Enqueue on a closed queue.
	ErrClosed = errors.New("queue closed")
	// ErrPermanent marks an item error that retrying cannot fix (missing
	// file, undecodable image, wrong model); the item goes to the
	// dead-letter queue at once.
	ErrPermanent = errors.New("permanent item error")
	// ErrBadEntry: a queue entry that does not decode to an Item.
	ErrBadEntry = errors.New("malformed queue entry")
	// ErrDeadLetterFull: the dead-letter stream is at its cap. Dead
	// letters are never dropped to make room; the failed item stays in the
	// queue and workers stop until someone looks at them.
	ErrDeadLetterFull = errors.New("dead-letter stream full")
	// ErrLost: a worker no longer holds an entry it is working on: another
	// worker reclaimed it after the visibility timeout (the item is then
	// processed twice, which the idempotent writes make harmless).
	ErrLost = errors.New("queue entries taken over by another worker")
)

// Item is one unit of work: one image to embed.
type Item struct {
	// Path is the file to read, as the worker sees it.
	Path string `json:"path"`
	// AssetID is the Immich asset (Immich mode); empty for our own schema.
	AssetID string `json:"asset,omitempty"`
	// Model is the CLIP model the item is for; a worker running another
	// model refuses it.
	Model string `json:"model"`
	// Size and ModTime are the file's, as the producer saw them (Unix
	// nanoseconds; 0 when unknown).
	Size    int64 `json:"size,omitempty"`
	ModTime int64 `json:"mtime,omitempty"`
	// Run ties the item to the producer run that counts its progress.
	Run string `json:"run,omitempty"`
	// Tasks lists what to compute (TaskCLIP, TaskFaces, TaskOCR): what
	// the index lacks for this file. Empty means CLIP plus the faces and
	// OCR the worker is configured for (items of older producers).
	Tasks []string `json:"tasks,omitempty"`
	// FaceModel and OCRModel name the models of the faces and OCR tasks
	// (empty: the worker's own).
	FaceModel string `json:"faces,omitempty"`
	OCRModel  string `json:"ocr,omitempty"`
}

// Tasks an item can ask for.
const (
	TaskCLIP  = "clip"
	TaskFaces = "faces"
	TaskOCR   = "ocr"
)

// wants tells whether the item asks for task; an item without Tasks asks
// for everything.
func (it Item) wants(task string) bool {
	if len(it.Tasks) == 0 {
		return true
	}
	for _, t := range it.Tasks {
		if t == task {
			return true
		}
	}
	return false
}

// ModifiedAt is ModTime as a time (zero when unknown).
func (it Item) ModifiedAt() time.Time {
	if it.ModTime == 0 {
		return time.Time{}
	}
	return time.Unix(0, it.ModTime)
}

// Delivery is an item handed to a worker.
type Delivery struct {
	Item Item
	// ID is the queue's id of this delivery.
	ID string
	// Attempt counts tries, 1 for the first.
	Attempt int
	// LastError is the error of the previous attempt, if any.
	LastError string
	// raw is the encoded item, re-added as is on retry.
	raw string
	// faces and lines are what the worker found, counted with the run's
	// progress when the delivery is acknowledged.
	faces, lines int
}

// DeadLetter is an item that will not be retried.
type DeadLetter struct {
	Item     Item
	Raw      string
	Attempts int
	Error    string
	ID       string
}

// Counts is a run's progress as the queue counts it.
type Counts struct {
	// Total is how many items were enqueued.
	Total int64
	// Done were written; Failed went to the dead-letter queue.
	Done, Failed int64
	// Faces and Lines count the faces and the lines of text found in
	// the items done.
	Faces, Lines int64
	// Known is false when the queue has no record of the run (never
	// started, or lost with a Redis that does not persist).
	Known bool
}

// Queue is what a worker needs from a queue. Implementations are safe for
// concurrent use.
type Queue interface {
	// Read returns up to max deliveries, waiting a short while (about a
	// second) for the first; it may return none. ErrDrained means there
	// will never be more.
	Read(ctx context.Context, max int) ([]Delivery, error)
	// Ack marks deliveries done (their results are stored).
	Ack(ctx context.Context, ds []Delivery) error
	// Fail records a failed attempt: the item is retried later, or goes to
	// the dead-letter queue when permanent or out of attempts. A full
	// dead-letter queue refuses with ErrDeadLetterFull (nothing changed).
	Fail(ctx context.Context, d Delivery, cause error, permanent bool) error
	// Release hands deliveries back untouched, for another worker (a
	// worker shutting down).
	Release(ctx context.Context, ds []Delivery) error
	// Extend tells the queue the worker is still on these deliveries, so
	// they are not handed to another worker. It never takes back a
	// delivery another worker has reclaimed (it returns ErrLost for it).
	Extend(ctx context.Context, ds []Delivery) error
}

// Enqueuer is what a producer needs from a queue.
type Enqueuer interface {
	// Enqueue adds items, waiting while the queue is full.
	Enqueue(ctx context.Context, items []Item) error
	// Progress returns a run's counts.
	Progress(ctx context.Context, run string) (Counts, error)
}

// Entry fields as stored in a queue (the Redis stream's field names).
const (
	fieldItem    = "item"
	fieldAttempt = "attempt"
	fieldError   = "error"
)

func encodeItem(it Item) (string, error) {
	b, err := json.Marshal(it)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// decodeEntry reads a stream entry's fields. A malformed entry is
// ErrBadEntry; the Delivery then still carries what could be read, for the
// dead-letter queue.
func decodeEntry(id string, values map[string]any) (Delivery, error) {
	d := Delivery{ID: id, Attempt: 1}
	raw, ok := values[fieldItem].(string)
	if !ok {
		return d, fmt.Errorf("%w %s: no %q field", ErrBadEntry, id, fieldItem)
	}
	d.raw = raw
	if s, ok := values[fieldAttempt].(string); ok && s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return d, fmt.Errorf("%w %s: attempt %q", ErrBadEntry, id, s)
		}
		d.Attempt = n
	}
	if s, ok := values[fieldError].(string); ok {
		d.LastError = s
	}
	if err := json.Unmarshal([]byte(raw), &d.Item); err != nil {
		return d, fmt.Errorf("%w %s: %w", ErrBadEntry, id, err)
	}
	if d.Item.Path == "" {
		return d, fmt.Errorf("%w %s: item without a path", ErrBadEntry, id)
	}
	return d, nil
}
