// Package config is the one catalogue of environment variables that mlserve
// reads. It keeps the Immich machine-learning service's names
// (MACHINE_LEARNING_*, IMMICH_HOST, IMMICH_PORT, IMMICH_LOG_LEVEL, HF_*) so
// an existing deployment works unchanged, and adds a few of its own under
// MLSERVE_*.
//
// The environment is parsed once, at start, by [Load]. A value that does not
// parse is an error naming the variable; nothing below cmd/ reads the
// environment. [Config.Table] lists every variable with its resolved value
// for the start-up log.
//
// Secrets never leave this package in clear: tokens are shown as set or
// unset, passwords in URLs and connection strings are masked in the table,
// in [Config.LogValue], in fmt's output of a Config and in Load's errors,
// and [Config.Redactor] masks them in whatever else mlserve prints (errors
// of database and Redis clients quote their URLs).
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/mlserve/mlserve/internal/redact"
)

// Version is the build's version, set with -ldflags at build time.
var Version = "dev"

// Config holds every setting of the service after parsing.
type Config struct {
	// Host and Port are the HTTP listen address (IMMICH_HOST, IMMICH_PORT).
	Host string
	Port int
	// LogLevel is the slog level from IMMICH_LOG_LEVEL.
	LogLevel slog.Level
	// LogLevelSet tells whether IMMICH_LOG_LEVEL was set: one-shot
	// commands log only warnings unless it was (or -v is given).
	LogLevelSet bool
	// LogFormat is "text" (logfmt) or "json" (MLSERVE_LOG_FORMAT).
	LogFormat string

	// CacheFolder is the model cache root in Immich's layout.
	CacheFolder string
	// ModelTTL is how long a model may stay unused before it is unloaded;
	// zero disables unloading.
	ModelTTL time.Duration
	// ModelTTLPoll is how often idle models are looked for.
	ModelTTLPoll time.Duration
	// RequestThreads is the number of requests processed at once.
	RequestThreads int
	// InterOpThreads and IntraOpThreads are ONNX Runtime's thread counts;
	// zero picks mlserve's defaults on CPU (1, and every core up to 8).
	InterOpThreads int
	IntraOpThreads int
	// Arena enables ONNX Runtime's CPU memory arena.
	Arena bool
	// InferenceNice is the nice value of the threads that run models
	// (MLSERVE_INFERENCE_NICE), so that answering HTTP (health checks,
	// refusals) and preparing the next images come first on busy cores.
	InferenceNice int
	// WorkerTimeout bounds one request's work (MACHINE_LEARNING_WORKER_TIMEOUT).
	WorkerTimeout time.Duration
	// KeepAlive is the HTTP keep-alive idle timeout.
	KeepAlive time.Duration
	// Workers is accepted for compatibility; mlserve runs one process whose
	// models are shared by all requests.
	Workers int

	// Preload lists the models to load at start, per task and type, in
	// Immich's order.
	Preload []Preload

	// MaxBatchFace caps face-recognition batches (0: the pool's default).
	MaxBatchFace int
	// MaxBatchOCR caps OCR recognition batches.
	MaxBatchOCR int
	// BatchMax caps cross-request batches of images or texts (0: the
	// pool's per-provider default); BatchWait is how long a batch may wait
	// for more requests (0: none, continuous batching); BatchGather is
	// how long a CPU batch may wait for inputs other requests are
	// preparing (0: never).
	BatchMax    int
	BatchWait   time.Duration
	BatchGather time.Duration
	// SplitBatch lets CPU batches run as single-threaded runs at once
	// (pool.BatchOptions.NoSplit when false).
	SplitBatch bool
	// Preprocess is "exact" (images decoded at full size: PIL's model
	// inputs, bit for bit) or "fast" (JPEGs decoded smaller for CLIP with
	// libjpeg's DCT scaling).
	Preprocess string

	// Providers is the order of preference of execution providers: the
	// first usable one runs every model.
	Providers []string
	// DeviceID selects the GPU for CUDA and OpenVINO: the first of
	// DeviceIDs.
	DeviceID int
	// DeviceIDs are the GPUs models are placed on (CUDA ordinals, OpenVINO
	// GPU.<id>), DeviceID first.
	DeviceIDs []int
	// OpenVINOPrecision is FP32 or FP16.
	OpenVINOPrecision string
	// AllowCPUFallback lets a model whose GPU fails (out of memory, a
	// provider error) run on the CPU, and the service start on the CPU
	// when no configured provider is usable.
	AllowCPUFallback bool
	// CUDAMemLimit caps each model's CUDA memory arena, in bytes (0: no
	// cap).
	CUDAMemLimit int64
	// CUDAArenaExtendStrategy is kSameAsRequested or kNextPowerOfTwo.
	CUDAArenaExtendStrategy string
	// CUDAConvAlgoSearch is HEURISTIC, DEFAULT or EXHAUSTIVE.
	CUDAConvAlgoSearch string
	// CUDACopyInDefaultStream keeps copies on CUDA's default stream.
	CUDACopyInDefaultStream bool
	// CUDAArenaShrink gives a model's unused CUDA arena memory back after
	// every run.
	CUDAArenaShrink bool
	// TensorRTFP16 lets TensorRT use FP16 kernels.
	TensorRTFP16 bool
	// OpenVINODevice is AUTO, GPU, CPU or NPU.
	OpenVINODevice string
	// DeviceBudget caps, per GPU, the memory the loaded models' sessions
	// took at load, in bytes (0: the device's free memory is the limit).
	DeviceBudget int64
	// DeviceHeadroom is the memory a model load leaves free on its GPU
	// for runs, in bytes: 0 means a tenth of the device, -1 none.
	DeviceHeadroom int64
	// ReplicaAfter is how long a model's queue must stay backed up before
	// it gets a second session on another GPU (0: never).
	ReplicaAfter time.Duration

	// ModelOrganization and ModelRevision pick the Hugging Face repos
	// (<organization>/<model>) and their revision.
	ModelOrganization string
	ModelRevision     string
	// HFEndpoint is the Hugging Face hub base URL (a mirror may be used).
	HFEndpoint string
	// HFOffline forbids any download: models must be in the cache.
	HFOffline bool
	// HFToken authenticates to the hub (private or gated repositories).
	HFToken string
	// OCRBaseURL is where PP-OCR models are downloaded from.
	OCRBaseURL string

	// ORTLibrary is the path of the ONNX Runtime shared library
	// (MLSERVE_ORT_LIBRARY); empty means "find it" (inference.FindLibrary).
	ORTLibrary string
	// MaxQueue is how many requests may wait for a worker before new ones
	// are refused with 503.
	MaxQueue int
	// MaxLoadedModels caps the number of models kept in memory.
	MaxLoadedModels int
	// MaxUploadBytes caps the size of one /predict request body.
	MaxUploadBytes int64
	// MaxImagePixels caps the pixels of one decoded image; decoding may
	// also hold at most 6 bytes per pixel of it (imaging.DecodeOptions).
	MaxImagePixels int

	// DatabaseURL is the PostgreSQL (pgvector) URL for indexing and search.
	DatabaseURL string
	// RedisURL is the Redis URL of the shared job queue.
	RedisURL string
	// SearchModel is the CLIP model whose embeddings /search queries
	// (empty: ViT-B-32__openai, or Immich's configured model).
	SearchModel string
	// SearchImmich makes /search query Immich's smart_search table.
	SearchImmich bool
	// SearchSchema is the PostgreSQL schema of mlserve's own tables
	// (empty: the search package's default).
	SearchSchema string

	// HTTPReadTimeout bounds the wait for a request's headers, and each
	// pause while its body arrives.
	HTTPReadTimeout time.Duration
	// HTTPWriteTimeout bounds the writing of one response.
	HTTPWriteTimeout time.Duration
	// MaxConns caps the open HTTP connections (further ones wait in the
	// kernel's backlog); it is lowered at start to fit RLIMIT_NOFILE.
	MaxConns int
	// MaxInflightBytes caps the request body bytes that all requests in
	// progress hold together; a request that would pass it gets 503.
	MaxInflightBytes int64
	// ShutdownTimeout bounds the drain of requests in progress on SIGTERM.
	ShutdownTimeout time.Duration
	// APIKey, when set, is the Bearer token that the routes outside
	// Immich's protocol (/search…) require.
	APIKey string
	// SearchPublic opens those routes without a key on a non-loopback
	// listener.
	SearchPublic bool
	// MetricsPrivate puts /metrics behind the same access control.
	MetricsPrivate bool
	// AllowCIDRs, when not empty, are the only client networks that may
	// call /predict.
	AllowCIDRs []netip.Prefix

	table    []Entry
	redactor *redact.Redactor
	unknown  []Unknown
}

// Preload names the models of one task and type to load at start.
type Preload struct {
	Task, Type string
	Names      []string
}

// Entry is one variable of the catalogue with its resolved value.
type Entry struct {
	Name        string
	Value       string
	Default     string
	Description string
}

// Table returns every variable with its resolved value, for logging.
// Secrets are masked: tokens show as set or unset, passwords as xxxxx.
func (c *Config) Table() []Entry { return c.table }

// LogValue logs every variable with its resolved value, secrets masked
// (see Table).
func (c *Config) LogValue() slog.Value {
	attrs := []slog.Attr{}
	for _, e := range c.table {
		attrs = append(attrs, slog.String(e.Name, e.Value))
	}
	return slog.GroupValue(attrs...)
}

// String formats the configuration as the table does, secrets masked, so
// that printing a Config with fmt cannot leak them either.
func (c *Config) String() string {
	var b strings.Builder
	b.WriteString("config{")
	for i, e := range c.table {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(e.Name + "=" + strconv.Quote(e.Value))
	}
	b.WriteByte('}')
	return b.String()
}

// GoString is String: %#v must not leak secrets either.
func (c *Config) GoString() string { return c.String() }

// Redactor masks the configured secrets (HF_TOKEN, the passwords of
// MLSERVE_DATABASE_URL and MLSERVE_REDIS_URL, any variable read as a
// secret) and anything that looks like a password or token. Wrap the
// process's log handler with its Handler, and pass errors that may quote a
// URL or DSN through its Error before printing them.
func (c *Config) Redactor() *redact.Redactor {
	if c == nil {
		return nil
	}
	return c.redactor
}

// Addr is the listen address, with an IPv6 literal in brackets.
func (c *Config) Addr() string {
	host := c.Host
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(c.Port)
}

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid configuration")

// LookupFunc reads one variable; os.LookupEnv is the usual one.
type LookupFunc func(name string) (string, bool)

// FromEnv parses the process environment. Variables that look like
// mlserve's or Immich's but are not known are listed by [Config.Unknown].
func FromEnv() (*Config, error) { return LoadEnviron(os.Environ()) }

// LoadEnviron parses environ ("NAME=value" strings, as os.Environ gives
// them), and lists the unknown names among them (see [Config.Unknown]).
func LoadEnviron(environ []string) (*Config, error) {
	m := make(map[string]string, len(environ))
	names := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
		names = append(names, k)
	}
	c, err := load(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
	c.unknown = findUnknown(names, c.table)
	if err != nil {
		// A typo in a name often explains an error in a value.
		var hints []string
		for _, u := range c.unknown {
			if !u.Ignored {
				hints = append(hints, u.Message())
			}
		}
		if len(hints) > 0 {
			err = fmt.Errorf("%w\n(%s)", err, strings.Join(hints, "; "))
		}
		return nil, err
	}
	return c, nil
}

// httpURL reads an http(s) URL with a host.
func (p *parser) httpURL(name, def, desc string) string {
	v, set := p.raw(name, def, desc)
	if !set {
		return def
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.fail(name, v, "not an http(s) URL")
		return def
	}
	return v
}

// unquoteURL is a parse error's message without the URL it may quote
// (the value is shown, masked, by fail).
func unquoteURL(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

type parser struct {
	lookup LookupFunc
	errs   []error
	table  []Entry
	// secrets are the raw values read by secret.
	secrets []string
}

func (p *parser) raw(name, def, desc string) (string, bool) {
	v, ok := p.lookup(name)
	v = strings.TrimSpace(v)
	if !ok || v == "" {
		p.table = append(p.table, Entry{name, def, def, desc})
		return def, false
	}
	p.table = append(p.table, Entry{name, v, def, desc})
	return v, true
}

func (p *parser) fail(name, value, why string) {
	p.errs = append(p.errs, fmt.Errorf("%w: %s=%q: %s", ErrInvalid, name, redact.String(value), why))
}

func (p *parser) str(name, def, desc string) string {
	v, _ := p.raw(name, def, desc)
	return v
}

// secret reads a value that must not appear in logs.
func (p *parser) secret(name, desc string) string {
	v, ok := p.lookup(name)
	v = strings.TrimSpace(v)
	shown := "unset"
	if ok && v != "" {
		shown = "set"
	}
	p.table = append(p.table, Entry{name, shown, "unset", desc})
	p.secrets = append(p.secrets, v)
	return v
}

// redactor masks the secrets read by secret and the passwords of every
// value (URLs and DSNs with credentials, whatever the variable).
func (p *parser) redactor() *redact.Redactor {
	known := append([]string(nil), p.secrets...)
	for _, e := range p.table {
		known = append(known, redact.Passwords(e.Value)...)
	}
	return redact.New(known...)
}

func (p *parser) integer(name string, def int, min int, desc string) int {
	v, set := p.raw(name, strconv.Itoa(def), desc)
	if !set {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.fail(name, v, "not an integer")
		return def
	}
	if n < min {
		p.fail(name, v, fmt.Sprintf("must be at least %d", min))
		return def
	}
	return n
}

func (p *parser) boolean(name string, def bool, desc string) bool {
	v, set := p.raw(name, strconv.FormatBool(def), desc)
	if !set {
		return def
	}
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true
	case "0", "false", "no", "off":
		return false
	}
	p.fail(name, v, "not a boolean")
	return def
}

// maxSeconds bounds every duration variable (about 100 years), so that
// none overflows time.Duration.
const maxSeconds = 3e9

// seconds parses a number of seconds (fractions allowed), as Immich does;
// negative values are errors.
func (p *parser) seconds(name string, def float64, desc string) time.Duration {
	v, set := p.raw(name, strconv.FormatFloat(def, 'f', -1, 64), desc)
	if !set {
		return time.Duration(def * float64(time.Second))
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		p.fail(name, v, "not a number of seconds")
		return time.Duration(def * float64(time.Second))
	}
	if f < 0 || f > maxSeconds {
		// Immich documents "<= 0 disables", but passes a negative TTL on
		// as is (a bug); a negative number of seconds is a mistake.
		p.fail(name, v, fmt.Sprintf("want 0..%d seconds", int64(maxSeconds)))
		return time.Duration(def * float64(time.Second))
	}
	return time.Duration(f * float64(time.Second))
}

func (p *parser) list(name, def, desc string) []string {
	v, _ := p.raw(name, def, desc)
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Load parses the variables that lookup returns.
func Load(lookup LookupFunc) (*Config, error) {
	c, err := load(lookup)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// load parses; the Config it returns is complete (its table and
// redactor set) even with an error.
func load(lookup LookupFunc) (*Config, error) {
	p := &parser{lookup: lookup}
	c := &Config{}

	c.Host = p.str("IMMICH_HOST", "0.0.0.0", "HTTP listen host")
	c.Port = p.integer("IMMICH_PORT", 3003, 1, "HTTP listen port")
	if c.Port > 65535 {
		p.fail("IMMICH_PORT", strconv.Itoa(c.Port), "must be at most 65535")
	}
	lvl, lvlSet := p.raw("IMMICH_LOG_LEVEL", "info", "verbose|debug|log|info|warn|error (one-shot commands: warn unless set or -v)")
	c.LogLevelSet = lvlSet
	switch strings.ToLower(lvl) {
	case "verbose", "debug":
		c.LogLevel = slog.LevelDebug
	case "log", "info":
		c.LogLevel = slog.LevelInfo
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error", "critical", "fatal":
		c.LogLevel = slog.LevelError
	default:
		p.fail("IMMICH_LOG_LEVEL", lvl, "want verbose, debug, log, info, warn or error")
	}
	c.LogFormat = p.choice("MLSERVE_LOG_FORMAT", "text", "log format: text (key=value lines) or json (one object per line)", "text", "json")

	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		home = "/"
	}
	c.CacheFolder = p.str("MACHINE_LEARNING_CACHE_FOLDER", filepath.Join(home, ".cache", "immich_ml"), "model cache root (Immich layout)")
	c.ModelTTL = p.seconds("MACHINE_LEARNING_MODEL_TTL", 300, "seconds a model may stay unused before it is unloaded; 0 keeps models loaded")
	c.ModelTTLPoll = p.seconds("MACHINE_LEARNING_MODEL_TTL_POLL_S", 10, "how often idle models are looked for")
	if c.ModelTTLPoll == 0 {
		c.ModelTTLPoll = 10 * time.Second
	}
	c.RequestThreads = p.integer("MACHINE_LEARNING_REQUEST_THREADS", runtime.NumCPU(), 0, "requests processed at once")
	if c.RequestThreads == 0 {
		c.RequestThreads = 1
	}
	c.InterOpThreads = p.integer("MACHINE_LEARNING_MODEL_INTER_OP_THREADS", 0, 0, "ONNX Runtime inter-op threads (0: 1 on CPU)")
	c.IntraOpThreads = p.integer("MACHINE_LEARNING_MODEL_INTRA_OP_THREADS", 0, 0, "ONNX Runtime intra-op threads per run (0: every core up to 8; runs at once = cores ÷ this)")
	c.Arena = p.boolean("MACHINE_LEARNING_MODEL_ARENA", true, "ONNX Runtime CPU memory arena")
	c.InferenceNice = p.integer("MLSERVE_INFERENCE_NICE", 10, 0, "nice value (0-19) of the threads that run models: the HTTP side (health checks, 503s) and decoding keep their priority on busy cores (0: no change)")
	if c.InferenceNice > 19 {
		p.fail("MLSERVE_INFERENCE_NICE", strconv.Itoa(c.InferenceNice), "must be 0 to 19")
	}
	c.WorkerTimeout = p.seconds("MACHINE_LEARNING_WORKER_TIMEOUT", 300, "upper bound on one request's work, in seconds")
	c.KeepAlive = p.seconds("MACHINE_LEARNING_HTTP_KEEPALIVE_TIMEOUT_S", 2, "HTTP keep-alive idle timeout, in seconds")
	c.Workers = p.integer("MACHINE_LEARNING_WORKERS", 1, 1, "accepted for compatibility: one process serves all requests")

	for _, pl := range []struct{ task, typ, env string }{
		{"clip", "textual", "MACHINE_LEARNING_PRELOAD__CLIP__TEXTUAL"},
		{"clip", "visual", "MACHINE_LEARNING_PRELOAD__CLIP__VISUAL"},
		{"facial-recognition", "detection", "MACHINE_LEARNING_PRELOAD__FACIAL_RECOGNITION__DETECTION"},
		{"facial-recognition", "recognition", "MACHINE_LEARNING_PRELOAD__FACIAL_RECOGNITION__RECOGNITION"},
		{"ocr", "detection", "MACHINE_LEARNING_PRELOAD__OCR__DETECTION"},
		{"ocr", "recognition", "MACHINE_LEARNING_PRELOAD__OCR__RECOGNITION"},
	} {
		if names := p.list(pl.env, "", "comma-separated models to load at start"); len(names) > 0 {
			c.Preload = append(c.Preload, Preload{Task: pl.task, Type: pl.typ, Names: names})
		}
	}

	c.MaxBatchFace = p.integer("MACHINE_LEARNING_MAX_BATCH_SIZE__FACIAL_RECOGNITION", 0, 0, "faces per recognition run (0: 8, which bounds memory at no cost in speed)")
	c.MaxBatchOCR = p.integer("MACHINE_LEARNING_MAX_BATCH_SIZE__OCR", 6, 1, "text crops per OCR recognition batch")
	c.BatchMax = p.integer("MLSERVE_BATCH_MAX", 0, 0, "images or texts per cross-request batch (0: 8 on CPU, 32 on GPUs)")
	c.BatchWait = time.Duration(p.integer("MLSERVE_BATCH_WAIT_MS", 0, 0, "milliseconds a batch may wait for more requests (0: runs at once with whatever queued)")) * time.Millisecond
	c.BatchGather = time.Duration(p.integer("MLSERVE_BATCH_GATHER_MS", 100, 0, "milliseconds a batch about to run on the CPU may wait for the inputs other requests are decoding and resizing for the same model, and (a twentieth of its last run) for the requests it just answered to send again (0: never)")) * time.Millisecond
	c.SplitBatch = p.boolean("MLSERVE_SPLIT_BATCH", true, "a CPU batch of at least one CLIP image per intra-op thread runs as one single-threaded run per thread at once when the parts come out about even (every even batch on two cores), on a twin session that shares the weights (smaller batches and a lone image keep every thread); false runs each batch as one run on every thread")
	c.Preprocess = p.choice("MLSERVE_PREPROCESS", "exact", "exact: model inputs bit for bit Immich's; fast: JPEGs decoded smaller for CLIP with libjpeg's DCT scaling (several times faster, inputs within about 1/255 of exact)", "exact", "fast")

	c.Providers = p.list("MLSERVE_PROVIDERS", "CUDA,OpenVINO,CPU", "execution providers in order of preference: the first usable one runs every model (the CPU only when listed, or with MLSERVE_ALLOW_CPU_FALLBACK)")
	for i, name := range c.Providers {
		canon, ok := CanonicalProvider(name)
		if !ok {
			p.fail("MLSERVE_PROVIDERS", name, "unknown provider; want CUDA, TensorRT, OpenVINO or CPU")
			continue
		}
		c.Providers[i] = canon
	}
	if len(c.Providers) == 0 {
		p.fail("MLSERVE_PROVIDERS", "", "no provider listed")
	}
	c.AllowCPUFallback = p.boolean("MLSERVE_ALLOW_CPU_FALLBACK", false, "a model whose GPU fails (out of memory, provider error) runs on the CPU, and the service starts on the CPU when no listed provider is usable; off, those are errors")
	p.deviceIDs(c)
	c.OpenVINOPrecision = strings.ToUpper(p.str("MACHINE_LEARNING_OPENVINO_PRECISION", "FP32", "FP32 or FP16 (OpenVINO GPUs)"))
	if c.OpenVINOPrecision != "FP32" && c.OpenVINOPrecision != "FP16" {
		p.fail("MACHINE_LEARNING_OPENVINO_PRECISION", c.OpenVINOPrecision, "want FP32 or FP16")
	}
	c.OpenVINODevice = p.choice("MLSERVE_OPENVINO_DEVICE", "AUTO", "OpenVINO device: AUTO (a GPU when OpenVINO sees one, else the CPU), GPU, CPU or NPU", "AUTO", "GPU", "CPU", "NPU")
	c.CUDAMemLimit = p.size("MLSERVE_CUDA_MEM_LIMIT", "cap of each model's CUDA memory arena (gpu_mem_limit), bytes or with a unit (8GiB, 512MB); 0: no cap")
	c.CUDAArenaExtendStrategy = p.choice("MLSERVE_CUDA_ARENA_EXTEND_STRATEGY", "kSameAsRequested", "how the CUDA arena grows: kSameAsRequested (by what a run needs) or kNextPowerOfTwo (ONNX Runtime's default, up to twice the memory)", "kSameAsRequested", "kNextPowerOfTwo")
	c.CUDAConvAlgoSearch = p.choice("MLSERVE_CUDA_CONV_ALGO_SEARCH", "HEURISTIC", "cuDNN convolution algorithm search: HEURISTIC, DEFAULT or EXHAUSTIVE (slow and memory-hungry for every new input shape)", "HEURISTIC", "DEFAULT", "EXHAUSTIVE")
	c.CUDACopyInDefaultStream = p.boolean("MLSERVE_CUDA_COPY_IN_DEFAULT_STREAM", true, "CUDA copies on the default stream (do_copy_in_default_stream); false uses a separate stream, which ONNX Runtime says may race")
	c.CUDAArenaShrink = p.boolean("MLSERVE_CUDA_ARENA_SHRINK", false, "give a model's unused CUDA arena memory back after every run (costs allocations on every run; off, it comes back when the model is unloaded)")
	c.TensorRTFP16 = p.boolean("MLSERVE_TENSORRT_FP16", false, "TensorRT may use FP16 kernels (faster, slightly different embeddings)")
	c.DeviceBudget = p.size("MLSERVE_DEVICE_MEMORY_BUDGET", "cap, per GPU, of the memory the loaded models took at load, bytes or with a unit (8GiB); idle models are unloaded to stay within it; 0: the device's free memory is the only limit")
	if v, set := p.raw("MLSERVE_DEVICE_MEMORY_HEADROOM", "10%", "GPU memory a model load leaves free for runs (activations, the arena's growth): bytes or with a unit (2GiB), 0 for none; default a tenth of each device"); set && v != "10%" {
		switch n, err := ParseSize(v); {
		case err != nil:
			p.fail("MLSERVE_DEVICE_MEMORY_HEADROOM", v, err.Error()+", or 10%")
		case n == 0:
			c.DeviceHeadroom = -1
		default:
			c.DeviceHeadroom = n
		}
	}
	c.ReplicaAfter = time.Duration(p.integer("MLSERVE_REPLICA_AFTER_MS", 2000, 0, "milliseconds a model's queue must stay backed up before it gets a second session on another GPU with room for it (several MACHINE_LEARNING_DEVICE_IDS); 0: never")) * time.Millisecond

	c.ModelOrganization = p.str("MACHINE_LEARNING_MODEL_ORGANIZATION", "immich-app", "Hugging Face organization of the CLIP and face models")
	c.ModelRevision = p.str("MACHINE_LEARNING_MODEL_REVISION", "main", "Hugging Face revision of the models")
	c.HFEndpoint = strings.TrimRight(p.httpURL("HF_ENDPOINT", "https://huggingface.co", "Hugging Face hub (or mirror) URL"), "/")
	c.HFOffline = p.boolean("HF_HUB_OFFLINE", false, "never download; use the cache only")
	c.HFToken = p.secret("HF_TOKEN", "Hugging Face access token (logged as set/unset)")
	c.OCRBaseURL = strings.TrimRight(p.httpURL("MLSERVE_OCR_BASE_URL", "https://www.modelscope.cn/models/RapidAI/RapidOCR/resolve/v3.8.0", "where PP-OCR models are downloaded from (RapidOCR's ModelScope repository or a mirror)"), "/")

	c.ORTLibrary = p.str("MLSERVE_ORT_LIBRARY", "", "path of the ONNX Runtime shared library (empty: next to the binary, in .deps/onnxruntime, then the system library path)")
	c.MaxQueue = p.integer("MLSERVE_MAX_QUEUE", 64, 0, "requests that may wait for a worker; more get 503")
	c.MaxLoadedModels = p.integer("MLSERVE_MAX_LOADED_MODELS", 8, 1, "models kept in memory at most")
	c.MaxUploadBytes = int64(p.integer("MLSERVE_MAX_UPLOAD_BYTES", 100<<20, 1024, "largest /predict body, in bytes"))
	c.MaxImagePixels = p.integer("MLSERVE_MAX_IMAGE_PIXELS", 32_000_000, 1, "largest image decoded, in pixels (imaging.DefaultMaxPixels); decoding may hold 6 bytes per pixel of it")

	c.DatabaseURL = p.str("MLSERVE_DATABASE_URL", "", "PostgreSQL with pgvector, for indexing and search")
	if c.DatabaseURL != "" {
		if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
			p.fail("MLSERVE_DATABASE_URL", c.DatabaseURL, "not a PostgreSQL URL or connection string: "+unquoteURL(err))
		}
	}
	c.RedisURL = p.str("MLSERVE_REDIS_URL", "", "Redis, for the shared job queue (empty: in-process)")
	if c.RedisURL != "" {
		if _, err := redis.ParseURL(c.RedisURL); err != nil {
			p.fail("MLSERVE_REDIS_URL", c.RedisURL, "not a Redis URL (want redis:// or rediss://, a host, a port and a database number): "+unquoteURL(err))
		}
	}
	c.SearchModel = p.str("MLSERVE_SEARCH_MODEL", "", "CLIP model of /search (empty: ViT-B-32__openai, or Immich's configured model)")
	c.SearchSchema = p.str("MLSERVE_SEARCH_SCHEMA", "", "PostgreSQL schema of mlserve's tables (empty: mlserve)")
	c.SearchImmich = p.boolean("MLSERVE_SEARCH_IMMICH", false, "/search queries Immich's smart_search instead of mlserve's tables")

	c.HTTPReadTimeout = p.seconds("MLSERVE_HTTP_READ_TIMEOUT_S", 10, "seconds to receive a request's headers, and the longest pause while its body arrives")
	if c.HTTPReadTimeout <= 0 {
		p.fail("MLSERVE_HTTP_READ_TIMEOUT_S", "0", "must be more than 0")
		c.HTTPReadTimeout = 10 * time.Second
	}
	c.HTTPWriteTimeout = p.seconds("MLSERVE_HTTP_WRITE_TIMEOUT_S", 30, "seconds to write one response")
	if c.HTTPWriteTimeout <= 0 {
		p.fail("MLSERVE_HTTP_WRITE_TIMEOUT_S", "0", "must be more than 0")
		c.HTTPWriteTimeout = 30 * time.Second
	}
	c.MaxConns = p.integer("MLSERVE_HTTP_MAX_CONNS", 4096, 16, "open HTTP connections at most (lowered to fit RLIMIT_NOFILE); more wait to be accepted")
	// Immich sends /predict previews of a few hundred KiB: 128 MiB holds
	// every request the workers and the queue take at once, many times
	// over, and one upload of the largest size allowed beside a few
	// previews (api.DefaultInflightBytes).
	defInflight := max(int64(128<<20), c.MaxUploadBytes+8<<20)
	c.MaxInflightBytes = int64(p.integer("MLSERVE_MAX_INFLIGHT_BYTES", int(defInflight), 1024, "request body bytes held by all requests in progress together; more get 503 (default: 128 MiB, or MLSERVE_MAX_UPLOAD_BYTES + 8 MiB if larger)"))
	if c.MaxInflightBytes < c.MaxUploadBytes {
		p.fail("MLSERVE_MAX_INFLIGHT_BYTES", strconv.FormatInt(c.MaxInflightBytes, 10), "must be at least MLSERVE_MAX_UPLOAD_BYTES")
	}
	// The default drain fits Docker's 10 s stop grace period, and never
	// outlasts the worker timeout that bounds each request anyway.
	defShutdown := min(c.WorkerTimeout, 8*time.Second)
	if c.WorkerTimeout <= 0 {
		defShutdown = 8 * time.Second
	}
	c.ShutdownTimeout = p.seconds("MLSERVE_SHUTDOWN_TIMEOUT", defShutdown.Seconds(), "seconds that requests in progress may take to finish after SIGTERM (default: the worker timeout, at most 8)")
	c.APIKey = p.secret("MLSERVE_API_KEY", "Bearer token required by /search (and /metrics with MLSERVE_METRICS_PRIVATE); logged as set/unset")
	c.SearchPublic = p.boolean("MLSERVE_SEARCH_PUBLIC", false, "serve /search without MLSERVE_API_KEY on a non-loopback address")
	c.MetricsPrivate = p.boolean("MLSERVE_METRICS_PRIVATE", false, "put /metrics behind the same access control as /search")
	for _, s := range p.list("MLSERVE_ALLOW_CIDRS", "", "comma-separated client networks allowed to call /predict (empty: any)") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				p.fail("MLSERVE_ALLOW_CIDRS", s, "not a CIDR prefix or an IP address")
				continue
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		c.AllowCIDRs = append(c.AllowCIDRs, pfx.Masked())
	}

	sort.SliceStable(p.table, func(i, j int) bool { return p.table[i].Name < p.table[j].Name })
	c.redactor = p.redactor()
	for i := range p.table {
		p.table[i].Value = c.redactor.String(p.table[i].Value)
		p.table[i].Default = c.redactor.String(p.table[i].Default)
	}
	c.table = p.table
	if len(p.errs) > 0 {
		return c, c.redactor.Error(errors.Join(p.errs...))
	}
	return c, nil
}

// set tells whether a variable has a non-blank value.
func (p *parser) set(name string) bool {
	v, ok := p.lookup(name)
	return ok && strings.TrimSpace(v) != ""
}

// choice reads one of a fixed set of values, compared without case, and
// returns its canonical spelling.
func (p *parser) choice(name, def, desc string, choices ...string) string {
	v, set := p.raw(name, def, desc)
	if !set {
		return def
	}
	for _, c := range choices {
		if strings.EqualFold(v, c) {
			return c
		}
	}
	p.fail(name, v, "unknown option; want "+strings.Join(choices, ", "))
	return def
}

// size reads a number of bytes, with an optional unit: B, KB/MB/GB/TB
// (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024); K, M, G and T alone
// are binary. Default 0.
func (p *parser) size(name, desc string) int64 {
	v, set := p.raw(name, "0", desc)
	if !set {
		return 0
	}
	n, err := ParseSize(v)
	if err != nil {
		p.fail(name, v, err.Error())
		return 0
	}
	return n
}

// ParseSize parses a number of bytes with an optional unit (see the
// MLSERVE_CUDA_MEM_LIMIT row of the README).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	if num == "" {
		return 0, errors.New("not a size (a number of bytes, or with a unit such as 8GiB or 512MB)")
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, errors.New("not a size (a number of bytes, or with a unit such as 8GiB or 512MB)")
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
		"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q; want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB", unit)
	}
	f *= mult
	if f >= 1<<62 {
		return 0, errors.New("too large")
	}
	return int64(f), nil
}

// deviceIDs reads MACHINE_LEARNING_DEVICE_IDS and MACHINE_LEARNING_DEVICE_ID
// (which Immich sets per worker): the list, with DEVICE_ID first when both
// are set, or DEVICE_ID alone.
func (p *parser) deviceIDs(c *Config) {
	const listVar, oneVar = "MACHINE_LEARNING_DEVICE_IDS", "MACHINE_LEARNING_DEVICE_ID"
	raw := p.list(listVar, "0", "GPU ids models are placed on (CUDA ordinals, OpenVINO GPU.<id>), comma-separated")
	seen := map[int]bool{}
	for _, s := range raw {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			p.fail(listVar, s, "not a device id (a number ≥ 0)")
			continue
		}
		if seen[n] {
			p.fail(listVar, s, "listed twice")
			continue
		}
		seen[n] = true
		c.DeviceIDs = append(c.DeviceIDs, n)
	}
	if len(c.DeviceIDs) == 0 {
		if len(raw) == 0 {
			p.fail(listVar, "", "no device id listed")
		}
		c.DeviceIDs = []int{0}
	}
	c.DeviceID = p.integer(oneVar, c.DeviceIDs[0], 0, "GPU id for CUDA and OpenVINO when "+listVar+" is not set")
	if !p.set(oneVar) {
		return
	}
	if !p.set(listVar) {
		c.DeviceIDs = []int{c.DeviceID}
		return
	}
	if !seen[c.DeviceID] {
		p.fail(oneVar, strconv.Itoa(c.DeviceID), "not among "+listVar)
		return
	}
	ids := []int{c.DeviceID}
	for _, id := range c.DeviceIDs {
		if id != c.DeviceID {
			ids = append(ids, id)
		}
	}
	c.DeviceIDs = ids
}

// CanonicalProvider maps the spellings users write (cuda, CUDAExecutionProvider,
// openvino, tensorrt) to CPU, CUDA, OpenVINO or TensorRT.
func CanonicalProvider(name string) (string, bool) {
	n := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "ExecutionProvider"))
	n = strings.TrimSuffix(n, "executionprovider")
	switch n {
	case "cpu":
		return "CPU", true
	case "cuda":
		return "CUDA", true
	case "openvino":
		return "OpenVINO", true
	case "tensorrt":
		return "TensorRT", true
	}
	return "", false
}
