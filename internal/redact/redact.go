// Package redact removes secrets from text that mlserve logs, prints or
// returns: passwords in URLs (scheme://user:password@host) and in
// connection strings (password=… as a key/value pair or a query
// parameter), bearer tokens, Hugging Face tokens, and the literal values
// of secrets the caller knows (the configured tokens and passwords).
//
// Libraries embed connection strings in their errors (go-redis returns
// net/url's errors, which quote the whole URL with its password), so every
// error and log line that may carry one goes through a [Redactor] before
// it leaves the process: [Redactor.Error] for errors, [Redactor.Handler]
// for a slog handler. Redaction is best effort for text that is not a
// well-formed URL or DSN; the literal values of known secrets are removed
// whatever their surroundings.
package redact

import (
	"context"
	"log/slog"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// Mask replaces a secret.
const Mask = "xxxxx"

// MinSecretLen is the shortest known secret whose literal value is masked
// wherever it appears; shorter ones would mask ordinary words (they are
// still masked inside URLs and connection strings).
const MinSecretLen = 4

var (
	// scheme://user:password@ — the password runs to the first '@' (a
	// password with a raw '/' or ':' is still caught; "host:port/x@y" is
	// masked too, which errs on the safe side).
	reUserinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://[^\s:@/?#"'` + "`" + `]*):[^\s@"'` + "`" + `]*@`)
	// password=value and friends, in DSNs (quoted or not) and query
	// strings. An unquoted value runs to the next space: in a DSN, '&' and
	// '#' may be part of the password (a query string's later parameters
	// are masked with it).
	reKeyValue = regexp.MustCompile(`(?i)\b(password|passwd|pwd|token|access_token|api_key|apikey|secret)(\s*=\s*)('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s'"` + "`" + `]*)`)
	// Authorization: Bearer <token>.
	reBearer = regexp.MustCompile(`(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]+`)
	// Hugging Face user access tokens.
	reHFToken = regexp.MustCompile(`\bhf_[A-Za-z0-9]{8,}`)
)

// String masks the secrets that patterns find in s: URL passwords,
// password=/token= values, bearer tokens and Hugging Face tokens.
func String(s string) string {
	if s == "" {
		return s
	}
	s = reUserinfo.ReplaceAllString(s, "${1}:"+Mask+"@")
	s = reKeyValue.ReplaceAllString(s, "${1}${2}"+Mask)
	s = reBearer.ReplaceAllString(s, "${1}"+Mask)
	s = reHFToken.ReplaceAllString(s, "hf_"+Mask)
	return s
}

// Error returns err with its message passed through [String], or err
// itself when there is nothing to mask. The result unwraps to err, so
// errors.Is and errors.As still see the causes.
func Error(err error) error { return (*Redactor)(nil).Error(err) }

// Passwords returns the passwords that s holds in URL or key/value form,
// as written and decoded, so that a caller can mask them anywhere else
// they appear (for instance inside an error that quotes a part of the URL).
func Passwords(s string) []string {
	var out []string
	add := func(v string) {
		v = strings.Trim(v, `'"`)
		if v == "" {
			return
		}
		out = append(out, v)
		if u, err := url.PathUnescape(v); err == nil && u != v {
			out = append(out, u)
		}
		if u, err := url.QueryUnescape(v); err == nil && u != v {
			out = append(out, u)
		}
	}
	for _, m := range reUserinfo.FindAllString(s, -1) {
		m = strings.TrimSuffix(m, "@")
		i := strings.Index(m, "://")
		userinfo := m[i+3:]
		if j := strings.IndexByte(userinfo, ':'); j >= 0 {
			add(userinfo[j+1:])
		}
	}
	// A raw '@' in a password (it should be written %40): the userinfo
	// then runs to the last '@' of the URL, as net/url reads it.
	for rest := s; ; {
		i := strings.Index(rest, "://")
		if i < 0 {
			break
		}
		rest = rest[i+3:]
		tok := rest
		if end := strings.IndexAny(tok, " \t\n\"'`"); end >= 0 {
			tok = tok[:end]
		}
		if at := strings.LastIndexByte(tok, '@'); at >= 0 {
			if j := strings.IndexByte(tok[:at], ':'); j >= 0 {
				add(tok[j+1 : at])
			}
		}
	}
	for _, m := range reKeyValue.FindAllStringSubmatch(s, -1) {
		add(m[3])
		if i := strings.IndexAny(m[3], "&#"); i > 0 { // a query parameter
			add(m[3][:i])
		}
	}
	return out
}

// Redactor masks known secrets as well as what [String] finds. The zero
// value and nil mask patterns only. It is safe for concurrent use.
type Redactor struct {
	secrets []string // longest first, so a secret that contains another goes whole
}

// New returns a Redactor for the given secrets (tokens, passwords, or
// whole URLs and DSNs, whose passwords are extracted). Empty values are
// ignored.
func New(secrets ...string) *Redactor {
	seen := map[string]bool{}
	r := &Redactor{}
	add := func(v string) {
		if len(v) < MinSecretLen || seen[v] {
			return
		}
		seen[v] = true
		r.secrets = append(r.secrets, v)
		for _, enc := range []string{url.QueryEscape(v), url.PathEscape(v)} {
			if enc != v && !seen[enc] {
				seen[enc] = true
				r.secrets = append(r.secrets, enc)
			}
		}
	}
	for _, s := range secrets {
		if strings.Contains(s, "://") || strings.Contains(strings.ToLower(s), "password") {
			for _, p := range Passwords(s) {
				add(p)
			}
			continue
		}
		add(s)
	}
	sort.SliceStable(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

// String masks the known secrets and the patterns of [String] in s.
func (r *Redactor) String(s string) string {
	s = String(s)
	if r == nil {
		return s
	}
	for _, v := range r.secrets {
		s = strings.ReplaceAll(s, v, Mask)
	}
	return s
}

// Error returns err with a masked message, unwrapping to err; err itself
// when nothing needed masking (or err is nil).
func (r *Redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	// An error masked before has a clean message, so it comes back as is.
	msg := err.Error()
	if clean := r.String(msg); clean != msg {
		return &redacted{msg: clean, err: err}
	}
	return err
}

// redacted is an error whose message was masked.
type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }

// Handler wraps h so that every record's message and attribute values
// (strings, errors, anything formatted, in groups too) are masked before
// h sees them.
func (r *Redactor) Handler(h slog.Handler) slog.Handler {
	if rh, ok := h.(*handler); ok && rh.r == r {
		return h
	}
	return &handler{next: h, r: r}
}

type handler struct {
	next slog.Handler
	r    *Redactor
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = h.attr(a)
	}
	return &handler{next: h.next.WithAttrs(clean), r: h.r}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), r: h.r}
}

func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		g := v.Group()
		clean := make([]slog.Attr, len(g))
		for i, x := range g {
			clean[i] = h.attr(x)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(clean...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.Any(a.Key, h.r.Error(x))
		case nil:
			return slog.Attr{Key: a.Key, Value: v}
		default:
			// Formatted as the text and JSON handlers would (fmt's %+v is
			// close enough to catch a URL or DSN inside a struct).
			s := slog.AnyValue(x).String()
			if clean := h.r.String(s); clean != s {
				return slog.String(a.Key, clean)
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
