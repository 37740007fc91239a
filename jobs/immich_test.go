package jobs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mlserve/mlserve/internal/testenv"
	"github.com/mlserve/mlserve/search"
)

// immichLibrary creates an Immich database (search/testdata's fixture, in
// a schema of its own) whose assets have preview files in a folder that
// stands for the mounted library: the database says
// /usr/src/app/upload/thumbs/…, the files are in <library>/thumbs/….
func immichLibrary(t *testing.T, n int) (schema, library string, ids []string) {
	t.Helper()
	ctx := ctxT(t)
	sqlText, err := os.ReadFile(filepath.Join(testenv.Root(), "search", "testdata", "immich_schema.sql"))
	if err != nil {
		t.Fatal(err)
	}
	schema = testSchema(t)
	library = t.TempDir()
	previews := genImages(t, t.TempDir(), n, 77)

	cfg, err := pgx.ParseConfig(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol // see search.PoolConfig
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	for _, q := range []string{
		"CREATE EXTENSION IF NOT EXISTS vector",
		"CREATE SCHEMA " + pgx.Identifier{schema}.Sanitize(),
		"SET LOCAL search_path TO " + pgx.Identifier{schema}.Sanitize() + ", public",
		string(sqlText),
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("fixture: %v", err)
		}
	}
	var owner string
	if err := tx.QueryRow(ctx, `INSERT INTO "user" (email) VALUES ('a@example.com') RETURNING id::text`).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	for i, src := range previews {
		var id string
		name := fmt.Sprintf("IMG_%04d", i)
		if err := tx.QueryRow(ctx, `
INSERT INTO asset ("deviceAssetId", "ownerId", "deviceId", type, "originalPath", "fileCreatedAt", "fileModifiedAt", checksum, "originalFileName")
VALUES ($1, $2::uuid, 'dev', 'IMAGE', '/usr/src/app/upload/library/' || $1 || '.heic', now(), now(), sha256($1::bytea), $1 || '.heic')
RETURNING id::text`, name, owner).Scan(&id); err != nil {
			t.Fatal(err)
		}
		rel := filepath.Join("thumbs", id[:2], id+"-preview"+filepath.Ext(src))
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(library, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(library, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO asset_file ("assetId", type, path) VALUES ($1::uuid, 'preview', $2)`, id, "/usr/src/app/upload/"+rel); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO asset_job_status ("assetId", "previewAt") VALUES ($1::uuid, now())`, id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return schema, library, ids
}

func TestIndexImmich(t *testing.T) {
	ctx := ctxT(t)
	schema, library, ids := immichLibrary(t, 10)
	v := loadVisual(t, clipDir(t, smallCLIP()))
	paths, err := search.ParsePathMap([]string{"/usr/src/app/upload=" + library})
	if err != nil {
		t.Fatal(err)
	}
	im, err := search.OpenImmich(ctx, search.ImmichOptions{URL: testenv.DatabaseURL(t), Schema: schema, Paths: paths}, nil)
	// The queue carries Immich's paths; the worker maps them to its mount.
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := im.CheckModel(testModel, v.Dim()); err != nil {
		t.Fatal(err)
	}
	// One preview is missing from the mount: it goes to the dead-letter
	// queue with its error, the rest are embedded.
	page, err := im.Pending(ctx, false, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	missing := page[3]
	if err := os.Remove(missing.Path); err != nil {
		t.Fatal(err)
	}

	index := func(force bool, paths search.PathMap) (ProduceStats, Progress, *Memory) {
		q := NewMemory(MemoryOptions{Wait: 50 * time.Millisecond})
		p := NewProducer(q, ProducerOptions{Model: testModel, Chunk: 3}, nil)
		w := NewWorker(q, EmbedFunc(v.EmbedBatch), IndexSink{Index: im, Model: testModel}, WorkerOptions{Model: testModel, BatchSize: 4, Paths: paths}, nil)
		var wg sync.WaitGroup
		var st ProduceStats
		var perr, werr error
		wg.Go(func() {
			defer q.Close()
			st, perr = p.Immich(ctx, im, force)
		})
		wg.Go(func() { werr = w.Run(ctx) })
		pr, err := p.Watch(ctx, 20*time.Millisecond, nil)
		wg.Wait()
		if perr != nil || werr != nil || err != nil {
			t.Fatalf("producer %v, worker %v, watch %v", perr, werr, err)
		}
		return st, pr, q
	}
	st, pr, q := index(false, paths)
	if st.Queued != int64(len(ids)) || pr.Done != int64(len(ids)-1) || pr.Failed != 1 {
		t.Fatalf("produced %+v, progress %+v", st, pr)
	}
	dead := q.Dead()
	if len(dead) != 1 || dead[0].Item.AssetID != missing.ID || !strings.Contains(dead[0].Error, "no such file") {
		t.Fatalf("dead letters %+v", dead)
	}
	// Each asset is found by the embedding of its own preview.
	for _, a := range page {
		if a.ID == missing.ID {
			continue
		}
		hits, err := im.Search(ctx, embedFile(t, v, a.Path), 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) == 0 || hits[0].AssetID != a.ID || hits[0].Distance > 1e-4 {
			t.Fatalf("search by the preview of %s: %+v", a.ID, hits)
		}
	}
	// Only the asset without an embedding is listed again; force lists all
	// that have a preview file in the database.
	st, _, _ = index(false, paths)
	if st.Queued != 1 {
		t.Fatalf("second run queued %d, want the one that failed", st.Queued)
	}
	st, pr, _ = index(true, paths)
	if st.Queued != int64(len(ids)) || pr.Done != int64(len(ids)-1) {
		t.Fatalf("forced run: %+v, %+v", st, pr)
	}
	// A worker whose path map does not cover the previews dead-letters
	// them with the reason.
	st, pr, q = index(true, mustPathMap(t, "/elsewhere="+library))
	if st.Queued != int64(len(ids)) || pr.Failed != int64(len(ids)) {
		t.Fatalf("unmapped: %+v, %+v", st, pr)
	}
	if dead := q.Dead(); len(dead) == 0 || !strings.Contains(dead[0].Error, "none of the mapped prefixes") {
		t.Fatalf("dead letter %+v", dead[0])
	}
}

func mustPathMap(t *testing.T, rules ...string) search.PathMap {
	t.Helper()
	m, err := search.ParsePathMap(rules)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
