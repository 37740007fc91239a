package api

import (
	"context"
	"errors"
	"sort"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/mlserve/mlserve/inference/imaging"
	"github.com/mlserve/mlserve/models"
	"github.com/mlserve/mlserve/pool"
)

// statusOf maps the service's errors to HTTP status codes. Client mistakes
// are 4xx (Immich answers 500 for unknown model names; a 5xx makes the
// Immich server mark a healthy machine-learning URL unhealthy, so we do
// not); overload is 503 so the server fails over to its next URL.
func statusOf(err error) (int, string) {
	switch {
	case errors.Is(err, pool.ErrQueueFull):
		return fiber.StatusServiceUnavailable, err.Error()
	case errors.Is(err, ErrSearchUnavailable):
		return fiber.StatusServiceUnavailable, err.Error()
	case errors.Is(err, pool.ErrClosed):
		return fiber.StatusServiceUnavailable, "shutting down"
	case errors.Is(err, pool.ErrNoInput):
		return fiber.StatusBadRequest, "Either image or text must be provided"
	case errors.Is(err, imaging.ErrEmpty):
		return fiber.StatusBadRequest, "Image has zero width or height"
	case errors.Is(err, imaging.ErrDecode):
		return fiber.StatusBadRequest, "Invalid image: " + err.Error()
	case errors.Is(err, pool.ErrMissingDependency):
		return fiber.StatusBadRequest, trimSentinel(err, pool.ErrMissingDependency)
	case errors.Is(err, pool.ErrWrongInput):
		return fiber.StatusBadRequest, err.Error()
	case errors.Is(err, pool.ErrBadEntries):
		return fiber.StatusUnprocessableEntity, err.Error()
	case errors.Is(err, models.ErrInvalidName), errors.Is(err, models.ErrUnknownModel), errors.Is(err, models.ErrUnsupported):
		return fiber.StatusBadRequest, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return fiber.StatusGatewayTimeout, "request took longer than MACHINE_LEARNING_WORKER_TIMEOUT"
	case errors.Is(err, pool.ErrLoadFailed):
		// Immich's words: "Failed to load model '<name>'", then the cause.
		msg := err.Error()
		if after, ok := strings.CutPrefix(msg, pool.ErrLoadFailed.Error()); ok {
			msg = "Failed to load model" + after
		}
		return fiber.StatusInternalServerError, msg
	}
	return fiber.StatusInternalServerError, "Internal Server Error"
}

// trimSentinel drops the "sentinel: " prefix where Immich's message is
// the detail itself.
func trimSentinel(err, sentinel error) string {
	msg := err.Error()
	prefix := sentinel.Error() + ": "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return msg
}

func (s *Server) predictError(c *fiber.Ctx, err error) error {
	code, msg := statusOf(err)
	if code == fiber.StatusServiceUnavailable {
		c.Set(fiber.HeaderRetryAfter, "1")
	}
	if code >= 500 {
		s.logger.Error("predict failed", "status", code, "err", err)
	} else {
		s.logger.Debug("predict refused", "status", code, "err", err)
	}
	return c.Status(code).JSON(detail{msg})
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
