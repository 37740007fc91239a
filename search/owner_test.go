package search

import (
	"fmt"
	mrand "math/rand/v2"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"
)

// TestImmichSearchOwner: a search for one user finds only that user's
// assets, even when another user's asset is nearer; without an owner,
// both users' assets are found.
func TestImmichSearchOwner(t *testing.T) {
	ctx := ctxT(t)
	f := newImmichFixture(t, 512)
	im := openImmich(t, f, PathMap{})
	tbl := func(name string) string { return pgx.Identifier{f.schema, name}.Sanitize() }

	var first, other string
	if err := f.conn.QueryRow(ctx, fmt.Sprintf(`SELECT "ownerId"::text FROM %s LIMIT 1`, tbl("asset"))).Scan(&first); err != nil {
		t.Fatal(err)
	}
	if err := f.conn.QueryRow(ctx, fmt.Sprintf(`INSERT INTO %s (email) VALUES ('b@example.com') RETURNING id::text`, tbl("user"))).Scan(&other); err != nil {
		t.Fatal(err)
	}
	q := unitVec(mrand.New(mrand.NewPCG(4, 4)), 512)
	var otherAsset string
	err := f.conn.QueryRow(ctx, fmt.Sprintf(`
INSERT INTO %s ("deviceAssetId", "ownerId", "deviceId", type, "originalPath", "fileCreatedAt", "fileModifiedAt", checksum, "originalFileName", visibility)
VALUES ('b1', $1::uuid, 'dev', 'IMAGE', '/usr/src/app/upload/library/b/b1.jpg', now(), now(), sha256('b1'::bytea), 'b1.jpg', 'timeline')
RETURNING id::text`, tbl("asset")), other).Scan(&otherAsset)
	if err != nil {
		t.Fatal(err)
	}
	// The other user's asset has exactly the query's embedding.
	if _, err := f.conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s ("assetId", embedding) VALUES ($1::uuid, $2::text::vector)`, tbl("smart_search")), otherAsset, pgvector.NewVector(q).String()); err != nil {
		t.Fatal(err)
	}

	hits, err := im.SearchOwner(ctx, q, first, MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != len(f.embedded) {
		t.Fatalf("first user's search: %d hits, want %d", len(hits), len(f.embedded))
	}
	for _, h := range hits {
		if h.AssetID == otherAsset {
			t.Fatal("the first user's search found the other user's asset")
		}
	}
	hits, err = im.SearchOwner(ctx, q, other, MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 1 || hits[0].AssetID != otherAsset {
		t.Fatalf("other user's search: %+v", hits)
	}
	hits, err = im.Search(ctx, q, MaxLimit)
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != len(f.embedded)+1 || hits[0].AssetID != otherAsset {
		t.Fatalf("search without an owner: %d hits, first %+v", len(hits), hits[0])
	}
}
