package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mlserve/mlserve/api"
	"github.com/mlserve/mlserve/config"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
	"github.com/mlserve/mlserve/search"
)

// Reconnection to the search database: a backoff from 1 s doubling to
// 30 s, each attempt bounded.
const (
	searchRetryMin     = time.Second
	searchRetryMax     = 30 * time.Second
	searchConnectLimit = 15 * time.Second
	// searchRootTTL is how long the library's root, which /search strips
	// from the paths it shows callers without a key, is cached.
	searchRootTTL = time.Minute
)

// searchBackend answers /search once its database is reachable. The
// Immich API does not need the database: serve starts without waiting
// for it, connects in the background with a backoff, and until then
// /search answers 503 with the reason. Once connected, pgx's pool
// reconnects by itself and a query that meets an outage answers 503 too.
type searchBackend struct {
	cfg    *config.Config
	svc    *pool.Service
	logger *slog.Logger

	mu  sync.Mutex
	s   *searcher
	err error // why s is nil
}

var _ api.Searcher = (*searchBackend)(nil)

// checkDatabaseURL parses MLSERVE_DATABASE_URL, if set, without
// connecting. pgx's parse errors do not repeat the password.
func checkDatabaseURL(cfg *config.Config) error {
	if cfg.DatabaseURL == "" {
		return nil
	}
	if _, err := pgxpool.ParseConfig(cfg.DatabaseURL); err != nil {
		return fmt.Errorf("MLSERVE_DATABASE_URL: %w", err)
	}
	return nil
}

// newSearchBackend checks MLSERVE_DATABASE_URL and returns the backend
// (not yet connected: see run). Without a URL it returns nil: /search
// answers 503. A URL that does not parse is an error.
func newSearchBackend(cfg *config.Config, svc *pool.Service, logger *slog.Logger) (*searchBackend, error) {
	if cfg.DatabaseURL == "" {
		return nil, nil
	}
	if err := checkDatabaseURL(cfg); err != nil {
		return nil, err
	}
	return &searchBackend{cfg: cfg, svc: svc, logger: logger, err: errors.New("connecting to the database")}, nil
}

// run connects, retrying until it succeeds or ctx ends.
func (b *searchBackend) run(ctx context.Context) error {
	delay := searchRetryMin
	for {
		actx, cancel := context.WithTimeout(ctx, searchConnectLimit)
		s, err := openSearcher(actx, b.cfg, b.svc, b.logger)
		cancel()
		if err == nil {
			b.mu.Lock()
			b.s, b.err = s, nil
			b.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		b.mu.Lock()
		b.err = err
		b.mu.Unlock()
		b.logger.Warn("smart search unavailable; retrying", "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		delay = min(2*delay, searchRetryMax)
	}
}

func (b *searchBackend) get() (*searcher, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s == nil {
		return nil, fmt.Errorf("%w: %w", api.ErrSearchUnavailable, b.err)
	}
	return b.s, nil
}

// Close closes the database connections, if any.
func (b *searchBackend) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.s != nil {
		b.s.Close()
		b.s = nil
	}
	b.err = errors.New("closed")
}

// SearchText implements api.Searcher.
func (b *searchBackend) SearchText(ctx context.Context, text string, q api.SearchQuery) ([]api.SearchHit, error) {
	s, err := b.get()
	if err != nil {
		return nil, err
	}
	return s.SearchText(ctx, text, q)
}

// SearchImage implements api.Searcher.
func (b *searchBackend) SearchImage(ctx context.Context, data []byte, q api.SearchQuery) ([]api.SearchHit, error) {
	s, err := b.get()
	if err != nil {
		return nil, err
	}
	return s.SearchImage(ctx, data, q)
}

// searcher answers /search: CLIP embeddings from the service's shared
// cache and workers, nearest neighbours from pgvector (our schema or
// Immich's smart_search).
type searcher struct {
	svc   *pool.Service
	ix    search.Index
	model string
	// store or immich is ix, by its kind.
	store  *search.Store
	immich *search.Immich

	rootMu sync.Mutex
	root   string
	rootAt time.Time
}

// openSearcher connects to MLSERVE_DATABASE_URL for /search.
func openSearcher(ctx context.Context, cfg *config.Config, svc *pool.Service, logger *slog.Logger) (*searcher, error) {
	schema := cfg.SearchSchema
	if schema == "" {
		schema = search.DefaultSchema
	}
	ix, model, err := openSearchIndex(ctx, cfg, dbFlags{
		model:        cfg.SearchModel,
		immich:       cfg.SearchImmich,
		schema:       schema,
		immichSchema: "public",
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("search database: %w", err)
	}
	s := &searcher{svc: svc, ix: ix, model: model}
	mode := "mlserve schema"
	switch v := ix.(type) {
	case *search.Store:
		s.store = v
	case *search.Immich:
		s.immich, mode = v, "Immich smart_search"
	}
	logger.Info("smart search enabled", "model", model, "tables", mode)
	return s, nil
}

// openSearchIndex opens the index the flags pick and settles its CLIP
// model (the flag's, or the index's default), checked against the index.
func openSearchIndex(ctx context.Context, cfg *config.Config, f dbFlags, logger *slog.Logger) (search.Index, string, error) {
	open, _, err := openIndex(f, cfg, false, logger)
	if err != nil {
		return nil, "", err
	}
	ix, err := open(ctx)
	if err != nil {
		return nil, "", err
	}
	model := f.model
	if model == "" {
		if model, err = ix.DefaultModel(ctx); err != nil {
			ix.Close()
			return nil, "", err
		}
	}
	dim, ok := models.CLIPDim(model)
	if !ok {
		ix.Close()
		return nil, "", fmt.Errorf("unknown CLIP model %q", model)
	}
	if _, err := ix.EnsureModel(ctx, model, dim); err != nil {
		ix.Close()
		return nil, "", err
	}
	return ix, model, nil
}

func (s *searcher) Close() { s.ix.Close() }

// checkOwner refuses an Immich-mode search that does not name an owner,
// before any work.
func (s *searcher) checkOwner(q api.SearchQuery) error {
	if s.immich != nil && q.OwnerID == "" {
		return api.ErrOwnerRequired
	}
	return nil
}

// SearchText implements api.Searcher.
func (s *searcher) SearchText(ctx context.Context, text string, q api.SearchQuery) ([]api.SearchHit, error) {
	if err := s.checkOwner(q); err != nil {
		return nil, err
	}
	emb, err := s.svc.EmbedText(ctx, s.model, text, "")
	if err != nil {
		return nil, err
	}
	return s.nearest(ctx, emb, q)
}

// SearchImage implements api.Searcher.
func (s *searcher) SearchImage(ctx context.Context, data []byte, q api.SearchQuery) ([]api.SearchHit, error) {
	if err := s.checkOwner(q); err != nil {
		return nil, err
	}
	emb, err := s.svc.EmbedImageData(ctx, s.model, data)
	if err != nil {
		return nil, err
	}
	return s.nearest(ctx, emb, q)
}

// nearest queries the index. In Immich mode the results are the owner's
// assets, and callers without the API key see asset ids only; in our
// schema (which has no owners) they also see paths relative to the
// library's root.
func (s *searcher) nearest(ctx context.Context, emb []float32, q api.SearchQuery) ([]api.SearchHit, error) {
	var hits []search.Hit
	var err error
	root := ""
	if s.immich != nil {
		hits, err = s.immich.SearchOwner(ctx, emb, q.OwnerID, q.Limit)
	} else {
		hits, err = s.ix.SearchCLIP(ctx, s.model, emb, q.Limit)
		if err == nil && len(hits) > 0 {
			root, err = s.libraryRoot(ctx)
		}
	}
	if err != nil {
		if search.IsTransient(err) {
			return nil, fmt.Errorf("%w: %w", api.ErrSearchUnavailable, err)
		}
		return nil, err
	}
	out := make([]api.SearchHit, len(hits))
	for i, h := range hits {
		out[i] = api.SearchHit{AssetID: h.AssetID, Path: h.Path, Distance: h.Distance}
		if root != "" {
			out[i].RelPath = strings.TrimPrefix(h.Path, root)
		}
	}
	return out, nil
}

// libraryRoot is the deepest folder that holds every indexed file (with a
// trailing slash), cached for searchRootTTL. It is the common folder of
// the first and the last path in byte order, which is every path's.
func (s *searcher) libraryRoot(ctx context.Context) (string, error) {
	s.rootMu.Lock()
	defer s.rootMu.Unlock()
	if !s.rootAt.IsZero() && time.Since(s.rootAt) < searchRootTTL {
		return s.root, nil
	}
	var first, last string
	sql := fmt.Sprintf(`SELECT coalesce(min(path COLLATE "C"), ''), coalesce(max(path COLLATE "C"), '') FROM %s`,
		pgx.Identifier{s.store.Schema(), "assets"}.Sanitize())
	if err := s.store.Pool().QueryRow(ctx, sql).Scan(&first, &last); err != nil {
		return "", fmt.Errorf("library root: %w", err)
	}
	s.root, s.rootAt = commonFolder(first, last), time.Now()
	return s.root, nil
}

// commonFolder is the longest folder prefix (ending in '/') of a and b.
func commonFolder(a, b string) string {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return a[:strings.LastIndexByte(a[:n], '/')+1]
}
