package search

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// migration is one step of our schema's history. Steps are append-only:
// never edit a released one, add the next number instead.
type migration struct {
	version int
	name    string
	sql     string // {{s}} is replaced by the quoted schema name
}

var migrations = []migration{
	{1, "assets, clip registry, faces, ocr", `
CREATE TABLE {{s}}.assets (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	path         text NOT NULL UNIQUE,
	content_hash bytea NOT NULL,
	size         bigint NOT NULL,
	modified_at  timestamptz,
	indexed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assets_content_hash_idx ON {{s}}.assets (content_hash);

-- One row per CLIP model; its embeddings live in their own table because
-- an HNSW index needs a fixed dimension.
CREATE TABLE {{s}}.clip_models (
	model      text PRIMARY KEY,
	dim        integer NOT NULL CHECK (dim > 0),
	table_name text NOT NULL UNIQUE,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {{s}}.faces (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	asset_id     bigint NOT NULL REFERENCES {{s}}.assets (id) ON DELETE CASCADE,
	model        text NOT NULL,
	image_width  integer NOT NULL,
	image_height integer NOT NULL,
	x1 real NOT NULL, y1 real NOT NULL, x2 real NOT NULL, y2 real NOT NULL,
	score        real NOT NULL,
	landmarks    real[],
	embedding    vector(512) NOT NULL
);
CREATE INDEX faces_asset_id_idx ON {{s}}.faces (asset_id);

CREATE TABLE {{s}}.ocr_boxes (
	asset_id   bigint NOT NULL REFERENCES {{s}}.assets (id) ON DELETE CASCADE,
	idx        integer NOT NULL,
	model      text NOT NULL,
	box        real[] NOT NULL,
	box_score  real NOT NULL,
	text       text NOT NULL,
	text_score real NOT NULL,
	PRIMARY KEY (asset_id, idx)
);
CREATE TABLE {{s}}.ocr_text (
	asset_id bigint PRIMARY KEY REFERENCES {{s}}.assets (id) ON DELETE CASCADE,
	model    text NOT NULL,
	text     text NOT NULL
);
`},
	{2, "people", `
-- People are groups of faces (ClusterFaces). Face counts are computed when
-- read, as Immich does, so they never drift from the faces.
CREATE TABLE {{s}}.people (
	id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name          text NOT NULL DEFAULT '',
	cover_face_id bigint REFERENCES {{s}}.faces (id) ON DELETE SET NULL,
	created_at    timestamptz NOT NULL DEFAULT now(),
	updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Which person a face belongs to (at most one). A table of its own rather
-- than a column of faces, as Immich keeps face_search apart from
-- asset_face: assigning a face then never rewrites the faces row, whose
-- new version would have to enter the HNSW index again (about 20 ms a face
-- on PGlite).
CREATE TABLE {{s}}.face_person (
	face_id   bigint PRIMARY KEY REFERENCES {{s}}.faces (id) ON DELETE CASCADE,
	person_id bigint NOT NULL REFERENCES {{s}}.people (id) ON DELETE CASCADE
);
CREATE INDEX face_person_person_id_idx ON {{s}}.face_person (person_id, face_id);
`},
	{3, "analyses done, index failures", `
-- Which analyses (faces, OCR) ran on an asset's content with which model,
-- whether they found something or not (a photo without faces has no faces
-- rows): what lets a later run add only the analyses that are missing.
CREATE TABLE {{s}}.asset_tasks (
	asset_id     bigint NOT NULL REFERENCES {{s}}.assets (id) ON DELETE CASCADE,
	task         text NOT NULL CHECK (task IN ('faces', 'ocr')),
	model        text NOT NULL,
	content_hash bytea NOT NULL,
	done_at      timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (asset_id, task)
);
INSERT INTO {{s}}.asset_tasks (asset_id, task, model, content_hash)
SELECT DISTINCT ON (f.asset_id) f.asset_id, 'faces', f.model, a.content_hash
FROM {{s}}.faces f JOIN {{s}}.assets a ON a.id = f.asset_id
ORDER BY f.asset_id, f.id;
INSERT INTO {{s}}.asset_tasks (asset_id, task, model, content_hash)
SELECT o.asset_id, 'ocr', o.model, a.content_hash
FROM {{s}}.ocr_text o JOIN {{s}}.assets a ON a.id = o.asset_id;

-- Files that cannot be indexed (they do not decode): later runs skip them
-- until their size or modification time changes.
CREATE TABLE {{s}}.index_failures (
	path        text PRIMARY KEY,
	size        bigint NOT NULL,
	modified_at timestamptz,
	error       text NOT NULL,
	failed_at   timestamptz NOT NULL DEFAULT now()
);
`},
}

// migrationsLockKey is the advisory lock that serialises schema changes
// of one schema across processes.
func (s *Store) lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("mlserve/search:" + s.schema))
	return int64(h.Sum64())
}

func (s *Store) expand(sql string) string {
	return strings.ReplaceAll(sql, "{{s}}", pgx.Identifier{s.schema}.Sanitize())
}

// migrate brings the schema to the newest version. It holds a transaction
// advisory lock for the whole run, so concurrent starts apply each step
// once: the second process waits, then finds nothing left to do. Each run
// is one transaction: a failure leaves the schema as it was.
func (s *Store) migrate(ctx context.Context, cfg *pgx.ConnConfig) error {
	if cfg == nil {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		defer conn.Release()
		return s.migrateConn(ctx, conn.Conn())
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return fmt.Errorf("migrate: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return s.migrateConn(ctx, conn)
}

func (s *Store) migrateConn(ctx context.Context, conn *pgx.Conn) error {
	start := time.Now()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit

	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", s.lockKey()); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	// The extension is shared by the whole database; creating it needs the
	// right to, so only try when it is missing.
	var hasVector bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')").Scan(&hasVector); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if !hasVector {
		if _, err := tx.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS vector"); err != nil {
			return fmt.Errorf("%w: pgvector is not installed and cannot be created: %w", ErrSchema, err)
		}
	}
	if _, err := tx.Exec(ctx, s.expand(`
CREATE SCHEMA IF NOT EXISTS {{s}};
CREATE TABLE IF NOT EXISTS {{s}}.schema_migrations (
	version    integer PRIMARY KEY,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`)); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int
	if err := tx.QueryRow(ctx, s.expand("SELECT coalesce(max(version), 0) FROM {{s}}.schema_migrations")).Scan(&current); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if latest := migrations[len(migrations)-1].version; current > latest {
		return fmt.Errorf("%w: schema %s is at version %d, newer than this build (%d)", ErrSchema, s.schema, current, latest)
	}
	applied := 0
	for _, m := range migrations {
		if m.version <= current {
			continue
		}
		if _, err := tx.Exec(ctx, s.expand(m.sql)); err != nil {
			return fmt.Errorf("migrate: step %d (%s): %w", m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx, s.expand("INSERT INTO {{s}}.schema_migrations (version, name) VALUES ($1, $2)"), m.version, m.name); err != nil {
			return fmt.Errorf("migrate: step %d: %w", m.version, err)
		}
		applied++
	}
	// Indexes and functions that depend on options and on the extensions
	// the server offers are checked on every start, under the same lock.
	if !s.defer_ {
		if err := s.ensureHNSW(ctx, tx, "faces"); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	text, err := s.setupTextSearch(ctx, tx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	s.text = text
	if applied > 0 {
		s.logger.Info("database schema migrated", "schema", s.schema, "from", current, "to", current+applied, "took", time.Since(start))
	}
	return nil
}

// ensureHNSW creates table's cosine HNSW index when it is missing. The
// catalogue is read first, so a start that finds the index takes no lock on
// the table.
func (s *Store) ensureHNSW(ctx context.Context, tx pgx.Tx, table string) error {
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", s.table(table+"_embedding_idx")).Scan(&exists); err != nil {
		return fmt.Errorf("index on %s: %w", table, err)
	}
	if exists {
		return nil
	}
	start := time.Now()
	if _, err := tx.Exec(ctx, s.hnswDDL(table)); err != nil {
		return fmt.Errorf("index on %s: %w", table, err)
	}
	s.logger.Info("created HNSW index", "table", s.schema+"."+table, "took", time.Since(start))
	return nil
}

// Version returns the schema's migration version.
func (s *Store) Version(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, s.expand("SELECT coalesce(max(version), 0) FROM {{s}}.schema_migrations")).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return v, nil
}

var errNoRows = pgx.ErrNoRows

func isNoRows(err error) bool { return errors.Is(err, errNoRows) }
