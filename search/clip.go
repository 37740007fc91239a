package search

import (
	"context"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// clipTable is where one model's embeddings live.
type clipTable struct {
	model string
	dim   int
	table string // unquoted, inside the store's schema
}

// Model describes a CLIP model known to the store.
type Model struct {
	Name  string
	Dim   int
	Table string
}

// tableName derives a readable, unique table name from a model name:
// clip_<sanitised name, ≤40 chars>_<8 hex of its hash>.
func tableName(model string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(model) {
		if b.Len() >= 40 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	h := fnv.New32a()
	h.Write([]byte(model))
	return "clip_" + b.String() + "_" + hex.EncodeToString(h.Sum(nil))
}

// EnsureModel makes sure the store can hold embeddings of model with dim
// dimensions: it creates the model's table (and, unless indexes are
// deferred, its HNSW index) on first use. A model already stored with
// another dimension is ErrDimensionMismatch; nothing is rewritten.
func (s *Store) EnsureModel(ctx context.Context, model string, dim int) (Model, error) {
	if model == "" || dim <= 0 {
		return Model{}, fmt.Errorf("%w: model %q with %d dimensions", ErrInvalid, model, dim)
	}
	if t, ok := s.cached(model); ok {
		if t.dim != dim {
			return Model{}, mismatch(model, t.dim, dim)
		}
		return Model{Name: model, Dim: t.dim, Table: t.table}, nil
	}
	t, err := s.loadModel(ctx, model)
	switch {
	case err == nil:
	case isNoRows(err):
		t, err = s.createModel(ctx, model, dim)
		if err != nil {
			return Model{}, err
		}
	default:
		return Model{}, err
	}
	if t.dim != dim {
		return Model{}, mismatch(model, t.dim, dim)
	}
	// The registry could disagree with the column if someone altered the
	// table by hand: check the column itself (atttypmod is pgvector's dim).
	col, err := s.columnDim(ctx, t.table)
	if err != nil {
		return Model{}, err
	}
	if col != dim {
		return Model{}, fmt.Errorf("%w: column %s.%s.embedding is vector(%d), model %s gives %d",
			ErrDimensionMismatch, s.schema, t.table, col, model, dim)
	}
	s.mu.Lock()
	s.models[model] = t
	s.mu.Unlock()
	return Model{Name: model, Dim: dim, Table: t.table}, nil
}

func mismatch(model string, have, want int) error {
	return fmt.Errorf("%w: model %s is stored with %d dimensions, got %d (use another schema for a model of another size)",
		ErrDimensionMismatch, model, have, want)
}

func (s *Store) cached(model string) (clipTable, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.models[model]
	return t, ok
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *Store) loadModel(ctx context.Context, model string) (clipTable, error) {
	return s.loadModelWith(ctx, s.pool, model)
}

func (s *Store) loadModelWith(ctx context.Context, q querier, model string) (clipTable, error) {
	t := clipTable{model: model}
	err := q.QueryRow(ctx, s.expand("SELECT dim, table_name FROM {{s}}.clip_models WHERE model = $1"), model).Scan(&t.dim, &t.table)
	if err != nil {
		if isNoRows(err) {
			return t, err
		}
		return t, fmt.Errorf("clip model %s: %w", model, err)
	}
	if !validIdent(t.table) {
		return t, fmt.Errorf("%w: clip_models lists table %q", ErrSchema, t.table)
	}
	return t, nil
}

// createModel registers the model and creates its table under the schema's
// advisory lock, so two processes starting with a new model create it once.
func (s *Store) createModel(ctx context.Context, model string, dim int) (clipTable, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return clipTable{}, fmt.Errorf("create clip table: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockKey()); err != nil {
		return clipTable{}, fmt.Errorf("create clip table: lock: %w", err)
	}
	if t, err := s.loadModelWith(ctx, tx, model); err == nil {
		return t, nil // created meanwhile by another process
	} else if !isNoRows(err) {
		return clipTable{}, err
	}
	t := clipTable{model: model, dim: dim, table: tableName(model)}
	tbl := s.table(t.table)
	ddl := fmt.Sprintf(`
CREATE TABLE %s (
	asset_id     bigint PRIMARY KEY REFERENCES %s (id) ON DELETE CASCADE,
	content_hash bytea NOT NULL,
	embedding    vector(%d) NOT NULL,
	updated_at   timestamptz NOT NULL DEFAULT now()
)`, tbl, s.table("assets"), dim)
	if _, err := tx.Exec(ctx, ddl); err != nil {
		return clipTable{}, fmt.Errorf("create clip table for %s: %w", model, err)
	}
	if _, err := tx.Exec(ctx, s.expand("INSERT INTO {{s}}.clip_models (model, dim, table_name) VALUES ($1, $2, $3)"), model, dim, t.table); err != nil {
		return clipTable{}, fmt.Errorf("register clip model %s: %w", model, err)
	}
	if !s.defer_ {
		if _, err := tx.Exec(ctx, s.hnswDDL(t.table)); err != nil {
			return clipTable{}, fmt.Errorf("clip index for %s: %w", model, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return clipTable{}, fmt.Errorf("create clip table: commit: %w", err)
	}
	s.logger.Info("created CLIP table", "model", model, "dim", dim, "table", s.schema+"."+t.table, "index", !s.defer_)
	return t, nil
}

// hnswDDL is the cosine HNSW index of a table's embedding column, with
// pgvector's default build parameters (m 16, ef_construction 64).
func (s *Store) hnswDDL(table string) string {
	return fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s USING hnsw (embedding vector_cosine_ops)",
		pgx.Identifier{table + "_embedding_idx"}.Sanitize(), s.table(table))
}

// CreateIndexes builds the HNSW indexes that are missing (all CLIP tables
// and faces). Run it after a bulk load made with Options.DeferIndexes.
func (s *Store) CreateIndexes(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, s.expand("SELECT table_name FROM {{s}}.clip_models ORDER BY model"))
	if err != nil {
		return fmt.Errorf("create indexes: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("create indexes: %w", err)
	}
	tables = append(tables, "faces")
	for _, t := range tables {
		if !validIdent(t) {
			return fmt.Errorf("%w: clip_models lists table %q", ErrSchema, t)
		}
		if _, err := s.pool.Exec(ctx, s.hnswDDL(t)); err != nil {
			return fmt.Errorf("create index on %s: %w", t, err)
		}
	}
	return nil
}

// columnDim reads the declared dimension of table.embedding (pgvector
// stores it as the column's type modifier; -1 when undeclared).
func (s *Store) columnDim(ctx context.Context, table string) (int, error) {
	return columnDim(ctx, s.pool, s.schema, table)
}

func columnDim(ctx context.Context, q querier, schema, table string) (int, error) {
	var dim int
	err := q.QueryRow(ctx, `
SELECT a.atttypmod
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = 'embedding'
  AND a.attnum > 0 AND NOT a.attisdropped`, schema, table).Scan(&dim)
	if err != nil {
		if isNoRows(err) {
			return 0, fmt.Errorf("%w: no column %s.%s.embedding", ErrSchema, schema, table)
		}
		return 0, fmt.Errorf("dimension of %s.%s: %w", schema, table, err)
	}
	return dim, nil
}

// Models lists the CLIP models that have tables in this store.
func (s *Store) Models(ctx context.Context) ([]Model, error) {
	rows, err := s.pool.Query(ctx, s.expand("SELECT model, dim, table_name FROM {{s}}.clip_models ORDER BY model"))
	if err != nil {
		return nil, fmt.Errorf("clip models: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Model, error) {
		var m Model
		err := r.Scan(&m.Name, &m.Dim, &m.Table)
		return m, err
	})
}

// model returns the table of a model registered by EnsureModel, in this
// process or another (then it is read from clip_models once).
func (s *Store) model(ctx context.Context, model string) (clipTable, error) {
	if t, ok := s.cached(model); ok {
		return t, nil
	}
	t, err := s.loadModel(ctx, model)
	if isNoRows(err) {
		return clipTable{}, fmt.Errorf("%w: %s has no embeddings in schema %s (index with it first)", ErrUnknownModel, model, s.schema)
	}
	if err != nil {
		return clipTable{}, err
	}
	s.mu.Lock()
	s.models[model] = t
	s.mu.Unlock()
	return t, nil
}
