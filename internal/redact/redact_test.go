package redact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"testing"
	"unicode"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://immich:s3cret@db:5432/immich", "postgres://immich:xxxxx@db:5432/immich"},
		{"redis://:s3cret@127.0.0.1:6379/0", "redis://:xxxxx@127.0.0.1:6379/0"},
		{`parse "redis://:s3cret@127.0.0.1:badport/0": invalid port ":badport" after host`,
			`parse "redis://:xxxxx@127.0.0.1:badport/0": invalid port ":badport" after host`},
		{"rediss://user:p/a:ss@h/0", "rediss://user:xxxxx@h/0"},
		{"host=db user=immich password=s3cret dbname=immich", "host=db user=immich password=xxxxx dbname=immich"},
		{"host=db password='s3 cret' dbname=x", "host=db password=xxxxx dbname=x"},
		{"postgres://db/immich?sslmode=disable&password=s3cret&x=1", "postgres://db/immich?sslmode=disable&password=xxxxx"},
		{"Authorization: Bearer abc.def-123", "Authorization: Bearer xxxxx"},
		{"token hf_AbCdEfGhIjKlMnOp used", "token hf_xxxxx used"},
		{"MLSERVE_REDIS_URL=redis://u:pw@h:1", "MLSERVE_REDIS_URL=redis://u:xxxxx@h:1"},
		// Nothing secret: unchanged.
		{"http://127.0.0.1:3003/predict", "http://127.0.0.1:3003/predict"},
		{"postgres://immich@db/immich", "postgres://immich@db/immich"},
		{"failed to connect to `user=immich database=immich`", "failed to connect to `user=immich database=immich`"},
		{"max_tokens=77 tokens=5", "max_tokens=77 tokens=5"},
		{"", ""},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestRedactorKnownSecrets(t *testing.T) {
	r := New("postgres://immich:p@ss:w0rd!@db/immich", "redis://:r%2Fsecret@h/0", "postgres://h/d?password=qu3ry&sslmode=disable", "hf_tokenvalue123", "", "abc")
	for _, tc := range []struct{ in, want string }{
		// The password alone, as a library might quote it.
		{`password authentication failed: "p@ss:w0rd!"`, `password authentication failed: "xxxxx"`},
		// Decoded and encoded forms.
		{"auth r/secret refused", "auth xxxxx refused"},
		{"auth r%2Fsecret refused", "auth xxxxx refused"},
		{"sent hf_tokenvalue123", "sent hf_xxxxx"},
		{"rejected qu3ry", "rejected xxxxx"},
		// A secret below MinSecretLen is not masked as a word.
		{"abc def", "abc def"},
	} {
		if got := r.String(tc.in); got != tc.want {
			t.Errorf("String(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
	var nilR *Redactor
	if got := nilR.String("redis://:pw@h"); got != "redis://:xxxxx@h" {
		t.Errorf("nil Redactor: %q", got)
	}
}

func TestError(t *testing.T) {
	r := New("s3cretpass")
	cause := fmt.Errorf("open: %w", fs.ErrNotExist)
	err := fmt.Errorf("connect postgres://u:s3cretpass@h/db: %w", cause)
	got := r.Error(err)
	if strings.Contains(got.Error(), "s3cretpass") {
		t.Fatalf("not masked: %v", got)
	}
	if !errors.Is(got, fs.ErrNotExist) || !errors.Is(got, cause) {
		t.Fatalf("masked error lost its causes: %v", got)
	}
	if r.Error(got) != got { //nolint:errorlint // identity: the same error value must come back
		t.Error("masking twice wrapped twice")
	}
	if r.Error(cause) != cause { //nolint:errorlint // identity: the same error value must come back
		t.Error("an error with nothing to mask was wrapped")
	}
	if r.Error(nil) != nil || Error(nil) != nil {
		t.Error("nil error")
	}
}

type dsn struct{ URL string }

type valuer struct{ s string }

func (v valuer) LogValue() slog.Value { return slog.StringValue(v.s) }

func TestHandler(t *testing.T) {
	r := New("hf_secrettoken1", "topsecretpw")
	for _, mk := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		log := slog.New(r.Handler(mk(&buf))).With("url", "redis://:topsecretpw@h/0")
		log.WithGroup("g").Info("connecting to postgres://u:topsecretpw@h/db",
			"err", fmt.Errorf("dial: %w", errors.New("password=topsecretpw rejected")),
			"struct", dsn{URL: "postgres://u:pw2pw2@h"},
			"valuer", valuer{"token hf_secrettoken1"},
			slog.Group("cfg", "HF_TOKEN", "hf_secrettoken1", "port", 3003),
			"n", 42)
		out := buf.String()
		for _, secret := range []string{"topsecretpw", "hf_secrettoken1", "pw2pw2"} {
			if strings.Contains(out, secret) {
				t.Errorf("%q leaked: %s", secret, out)
			}
		}
		if !strings.Contains(out, "3003") || !strings.Contains(out, "42") || !strings.Contains(out, "xxxxx") {
			t.Errorf("record mangled: %s", out)
		}
	}
	if !r.Handler(slog.DiscardHandler).Enabled(context.Background(), slog.LevelError) == slog.DiscardHandler.Enabled(context.Background(), slog.LevelError) {
		t.Error("Enabled not passed through")
	}
}

// FuzzString: a password written in a URL or a DSN never survives String,
// and a known secret never survives a Redactor, whatever surrounds it.
func FuzzString(f *testing.F) {
	f.Add("postgres", "immich", "s3cret", "db:5432/immich", "prefix ")
	f.Add("redis", "", "a:b/c", "127.0.0.1:6379/0", `parse "`)
	f.Add("rediss", "u", "p%40ss", "[::1]:1/0", "")
	f.Fuzz(func(t *testing.T, scheme, user, pass, rest, prefix string) {
		ok := func(s string, extra func(rune) bool) bool {
			for _, c := range s {
				if c > unicode.MaxASCII || unicode.IsSpace(c) || !unicode.IsPrint(c) || strings.ContainsRune("@\"'`", c) || extra(c) {
					return false
				}
			}
			return true
		}
		none := func(rune) bool { return false }
		if scheme == "" || !ok(scheme, func(c rune) bool { return !unicode.IsLetter(c) }) ||
			!ok(user, func(c rune) bool { return strings.ContainsRune(":/?#", c) }) ||
			len(pass) < MinSecretLen || !ok(pass, none) || !ok(rest, none) || !ok(prefix, func(c rune) bool { return unicode.IsLetter(c) || unicode.IsDigit(c) }) {
			return
		}
		if strings.Contains(Mask, pass) {
			return // a password made of the mask's letters shows in the mask itself
		}
		u := prefix + scheme + "://" + user + ":" + pass + "@" + rest
		if got := String(u); strings.Contains(got, ":"+pass+"@") {
			t.Fatalf("String(%q) = %q", u, got)
		}
		r := New(u)
		msg := "error near " + pass + " in " + u
		if got := r.String(msg); strings.Contains(got, pass) {
			t.Fatalf("Redactor(%q).String(%q) = %q", u, msg, got)
		}
		kv := "host=h password=" + pass + " user=" + user
		if got := New(kv).String("x " + pass + " " + kv); strings.Contains(got, pass) {
			t.Fatalf("DSN %q: %q", kv, got)
		}
	})
}
