package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/netip"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// Access control. Immich's protocol (/, /ping, /predict) stays open:
// the Immich server sends no credentials, and port 3003 belongs on a
// private network. Everything else that reads the library (/search,
// /people, /thumbs, /faces, /status) is private: mounted with s.private or
// under s.Private, it requires MLSERVE_API_KEY as a Bearer token when one
// is set; without a key it answers only on a loopback listener, or when
// MLSERVE_SEARCH_PUBLIC opens it on purpose. The web page's own files
// (/ui/) follow the same rule, except that with a key they are served to
// anyone: a browser cannot send the key when it opens a page, and the
// page holds no data (see ui.go).

// Private returns a group of routes under prefix behind the access
// control of the routes outside Immich's protocol.
func (s *Server) Private(prefix string) fiber.Router { return s.app.Group(prefix, s.private) }

const (
	msgNeedKey = "missing or wrong API key: send the key of MLSERVE_API_KEY as 'Authorization: Bearer <key>'"
	msgNotOpen = "this route is served without a key only on a loopback address: set MLSERVE_API_KEY and send it as 'Authorization: Bearer <key>', or set MLSERVE_SEARCH_PUBLIC=true to open it to the network"
)

// private is the access-control middleware.
func (s *Server) private(c *fiber.Ctx) error {
	if s.keyHash != nil {
		if !s.keyMatches(c.Get(fiber.HeaderAuthorization)) {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="mlserve"`)
			return fiber.NewError(fiber.StatusUnauthorized, msgNeedKey)
		}
		c.Locals(localAuthenticated, true)
		return c.Next()
	}
	if s.opts.PublicRoutes || s.loopback.Load() {
		return c.Next()
	}
	return fiber.NewError(fiber.StatusForbidden, msgNotOpen)
}

// keyMatches compares a Bearer token with the key in constant time (both
// hashed first, so that the length does not leak either).
func (s *Server) keyMatches(header string) bool {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(h[:], s.keyHash) == 1
}

// authenticated tells whether the request carried the API key.
func authenticated(c *fiber.Ctx) bool { return c.Locals(localAuthenticated) != nil }

// allowClient refuses /predict to clients outside MLSERVE_ALLOW_CIDRS.
func (s *Server) allowClient(c *fiber.Ctx) error {
	if len(s.opts.AllowCIDRs) == 0 {
		return c.Next()
	}
	addr, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if ok {
		addr = addr.Unmap()
		for _, p := range s.opts.AllowCIDRs {
			if p.Contains(addr) {
				return c.Next()
			}
		}
	}
	return fiber.NewError(fiber.StatusForbidden, "client address not allowed by MLSERVE_ALLOW_CIDRS")
}

// isLoopback tells whether a listener's address is a loopback one
// (127.0.0.0/8, ::1), or a Unix socket.
func isLoopback(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}
