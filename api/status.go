package api

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// GET /status (private) is the web page's status panel in one JSON
// document: readiness, workers and queue, the loaded models with their
// execution provider (and device, where the model tells), recent
// throughput (requests and inferences per second over the last minute),
// the library (database, counts, text-search extensions) and the
// thumbnail cache.

// rateWindow is the span of "recent" throughput.
const rateWindow = 60

// rates counts events per key and second over the last rateWindow
// seconds. Keys are few (two routes, the loaded models).
type rates struct {
	mu     sync.Mutex
	now    func() time.Time
	start  time.Time
	counts map[string]*ring
}

type ring struct {
	n     [rateWindow]int64
	stamp [rateWindow]int64 // the second bucket i counts
}

func newRates() *rates {
	return &rates{now: time.Now, start: time.Now(), counts: map[string]*ring{}}
}

func (r *rates) add(key string) {
	sec := r.now().Unix()
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.counts[key]
	if g == nil {
		g = &ring{}
		r.counts[key] = g
	}
	i := sec % rateWindow
	if g.stamp[i] != sec {
		g.stamp[i], g.n[i] = sec, 0
	}
	g.n[i]++
}

// perSecond returns every key's events per second over the last
// rateWindow seconds (or since start, if that is shorter), and the span.
func (r *rates) perSecond() (map[string]float64, float64) {
	now := r.now()
	sec := now.Unix()
	span := min(float64(rateWindow), max(now.Sub(r.start).Seconds(), 1))
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]float64, len(r.counts))
	for k, g := range r.counts {
		var sum int64
		for i := range g.n {
			if sec-g.stamp[i] < rateWindow {
				sum += g.n[i]
			}
		}
		out[k] = float64(sum) / span
	}
	return out, span
}

type statusModel struct {
	Task        string  `json:"task"`
	Type        string  `json:"type"`
	Model       string  `json:"model"`
	Provider    string  `json:"provider,omitempty"`
	Device      string  `json:"device,omitempty"`
	InUse       int     `json:"inUse"`
	Preloaded   bool    `json:"preloaded"`
	IdleSeconds int     `json:"idleSeconds"`
	PerSecond   float64 `json:"inferencesPerSecond"`
}

type statusLibrary struct {
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	*LibraryInfo
}

type statusJSON struct {
	Status   string        `json:"status"`
	Reason   string        `json:"reason,omitempty"`
	Workers  int           `json:"workers"`
	Busy     int           `json:"busy"`
	Queued   int           `json:"queued"`
	MaxQueue int           `json:"maxQueue"`
	Models   []statusModel `json:"models"`
	// Throughput is per second over WindowSeconds: successful /predict
	// and /search requests.
	Throughput struct {
		WindowSeconds float64 `json:"windowSeconds"`
		Predict       float64 `json:"predict"`
		Search        float64 `json:"search"`
	} `json:"throughput"`
	Library    *statusLibrary  `json:"library,omitempty"`
	Thumbnails thumbCacheStats `json:"thumbnails"`
}

// libraryInfoTimeout bounds the library's part of the status.
const libraryInfoTimeout = 3 * time.Second

func (s *Server) status(c *fiber.Ctx) error {
	var st statusJSON
	st.Status = "ready"
	st.Models = []statusModel{}
	perSec, span := s.metrics.recent.perSecond()
	st.Throughput.WindowSeconds = span
	st.Throughput.Predict = perSec["route:/predict"]
	st.Throughput.Search = perSec["route:/search"]
	switch {
	case s.draining.Load():
		st.Status, st.Reason = "not ready", "shutting down"
	case s.opts.Health != nil:
		if err := s.opts.Health.Ready(); err != nil {
			st.Status, st.Reason = "not ready", err.Error()
		}
	}
	if h := s.opts.Health; h != nil {
		ps := h.Stats()
		st.Workers, st.Busy, st.Queued, st.MaxQueue = ps.Workers, ps.Busy, ps.Waiting, ps.MaxQueue
		for _, l := range h.Loaded() {
			m := statusModel{Task: l.Key.Task, Type: l.Key.Type, Model: l.Key.Name, InUse: l.InUse, Preloaded: l.Pinned,
				IdleSeconds: int(l.IdleFor.Seconds()), PerSecond: perSec[modelRateKey(l.Key.Task, l.Key.Type, l.Key.Name)]}
			m.Provider, m.Device = placement(l)
			st.Models = append(st.Models, m)
		}
		sort.Slice(st.Models, func(i, j int) bool {
			a, b := st.Models[i], st.Models[j]
			return a.Task+"\x00"+a.Type+"\x00"+a.Model < b.Task+"\x00"+b.Type+"\x00"+b.Model
		})
	}
	if s.opts.Library != nil {
		ctx, cancel := context.WithTimeout(s.base, libraryInfoTimeout)
		info, err := s.opts.Library.LibraryInfo(ctx)
		cancel()
		if err != nil {
			_, msg := statusOf(err)
			st.Library = &statusLibrary{Reason: msg}
		} else {
			st.Library = &statusLibrary{Available: true, LibraryInfo: &info}
		}
	}
	st.Thumbnails = s.thumbs.cache.stats()
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(st)
}

// modelRateKey is a model's key in the recent rates.
func modelRateKey(task, typ, name string) string { return "model:" + task + "/" + typ + "/" + name }
