package search

import (
	_ "embed"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"

	"github.com/mlserve/mlserve/internal/testenv"
)

//go:embed testdata/immich_schema.sql
var immichSchemaSQL string

// ImmichFixture is a database with Immich's table shapes, in a schema of
// its own, with assets in every state the listing must tell apart.
type immichFixture struct {
	schema string
	conn   *pgx.Conn
	// want lists the assets the server would queue (no embedding yet),
	// embedded the ones that already have one; both sorted by id.
	want, embedded []string
	previews       map[string]string // asset id → preview path
	ids            map[string]string // asset name → id
}

func newImmichFixture(t *testing.T, dim int) *immichFixture {
	t.Helper()
	ctx := ctxT(t)
	f := &immichFixture{schema: testSchema(t), previews: map[string]string{}, ids: map[string]string{}}
	f.conn = testConn(t)
	conn := f.conn
	schemaSQL := immichSchemaSQL
	if dim != 512 {
		schemaSQL = strings.ReplaceAll(schemaSQL, `"embedding" vector(512) NOT NULL
);
ALTER TABLE smart_search`, fmt.Sprintf(`"embedding" vector(%d) NOT NULL
);
ALTER TABLE smart_search`, dim))
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	for _, q := range []string{
		"CREATE EXTENSION IF NOT EXISTS vector",
		"CREATE SCHEMA " + pgx.Identifier{f.schema}.Sanitize(),
		"SET LOCAL search_path TO " + pgx.Identifier{f.schema}.Sanitize() + ", public",
		schemaSQL,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("fixture: %v", err)
		}
	}
	var owner string
	if err := tx.QueryRow(ctx, `INSERT INTO "user" (email) VALUES ('a@example.com') RETURNING id::text`).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	type asset struct {
		name                 string
		visibility           string
		deleted, preview     bool
		previewAt, embedding bool
		pending              bool // what the listing must return
	}
	assets := []asset{
		{name: "plain", visibility: "timeline", preview: true, previewAt: true, pending: true},
		{name: "archived", visibility: "archive", preview: true, previewAt: true, pending: true},
		{name: "locked", visibility: "locked", preview: true, previewAt: true, pending: true},
		{name: "hidden", visibility: "hidden", preview: true, previewAt: true},
		{name: "deleted", visibility: "timeline", deleted: true, preview: true, previewAt: true},
		{name: "no-preview-yet", visibility: "timeline", preview: true},
		{name: "no-preview-file", visibility: "timeline", previewAt: true},
		{name: "embedded", visibility: "timeline", preview: true, previewAt: true, embedding: true},
	}
	for i := range 7 {
		assets = append(assets, asset{name: fmt.Sprintf("bulk%d", i), visibility: "timeline", preview: true, previewAt: true, pending: true})
	}
	r := mrand.New(mrand.NewPCG(9, 9))
	for _, a := range assets {
		var id string
		err := tx.QueryRow(ctx, `
INSERT INTO asset ("deviceAssetId", "ownerId", "deviceId", type, "originalPath", "fileCreatedAt", "fileModifiedAt",
	checksum, "originalFileName", visibility, "deletedAt")
VALUES ($1, $2::uuid, 'dev', 'IMAGE', '/usr/src/app/upload/library/' || $1 || '.jpg', now(), now(),
	sha256($1::bytea), $1 || '.jpg', $3::asset_visibility_enum, CASE WHEN $4 THEN now() END)
RETURNING id::text`, a.name, owner, a.visibility, a.deleted).Scan(&id)
		if err != nil {
			t.Fatalf("asset %s: %v", a.name, err)
		}
		f.ids[a.name] = id
		preview := "/usr/src/app/upload/thumbs/" + id[:2] + "/" + id + "-preview.jpeg"
		if a.preview {
			if _, err := tx.Exec(ctx, `INSERT INTO asset_file ("assetId", type, path) VALUES ($1::uuid, 'preview', $2)`, id, preview); err != nil {
				t.Fatal(err)
			}
			f.previews[id] = preview
		}
		// Every asset has a thumbnail; the listing must not take it for a
		// preview.
		if _, err := tx.Exec(ctx, `INSERT INTO asset_file ("assetId", type, path) VALUES ($1::uuid, 'thumbnail', $2)`, id, "/thumb/"+id); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO asset_job_status ("assetId", "previewAt") VALUES ($1::uuid, CASE WHEN $2 THEN now() END)`, id, a.previewAt); err != nil {
			t.Fatal(err)
		}
		if a.embedding {
			if _, err := tx.Exec(ctx, `INSERT INTO smart_search ("assetId", embedding) VALUES ($1::uuid, $2::text::vector)`, id, pgvector.NewVector(unitVec(r, dim)).String()); err != nil {
				t.Fatal(err)
			}
			f.embedded = append(f.embedded, id)
		}
		if a.pending {
			f.want = append(f.want, id)
		}
		// Faces and OCR rows that Immich mode must never touch.
		var face string
		if err := tx.QueryRow(ctx, `INSERT INTO asset_face ("assetId") VALUES ($1::uuid) RETURNING id::text`, id).Scan(&face); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO face_search ("faceId", embedding) VALUES ($1::uuid, $2::text::vector)`, face, pgvector.NewVector(unitVec(r, 512)).String()); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO asset_ocr ("assetId", x1, y1, x2, y2, x3, y3, x4, y4, "boxScore", "textScore", text) VALUES ($1::uuid, 0,0,1,0,1,1,0,1, 0.9, 0.9, 'hi')`, id); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO ocr_search ("assetId", text) VALUES ($1::uuid, 'hi')`, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO system_metadata (key, value) VALUES ('system-config', '{"machineLearning": {"clip": {"enabled": true, "modelName": "ViT-B-16-SigLIP__webli"}}}')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	slices.Sort(f.want)
	slices.Sort(f.embedded)
	return f
}

// snapshot describes everything of the fixture that Immich mode must not
// change: every column's type, every index, and the faces/OCR rows.
func (f *immichFixture) snapshot(t *testing.T) string {
	t.Helper()
	ctx := ctxT(t)
	var b strings.Builder
	rows, err := f.conn.Query(ctx, `
SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' ' || a.attstorage::text
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL SELECT indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = $1
ORDER BY 1`, f.schema)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString(strings.Join(lines, "\n"))
	for _, tbl := range []string{"asset_face", "face_search", "asset_ocr", "ocr_search"} {
		var n int
		var sum string
		q := fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM %s t`, pgx.Identifier{f.schema, tbl}.Sanitize())
		if err := f.conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "\n%s %d %s", tbl, n, sum)
	}
	return b.String()
}

func openImmich(t *testing.T, f *immichFixture, paths PathMap) *Immich {
	t.Helper()
	im, err := OpenImmich(ctxT(t), ImmichOptions{URL: testenv.DatabaseURL(t), Schema: f.schema, Paths: paths}, nil)
	if err != nil {
		t.Fatalf("OpenImmich: %v", err)
	}
	t.Cleanup(im.Close)
	return im
}

func TestImmichPendingAndUpsert(t *testing.T) {
	ctx := ctxT(t)
	f := newImmichFixture(t, 512)
	before := f.snapshot(t)
	paths, err := ParsePathMap([]string{"/usr/src/app/upload=/mnt/immich"})
	if err != nil {
		t.Fatal(err)
	}
	im := openImmich(t, f, paths)
	if im.Dim() != 512 {
		t.Fatalf("Dim = %d", im.Dim())
	}
	model, err := im.ConfiguredModel(ctx)
	if err != nil || model != "ViT-B-16-SigLIP__webli" {
		t.Fatalf("ConfiguredModel = %q, %v", model, err)
	}
	if err := im.CheckModel("ViT-L-14__openai", 768); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("CheckModel 768 on vector(512): %v", err)
	}
	if err := im.CheckModel(model, 512); err != nil {
		t.Fatal(err)
	}

	// Page through the listing three at a time.
	var got []ImmichAsset
	after := ""
	for {
		page, err := im.Pending(ctx, false, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1].ID
	}
	var ids []string
	for _, a := range got {
		ids = append(ids, a.ID)
		if a.Preview != f.previews[a.ID] {
			t.Errorf("asset %s: preview %q, want %q", a.ID, a.Preview, f.previews[a.ID])
		}
		if want := strings.Replace(a.Preview, "/usr/src/app/upload", "/mnt/immich", 1); a.Path != want || a.MapErr != nil {
			t.Errorf("asset %s: path %q (%v), want %q", a.ID, a.Path, a.MapErr, want)
		}
	}
	if !slices.Equal(ids, f.want) {
		t.Fatalf("pending:\n got %v\nwant %v", ids, f.want)
	}
	n, err := im.CountPending(ctx, false)
	if err != nil || n != int64(len(f.want)) {
		t.Fatalf("CountPending = %d, %v; want %d", n, err, len(f.want))
	}
	all, err := im.Pending(ctx, true, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(f.want)+len(f.embedded) {
		t.Fatalf("force: %d assets, want %d", len(all), len(f.want)+len(f.embedded))
	}

	// Embed them: the upsert fills smart_search, and the listing empties.
	r := mrand.New(mrand.NewPCG(1, 1))
	var es []Embedding
	for _, id := range f.want {
		es = append(es, Embedding{AssetID: id, Embedding: unitVec(r, 512)})
	}
	es = append(es, es[0]) // a repeated asset in one batch
	written, err := im.UpsertCLIP(ctx, es)
	if err != nil {
		t.Fatal(err)
	}
	if written != int64(len(f.want)) {
		t.Errorf("UpsertCLIP wrote %d rows, want %d", written, len(f.want))
	}
	// Again (at-least-once): same rows, updated in place.
	if _, err := im.UpsertCLIP(ctx, es); err != nil {
		t.Fatal(err)
	}
	left, err := im.Pending(ctx, false, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("still pending after upsert: %+v", left)
	}
	if mid := f.snapshot(t); mid != before {
		t.Fatalf("Immich mode changed the database outside smart_search:\nbefore:\n%s\nafter:\n%s", before, mid)
	}
	// An asset deleted meanwhile is dropped, not a failed batch.
	if _, err := f.conn.Exec(ctx, fmt.Sprintf(`DELETE FROM %s WHERE id = $1::uuid`, pgx.Identifier{f.schema, "asset"}.Sanitize()), f.want[1]); err != nil {
		t.Fatal(err)
	}
	before = f.snapshot(t) // the cascade removed that asset's faces
	written, err = im.UpsertCLIP(ctx, es[:3])
	if err != nil {
		t.Fatalf("upsert with a deleted asset: %v", err)
	}
	if written != 2 {
		t.Errorf("wrote %d rows, want 2", written)
	}
	if _, err := im.UpsertCLIP(ctx, []Embedding{{AssetID: f.want[0], Embedding: make([]float32, 768)}}); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("768-d upsert: %v", err)
	}

	// Search finds each asset by its own embedding, first.
	for _, e := range es {
		if e.AssetID == f.ids["locked"] || e.AssetID == f.want[1] {
			continue
		}
		hits, err := im.Search(ctx, e.Embedding, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) == 0 || hits[0].AssetID != e.AssetID || hits[0].Distance > 1e-5 {
			t.Fatalf("search by the embedding of %s: %+v", e.AssetID, hits)
		}
		if !strings.HasPrefix(hits[0].Path, "/usr/src/app/upload/library/") {
			t.Errorf("hit path %q", hits[0].Path)
		}
	}
	// The locked asset has an embedding but is not shown by search.
	hits, err := im.Search(ctx, es[0].Embedding, MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	// Shown: every embedded asset but the locked one and the one deleted
	// above (which may itself be the locked one: ids are random).
	shown := len(f.embedded)
	for _, id := range f.want {
		if id != f.ids["locked"] && id != f.want[1] {
			shown++
		}
	}
	if len(hits) != shown {
		t.Errorf("search over everything: %d hits, want %d", len(hits), shown)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hits {
		if h.AssetID == f.ids["locked"] || h.AssetID == f.ids["hidden"] || h.AssetID == f.ids["deleted"] {
			t.Errorf("search returned %s", h.Path)
		}
	}

	// Nothing but smart_search rows changed: not the schema, not faces or OCR.
	if after := f.snapshot(t); after != before {
		t.Fatalf("Immich mode changed the database outside smart_search:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestImmichDimension(t *testing.T) {
	ctx := ctxT(t)
	f := newImmichFixture(t, 768)
	im := openImmich(t, f, PathMap{})
	if im.Dim() != 768 {
		t.Fatalf("Dim = %d, want 768", im.Dim())
	}
	if err := im.CheckModel("ViT-B-32__openai", 512); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("512-d model on vector(768): %v", err)
	}
	if _, err := im.Search(ctx, make([]float32, 512), 3); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("512-d query: %v", err)
	}
	// Without path rules, paths are used as stored.
	page, err := im.Pending(ctx, false, "", 1)
	if err != nil || len(page) != 1 || page[0].Path != page[0].Preview {
		t.Fatalf("no path map: %+v, %v", page, err)
	}
}

func TestImmichNotAnImmichDatabase(t *testing.T) {
	s := openStore(t, Options{})
	_, err := OpenImmich(ctxT(t), ImmichOptions{URL: testenv.DatabaseURL(t), Schema: s.Schema()}, nil)
	if !errors.Is(err, ErrSchema) {
		t.Fatalf("OpenImmich on our own schema: %v, want ErrSchema", err)
	}
}

func TestImmichModelChangedMeanwhile(t *testing.T) {
	ctx := ctxT(t)
	f := newImmichFixture(t, 512)
	im := openImmich(t, f, PathMap{})
	if err := im.CheckModel("ViT-B-16-SigLIP__webli", 512); err != nil {
		t.Fatal(err)
	}
	r := mrand.New(mrand.NewPCG(2, 2))
	es := []Embedding{{AssetID: f.want[0], Embedding: unitVec(r, 512)}}
	if _, err := im.UpsertCLIP(ctx, es); err != nil {
		t.Fatal(err)
	}
	// An admin switches Immich to another model of the same size: the
	// server clears smart_search, and embeddings computed with the old
	// model must not land in it.
	if _, err := f.conn.Exec(ctx, fmt.Sprintf(`UPDATE %s SET value = '{"machineLearning": {"clip": {"modelName": "ViT-B-32__openai"}}}'`, pgx.Identifier{f.schema, "system_metadata"}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	if _, err := im.UpsertCLIP(ctx, es); !errors.Is(err, ErrModelChanged) {
		t.Fatalf("upsert after a model change: %v, want ErrModelChanged", err)
	}
}

func TestImmichDefaultModel(t *testing.T) {
	ctx := ctxT(t)
	f := newImmichFixture(t, 512)
	if _, err := f.conn.Exec(ctx, fmt.Sprintf(`UPDATE %s SET value = '{"machineLearning": {"clip": {}}}'`, pgx.Identifier{f.schema, "system_metadata"}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	im := openImmich(t, f, PathMap{})
	if m, err := im.ConfiguredModel(ctx); err != nil || m != DefaultImmichModel {
		t.Fatalf("ConfiguredModel = %q, %v", m, err)
	}
}
