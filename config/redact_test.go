package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// The secrets of TestSecretsNeverShown; each appears in no other setting.
const (
	dbPassword    = "Db-Pa55word!"
	redisPassword = "r3dis-Pa55"
	hfToken       = "hf_SecretTokenValue123"
)

var secrets = []string{dbPassword, redisPassword, hfToken, "Db-Pa55word%21"}

func checkNoSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range secrets {
		if strings.Contains(s, secret) {
			t.Errorf("%s shows the secret %q:\n%s", what, secret, s)
		}
	}
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// TestSecretsNeverShown sets passwords in both URLs and HF_TOKEN and looks
// for them in everything the configuration shows: the table, the start-up
// log line (text and JSON), fmt's output, Load's errors, and the errors of
// failed connection attempts with those URLs once passed through the
// Redactor, as cmd prints them.
func TestSecretsNeverShown(t *testing.T) {
	port := strconv.Itoa(closedPort(t))
	dbURL := "postgres://immich:Db-Pa55word%21@127.0.0.1:" + port + "/immich?sslmode=disable"
	redisURL := "redis://default:" + redisPassword + "@127.0.0.1:" + port + "/0"
	vars := env("MLSERVE_DATABASE_URL", dbURL, "MLSERVE_REDIS_URL", redisURL, "HF_TOKEN", hfToken)
	c, err := Load(vars)
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != dbURL || c.RedisURL != redisURL || c.HFToken != hfToken {
		t.Fatal("the settings themselves must keep the secrets")
	}
	var table strings.Builder
	shown := map[string]string{}
	for _, e := range c.Table() {
		fmt.Fprintf(&table, "%s=%s (default %s)\n", e.Name, e.Value, e.Default)
		shown[e.Name] = e.Value
	}
	checkNoSecret(t, "the table", table.String())
	if want := "postgres://immich:xxxxx@127.0.0.1:" + port + "/immich?sslmode=disable"; shown["MLSERVE_DATABASE_URL"] != want {
		t.Errorf("MLSERVE_DATABASE_URL shown as %q, want %q", shown["MLSERVE_DATABASE_URL"], want)
	}
	if shown["HF_TOKEN"] != "set" {
		t.Errorf("HF_TOKEN shown as %q", shown["HF_TOKEN"])
	}

	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("starting mlserve", "config", c)
	}
	checkNoSecret(t, "the start-up line", logs.String())
	if !strings.Contains(logs.String(), "xxxxx@127.0.0.1") {
		t.Errorf("start-up line without the masked URLs:\n%s", logs.String())
	}
	checkNoSecret(t, "fmt", fmt.Sprintf("%v %+v %#v %s", c, c, c, c))

	// Load's errors quote the values they reject.
	_, err = Load(env("MLSERVE_DATABASE_URL", dbURL, "HF_TOKEN", hfToken, "IMMICH_PORT", redisURL,
		"MLSERVE_MAX_QUEUE", "password="+dbPassword))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	checkNoSecret(t, "Load's error", err.Error())

	// Errors of clients that could not connect or parse, through the
	// Redactor (pgx masks its own parse errors; go-redis quotes the URL).
	r := c.Redactor()
	var clientErrs []error
	_, perr := redis.ParseURL("redis://default:" + redisPassword + "@127.0.0.1:badport/0")
	clientErrs = append(clientErrs, perr)
	ropt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	ropt.MaxRetries = -1
	rc := redis.NewClient(ropt)
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	clientErrs = append(clientErrs, rc.Ping(ctx).Err())
	_, err = pgx.Connect(ctx, dbURL)
	clientErrs = append(clientErrs, err)
	_, err = pgx.Connect(ctx, "host=127.0.0.1 port="+port+" user=immich password="+dbPassword+" sslmode=bogus")
	clientErrs = append(clientErrs, err)
	for i, cerr := range clientErrs {
		if cerr == nil {
			t.Fatalf("client error %d: connecting to a closed port succeeded", i)
		}
		masked := r.Error(fmt.Errorf("search database: %w", cerr))
		checkNoSecret(t, "a client error", masked.Error())
		if !errors.Is(masked, cerr) {
			t.Errorf("masked error %d does not wrap its cause", i)
		}
		var logs bytes.Buffer
		slog.New(r.Handler(slog.NewTextHandler(&logs, nil))).Error("smart search disabled", "err", cerr, "url", redisURL)
		checkNoSecret(t, "a logged client error", logs.String())
	}
	// The redis parse error quoted the password before masking: the test
	// would mean nothing otherwise.
	if !strings.Contains(perr.Error(), redisPassword) {
		t.Fatalf("go-redis no longer quotes the URL (%v); rethink this test", perr)
	}
}

func TestFailMasksValues(t *testing.T) {
	p := &parser{lookup: env()}
	p.fail("MLSERVE_DATABASE_URL", "postgres://u:"+dbPassword+"@h/db", "malformed")
	p.fail("X", "host=h password="+dbPassword, "malformed")
	for _, err := range p.errs {
		checkNoSecret(t, "fail", err.Error())
	}
}
