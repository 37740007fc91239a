package search

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"
	pgxvec "github.com/pgvector/pgvector-go/pgx"
)

// Errors returned by this package; wrap-checked with errors.Is.
var (
	// ErrDimensionMismatch: a model's embedding size differs from the
	// column it would be stored in. Never resolved by rewriting data.
	ErrDimensionMismatch = errors.New("embedding dimension mismatch")
	// ErrUnknownModel: a CLIP model that has no table in this store yet
	// (EnsureModel creates it; nothing was indexed with the model).
	ErrUnknownModel = errors.New("unknown CLIP model")
	// ErrSchema: the database lacks something this package needs (pgvector,
	// an Immich table), or a name is not a valid identifier.
	ErrSchema = errors.New("database schema")
	// ErrInvalid: an argument is out of range (empty vector, bad limit).
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound: no person (or other row) with the given id.
	ErrNotFound = errors.New("not found")
	// ErrTooManyConnections: the server refused a connection because it
	// serves as many as it allows (PGlite answers so in plain text,
	// outside the protocol, and pgx would report a garbled message
	// length). It passes when other clients close theirs (IsTransient).
	ErrTooManyConnections = errors.New("the database refused the connection: too many connections (other clients hold them all)")
)

// DefaultSchema holds our tables unless Options.Schema says otherwise.
const DefaultSchema = "mlserve"

// DefaultMaxConns is small on purpose: PGlite multiplexes a handful of
// connections onto one backend, and a real server prefers few busy
// connections to many idle ones.
const DefaultMaxConns = 4

// Options configure a Store.
type Options struct {
	// URL is the PostgreSQL connection URL (postgres://user:pass@host/db).
	// Ignored when Pool is set.
	URL string
	// Pool, when set, is used instead of opening one from URL. It must run
	// with QueryExecModeCacheDescribe (see NewPool) and stays the caller's
	// to close.
	Pool *pgxpool.Pool
	// Schema holds our tables; DefaultSchema when empty. Several independent
	// indexes may share one database in different schemas.
	Schema string
	// MaxConns caps the pool opened from URL; DefaultMaxConns when zero.
	MaxConns int32
	// DeferIndexes skips building HNSW indexes when a table is created. Bulk
	// loads are much faster without them (on PGlite, minutes versus
	// seconds); call CreateIndexes afterwards.
	DeferIndexes bool

	// noTextExtensions makes Open act as if pg_trgm and unaccent were
	// missing (tests of the fallback: the extensions are database-wide).
	noTextExtensions bool
}

// Store is our own schema: assets, CLIP embeddings per model, faces, OCR.
// It is safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	ownsPool bool
	schema   string
	defer_   bool
	logger   *slog.Logger

	noTextExt bool

	// text is what the database offers for OCR search, found by Open.
	text textSearch

	mu     sync.Mutex
	models map[string]clipTable // by model name
}

// Open connects, applies pending migrations and returns the store.
func Open(ctx context.Context, opts Options, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	schema := opts.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	if !validIdent(schema) {
		return nil, fmt.Errorf("%w: schema name %q: want [a-z_][a-z0-9_]*", ErrSchema, schema)
	}
	s := &Store{pool: opts.Pool, schema: schema, defer_: opts.DeferIndexes, noTextExt: opts.noTextExtensions,
		logger: logger, models: map[string]clipTable{}}
	if s.pool != nil {
		if err := s.migrate(ctx, nil); err != nil {
			return nil, err
		}
		return s, nil
	}
	cfg, err := PoolConfig(ctx, opts.URL, opts.MaxConns, logger)
	if err != nil {
		return nil, err
	}
	// Migrations run on a connection of their own before the pool exists:
	// they may create the vector extension, and pool connections register
	// the vector codec when they connect.
	if err := s.migrate(ctx, cfg.ConnConfig); err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	s.pool, s.ownsPool = pool, true
	return s, nil
}

// Close closes the pool if the store opened it.
func (s *Store) Close() {
	if s.ownsPool {
		s.pool.Close()
	}
}

// Pool returns the connection pool (for health checks and tests).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema returns the schema that holds the tables.
func (s *Store) Schema() string { return s.schema }

// NewPool opens a pool configured by PoolConfig.
func NewPool(ctx context.Context, url string, maxConns int32, logger *slog.Logger) (*pgxpool.Pool, error) {
	cfg, err := PoolConfig(ctx, url, maxConns, logger)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	return pool, nil
}

// PoolConfig parses url and sets up a pool the way this package needs it:
//
//   - statement descriptions cached per connection
//     (QueryExecModeCacheDescribe): named prepared statements collide behind
//     transaction-mode poolers and PGlite's multiplexer;
//   - except on PGlite, which interleaves the protocol messages of its
//     client connections on one backend, so that one connection's Bind can
//     meet another's Parse ("unnamed prepared statement does not exist", or
//     worse, the wrong statement). There every statement goes as one simple
//     protocol message (QueryExecModeSimpleProtocol), which PGlite runs
//     whole. It is detected with one connection at start;
//   - a default_query_exec_mode given in the URL always wins;
//   - pgvector's binary codec registered on each connection when the
//     vector type exists.
func PoolConfig(ctx context.Context, url string, maxConns int32, logger *slog.Logger) (*pgxpool.Config, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	cfg.MaxConns = maxConns
	cfg.AfterConnect = registerVector
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &refusalConn{Conn: c}, nil
	}
	if strings.Contains(url, "default_query_exec_mode") {
		return cfg, nil
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheDescribe
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()", pgx.QueryExecModeSimpleProtocol).Scan(&version); err != nil {
		return nil, fmt.Errorf("database version: %w", err)
	}
	if strings.Contains(version, "PGlite") {
		logger.Debug("PGlite detected: using the simple query protocol", "version", version)
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	}
	return cfg, nil
}

// tooMany is what PGlite's socket server writes, instead of a protocol
// message, to a connection beyond its limit (-m), before it hangs up.
var tooMany = []byte("Too many connections")

// refusalConn reports a plain-text refusal as ErrTooManyConnections
// instead of letting pgx read "Too " as a message type and a length.
type refusalConn struct {
	net.Conn
	read bool
}

func (c *refusalConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.read && n > 0 {
		c.read = true
		if n >= 3 && bytes.HasPrefix(tooMany, p[:min(n, len(tooMany))]) {
			return 0, ErrTooManyConnections
		}
	}
	return n, err
}

// registerVector teaches a connection pgvector's binary format, when the
// extension is installed; without it vectors still travel as text.
func registerVector(ctx context.Context, conn *pgx.Conn) error {
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT to_regtype('vector') IS NOT NULL").Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return nil
	}
	return pgxvec.RegisterTypes(ctx, conn)
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// validIdent accepts the lower-case identifiers we create ourselves, so
// they never need quoting rules beyond pgx.Identifier's.
func validIdent(s string) bool { return identRE.MatchString(s) }

// table returns schema.name, quoted.
func (s *Store) table(name string) string { return pgx.Identifier{s.schema, name}.Sanitize() }

// IsTransient reports whether err is worth retrying later as is: the
// database was unreachable, the connection broke, the server is shutting
// down or out of resources, or a transaction lost a serialization race. Any
// other database error (a constraint, a type) will fail again the same way.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrTooManyConnections) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"53", // insufficient resources
			"57", // operator intervention (shutdown, cancel)
			"58", // system error
			"40": // transaction rollback (serialization, deadlock)
			return true
		}
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	// A connection cut mid-query surfaces as EOF or a reset socket.
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE)
}

// vectorArray is the argument for a $n::vector[] parameter. The simple
// protocol (PGlite) interpolates arguments as literals and has no encoder
// for a slice of vectors: there they go as text, which the ::vector[] cast
// parses. Otherwise they go in pgvector's binary format.
func vectorArray(pool *pgxpool.Pool, vs []pgvector.Vector) any {
	if pool.Config().ConnConfig.DefaultQueryExecMode != pgx.QueryExecModeSimpleProtocol {
		return vs
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.String()
	}
	return out
}
