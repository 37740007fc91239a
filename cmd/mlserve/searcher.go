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
	// libraryInfoTTL is how long the status panel's counts are cached
	// (counting a large library takes a while).
	libraryInfoTTL = 10 * time.Second
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

var (
	_ api.Searcher     = (*searchBackend)(nil)
	_ api.People       = (*searchBackend)(nil)
	_ api.TextSearcher = (*searchBackend)(nil)
	_ api.Files        = (*searchBackend)(nil)
	_ api.Library      = (*searchBackend)(nil)
)

// serveLibrary makes the backend serve search, people, text in photos,
// thumbnails and the status panel's library part (and so the web page);
// a nil backend (no database configured) serves none of them.
func (b *searchBackend) serveLibrary(o *api.Options) {
	if b == nil {
		return
	}
	o.Searcher, o.People, o.TextSearcher, o.Files, o.Library = b, b, b, b, b
}

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
			return nil //nolint:nilerr // the context ended: a shutdown, not a failure to report
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

// ListPeople implements api.People.
func (b *searchBackend) ListPeople(ctx context.Context, q api.PeopleQuery) ([]api.Person, error) {
	s, err := b.get()
	if err != nil {
		return nil, err
	}
	return s.ListPeople(ctx, q)
}

// Person implements api.People.
func (b *searchBackend) Person(ctx context.Context, id int64) (api.Person, error) {
	s, err := b.get()
	if err != nil {
		return api.Person{}, err
	}
	return s.Person(ctx, id)
}

// RenamePerson implements api.People.
func (b *searchBackend) RenamePerson(ctx context.Context, id int64, name string) (api.Person, error) {
	s, err := b.get()
	if err != nil {
		return api.Person{}, err
	}
	return s.RenamePerson(ctx, id, name)
}

// MergePeople implements api.People.
func (b *searchBackend) MergePeople(ctx context.Context, into int64, from []int64) (api.Person, error) {
	s, err := b.get()
	if err != nil {
		return api.Person{}, err
	}
	return s.MergePeople(ctx, into, from)
}

// PersonAssets implements api.People.
func (b *searchBackend) PersonAssets(ctx context.Context, id int64, limit, offset int) ([]api.PersonAsset, error) {
	s, err := b.get()
	if err != nil {
		return nil, err
	}
	return s.PersonAssets(ctx, id, limit, offset)
}

// SearchOCR implements api.TextSearcher.
func (b *searchBackend) SearchOCR(ctx context.Context, text string, q api.SearchQuery) ([]api.OCRHit, error) {
	s, err := b.get()
	if err != nil {
		return nil, err
	}
	return s.SearchOCR(ctx, text, q)
}

// AssetFile implements api.Files.
func (b *searchBackend) AssetFile(ctx context.Context, id int64) (string, error) {
	s, err := b.get()
	if err != nil {
		return "", err
	}
	return s.AssetFile(ctx, id)
}

// FaceFile implements api.Files.
func (b *searchBackend) FaceFile(ctx context.Context, id int64) (string, api.Face, error) {
	s, err := b.get()
	if err != nil {
		return "", api.Face{}, err
	}
	return s.FaceFile(ctx, id)
}

// LibraryInfo implements api.Library.
func (b *searchBackend) LibraryInfo(ctx context.Context) (api.LibraryInfo, error) {
	s, err := b.get()
	if err != nil {
		return api.LibraryInfo{}, err
	}
	return s.LibraryInfo(ctx)
}

// searcher answers /search: CLIP embeddings from the service's shared
// cache and workers, nearest neighbours from pgvector (our schema or
// Immich's smart_search).
type searcher struct {
	svc   *pool.Service
	ix    search.Index
	model string
	// own or immich is ix, by its kind.
	own    *search.Store
	immich *search.Immich

	rootMu sync.Mutex
	root   string
	rootAt time.Time

	infoMu sync.Mutex
	info   api.LibraryInfo
	infoAt time.Time
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
		s.own = v
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
	switch {
	case s.immich != nil && q.PersonID != 0:
		return nil, errImmichLibrary
	case s.immich != nil:
		hits, err = s.immich.SearchOwner(ctx, emb, q.OwnerID, q.Limit)
	default:
		hits, err = s.own.SearchCLIPFiltered(ctx, s.model, emb, search.Filter{PersonID: q.PersonID}, q.Limit)
		if err == nil && len(hits) > 0 {
			root, err = s.libraryRoot(ctx)
		}
	}
	if err != nil {
		return nil, libraryError(err)
	}
	out := make([]api.SearchHit, len(hits))
	for i, h := range hits {
		out[i] = api.SearchHit{AssetID: h.AssetID, Path: h.Path, Distance: h.Distance, Thumbnail: s.own != nil}
		if root != "" {
			out[i].RelPath = strings.TrimPrefix(h.Path, root)
		}
	}
	return out, nil
}

// errImmichLibrary refuses what only our own index has.
var errImmichLibrary = fmt.Errorf("%w: people, text in photos and thumbnails come from mlserve's own index; "+
	"this instance searches Immich's library (MLSERVE_SEARCH_IMMICH), whose own app shows them", api.ErrUnsupported)

// apiError is an error of the search package that also matches the api
// sentinel the routes map to a status; its message is the original's.
type apiError struct{ kind, err error }

func (e apiError) Error() string   { return e.err.Error() }
func (e apiError) Unwrap() []error { return []error{e.kind, e.err} }

// libraryError maps the search package's errors to the api's.
func libraryError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, search.ErrNotFound):
		return apiError{api.ErrNotFound, err}
	case errors.Is(err, search.ErrInvalid):
		return apiError{api.ErrInvalid, err}
	case search.IsTransient(err):
		return fmt.Errorf("%w: %w", api.ErrSearchUnavailable, err)
	}
	return err
}

// store is our own index, or errImmichLibrary.
func (s *searcher) store() (*search.Store, error) {
	if s.own == nil {
		return nil, errImmichLibrary
	}
	return s.own, nil
}

func apiPerson(p search.Person) api.Person {
	out := api.Person{ID: p.ID, Name: p.Name, FaceCount: p.FaceCount, AssetCount: p.AssetCount}
	if p.Cover != nil {
		out.CoverFaceID = p.Cover.FaceID
	}
	return out
}

func apiFace(f search.FaceRef) api.Face {
	return api.Face{ID: f.FaceID, AssetID: f.AssetID, ImageWidth: f.ImageWidth, ImageHeight: f.ImageHeight, Box: f.Box}
}

// ListPeople implements api.People.
func (s *searcher) ListPeople(ctx context.Context, q api.PeopleQuery) ([]api.Person, error) {
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	people, err := st.ListPeople(ctx, search.PeopleOptions{MinFaces: q.MinFaces, Limit: q.Limit, Offset: q.Offset})
	if err != nil {
		return nil, libraryError(err)
	}
	out := make([]api.Person, len(people))
	for i, p := range people {
		out[i] = apiPerson(p)
	}
	return out, nil
}

// Person implements api.People.
func (s *searcher) Person(ctx context.Context, id int64) (api.Person, error) {
	st, err := s.store()
	if err != nil {
		return api.Person{}, err
	}
	p, err := st.Person(ctx, id)
	return apiPerson(p), libraryError(err)
}

// RenamePerson implements api.People.
func (s *searcher) RenamePerson(ctx context.Context, id int64, name string) (api.Person, error) {
	st, err := s.store()
	if err != nil {
		return api.Person{}, err
	}
	p, err := st.RenamePerson(ctx, id, name)
	return apiPerson(p), libraryError(err)
}

// MergePeople implements api.People.
func (s *searcher) MergePeople(ctx context.Context, into int64, from []int64) (api.Person, error) {
	st, err := s.store()
	if err != nil {
		return api.Person{}, err
	}
	p, err := st.MergePeople(ctx, into, from...)
	if err == nil {
		// The status panel counts people: count again.
		s.infoMu.Lock()
		s.infoAt = time.Time{}
		s.infoMu.Unlock()
	}
	return apiPerson(p), libraryError(err)
}

// PersonAssets implements api.People.
func (s *searcher) PersonAssets(ctx context.Context, id int64, limit, offset int) ([]api.PersonAsset, error) {
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	assets, err := st.PersonAssets(ctx, id, limit, offset)
	if err != nil {
		return nil, libraryError(err)
	}
	root := ""
	if len(assets) > 0 {
		if root, err = s.libraryRoot(ctx); err != nil {
			return nil, libraryError(err)
		}
	}
	out := make([]api.PersonAsset, len(assets))
	for i, a := range assets {
		out[i] = api.PersonAsset{AssetID: a.AssetID, Path: a.Path, RelPath: relPath(a.Path, root), ModifiedAt: a.ModifiedAt, Face: apiFace(a.Face)}
	}
	return out, nil
}

// SearchOCR implements api.TextSearcher.
func (s *searcher) SearchOCR(ctx context.Context, text string, q api.SearchQuery) ([]api.OCRHit, error) {
	st, err := s.store()
	if err != nil {
		return nil, err
	}
	hits, err := st.SearchOCR(ctx, text, q.Limit)
	if err != nil {
		return nil, libraryError(err)
	}
	root := ""
	if len(hits) > 0 {
		if root, err = s.libraryRoot(ctx); err != nil {
			return nil, libraryError(err)
		}
	}
	out := make([]api.OCRHit, len(hits))
	for i, h := range hits {
		out[i] = api.OCRHit{AssetID: h.AssetID, Path: h.Path, RelPath: relPath(h.Path, root), Score: h.Score, Lines: make([]api.OCRLine, len(h.Lines))}
		for j, l := range h.Lines {
			out[i].Lines[j] = api.OCRLine{Index: l.Index, Text: l.Text, Box: l.Box, Score: l.Score}
		}
	}
	return out, nil
}

// AssetFile implements api.Files: the file of an indexed asset, by id.
func (s *searcher) AssetFile(ctx context.Context, id int64) (string, error) {
	st, err := s.store()
	if err != nil {
		return "", err
	}
	a, err := st.Asset(ctx, id)
	return a.Path, libraryError(err)
}

// FaceFile implements api.Files.
func (s *searcher) FaceFile(ctx context.Context, id int64) (string, api.Face, error) {
	st, err := s.store()
	if err != nil {
		return "", api.Face{}, err
	}
	f, err := st.Face(ctx, id)
	return f.Path, apiFace(f), libraryError(err)
}

// LibraryInfo implements api.Library: what is indexed, counted (cached
// for libraryInfoTTL).
func (s *searcher) LibraryInfo(ctx context.Context) (api.LibraryInfo, error) {
	s.infoMu.Lock()
	defer s.infoMu.Unlock()
	if !s.infoAt.IsZero() && time.Since(s.infoAt) < libraryInfoTTL {
		return s.info, nil
	}
	info := api.LibraryInfo{Mode: "mlserve", Model: s.model, Assets: -1, Faces: -1, People: -1, TextLines: -1}
	if s.immich != nil {
		info.Mode = "immich"
		return info, nil
	}
	st := s.own
	ts := st.TextSearch()
	info.FuzzyText, info.Unaccent = ts.Fuzzy, ts.Unaccent
	t := func(name string) string { return pgx.Identifier{st.Schema(), name}.Sanitize() }
	sql := fmt.Sprintf(`SELECT (SELECT count(*) FROM %s), (SELECT count(*) FROM %s),
	(SELECT count(DISTINCT person_id) FROM %s), (SELECT count(*) FROM %s)`, t("assets"), t("faces"), t("face_person"), t("ocr_boxes"))
	if err := st.Pool().QueryRow(ctx, sql).Scan(&info.Assets, &info.Faces, &info.People, &info.TextLines); err != nil {
		return info, libraryError(fmt.Errorf("library counts: %w", err))
	}
	s.info, s.infoAt = info, time.Now()
	return info, nil
}

// relPath is path relative to the library's root (see libraryRoot).
func relPath(path, root string) string {
	if root == "" {
		return ""
	}
	return strings.TrimPrefix(path, root)
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
		pgx.Identifier{s.own.Schema(), "assets"}.Sanitize())
	if err := s.own.Pool().QueryRow(ctx, sql).Scan(&first, &last); err != nil {
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
