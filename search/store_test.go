package search

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mlserve/mlserve/internal/testenv"
)

// testSchema returns a fresh schema name for t, dropped when t ends. Tests
// of different packages share one PGlite, so every test lives in a schema
// of its own.
func testSchema(t testing.TB) string {
	t.Helper()
	url := testenv.DatabaseURL(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "_"))
	if len(name) > 40 {
		name = name[:40]
	}
	schema := "t_" + name + "_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Logf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// testConn is a plain connection for fixtures. It speaks the simple
// protocol: PGlite interleaves extended-protocol messages of concurrent
// connections (see PoolConfig).
func testConn(t testing.TB) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	conn, err := pgx.ConnectConfig(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func openStore(t testing.TB, opts Options) *Store {
	t.Helper()
	if opts.URL == "" && opts.Pool == nil {
		opts.URL = testenv.DatabaseURL(t)
	}
	if opts.Schema == "" {
		opts.Schema = testSchema(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Open(ctx, opts, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// unitVec is a random unit vector (seeded, so failures reproduce).
func unitVec(r *mrand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	var n float64
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		n += x * x
	}
	n = math.Sqrt(n)
	for i := range v {
		v[i] = float32(float64(v[i]) / n)
	}
	return v
}

func TestMigrateConcurrentAndIdempotent(t *testing.T) {
	schema := testSchema(t)
	url := testenv.DatabaseURL(t)
	ctx := ctxT(t)
	// Several processes starting at once: each applies the migrations
	// under the advisory lock, and each step is applied exactly once.
	const n = 3
	errs := make([]error, n)
	stores := make([]*Store, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			stores[i], errs[i] = Open(ctx, Options{URL: url, Schema: schema, MaxConns: 1}, nil)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open #%d: %v", i, err)
		}
		defer stores[i].Close()
	}
	var rows int
	if err := stores[0].Pool().QueryRow(ctx, stores[0].expand("SELECT count(*) FROM {{s}}.schema_migrations")).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(migrations) {
		t.Errorf("schema_migrations has %d rows, want %d", rows, len(migrations))
	}
	// Opening again changes nothing.
	s := openStore(t, Options{Schema: schema})
	v, err := s.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := migrations[len(migrations)-1].version; v != want {
		t.Errorf("version %d, want %d", v, want)
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	s := openStore(t, Options{})
	ctx := ctxT(t)
	if _, err := s.Pool().Exec(ctx, s.expand("INSERT INTO {{s}}.schema_migrations (version, name) VALUES (9999, 'future')")); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, Options{URL: testenv.DatabaseURL(t), Schema: s.Schema()}, nil)
	if !errors.Is(err, ErrSchema) {
		t.Fatalf("Open on a newer schema: %v, want ErrSchema", err)
	}
}

func TestOpenRejectsBadSchemaName(t *testing.T) {
	for _, name := range []string{"Public", "a-b", `x"; DROP TABLE y; --`, strings.Repeat("a", 64)} {
		t.Run(name, func(t *testing.T) {
			_, err := Open(context.Background(), Options{URL: "postgres://127.0.0.1:1/x", Schema: name}, nil)
			if !errors.Is(err, ErrSchema) {
				t.Fatalf("schema %q: %v, want ErrSchema", name, err)
			}
		})
	}
}

func TestEnsureModelDimensions(t *testing.T) {
	s := openStore(t, Options{})
	ctx := ctxT(t)
	m, err := s.EnsureModel(ctx, "ViT-B-32__openai", 512)
	if err != nil {
		t.Fatal(err)
	}
	if !validIdent(m.Table) || !strings.HasPrefix(m.Table, "clip_vit_b_32__openai_") {
		t.Errorf("table name %q", m.Table)
	}
	if _, err := s.EnsureModel(ctx, "ViT-B-32__openai", 512); err != nil {
		t.Fatalf("again: %v", err)
	}
	if _, err := s.EnsureModel(ctx, "ViT-B-32__openai", 768); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("cached, other dim: %v, want ErrDimensionMismatch", err)
	}
	// A second process (no cache) sees the same registry.
	s2 := openStore(t, Options{Schema: s.Schema()})
	if _, err := s2.EnsureModel(ctx, "ViT-B-32__openai", 768); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("fresh store, other dim: %v, want ErrDimensionMismatch", err)
	}
	// A column altered behind the registry's back is caught too.
	s3 := openStore(t, Options{Schema: s.Schema()})
	if _, err := s3.Pool().Exec(ctx, fmt.Sprintf("ALTER TABLE %s ALTER COLUMN embedding TYPE vector(3) USING NULL", s3.table(m.Table))); err != nil {
		t.Fatal(err)
	}
	if _, err := s3.EnsureModel(ctx, "ViT-B-32__openai", 512); !errors.Is(err, ErrDimensionMismatch) {
		t.Fatalf("altered column: %v, want ErrDimensionMismatch", err)
	}
	// Another model of another size is fine, in its own table.
	m2, err := s2.EnsureModel(ctx, "ViT-L-14__openai", 768)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Table == m.Table {
		t.Fatal("two models share a table")
	}
	for _, bad := range []struct {
		name string
		dim  int
	}{{"", 512}, {"x", 0}, {"x", -1}} {
		if _, err := s.EnsureModel(ctx, bad.name, bad.dim); !errors.Is(err, ErrInvalid) {
			t.Errorf("EnsureModel(%q, %d): %v, want ErrInvalid", bad.name, bad.dim, err)
		}
	}
}

func TestEnsureModelConcurrent(t *testing.T) {
	schema := testSchema(t)
	ctx := ctxT(t)
	stores := []*Store{openStore(t, Options{Schema: schema}), openStore(t, Options{Schema: schema}), openStore(t, Options{Schema: schema})}
	var wg sync.WaitGroup
	errs := make([]error, len(stores))
	tables := make([]string, len(stores))
	for i, s := range stores {
		wg.Go(func() {
			m, err := s.EnsureModel(ctx, "m", 16)
			errs[i], tables[i] = err, m.Table
		})
	}
	wg.Wait()
	for i := range stores {
		if errs[i] != nil {
			t.Fatalf("store %d: %v", i, errs[i])
		}
		if tables[i] != tables[0] {
			t.Fatalf("tables differ: %v", tables)
		}
	}
	models, err := stores[0].Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 1 {
		t.Fatalf("models: %+v", models)
	}
}

func TestTableName(t *testing.T) {
	tests := []struct{ model, prefix string }{
		{"ViT-B-32__openai", "clip_vit_b_32__openai_"},
		{"XLM-Roberta-Large-ViT-H-14__frozen_laion5b_s13b_b90k", "clip_xlm_roberta_large_vit_h_14__frozen_laion_"},
		{`"; DROP`, "clip____drop_"},
		{"ünïcode", "clip__n_code_"},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			got := tableName(tt.model)
			if !strings.HasPrefix(got, tt.prefix) || !validIdent(got) {
				t.Errorf("tableName(%q) = %q, want prefix %q and a valid identifier", tt.model, got, tt.prefix)
			}
		})
	}
	if tableName("a-b") == tableName("a_b") {
		t.Error("names that sanitise alike must still differ")
	}
}

func FuzzTableName(f *testing.F) {
	for _, s := range []string{"ViT-B-32__openai", "", "ü", strings.Repeat("x", 300), "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, model string) {
		if got := tableName(model); !validIdent(got) {
			t.Fatalf("tableName(%q) = %q: not a valid identifier", model, got)
		}
	})
}

func TestIsTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"dimension", fmt.Errorf("x: %w", ErrDimensionMismatch), false},
		{"canceled", context.Canceled, false},
		{"deadline", context.DeadlineExceeded, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsTransient(tt.err); got != tt.want {
				t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	// A server that is not there is transient (it may come back).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, Options{URL: "postgres://u:p@127.0.0.1:1/db?sslmode=disable&connect_timeout=2"}, nil)
	if err == nil || !IsTransient(err) {
		t.Errorf("refused connection: IsTransient(%v) = false", err)
	}
}
