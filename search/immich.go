package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"
)

// DefaultImmichModel is the CLIP model of an Immich server whose
// configuration does not name one.
const DefaultImmichModel = "ViT-B-32__openai"

// ImmichOptions configure Immich mode.
type ImmichOptions struct {
	// URL is the Immich database's URL. Ignored when Pool is set.
	URL string
	// Pool, when set, is used instead of opening one from URL and stays
	// the caller's to close.
	Pool *pgxpool.Pool
	// Schema holds Immich's tables; "public" when empty.
	Schema string
	// MaxConns caps the pool opened from URL; DefaultMaxConns when zero.
	MaxConns int32
	// Paths maps the preview paths that Immich stores to this host.
	Paths PathMap
}

// Immich reads and writes an Immich server's database. It only ever
// writes smart_search rows (never the schema, never faces or OCR), and it
// writes them as the server does.
type Immich struct {
	pool     *pgxpool.Pool
	ownsPool bool
	schema   string
	paths    PathMap
	dim      int
	model    string // set by CheckModel; UpsertCLIP refuses once Immich's differs
	logger   *slog.Logger
}

// clipDimSizeLock is the advisory lock the Immich server holds
// (pg_advisory_lock, DatabaseLock.CLIPDimSize) while it changes the
// dimension of smart_search or clears it for a new model.
const clipDimSizeLock = 512

// ErrModelChanged: Immich's CLIP model is no longer the one the embeddings
// were computed with (the server clears smart_search on a model change).
var ErrModelChanged = errors.New("immich CLIP model changed")

// OpenImmich connects to an Immich database and reads the dimension of
// smart_search.embedding.
func OpenImmich(ctx context.Context, opts ImmichOptions, logger *slog.Logger) (*Immich, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	schema := opts.Schema
	if schema == "" {
		schema = "public"
	}
	if !validIdent(schema) {
		return nil, fmt.Errorf("%w: schema name %q", ErrSchema, schema)
	}
	im := &Immich{pool: opts.Pool, schema: schema, paths: opts.Paths, logger: logger}
	if im.pool == nil {
		pool, err := NewPool(ctx, opts.URL, opts.MaxConns, logger)
		if err != nil {
			return nil, err
		}
		im.pool, im.ownsPool = pool, true
	}
	for _, t := range []string{"asset", "asset_file", "asset_job_status", "smart_search"} {
		var ok bool
		if err := im.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", im.table(t)).Scan(&ok); err != nil {
			im.Close()
			return nil, fmt.Errorf("immich database: %w", err)
		}
		if !ok {
			im.Close()
			return nil, fmt.Errorf("%w: no table %s.%s: not an Immich database, or a release older than its singular table names", ErrSchema, schema, t)
		}
	}
	dim, err := columnDim(ctx, im.pool, schema, "smart_search")
	if err != nil {
		im.Close()
		return nil, err
	}
	if dim <= 0 {
		im.Close()
		return nil, fmt.Errorf("%w: smart_search.embedding has no declared dimension", ErrSchema)
	}
	im.dim = dim
	return im, nil
}

// Close closes the pool if OpenImmich opened it.
func (im *Immich) Close() {
	if im.ownsPool {
		im.pool.Close()
	}
}

// Pool returns the connection pool.
func (im *Immich) Pool() *pgxpool.Pool { return im.pool }

// Schema is the schema that holds Immich's tables.
func (im *Immich) Schema() string { return im.schema }

// Dim is the dimension of smart_search.embedding, read when opened.
func (im *Immich) Dim() int { return im.dim }

// Paths is the path map given at open.
func (im *Immich) Paths() PathMap { return im.paths }

func (im *Immich) table(name string) string { return pgx.Identifier{im.schema, name}.Sanitize() }

// ConfiguredModel returns the CLIP model of the server's system
// configuration (system_metadata 'system-config'), or DefaultImmichModel
// when it names none.
func (im *Immich) ConfiguredModel(ctx context.Context) (string, error) {
	return im.configuredModel(ctx, im.pool)
}

func (im *Immich) configuredModel(ctx context.Context, q querier) (string, error) {
	var ok bool
	if err := q.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", im.table("system_metadata")).Scan(&ok); err != nil {
		return "", fmt.Errorf("immich config: %w", err)
	}
	if !ok {
		return DefaultImmichModel, nil
	}
	var raw []byte
	err := q.QueryRow(ctx, fmt.Sprintf(`SELECT value::text FROM %s WHERE key = 'system-config'`, im.table("system_metadata"))).Scan(&raw)
	if isNoRows(err) {
		return DefaultImmichModel, nil
	}
	if err != nil {
		return "", fmt.Errorf("immich config: %w", err)
	}
	var cfg struct {
		MachineLearning struct {
			CLIP struct {
				ModelName string `json:"modelName"`
			} `json:"clip"`
		} `json:"machineLearning"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("%w: system-config is not JSON: %w", ErrSchema, err)
	}
	if cfg.MachineLearning.CLIP.ModelName == "" {
		return DefaultImmichModel, nil
	}
	return cfg.MachineLearning.CLIP.ModelName, nil
}

// CheckModel refuses a model whose embeddings do not fit smart_search: the
// server, not us, changes that column when its model changes. After it,
// UpsertCLIP refuses to write once Immich is configured with another model
// (as the server's own job skips an embedding whose model changed
// meanwhile). Call it before writing.
func (im *Immich) CheckModel(model string, dim int) error {
	if dim != im.dim {
		return fmt.Errorf("%w: %s gives %d dimensions, smart_search.embedding is vector(%d); change the model in Immich first",
			ErrDimensionMismatch, model, dim, im.dim)
	}
	im.model = model
	return nil
}

// ImmichAsset is an asset to embed.
type ImmichAsset struct {
	ID string
	// Preview is the preview file's path as Immich stored it.
	Preview string
	// Path is Preview mapped to this host, or empty when it cannot be
	// (MapErr says why).
	Path   string
	MapErr error
}

// pendingSQL lists what the server's SmartSearchQueueAll job would queue
// (AssetJobRepository.streamForEncodeClip: not hidden, not deleted, preview
// generated, and without an embedding unless forced), restricted to assets
// with exactly one preview file, which handleEncodeClip requires. It pages
// by id (keyset), so a long listing never holds a transaction.
func (im *Immich) pendingSQL(force bool) string {
	missing := ""
	if !force {
		missing = fmt.Sprintf(`AND NOT EXISTS (SELECT FROM %s ss WHERE ss."assetId" = a.id)`, im.table("smart_search"))
	}
	return fmt.Sprintf(`
SELECT a.id::text, f.path
FROM %s a
JOIN %s js ON js."assetId" = a.id
JOIN LATERAL (
	SELECT min(af.path) AS path, count(*) AS n
	FROM %s af
	WHERE af."assetId" = a.id AND af.type = 'preview'
) f ON f.n = 1
WHERE a.visibility::text <> 'hidden'
  AND a."deletedAt" IS NULL
  AND js."previewAt" IS NOT NULL
  AND a.id > $1::uuid
  %s
ORDER BY a.id
LIMIT $2`, im.table("asset"), im.table("asset_job_status"), im.table("asset_file"), missing)
}

// Pending returns up to limit assets after the asset id after ("" for the
// first page) that need a CLIP embedding; with force, all of them. Pass the
// last ID of a page as after to get the next.
func (im *Immich) Pending(ctx context.Context, force bool, after string, limit int) ([]ImmichAsset, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d", ErrInvalid, limit)
	}
	if after == "" {
		after = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := im.pool.Query(ctx, im.pendingSQL(force), after, limit)
	if err != nil {
		return nil, fmt.Errorf("immich pending assets: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ImmichAsset, error) {
		var a ImmichAsset
		err := r.Scan(&a.ID, &a.Preview)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("immich pending assets: %w", err)
	}
	for i := range out {
		out[i].Path, out[i].MapErr = im.paths.Map(out[i].Preview)
	}
	return out, nil
}

// CountPending counts what Pending would list.
func (im *Immich) CountPending(ctx context.Context, force bool) (int64, error) {
	var n int64
	sql := fmt.Sprintf("SELECT count(*) FROM (%s) p", im.pendingSQL(force))
	if err := im.pool.QueryRow(ctx, sql, "00000000-0000-0000-0000-000000000000", int64(1)<<62).Scan(&n); err != nil {
		return 0, fmt.Errorf("immich pending count: %w", err)
	}
	return n, nil
}

// Embedding is one CLIP embedding for an Immich asset.
type Embedding struct {
	AssetID   string
	Embedding []float32
}

// UpsertCLIP writes embeddings into smart_search in one transaction, as
// the server's SearchRepository.upsert does (INSERT … ON CONFLICT
// ("assetId") DO UPDATE SET embedding = excluded.embedding), batched. Rows
// of assets deleted meanwhile are dropped instead of failing the batch on
// the foreign key. It returns how many rows were written.
func (im *Immich) UpsertCLIP(ctx context.Context, es []Embedding) (int64, error) {
	if len(es) == 0 {
		return 0, nil
	}
	// Last one wins for a repeated asset (one row may not be upserted twice
	// in a statement).
	pos := make(map[string]int, len(es))
	ids := make([]string, 0, len(es))
	vecs := make([]pgvector.Vector, 0, len(es))
	for _, e := range es {
		if len(e.Embedding) != im.dim {
			return 0, fmt.Errorf("%w: asset %s: embedding has %d dimensions, smart_search holds %d", ErrDimensionMismatch, e.AssetID, len(e.Embedding), im.dim)
		}
		if i, ok := pos[e.AssetID]; ok {
			vecs[i] = pgvector.NewVector(e.Embedding)
			continue
		}
		pos[e.AssetID] = len(ids)
		ids = append(ids, e.AssetID)
		vecs = append(vecs, pgvector.NewVector(e.Embedding))
	}
	sql := fmt.Sprintf(`
INSERT INTO %[1]s ("assetId", embedding)
SELECT u.id::uuid, u.embedding
FROM unnest($1::text[], $2::vector[]) AS u(id, embedding)
WHERE EXISTS (SELECT 1 FROM %[2]s a WHERE a.id = u.id::uuid)
ON CONFLICT ("assetId") DO UPDATE SET embedding = excluded.embedding`, im.table("smart_search"), im.table("asset"))
	args := []any{ids, vectorArray(im.pool, vecs)}

	tx, err := im.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("upsert smart_search: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	// Wait while the server resizes or clears smart_search (it holds the
	// lock exclusively); writers share it among themselves.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared($1)", int64(clipDimSizeLock)); err != nil {
		return 0, fmt.Errorf("upsert smart_search: lock: %w", err)
	}
	if im.model != "" {
		now, err := im.configuredModel(ctx, tx)
		if err != nil {
			return 0, err
		}
		if now != im.model {
			return 0, fmt.Errorf("%w: from %s to %s; these embeddings are dropped", ErrModelChanged, im.model, now)
		}
	}
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		return 0, fmt.Errorf("upsert smart_search: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("upsert smart_search: commit: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Search returns the limit assets nearest to query in smart_search,
// nearest first, ties broken by asset id, over assets that Immich's search
// shows (not deleted, on the timeline or archived). Unlike the server it
// does not filter by owner: it searches the whole library.
func (im *Immich) Search(ctx context.Context, query []float32, limit int) ([]Hit, error) {
	return im.SearchOwner(ctx, query, "", limit)
}

// SearchOwner is Search over the assets of one Immich user (ownerID, a
// user's UUID), as the server's smart search filters them; an empty
// ownerID searches every user's assets.
func (im *Immich) SearchOwner(ctx context.Context, query []float32, ownerID string, limit int) ([]Hit, error) {
	if err := checkQuery(query, limit); err != nil {
		return nil, err
	}
	if len(query) != im.dim {
		return nil, fmt.Errorf("%w: query has %d dimensions, smart_search holds %d", ErrDimensionMismatch, len(query), im.dim)
	}
	owner := ""
	args := []any{pgvector.NewVector(query), limit}
	if ownerID != "" {
		owner = ` AND a."ownerId" = $3::uuid`
		args = append(args, ownerID)
	}
	sql := fmt.Sprintf(`
SELECT a.id::text, coalesce(a."originalPath", ''), ss.embedding <=> $1 AS distance
FROM %s a
JOIN %s ss ON a.id = ss."assetId"
WHERE a."deletedAt" IS NULL AND a.visibility::text IN ('archive', 'timeline')%s
ORDER BY ss.embedding <=> $1, a.id
LIMIT $2`, im.table("asset"), im.table("smart_search"), owner)
	return knn(ctx, im.pool, limit, sql, args...)
}

// SearchText embeds text with emb and searches smart_search.
func (im *Immich) SearchText(ctx context.Context, emb TextEmbedder, text string, limit int) ([]Hit, error) {
	q, err := emb.EmbedText(ctx, text)
	if err != nil {
		return nil, fmt.Errorf("embed search text: %w", err)
	}
	return im.Search(ctx, q, limit)
}
