package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mlserve/mlserve/inference"
	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/onnx"
)

// Errors of a prediction request. The API maps them to status codes.
var (
	// ErrNoInput: neither an image nor a text was sent.
	ErrNoInput = errors.New("Either image or text must be provided") //nolint:staticcheck // ST1005: Immich's exact message, sent to its clients as is
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

// Response is the outcome of a request: one typed result per task, in
// the order of Immich's response keys, and where the time went.
type Response struct {
	// Outputs holds one result per task, in the order the tasks first
	// produced output (a dependent entry's result replaces its
	// dependency's under the same task, in the same place, as Immich's
	// dict does).
	Outputs []Output
	// HasImage tells whether ImageWidth/ImageHeight apply.
	HasImage                bool
	ImageWidth, ImageHeight int
	Timings                 Timings
	// Providers maps "task/type" to the execution provider that ran it
	// (the first replica that ran a part of it).
	Providers map[string]string
	// Ran maps "task/type" to where it ran: each replica of the model
	// (provider and device) that ran a part of it, in order, once each. A
	// busy model's replicas share its work, so one entry may have run on
	// two devices (face crops in chunks).
	Ran map[string][]Where
}

// Where is where a model ran: its execution provider and device, and
// whether that is the CPU because the model's device failed
// (MLSERVE_ALLOW_CPU_FALLBACK).
type Where struct {
	Provider, Device string
	Fallback         bool
}

// Output returns the result of task, or nil.
func (r *Response) Output(task string) Result {
	for _, o := range r.Outputs {
		if o.Task == task {
			return o.Result
		}
	}
	return nil
}

func (r *Response) set(task string, res Result) {
	for i := range r.Outputs {
		if r.Outputs[i].Task == task {
			r.Outputs[i].Result = res
			return
		}
	}
	r.Outputs = append(r.Outputs, Output{Task: task, Result: res})
}

// Timings split a request's time. The stages follow one another, except
// that a request may prepare its next chunk of faces or text lines while
// the previous one runs.
type Timings struct {
	// Queue is time spent waiting: for a CPU worker slot, and for the
	// model's device while other batches ran.
	Queue time.Duration
	// Load is the time spent loading models (cold start).
	Load time.Duration
	// Decode is decoding the image.
	Decode time.Duration
	// Preprocess is the CPU work that makes model inputs (resizing,
	// normalising, tokenizing, aligning faces, cropping text lines).
	Preprocess time.Duration
	// BatchWait is time a batch waited on purpose for more requests
	// (MLSERVE_BATCH_WAIT_MS).
	BatchWait time.Duration
	// Inference is the time of the model runs the request took part in
	// (a batch's whole run, shared with the batch's other requests).
	Inference time.Duration
	// Postprocess is the CPU work that turns model outputs into results
	// (box decoding, NMS, CTC decoding).
	Postprocess time.Duration
	// BatchRows is the largest batch the request's rows ran in.
	BatchRows int
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

// ServiceOptions configure a Service. The zero value fits the machine:
// see the package documentation for the defaults and why.
type ServiceOptions struct {
	Cache CacheOptions
	// Workers bounds the CPU stage (decoding, preprocessing,
	// post-processing): Workers slots (0: one per core) and Queue new
	// requests waiting for one.
	Workers WorkersOptions
	// Runs bounds the model runs in progress at once.
	Runs RunsOptions
	// Batch configures cross-request batching.
	Batch BatchOptions
	// MaxBatchFace caps the faces of one recognition run, within a
	// request and across requests
	// (MACHINE_LEARNING_MAX_BATCH_SIZE__FACIAL_RECOGNITION); 0 means
	// DefaultMaxBatchFace. A model with a fixed batch size runs that many.
	MaxBatchFace int
	// MaxBatchOCR is the text lines of one request recognised together
	// (MACHINE_LEARNING_MAX_BATCH_SIZE__OCR, 0: 6). It sets the width of
	// each chunk's input tensor, so it shapes the results; chunks of the
	// same width from different requests run together.
	MaxBatchOCR int
	// Decode decodes request images; nil decodes within DecodeLimits, as
	// Preprocess says.
	Decode DecodeFunc
	// Preprocess chooses between PIL's exact pixels and faster, close
	// ones for the default decoder (MLSERVE_PREPROCESS); "" is
	// PreprocessExact.
	Preprocess Preprocess
	// Metrics receives observations; nil records nothing.
	Metrics Observer
	// DecodeLimits caps the images the default decoder accepts (pixels
	// and decoding memory; zero: imaging's defaults).
	DecodeLimits imaging.DecodeOptions
	// Devices configure placement on the runtime's devices and their
	// memory budgets.
	Devices DeviceOptions
}

// RunsOptions bound the model runs in progress at once.
type RunsOptions struct {
	// CPU is how many runs may use the CPU at once, all models together.
	// 0 means cores ÷ the intra-op threads of CPU sessions (at least 1),
	// so that runs × threads never exceed the cores.
	CPU int
	// Accelerator is how many runs each GPU may have in progress at once,
	// each GPU apart (0: 2, so that one batch's inputs are copied while
	// another runs).
	Accelerator int
}

// BatchOptions configure cross-request batching.
type BatchOptions struct {
	// Max caps the images or texts of one batch (MLSERVE_BATCH_MAX);
	// 0 means DefaultBatchMaxCPU on the CPU and DefaultBatchMaxAccelerator
	// on accelerators. Text-line batches take at least two chunks of
	// MaxBatchOCR.
	Max int
	// Wait is how long a batch may wait for more requests before it runs
	// (MLSERVE_BATCH_WAIT_MS). 0, the default, runs a batch as soon as
	// the device is free, with whatever queued while it was busy
	// (continuous batching): a lone request never waits.
	Wait time.Duration
	// Nice > 0 runs each batcher's runs on threads of their own at that
	// nice value (MLSERVE_INFERENCE_NICE), below the HTTP side and the
	// decoding, which then keep answering quickly on saturated cores.
	Nice int
	// Queue caps the items (an image, a text, a chunk of faces or lines)
	// waiting per model; more are refused with ErrQueueFull (0: 256).
	Queue int
	// Gather is how long a batch about to run on the CPU may wait for
	// the inputs that other requests are preparing (decoding, resizing)
	// for the same model (MLSERVE_BATCH_GATHER_MS): the cores that would
	// run it are the ones preparing them, so one larger batch comes out
	// ahead of two smaller ones that share the cores with that work. A
	// lone request never waits. 0 means DefaultBatchGather; < 0 turns it
	// off.
	Gather time.Duration
	// NoSplit runs every CPU batch as one run on all its intra-op threads
	// (MLSERVE_SPLIT_BATCH=false). By default a CPU batch of at least one CLIP
	// image per thread runs as that many single-threaded runs at once
	// (when the parts come out about even: every even batch on two
	// cores), on a twin session that shares the model's weights
	// (inference.SessionOptions.SplitBatch), while a lone image keeps
	// every thread. Face recognition runs whole: its convolutions use two
	// threads well, and splitting measured no gain.
	NoSplit bool
}

// gather is Gather with its default applied, 0 when off.
func (o BatchOptions) gather() time.Duration {
	switch {
	case o.Gather == 0:
		return DefaultBatchGather
	case o.Gather < 0:
		return 0
	}
	return o.Gather
}

// Engine defaults, chosen by measurement on CPU (see the package
// documentation); the accelerator values are not measured here.
const (
	// DefaultBatchMaxCPU is the largest CPU batch: ViT-B/32 gains nothing
	// beyond 8 images a run.
	DefaultBatchMaxCPU = 8
	// DefaultBatchGather bounds the wait of a CPU batch for inputs being
	// prepared: about the time two CPU workers take to decode and resize
	// eight preview-size photos exactly.
	DefaultBatchGather = 100 * time.Millisecond
	// DefaultBatchMaxAccelerator is the largest batch on a GPU.
	DefaultBatchMaxAccelerator = 32
	// DefaultMaxBatchFace is the most faces of one recognition run: more
	// per run adds memory (the CPU arena keeps the largest batch's) and no
	// speed.
	DefaultMaxBatchFace = 8
)

// DecodeFunc decodes a request's image. minSide > 0 allows an image
// scaled down while decoding, as long as both its sides stay at least
// minSide (only requests whose every model resizes the image so that its
// shorter side is minSide or less ask for it); 0 needs the full image. It
// returns the image and the original's size, which the response reports.
type DecodeFunc func(data []byte, minSide int) (img *imaging.Image, w, h int, err error)

// Preprocess is how images are decoded before the models resize them
// (MLSERVE_PREPROCESS).
type Preprocess string

const (
	// PreprocessExact decodes every image at full size: model inputs are
	// bit for bit Immich's (PIL's).
	PreprocessExact Preprocess = "exact"
	// PreprocessFast decodes a JPEG for CLIP with libjpeg's DCT-domain
	// scaling, to the smallest eighth of its size whose shorter side is
	// still at least the model's input, then resizes as PreprocessExact
	// does. Decoding a preview for ViT-B/32 takes a fraction of the time,
	// and the model input differs from Immich's by less than one level
	// in 255 on average (TestPreprocessFidelity measures it). Faces
	// and OCR decode at full size: they crop faces and text lines from
	// the full-resolution image.
	PreprocessFast Preprocess = "fast"
)

// ParsePreprocess reads a Preprocess; "" is PreprocessExact.
func ParsePreprocess(v string) (Preprocess, error) {
	switch Preprocess(strings.ToLower(v)) {
	case "", PreprocessExact:
		return PreprocessExact, nil
	case PreprocessFast:
		return PreprocessFast, nil
	}
	return "", fmt.Errorf("unknown preprocess mode %q: want exact or fast", v)
}

// NewDecoder returns the decoder ServiceOptions.Decode defaults to:
// within limits, at full size (PreprocessExact) or scaled down to what
// the request's models need (PreprocessFast).
func NewDecoder(limits imaging.DecodeOptions, mode Preprocess) DecodeFunc {
	return func(data []byte, minSide int) (*imaging.Image, int, int, error) {
		o := limits
		if mode == PreprocessFast {
			o.MinSide = minSide
		} else {
			o.MinSide = 0
		}
		img, h, err := imaging.DecodeScaled(data, o)
		if err != nil {
			return nil, 0, 0, err
		}
		return img, h.W, h.H, nil
	}
}

// Observer receives what the service measures; the API's Prometheus
// metrics implement it.
type Observer interface {
	ModelLoaded(key Key, took time.Duration)
	ModelUnloaded(key Key)
	Inference(key Key, provider string, took time.Duration, err error)
}

// DeviceObserver is an Observer that also follows the devices; the
// service calls these methods when its Metrics implement them.
type DeviceObserver interface {
	// ModelPlaced: a model, or a replica of a busy one, was loaded on
	// device ("CUDA:1"; "CPU" after a fallback), its sessions taking
	// bytes of the device's memory (0: the CPU, or unknown).
	ModelPlaced(key Key, device string, bytes int64)
	// DeviceOutOfMemory: a load or a run (op "load", "run") of key ran
	// out of memory on device.
	DeviceOutOfMemory(key Key, device, op string)
	// ModelFellBack: key moved from device to the CPU after cause
	// (MLSERVE_ALLOW_CPU_FALLBACK).
	ModelFellBack(key Key, device string, cause error)
}

// Service runs prediction requests with Immich's semantics on a shared
// model cache, CPU worker pool and inference engine. It is safe for
// concurrent use.
type Service struct {
	opts ServiceOptions
	// pixels recycles the decoded photos of requests (nil when the
	// decoder is the caller's).
	pixels   *imaging.Buffers
	store    Store
	sessions Sessions
	logger   *slog.Logger
	cache    *Cache
	workers  *Workers
	devices  *devices
	placer   *placer
	// growing counts the replica loads in progress.
	growing  sync.WaitGroup
	handlers map[handlerKey]*handler
	obs      Observer
	// inflight counts requests and bulk calls in progress; worked tells
	// whether one ended since the last memory trim.
	inflight atomic.Int64
	worked   atomic.Bool
}

type handlerKey struct{ task, typ string }

// input is what a request brings: a decoded image or a text.
type input struct {
	img  *imaging.Image
	text *string
	// keepImage is false while the last entry that reads img runs: that
	// entry may drop img once it has what it needs (CLIP's tensor), so a
	// request waiting for its batch does not hold a decoded photo (9 MB
	// at preview size, 96 MB at the pixel cap) across the wait.
	keepImage bool
}

// Recycle gives a decoded image's pixels back for the service's decoder
// to reuse (Decode). The caller must be the image's only user and must
// not read it afterwards; the bulk indexer recycles each photo once its
// models are done with it, as /predict does (dropImage). A no-op when
// the decoder is the caller's (s.pixels is nil), which may keep its
// images.
func (s *Service) Recycle(img *imaging.Image) { s.pixels.Put(img) }

// dropImage lets a request's decoded image go when no later entry reads
// it; its pixels serve the next decode.
func (s *Service) dropImage(in *input) {
	if in.keepImage || in.img == nil {
		return
	}
	s.Recycle(in.img)
	in.img = nil
}

// handler knows how to load and run one task/type.
type handler struct {
	task, typ string
	// dep is the task/type whose output this one consumes.
	dep       *handlerKey
	needImage bool
	// options validates a request's options before any work.
	options func(map[string]json.RawMessage) (any, error)
	// load builds the model from dir, opening its sessions through
	// sessions (which places them on a device).
	load func(sessions Sessions, dir string, key Key) (Model, error)
	// sub is the folder of dir that holds the model's ONNX files, whose
	// size estimates its memory.
	sub string
	// engine starts the batcher of a freshly loaded model; nil for
	// models that run one request at a time on the device's slots.
	engine func(m *loaded)
	// minSide is the shortest image side the model needs (see
	// DecodeFunc); nil needs the full image.
	minSide func(m Model) int
	// run runs the model for one request: its CPU work on x's slot, its
	// inference through the model's batcher or x.run.
	run func(ctx context.Context, x *exec, m *loaded, in *input, dep Result, opts any) (Result, error)
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
	if opts.MaxBatchFace <= 0 {
		opts.MaxBatchFace = DefaultMaxBatchFace
	}
	if opts.Workers.Workers <= 0 {
		opts.Workers.Workers = runtime.NumCPU()
	}
	if opts.Runs.CPU <= 0 {
		opts.Runs.CPU = defaultCPURuns(sessions)
	}
	if opts.Runs.Accelerator <= 0 {
		opts.Runs.Accelerator = 2
	}
	if opts.Batch.Wait < 0 {
		opts.Batch.Wait = 0
	}
	if opts.Preprocess == "" {
		opts.Preprocess = PreprocessExact
	}
	if opts.Preprocess != PreprocessExact && opts.Preprocess != PreprocessFast {
		return nil, fmt.Errorf("pool: unknown preprocess mode %q", opts.Preprocess)
	}
	// The service's own decoder recycles the pixels of the photos that
	// requests are done with (a decoder passed in may keep its images).
	var bufs *imaging.Buffers
	if opts.Decode == nil {
		bufs = new(imaging.Buffers)
		limits := opts.DecodeLimits
		limits.Buffers = bufs
		opts.Decode = NewDecoder(limits, opts.Preprocess)
	}
	s := &Service{
		pixels:   bufs,
		opts:     opts,
		store:    store,
		sessions: sessions,
		logger:   logger,
		workers:  NewWorkers(opts.Workers),
		devices:  newDevices(opts.Runs.CPU, opts.Runs.Accelerator),
		handlers: map[handlerKey]*handler{},
		obs:      opts.Metrics,
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	s.placer = newPlacer(s, sessions, opts.Devices)
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
	logger.Info("inference engine", "cpu_workers", opts.Workers.Workers, "queue", opts.Workers.Queue,
		"cpu_runs", opts.Runs.CPU, "batch_max", opts.Batch.Max, "batch_wait", opts.Batch.Wait,
		"max_batch_face", opts.MaxBatchFace, "max_batch_ocr", opts.MaxBatchOCR, "preprocess", opts.Preprocess)
	if devs := s.placer.devs; len(devs) > 1 || len(devs) == 1 && budgeted(devs[0]) {
		names := make([]string, len(devs))
		for i, d := range devs {
			names[i] = d.Name()
		}
		logger.Info("model placement", "devices", names, "runs_per_device", opts.Runs.Accelerator,
			"budget", opts.Devices.Budget, "headroom", opts.Devices.Headroom,
			"load_factor", s.placer.opts.LoadFactor, "replica_after", s.placer.opts.ReplicaAfter)
	}
	return s, nil
}

// defaultCPURuns is cores ÷ the intra-op threads of CPU sessions.
func defaultCPURuns(sessions Sessions) int {
	t, ok := sessions.(interface{ Threads(string) (int, int) })
	if !ok {
		return 1
	}
	intra, _ := t.Threads(inference.CPU)
	if intra <= 0 {
		return 1 // ONNX Runtime's default: every core
	}
	return max(1, runtime.NumCPU()/intra)
}

// batchMax is the largest batch of images or texts for a model on device.
func (s *Service) batchMax(device string) int {
	if s.opts.Batch.Max > 0 {
		return s.opts.Batch.Max
	}
	if gateOf(device) == inference.CPU {
		return DefaultBatchMaxCPU
	}
	return DefaultBatchMaxAccelerator
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

// Loaded lists the models in memory, with where they run.
func (s *Service) Loaded() []Loaded { return s.cache.Loaded() }

// BatchStats reports the batching of each loaded model that batches.
func (s *Service) BatchStats() []BatchStats {
	var out []BatchStats
	for _, l := range s.cache.Loaded() {
		if m, ok := l.Model.(*loaded); ok && m.eng != nil {
			out = append(out, m.eng.stats())
		}
	}
	return out
}

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

// Run sweeps idle models until ctx ends, every poll. When the service has
// worked since the last poll and is idle now, it also hands the memory
// that runs freed back to the system: the C heap keeps what ONNX Runtime
// and OpenCV free, and the resident set would stay at its peak.
func (s *Service) Run(ctx context.Context, poll time.Duration) error {
	if poll <= 0 {
		poll = 10 * time.Second
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.cache.Sweep()
			s.trimIfIdle()
		}
	}
}

// busy counts a request or bulk call in progress; the returned function
// ends it.
func (s *Service) busy() func() {
	s.inflight.Add(1)
	return func() {
		s.worked.Store(true)
		s.inflight.Add(-1)
	}
}

// trimIfIdle hands freed C memory back when nothing runs and something
// ran since the last time.
func (s *Service) trimIfIdle() {
	if s.inflight.Load() == 0 && s.worked.Swap(false) {
		inference.ReleaseMemory()
	}
}

// Close refuses new requests and unloads every model. Replica loads in
// progress are waited for (up to the cache's CloseTimeout); their models
// are closed as they finish.
func (s *Service) Close() {
	s.workers.Close()
	s.cache.Close()
	done := make(chan struct{})
	go func() {
		s.growing.Wait()
		close(done)
	}()
	t := time.NewTimer(s.cache.opts.CloseTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.logger.Warn("replica loads still running after the service closed; their models are closed when they finish")
	}
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
// needed, outside the worker pool). Then the request takes a CPU worker
// slot to decode the image and prepare each model's input, gives the slot
// up while its model runs (in a batch with other requests' inputs where
// the model allows), and takes one again for any post-processing.
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

	defer s.busy()()
	res := &Response{Providers: map[string]string{}, Ran: map[string][]Where{}}
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

	// Work this request left queued (a chunk of faces after an error)
	// leaves with it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	x := s.newExec(&res.Timings, PriorityRequest)
	defer x.done()
	// From its decoding on, the request prepares an input for its first
	// model: a batch forming there on the CPU may wait for it.
	x.headFor(handles[0].Model.(*loaded).expecter())
	if err := x.cpu(ctx, &res.Timings.Decode); err != nil {
		return nil, err
	}
	in := &input{text: req.Text}
	if hasImage {
		// The decoder may scale down only if every model allows it.
		minSide := 0
		for i, p := range plan {
			need := 0
			if p.h.minSide != nil {
				need = p.h.minSide(handles[i].Model.(*loaded).model)
			}
			if need == 0 {
				minSide = 0
				break
			}
			minSide = max(minSide, need)
		}
		img, w, h, err := s.opts.Decode(req.Image, minSide)
		if err != nil {
			return nil, err
		}
		in.img = img
		res.HasImage, res.ImageWidth, res.ImageHeight = true, w, h
	}
	outs := map[handlerKey]Result{}
	for i, p := range plan {
		var dep Result
		if p.h.dep != nil {
			dep = outs[*p.h.dep]
		}
		m := handles[i].Model.(*loaded)
		in.keepImage = slices.ContainsFunc(plan[i+1:], func(q plannedEntry) bool { return q.h.needImage })
		start := time.Now()
		x.ran = x.ran[:0]
		x.headFor(m.expecter())
		out, err := p.h.run(ctx, x, m, in, dep, p.opts)
		x.headFor(nil)
		provider := m.Provider()
		if len(x.ran) > 0 {
			provider = x.ran[0].Provider
		}
		s.obs.Inference(p.key, provider, time.Since(start), err)
		if err != nil {
			return nil, fmt.Errorf("%s/%s %s: %w", p.key.Task, p.key.Type, p.key.Name, err)
		}
		outs[handlerKey{p.h.task, p.h.typ}] = out
		// A dependent entry overwrites its dependency's output under
		// the task key, as Immich does.
		res.set(p.h.task, out)
		res.Providers[p.key.Task+"/"+p.key.Type] = provider
		if len(x.ran) > 0 {
			res.Ran[p.key.Task+"/"+p.key.Type] = slices.Clone(x.ran)
		}
	}
	return res, nil
}

func providerOf(m Model) string {
	if p, ok := m.(interface{ Provider() string }); ok {
		return p.Provider()
	}
	return ""
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
