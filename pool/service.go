package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/onnx"
)

// Errors of a prediction request. The API maps them to status codes.
var (
	// ErrNoInput: neither an image nor a text was sent.
	ErrNoInput = errors.New("Either image or text must be provided")
	// ErrBadEntries: the entries name a task or type that does not exist,
	// or an option of the wrong kind.
	ErrBadEntries = errors.New("invalid entries")
	// ErrMissingDependency: an entry needs the output of an entry that is
	// not in the request (e.g. face recognition without detection).
	ErrMissingDependency = errors.New("missing dependency")
	// ErrWrongInput: the model needs the other kind of input (a text
	// encoder was sent an image, or the reverse).
	ErrWrongInput = errors.New("wrong input for model")
)

// Entry is one model of a request, as the client sent it.
type Entry struct {
	Task, Type string
	ModelName  string
	Options    map[string]json.RawMessage
}

// Request is one /predict call.
type Request struct {
	Entries []Entry
	// Image is the encoded image; when set, Text is ignored (as Immich).
	Image []byte
	Text  *string
}

// Response holds the outputs by task. The values are []float32 (CLIP),
// *face.Detections or []face.Face (faces), *ocr.TextBoxes or *ocr.Result
// (OCR); the API turns them into Immich's JSON.
type Response struct {
	Outputs map[string]any
	// HasImage tells whether ImageWidth/ImageHeight apply.
	HasImage                bool
	ImageWidth, ImageHeight int
	Timings                 Timings
	// Providers maps "task/type" to the execution provider that ran it.
	Providers map[string]string

	order []string
}

// Order lists the tasks of Outputs in the order they first produced
// output, which is the order of Immich's response keys.
func (r *Response) Order() []string { return r.order }

// Timings splits a request's time.
type Timings struct {
	Queue, Load, Decode, Inference time.Duration
}

// Store finds model folders on disk, downloading what is missing.
type Store interface {
	Ensure(ctx context.Context, task models.Task, typ models.Type, name string) (string, error)
	ClearType(task models.Task, typ models.Type, name string) error
}

// Sessions builds ONNX Runtime sessions (an *inference.Runtime).
type Sessions interface {
	NewSession(path string, o inference.SessionOptions) (*inference.Session, error)
}

// ServiceOptions configure a Service.
type ServiceOptions struct {
	Cache   CacheOptions
	Workers WorkersOptions
	// MaxBatchFace caps face-recognition batches (0: no cap).
	MaxBatchFace int
	// MaxBatchOCR caps OCR recognition batches (0: 6).
	MaxBatchOCR int
	// Metrics receives observations; nil records nothing.
	Metrics Observer
	// Decode caps the images of /predict requests (zero: imaging's
	// defaults).
	Decode imaging.DecodeOptions
}

// Observer receives what the service measures; the API's Prometheus
// metrics implement it.
type Observer interface {
	ModelLoaded(key Key, took time.Duration)
	ModelUnloaded(key Key)
	Inference(key Key, provider string, took time.Duration, err error)
}

// Service runs prediction requests with Immich's semantics on a shared
// model cache and worker pool. It is safe for concurrent use.
type Service struct {
	opts     ServiceOptions
	store    Store
	sessions Sessions
	logger   *slog.Logger
	cache    *Cache
	workers  *Workers
	handlers map[handlerKey]*handler
	obs      Observer
}

type handlerKey struct{ task, typ string }

// input is what a request brings: a decoded image or a text.
type input struct {
	img  *imaging.Image
	text *string
}

// handler knows how to load and run one task/type.
type handler struct {
	task, typ string
	// dep is the task/type whose output this one consumes.
	dep       *handlerKey
	needImage bool
	// options validates a request's options before any work.
	options func(map[string]json.RawMessage) (any, error)
	load    func(dir string, key Key) (Model, error)
	run     func(ctx context.Context, m Model, in input, dep any, opts any) (any, error)
}

// NewService builds the service. Models are loaded on first use (or by
// Preload) from folders that store provides.
func NewService(opts ServiceOptions, store Store, sessions Sessions, logger *slog.Logger) (*Service, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatchOCR <= 0 {
		opts.MaxBatchOCR = 6
	}
	s := &Service{
		opts:     opts,
		store:    store,
		sessions: sessions,
		logger:   logger,
		workers:  NewWorkers(opts.Workers),
		handlers: map[handlerKey]*handler{},
		obs:      opts.Metrics,
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	for _, h := range s.allHandlers() {
		s.handlers[handlerKey{h.task, h.typ}] = h
	}
	co := opts.Cache
	userUnload := co.OnUnload
	co.OnUnload = func(k Key) {
		s.obs.ModelUnloaded(k)
		inference.ReleaseMemory()
		if userUnload != nil {
			userUnload(k)
		}
	}
	c, err := NewCache(co, s.loadModel, logger)
	if err != nil {
		return nil, err
	}
	s.cache = c
	return s, nil
}

func (s *Service) allHandlers() []*handler {
	var hs []*handler
	hs = append(hs, s.clipHandlers()...)
	hs = append(hs, s.faceHandlers()...)
	hs = append(hs, s.ocrHandlers()...)
	return hs
}

// Cache exposes the model cache (for health and metrics).
func (s *Service) Cache() *Cache { return s.cache }

// Workers exposes the worker pool (for health and metrics).
func (s *Service) Workers() *Workers { return s.workers }

// Stats reports the worker pool.
func (s *Service) Stats() Stats { return s.workers.Stats() }

// Loaded lists the models in memory.
func (s *Service) Loaded() []Loaded { return s.cache.Loaded() }

// Ready tells whether a request would be admitted now.
func (s *Service) Ready() error {
	st := s.workers.Stats()
	if st.Closed {
		return ErrClosed
	}
	if st.Busy == st.Workers && st.Waiting >= st.MaxQueue {
		return ErrQueueFull
	}
	return nil
}

// Run sweeps idle models until ctx ends.
func (s *Service) Run(ctx context.Context, poll time.Duration) error { return s.cache.Run(ctx, poll) }

// Close refuses new requests and unloads every model.
func (s *Service) Close() {
	s.workers.Close()
	s.cache.Close()
}

// Preload loads models that stay loaded, in Immich's order.
func (s *Service) Preload(ctx context.Context, task, typ string, names []string) error {
	var errs []error
	for _, raw := range names {
		key, _, err := s.resolve(Entry{Task: task, Type: typ, ModelName: raw})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.cache.Preload(ctx, key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// resolve validates an entry's task, type and model name.
func (s *Service) resolve(e Entry) (Key, *handler, error) {
	task, ok := models.ValidTask(e.Task)
	if !ok {
		return Key{}, nil, fmt.Errorf("%w: unknown task %q", ErrBadEntries, e.Task)
	}
	typ, ok := models.ValidType(e.Type)
	if !ok {
		return Key{}, nil, fmt.Errorf("%w: unknown model type %q", ErrBadEntries, e.Type)
	}
	h := s.handlers[handlerKey{string(task), string(typ)}]
	if h == nil {
		return Key{}, nil, fmt.Errorf("%w: task %s has no model of type %s", models.ErrUnsupported, task, typ)
	}
	name, err := models.CleanName(e.ModelName)
	if err != nil {
		return Key{}, nil, err
	}
	if _, err := models.Lookup(task, typ, name); err != nil {
		return Key{}, nil, err
	}
	return Key{Task: string(task), Type: string(typ), Name: name}, h, nil
}

type plannedEntry struct {
	key  Key
	h    *handler
	opts any
}

// Predict runs a request. Cheap checks (entries, names, options,
// dependencies) come first, then models are acquired (loading them if
// needed, outside the worker pool), then the image is decoded and the
// models run on one worker slot.
func (s *Service) Predict(ctx context.Context, req *Request) (*Response, error) {
	var plan []plannedEntry
	present := map[handlerKey]bool{}
	for _, e := range req.Entries {
		key, h, err := s.resolve(e)
		if err != nil {
			return nil, err
		}
		o, err := h.options(e.Options)
		if err != nil {
			return nil, err
		}
		plan = append(plan, plannedEntry{key: key, h: h, opts: o})
		present[handlerKey{h.task, h.typ}] = true
	}
	if len(plan) == 0 {
		return nil, fmt.Errorf("%w: no entries", ErrBadEntries)
	}
	for _, p := range plan {
		if p.h.dep != nil && !present[*p.h.dep] {
			return nil, fmt.Errorf("%w: Task %s of type %s depends on output of ('%s', '%s')",
				ErrMissingDependency, p.h.task, p.h.typ, p.h.dep.typ, p.h.dep.task)
		}
	}
	hasImage := len(req.Image) > 0
	if !hasImage && req.Text == nil {
		return nil, ErrNoInput
	}
	for _, p := range plan {
		if p.h.needImage != hasImage {
			want := "text"
			if p.h.needImage {
				want = "an image"
			}
			return nil, fmt.Errorf("%w: %s/%s needs %s", ErrWrongInput, p.h.task, p.h.typ, want)
		}
	}
	// Entries without dependencies run first, then those that consume
	// their output (Immich's order); within a group, request order.
	sort.SliceStable(plan, func(i, j int) bool { return plan[i].h.dep == nil && plan[j].h.dep != nil })

	res := &Response{Outputs: map[string]any{}, Providers: map[string]string{}}
	handles := make([]*Handle, len(plan))
	defer func() {
		for _, h := range handles {
			if h != nil {
				h.Release()
			}
		}
	}()
	for i, p := range plan {
		h, err := s.cache.Acquire(ctx, p.key)
		if err != nil {
			return nil, err
		}
		handles[i] = h
		if h.Loaded {
			res.Timings.Load += h.LoadTime
		}
	}

	queued, err := s.workers.Do(ctx, func(ctx context.Context) error {
		in := input{text: req.Text}
		if hasImage {
			start := time.Now()
			img, err := imaging.DecodeWith(req.Image, s.opts.Decode)
			res.Timings.Decode = time.Since(start)
			if err != nil {
				return err
			}
			in.img = img
			res.HasImage, res.ImageWidth, res.ImageHeight = true, img.W, img.H
		}
		outs := map[handlerKey]any{}
		for i, p := range plan {
			var dep any
			if p.h.dep != nil {
				dep = outs[*p.h.dep]
			}
			start := time.Now()
			out, err := p.h.run(ctx, handles[i].Model, in, dep, p.opts)
			took := time.Since(start)
			res.Timings.Inference += took
			provider := providerOf(handles[i].Model)
			s.obs.Inference(p.key, provider, took, err)
			if err != nil {
				return fmt.Errorf("%s/%s %s: %w", p.key.Task, p.key.Type, p.key.Name, err)
			}
			outs[handlerKey{p.h.task, p.h.typ}] = out
			// A dependent entry overwrites its dependency's output under
			// the task key, as Immich does.
			if _, seen := res.Outputs[p.h.task]; !seen {
				res.order = append(res.order, p.h.task)
			}
			res.Outputs[p.h.task] = out
			res.Providers[p.key.Task+"/"+p.key.Type] = provider
		}
		return nil
	})
	res.Timings.Queue = queued
	if err != nil {
		return nil, err
	}
	return res, nil
}

func providerOf(m Model) string {
	if p, ok := m.(interface{ Provider() string }); ok {
		return p.Provider()
	}
	return ""
}

// loadModel is the cache's LoadFunc: find (or download) the model folder,
// build the model; a model that fails to load as corrupt is cleared and
// fetched once more, as Immich does.
func (s *Service) loadModel(ctx context.Context, key Key) (Model, error) {
	h := s.handlers[handlerKey{key.Task, key.Type}]
	if h == nil {
		return nil, fmt.Errorf("%w: %s", models.ErrUnsupported, key)
	}
	task, typ := models.Task(key.Task), models.Type(key.Type)
	start := time.Now()
	dir, err := s.store.Ensure(ctx, task, typ, key.Name)
	if err != nil {
		return nil, err
	}
	m, err := h.load(dir, key)
	if err != nil && corrupt(err) {
		s.logger.Warn("Failed to load model; clearing cache and downloading it again", "model", key.String(), "err", err)
		if cerr := s.store.ClearType(task, typ, key.Name); cerr != nil {
			return nil, errors.Join(err, cerr)
		}
		if dir, err = s.store.Ensure(ctx, task, typ, key.Name); err != nil {
			return nil, err
		}
		m, err = h.load(dir, key)
	}
	if err != nil {
		return nil, err
	}
	s.obs.ModelLoaded(key, time.Since(start))
	return m, nil
}

// corrupt tells load errors that a fresh download may fix (Immich clears
// the cache on OSError, InvalidProtobuf, NoSuchFile, BadZipFile).
func corrupt(err error) bool {
	var syn *json.SyntaxError
	return errors.Is(err, onnx.ErrInvalid) || errors.Is(err, fs.ErrNotExist) ||
		errors.Is(err, inference.ErrNoProvider) || errors.As(err, &syn) ||
		strings.Contains(err.Error(), "unexpected end of JSON input")
}

type nopObserver struct{}

func (nopObserver) ModelLoaded(Key, time.Duration)              {}
func (nopObserver) ModelUnloaded(Key)                           {}
func (nopObserver) Inference(Key, string, time.Duration, error) {}
